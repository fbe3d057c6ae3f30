//! The recording calls accept what a service has at hand, and each form
//! arrives typed on the wire: mixed value types (tuples of pairs, `attrs!`,
//! `ValueRef` arrays), maps with string keys, integer metric values, and
//! names as `String`s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::{Event, Log, Span, Telemetry, Value, ValueRef, attrs};

mod support;

async fn telemetry() -> (TestIngestServer, Telemetry) {
    let server = support::server().await;
    let telemetry = server.telemetry_builder().build().unwrap();
    (server, telemetry)
}

fn metric<'a>(metrics: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    metrics
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name} in {metrics:?}"))
}

#[tokio::test(flavor = "current_thread")]
async fn mixed_value_types_arrive_typed() {
    let (server, telemetry) = telemetry().await;
    let metrics = telemetry.metrics();
    let route = String::from("/orders");
    let method: &str = "POST";
    let status: u16 = 201;

    // A tuple of pairs, each value its own type.
    metrics
        .record_count("tuple", 1, (("route", route.as_str()), ("status", status)))
        .await;
    // The same through the macro, with a bool and a float too.
    metrics
        .record_count(
            "macro",
            1,
            attrs![
                "route" => &route,
                "method" => method,
                "status" => status,
                "cached" => false,
                "ratio" => 0.5,
            ],
        )
        .await;
    // An array: the first `ValueRef` names the type, `.into()` does the rest.
    metrics
        .record_count(
            "array",
            1,
            [("route", ValueRef::from(&route)), ("status", status.into())],
        )
        .await;
    telemetry.shutdown().await;

    let wire = server.metrics();
    for name in ["tuple", "macro", "array"] {
        let attributes = &metric(&wire, name)["attributes"];
        assert_eq!(attributes["route"], "/orders", "{name}");
        assert!(attributes["status"].is_u64(), "{name}: {attributes}");
        assert_eq!(attributes["status"], 201, "{name}");
    }
    let attributes = &metric(&wire, "macro")["attributes"];
    assert_eq!(attributes["method"], "POST");
    assert_eq!(attributes["cached"], false);
    assert_eq!(attributes["ratio"], 0.5);
}

#[tokio::test(flavor = "current_thread")]
async fn maps_with_string_keys_are_attributes() {
    let (server, telemetry) = telemetry().await;
    let hash: HashMap<String, Value> = HashMap::from([
        ("plan".to_owned(), Value::from("pro")),
        ("seats".to_owned(), Value::from(5)),
    ]);
    let tree: BTreeMap<&str, &str> = BTreeMap::from([("region", "eu"), ("zone", "b")]);
    let arcs: HashMap<Arc<str>, bool> = HashMap::from([(Arc::from("trial"), true)]);

    telemetry.metrics().record_count("signups", 1, &hash).await;
    telemetry.metrics().record_gauge("capacity", 3, &tree).await;
    telemetry.metrics().record_count("trials", 1, arcs).await;
    // Items take maps too (they own their attributes).
    telemetry
        .events()
        .record(Event::new("Signup").with_attributes(hash.clone()))
        .await;
    telemetry
        .logs()
        .record(Log::new("signed up").with_attributes(tree.clone()))
        .await;
    telemetry
        .spans()
        .record(Span::new("signup").with_attributes(hash).finish())
        .await;
    telemetry.shutdown().await;

    let wire = server.metrics();
    let signups = &metric(&wire, "signups")["attributes"];
    assert_eq!(
        (signups["plan"].as_str(), signups["seats"].as_i64()),
        (Some("pro"), Some(5))
    );
    assert_eq!(metric(&wire, "capacity")["attributes"]["zone"], "b");
    assert_eq!(metric(&wire, "trials")["attributes"]["trial"], true);
    assert_eq!(server.events()[0]["seats"], 5);
    assert_eq!(server.logs()[0]["attributes"]["region"], "eu");
    assert_eq!(server.spans()[0]["attributes"]["plan"], "pro");
}

#[tokio::test(flavor = "current_thread")]
async fn integer_values_and_owned_names() {
    let (server, telemetry) = telemetry().await;
    let metrics = telemetry.metrics();
    let name = format!("jobs.{}", "done");
    let queue: Vec<u8> = vec![1, 2, 3];

    metrics.record_count(&name, 1, ()).await;
    metrics.record_count(name.clone(), 2_u64, ()).await;
    metrics.record_gauge("queue.depth", queue.len(), ()).await;
    metrics.record_summary("batch.size", 4_i64, ()).await;
    metrics.record_summary("batch.size", 6_u32, ()).await;
    let event_type = String::from("JobDone");
    telemetry
        .events()
        .record(Event::new(event_type.as_str()).with_attribute("jobs", 3_u64))
        .await;
    telemetry.shutdown().await;

    let wire = server.metrics();
    assert_eq!(metric(&wire, "jobs.done")["value"], 3.0);
    assert_eq!(metric(&wire, "queue.depth")["value"], 3.0);
    let summary = &metric(&wire, "batch.size")["value"];
    assert_eq!(
        (summary["count"].as_u64(), summary["sum"].as_f64()),
        (Some(2), Some(10.0))
    );
    assert_eq!(server.events()[0]["eventType"], "JobDone");
    assert_eq!(server.events()[0]["jobs"], 3);
}
