//! Identity on the wire: every item sent on the four APIs carries
//! `instrumentation.provider`, `collector.name` and `collector.version` (once
//! per payload in the common block of the Metric, Log and Trace APIs, merged
//! into each event on the Event API), a user's own attributes of those keys
//! win, a client can rename the provider or turn the attributes off, they
//! never push a valid item over an attribute limit, and the `User-Agent` is
//! the ingest contract's `NewRelic-Rust-TelemetrySDK/<version>`.

use std::time::Duration;

use newrelic_telemetry::client::{
    COLLECTOR_NAME, COLLECTOR_VERSION, DEFAULT_INSTRUMENTATION_PROVIDER, Events, IDENTITY_KEYS,
    Logs, Metrics, Spans,
};
use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::{
    Attributes, BuildError, Common, Event, Log, LogClient, Span, Telemetry, TelemetryBuilder, attrs,
};
use serde_json::{Map, Value as Json};

mod support;
use support::{HOUR, client, client_builder, server};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn telemetry(server: &TestIngestServer) -> TelemetryBuilder {
    server.telemetry_builder().harvest_interval(HOUR)
}

/// Records one item of each kind and shuts down (which sends them).
async fn one_of_each(telemetry: Telemetry) {
    telemetry
        .metrics()
        .record_count("orders", 2.0, [("plan", "pro")])
        .await;
    telemetry
        .events()
        .record(Event::new("Order").with_attribute("total", 12))
        .await;
    telemetry.logs().record(Log::new("placed")).await;
    telemetry
        .spans()
        .record(Span::new("place order").finish())
        .await;
    let report = telemetry.shutdown().await;
    assert_eq!(report.items_sent(), 4, "{report:?}");
    assert_eq!(report.items_dropped(), 0, "{report:?}");
    assert_eq!(report.items_refused(), 0, "{report:?}");
}

/// Each item received, as the API reads it (common block merged), with the
/// attributes it carries: for events, the event itself.
fn received_attributes(server: &TestIngestServer) -> Vec<(&'static str, Map<String, Json>)> {
    let attributes = |item: &Json| item["attributes"].as_object().cloned().unwrap_or_default();
    let mut out = Vec::new();
    out.extend(server.metrics().iter().map(|m| ("metric", attributes(m))));
    out.extend(
        server
            .events()
            .iter()
            .map(|e| ("event", e.as_object().cloned().unwrap_or_default())),
    );
    out.extend(server.logs().iter().map(|l| ("log", attributes(l))));
    out.extend(server.spans().iter().map(|s| ("span", attributes(s))));
    out
}

fn assert_identity(attributes: &Map<String, Json>, provider: &str, what: &str) {
    assert_eq!(
        attributes.get("instrumentation.provider"),
        Some(&Json::from(provider)),
        "{what}: {attributes:?}"
    );
    assert_eq!(
        attributes.get("collector.name"),
        Some(&Json::from("newrelic-telemetry")),
        "{what}: {attributes:?}"
    );
    assert_eq!(
        attributes.get("collector.version"),
        Some(&Json::from(VERSION)),
        "{what}: {attributes:?}"
    );
}

/// Whether any identity key appears anywhere in the JSON.
fn mentions_identity(json: &Json) -> bool {
    match json {
        Json::Object(map) => map
            .iter()
            .any(|(k, v)| IDENTITY_KEYS.contains(&k.as_str()) || mentions_identity(v)),
        Json::Array(items) => items.iter().any(mentions_identity),
        _ => false,
    }
}

#[test]
fn the_constants_are_the_ones_the_specification_and_crate_name() {
    assert_eq!(DEFAULT_INSTRUMENTATION_PROVIDER, "newRelic");
    assert_eq!(COLLECTOR_NAME, "newrelic-telemetry");
    assert_eq!(COLLECTOR_VERSION, VERSION);
    assert_eq!(
        IDENTITY_KEYS,
        [
            "instrumentation.provider",
            "collector.name",
            "collector.version"
        ]
    );
}

#[tokio::test]
async fn every_item_on_the_four_apis_carries_the_identity() {
    let server = server().await;
    one_of_each(telemetry(&server).build().unwrap()).await;

    let received = received_attributes(&server);
    let kinds: Vec<_> = received.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(kinds, ["metric", "event", "log", "span"]);
    for (kind, attributes) in &received {
        assert_identity(attributes, "newRelic", kind);
    }
    // The user's own data is all still there.
    assert_eq!(server.metrics()[0]["attributes"]["plan"], "pro");
    assert_eq!(server.events()[0]["total"], 12);
    assert_eq!(server.logs()[0]["message"], "placed");
    assert_eq!(server.spans()[0]["attributes"]["name"], "place order");
}

#[tokio::test]
async fn block_apis_carry_the_identity_once_per_payload_in_the_common_block() {
    let server = server().await;
    let telemetry = telemetry(&server).build().unwrap();
    for i in 0..3 {
        telemetry.logs().record(Log::new(format!("line {i}"))).await;
        telemetry
            .metrics()
            .record_gauge("depth", f64::from(i), [("queue", i64::from(i))])
            .await;
        telemetry
            .spans()
            .record(Span::new(format!("step {i}")).finish())
            .await;
    }
    telemetry.shutdown().await;

    let requests = server.requests();
    let blocks: Vec<_> = requests
        .iter()
        .filter(|r| r.body.is_array() && r.body[0].is_object())
        .collect();
    assert_eq!(blocks.len(), 3, "one payload each for metrics, logs, spans");
    for request in blocks {
        let block = &request.body[0];
        let common = block["common"]["attributes"]
            .as_object()
            .expect("a common block with attributes");
        assert_identity(common, "newRelic", &request.path);
        let items = ["metrics", "logs", "spans"]
            .iter()
            .find_map(|key| block[*key].as_array())
            .expect("items");
        assert_eq!(items.len(), 3);
        for item in items {
            assert!(!mentions_identity(item), "not repeated per item: {item}");
        }
    }
}

#[tokio::test]
async fn the_user_agent_is_exactly_the_contracts() {
    let server = server().await;
    one_of_each(telemetry(&server).build().unwrap()).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let expected = format!("NewRelic-Rust-TelemetrySDK/{VERSION}");
    for request in &requests {
        assert_eq!(
            request.header("user-agent"),
            Some(expected.as_str()),
            "{}",
            request.path
        );
    }
}

#[tokio::test]
async fn a_users_common_provider_wins_on_all_four_apis() {
    let server = server().await;
    let telemetry = telemetry(&server)
        .common_attributes(attrs!["instrumentation.provider" => "myBridge"])
        .build()
        .unwrap();
    one_of_each(telemetry).await;
    let received = received_attributes(&server);
    assert_eq!(received.len(), 4);
    for (kind, attributes) in &received {
        assert_identity(attributes, "myBridge", kind);
    }
    // Written once: the user's value, not both.
    for request in server.requests() {
        let text = request.body.to_string();
        assert_eq!(
            text.matches("instrumentation.provider").count(),
            1,
            "{text}"
        );
    }
}

#[tokio::test]
async fn an_events_own_attribute_wins_over_common_and_identity() {
    let server = server().await;
    let client = client::<Events>(&server);
    let own = Event::new("Order")
        .with_attribute("collector.name", "mine")
        .with_attribute("instrumentation.provider", 7);
    let common = Common::new().with_attributes(attrs!["instrumentation.provider" => "theirs"]);
    client
        .send_batch(vec![own, Event::new("Plain")], common)
        .await
        .unwrap();
    let events = server.events();
    assert_eq!(events[0]["instrumentation.provider"], 7);
    assert_eq!(events[0]["collector.name"], "mine");
    assert_eq!(events[0]["collector.version"], VERSION);
    assert_eq!(events[1]["instrumentation.provider"], "theirs");
    assert_eq!(events[1]["collector.name"], "newrelic-telemetry");
}

#[tokio::test]
async fn the_provider_is_set_through_telemetry_client_settings() {
    let server = server().await;
    let telemetry = telemetry(&server)
        .client(|c| c.instrumentation_provider("opentelemetry"))
        .build()
        .unwrap();
    one_of_each(telemetry).await;
    let received = received_attributes(&server);
    assert_eq!(received.len(), 4);
    for (kind, attributes) in &received {
        assert_identity(attributes, "opentelemetry", kind);
    }
}

#[tokio::test]
async fn turning_identity_off_removes_it_from_all_four_apis() {
    let server = server().await;
    let telemetry = telemetry(&server)
        .client(|c| c.identity_attributes(false))
        .build()
        .unwrap();
    one_of_each(telemetry).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        assert!(
            !mentions_identity(&request.body),
            "{}: {}",
            request.path,
            request.body
        );
    }
    // Turning it back on later in the chain wins, as settings do.
    let server = server_with_identity_toggled().await;
    assert_eq!(server.events()[0]["collector.name"], "newrelic-telemetry");
}

async fn server_with_identity_toggled() -> TestIngestServer {
    let server = server().await;
    let client = client_builder::<Events>(&server)
        .identity_attributes(false)
        .identity_attributes(true)
        .build()
        .unwrap();
    client.send(Event::new("Ping")).await.unwrap();
    server
}

#[tokio::test]
async fn a_blank_or_overlong_provider_fails_the_build_and_the_longest_allowed_is_sent() {
    for bad in [String::new(), "  ".to_owned(), "p".repeat(4001)] {
        let err = LogClient::builder("k")
            .instrumentation_provider(bad.clone())
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, BuildError::InvalidInstrumentationProvider { provider } if *provider == bad),
            "{err:?}"
        );
    }
    let server = server().await;
    let longest = "p".repeat(4000);
    let client = client_builder::<Logs>(&server)
        .instrumentation_provider(longest.clone())
        .build()
        .unwrap();
    client.send(Log::new("b")).await.unwrap();
    assert_eq!(
        server.logs()[0]["attributes"]["instrumentation.provider"],
        longest.as_str()
    );
}

// --- attribute limits --------------------------------------------------------

fn attributes(n: usize, prefix: &str) -> Attributes {
    (0..n)
        .map(|i| (format!("{prefix}{i:03}"), i as i64))
        .collect()
}

/// The identity keys present in `attributes`.
fn identity_keys(attributes: &Map<String, Json>) -> Vec<&'static str> {
    IDENTITY_KEYS
        .iter()
        .copied()
        .filter(|k| attributes.contains_key(*k))
        .collect()
}

#[tokio::test]
async fn identity_never_pushes_a_valid_event_over_the_attribute_limit() {
    let server = server().await;
    let client = client::<Events>(&server);
    // Own attributes, common attributes: 255 in all is the Event API's limit.
    let cases = [(255, 0), (250, 5), (254, 0), (253, 0), (252, 0), (200, 10)];
    for (own, shared) in cases {
        let event = Event::new("Wide").with_attributes(attributes(own, "own"));
        let common = Common::new().with_attributes(attributes(shared, "common"));
        let report = client.send_batch(vec![event], common).await;
        assert!(report.is_ok(), "{own}+{shared}: {report:?}");
    }
    // The event one over the limit is still refused, identity or not.
    let over = Event::new("Wide").with_attributes(attributes(256, "own"));
    assert!(client.send(over).await.is_err());

    let events = server.events();
    assert_eq!(events.len(), cases.len());
    let expected: [&[&str]; 6] = [
        &[],
        &[],
        &["instrumentation.provider"],
        &["instrumentation.provider", "collector.name"],
        &IDENTITY_KEYS,
        &IDENTITY_KEYS,
    ];
    for ((event, want), (own, common)) in events.iter().zip(expected).zip(cases) {
        let map = event.as_object().unwrap();
        // eventType and timestamp are intrinsics, not attributes.
        let sent = map.len() - 2;
        assert!(sent <= 255, "{own}+{common}: {sent} attributes");
        assert_eq!(sent, own + common + want.len(), "{own}+{common}");
        assert_eq!(identity_keys(map), want, "{own}+{common}");
    }
}

#[tokio::test]
async fn identity_through_telemetry_never_makes_a_recorded_event_refused() {
    let server = server().await;
    let telemetry = telemetry(&server)
        .common_attributes(attributes(5, "common"))
        .build()
        .unwrap();
    // 250 own + 5 common = 255: valid with or without the identity.
    telemetry
        .events()
        .try_record(Event::new("Wide").with_attributes(attributes(250, "own")))
        .await
        .unwrap();
    let report = telemetry.shutdown().await;
    assert_eq!((report.items_sent(), report.items_refused()), (1, 0));
    let events = server.events();
    assert_eq!(events[0].as_object().unwrap().len(), 2 + 255);
}

#[tokio::test]
async fn identity_takes_only_the_room_a_full_common_block_leaves() {
    let server = server().await;
    let client = client::<Metrics>(&server);
    let gauge = || newrelic_telemetry::GaugeMetric::new("depth", 1.0).into();
    // 100 is the Metric API's attribute limit, and the most common
    // attributes a client keeps.
    for n in [100, 98, 0] {
        let common = Common::new().with_attributes(attributes(n, "common"));
        client.send_batch(vec![gauge()], common).await.unwrap();
    }
    let blocks: Vec<_> = server
        .requests()
        .iter()
        .map(|r| {
            r.body[0]["common"]["attributes"]
                .as_object()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(blocks[0].len(), 100);
    assert!(identity_keys(&blocks[0]).is_empty());
    assert_eq!(blocks[1].len(), 100);
    assert_eq!(
        identity_keys(&blocks[1]),
        ["instrumentation.provider", "collector.name"]
    );
    assert_eq!(blocks[2].len(), 3);

    // An item's own attributes are counted on their own: a metric with 100
    // is still valid, and carries the identity through the common block.
    let wide = newrelic_telemetry::GaugeMetric::new("wide", 1.0)
        .with_attributes(attributes(100, "own"))
        .into();
    client.send_batch(vec![wide], Common::new()).await.unwrap();
    let metrics = server.metrics();
    let wide = metrics.last().unwrap()["attributes"].as_object().unwrap();
    assert_eq!(wide.len(), 103);
    assert_identity(wide, "newRelic", "wide metric");
}

#[tokio::test]
async fn a_span_at_its_attribute_limit_is_still_sent_with_the_identity() {
    let server = server().await;
    let client = client::<Spans>(&server);
    // 198 own + `name` + `duration.ms` = the Trace API's 200.
    let span = Span::new("full")
        .with_attributes(attributes(198, "own"))
        .finish();
    client.send(span).await.unwrap();
    let spans = server.spans();
    assert_identity(
        spans[0]["attributes"].as_object().unwrap(),
        "newRelic",
        "span",
    );
}

// --- payload size accounting --------------------------------------------------

#[tokio::test]
async fn payloads_with_the_identity_stay_under_the_size_limit() {
    let server = server().await;
    let client = client_builder::<Events>(&server)
        .max_payload_bytes(2_000)
        .build()
        .unwrap();
    let events: Vec<Event> = (0..500)
        .map(|i| Event::new("Tick").with_attribute("seq", i))
        .collect();
    let report = client.send_batch(events, Common::new()).await.unwrap();
    assert!(report.payloads().len() >= 2);
    let requests = server.requests();
    assert!(
        requests.iter().all(|r| r.wire_bytes <= 2_000),
        "{:?}",
        requests.iter().map(|r| r.wire_bytes).collect::<Vec<_>>()
    );
    let events = server.events();
    assert_eq!(events.len(), 500);
    for event in &events {
        assert_identity(event.as_object().unwrap(), "newRelic", "event");
    }
}

#[tokio::test]
async fn both_halves_of_a_split_payload_carry_the_identity() {
    let server = server().await;
    let client = client::<Logs>(&server);
    let logs = || -> Vec<Log> { (0..200).map(|i| Log::new(format!("line {i}"))).collect() };
    let whole = newrelic_telemetry::client::encode_payload::<newrelic_telemetry::client::Logs>(
        &logs(),
        &Common::new(),
    )
    .await
    .unwrap();
    server.set_max_body_bytes(Some(whole.len() * 2 / 3));
    client.send_batch(logs(), Common::new()).await.unwrap();
    let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [413, 202, 202]);
    let received = server.logs();
    assert_eq!(received.len(), 200);
    for log in &received {
        assert_identity(log["attributes"].as_object().unwrap(), "newRelic", "log");
    }
}

#[tokio::test]
async fn the_encoder_measures_what_the_client_sends() {
    // encode_payload encodes as a default client does, identity included.
    let server = server().await;
    let client = client::<Spans>(&server);
    let span = Span::new("one")
        .with_id("a1")
        .with_trace_id("t1")
        .with_timestamp(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .finish();
    let body = newrelic_telemetry::client::encode_payload::<newrelic_telemetry::client::Spans>(
        std::slice::from_ref(&span),
        &Common::new(),
    )
    .await
    .unwrap();
    client.send(span).await.unwrap();
    let mut json = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut json).unwrap();
    let encoded: Json = serde_json::from_str(&json).unwrap();
    assert_eq!(encoded, server.requests()[0].body);
    assert_identity(
        encoded[0]["common"]["attributes"].as_object().unwrap(),
        "newRelic",
        "encode_payload",
    );
}
