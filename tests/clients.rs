//! The four clients against a real HTTP server on 127.0.0.1 that checks what
//! arrives: method, path, headers, request ids, and the gunzipped JSON.

use std::time::Duration;

use newrelic_telemetry::client::{DropReason, Events, Logs, Metrics, Spans};
use newrelic_telemetry::test_util::ReceivedRequest;
use newrelic_telemetry::{
    Api, Common, CountMetric, Event, EventClient, Log, Metric, MetricClient, RecordError, Span,
    attrs,
};
use uuid::Uuid;

mod support;
use support::{RefusingPort, client, client_builder, server};

fn assert_contract_headers(r: &ReceivedRequest) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let length: usize = r
        .header("content-length")
        .expect("content-length")
        .parse()
        .unwrap();
    assert_eq!(length, r.wire_bytes);
    let agent = r.header("user-agent").expect("user-agent");
    assert!(
        agent.starts_with(concat!(
            "NewRelic-Rust-TelemetrySDK/",
            env!("CARGO_PKG_VERSION")
        )),
        "{agent}"
    );
    let id = Uuid::parse_str(r.header("x-request-id").expect("x-request-id")).expect("a UUID");
    assert_eq!(id.get_version_num(), 4);
}

#[tokio::test]
async fn metric_client_posts_the_contract() {
    let server = server().await;
    let client = MetricClient::builder("secret-ingest-key")
        .endpoint(server.metric_url())
        .add_version_info("checkout", "2.1.0")
        .add_version_info("worker", "7")
        .build()
        .unwrap();
    let metric: Metric = CountMetric::new("jobs", 3.0, Duration::from_secs(10))
        .with_attribute("queue", "default")
        .into();
    let common = Common::new().with_attributes(attrs!["host" => "web-1"]);
    let report = client.send_batch(vec![metric], common).await.unwrap();
    assert_eq!(report.items_sent(), 1);
    assert_eq!(report.status().map(|s| s.as_u16()), Some(202));
    assert_eq!(report.payloads()[0].attempts(), 1);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.path, "/metric/v1");
    assert_eq!(r.api, Some(Api::Metric));
    assert_contract_headers(r);
    assert_eq!(r.header("api-key"), Some("secret-ingest-key"));
    assert_eq!(r.header("x-license-key"), None);
    assert!(
        r.header("user-agent")
            .unwrap()
            .ends_with(" checkout/2.1.0 worker/7"),
        "{:?}",
        r.header("user-agent")
    );
    assert_eq!(
        Uuid::parse_str(r.header("x-request-id").unwrap()).unwrap(),
        report.payloads()[0].request_id().unwrap()
    );
    assert_eq!(r.body[0]["common"]["attributes"]["host"], "web-1");
    let sent = &r.body[0]["metrics"][0];
    assert_eq!(sent["name"], "jobs");
    assert_eq!(sent["type"], "count");
    assert_eq!(sent["value"], 3.0);
    assert_eq!(sent["interval.ms"], 10_000);
    assert_eq!(sent["attributes"]["queue"], "default");

    let stats = client.stats();
    assert_eq!((stats.payloads_sent, stats.items_sent), (1, 1));
    assert_eq!(stats.bytes_sent as usize, r.wire_bytes);
}

#[tokio::test]
async fn event_client_sends_a_flat_array_and_license_key_header() {
    let server = server().await;
    let client = EventClient::builder("license-123")
        .license_key_header()
        .endpoint(server.event_url())
        .build()
        .unwrap();
    let report = client
        .send_batch(
            vec![
                Event::new("Purchase").with_attribute("amount", 12.5),
                Event::new("Refund"),
            ],
            Common::new().with_attributes(attrs!["app" => "shop"]),
        )
        .await
        .unwrap();
    assert_eq!(report.status().map(|s| s.as_u16()), Some(200));

    let r = &server.requests()[0];
    assert_eq!(r.path, "/v1/accounts/events");
    assert_contract_headers(r);
    assert_eq!(r.header("x-license-key"), Some("license-123"));
    assert_eq!(r.header("api-key"), None);
    let events = server.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["eventType"], "Purchase");
    assert_eq!(events[0]["amount"], 12.5);
    assert_eq!(events[0]["app"], "shop");
    assert_eq!(events[1]["eventType"], "Refund");
    assert!(events[1]["timestamp"].is_u64());
}

#[tokio::test]
async fn log_client() {
    let server = server().await;
    let client = client::<Logs>(&server);
    client
        .send(Log::new("hello").with_level("INFO"))
        .await
        .unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.path, "/log/v1");
    assert_contract_headers(r);
    let logs = server.logs();
    assert_eq!(logs[0]["message"], "hello");
    assert_eq!(logs[0]["attributes"]["level"], "INFO");
}

#[tokio::test]
async fn span_client_sends_data_format_headers() {
    let server = server().await;
    let client = client::<Spans>(&server);
    let root = Span::new("checkout").with_service_name("shop");
    let child = root.child("charge").finish();
    client
        .send_batch(vec![child.clone(), root.finish()], Common::new())
        .await
        .unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.path, "/trace/v1");
    assert_contract_headers(r);
    assert_eq!(r.header("data-format"), Some("newrelic"));
    assert_eq!(r.header("data-format-version"), Some("1"));
    let spans = server.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["id"], child.id());
    assert_eq!(spans[0]["trace.id"], spans[1]["trace.id"]);
    assert_eq!(spans[0]["attributes"]["parent.id"], spans[1]["id"]);
    assert_eq!(spans[0]["attributes"]["service.name"], "shop");
    assert!(spans[1]["attributes"]["duration.ms"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn each_payload_gets_its_own_request_id() {
    let server = server().await;
    let client = client::<Events>(&server);
    for _ in 0..3 {
        client.send(Event::new("Tick")).await.unwrap();
    }
    let ids: std::collections::HashSet<_> = server
        .requests()
        .iter()
        .map(|r| r.header("x-request-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn nothing_to_send_makes_no_request() {
    let server = server().await;
    let client = client::<Events>(&server);
    let report = client.send_batch(Vec::new(), Common::new()).await.unwrap();
    assert!(report.payloads().is_empty());
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn invalid_items_are_dropped_before_sending_and_the_rest_go() {
    let server = server().await;
    let client = client::<Metrics>(&server);
    let items: Vec<Metric> = vec![
        CountMetric::new("ok", 1.0, Duration::from_secs(1)).into(),
        CountMetric::new("nan", f64::NAN, Duration::from_secs(1)).into(),
        CountMetric::new("", 1.0, Duration::from_secs(1)).into(),
    ];
    let err = client.send_batch(items, Common::new()).await.unwrap_err();
    let report = err.report();
    assert_eq!((report.items_sent(), report.items_dropped()), (1, 2));
    assert!(matches!(
        report.first_drop_reason(),
        Some(DropReason::Invalid(RecordError::NonFiniteValue { .. }))
    ));
    assert!(err.to_string().contains("2 of 3 items dropped"), "{err}");
    assert_eq!(client.stats().items_dropped_invalid, 2);
    let metrics = server.metrics();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["name"], "ok");
}

#[tokio::test]
async fn a_callers_own_http_client_is_used() {
    let server = server().await;
    let mut marker = reqwest::header::HeaderMap::new();
    marker.insert(
        "x-from",
        reqwest::header::HeaderValue::from_static("my-client"),
    );
    let http = newrelic_telemetry::client::http_client_builder()
        .default_headers(marker)
        .build()
        .unwrap();
    let client = client_builder::<Logs>(&server)
        .http_client(http)
        .build()
        .unwrap();
    client.send(Log::new("via my client")).await.unwrap();
    assert_eq!(server.requests()[0].header("x-from"), Some("my-client"));
    assert_eq!(server.logs()[0]["message"], "via my client");
}

#[tokio::test]
async fn the_key_appears_in_no_error_or_debug_output() {
    let key = "NRAK-SUPERSECRET";
    // A port held but not listened on: connection refused.
    let refusing = RefusingPort::bind();
    let client = MetricClient::builder(key)
        .endpoint(refusing.url("/metric/v1"))
        .retry_policy(newrelic_telemetry::RetryPolicy::none())
        .build()
        .unwrap();
    let err = client
        .send(CountMetric::new("m", 1.0, Duration::from_secs(1)).into())
        .await
        .unwrap_err();
    for text in [format!("{err}"), format!("{err:?}"), format!("{client:?}")] {
        assert!(!text.contains("SUPERSECRET"), "{text}");
    }
    assert!(matches!(
        err.report().first_drop_reason(),
        Some(DropReason::RetriesExhausted { .. })
    ));
}

#[tokio::test]
async fn common_attributes_are_cleaned_to_the_apis_rules_before_sending() {
    let server = server().await;
    let metrics = client::<Metrics>(&server);
    let common = Common::new().with_attributes(attrs! {
        "host" => "a", "nan" => f64::NAN, "count" => 1, "" => "empty key",
    });
    let metric: Metric = CountMetric::new("m", 1.0, Duration::from_secs(1)).into();
    metrics.send_batch(vec![metric], common).await.unwrap();
    assert_eq!(
        server.requests()[0].body[0]["common"]["attributes"],
        serde_json::json!({"host": "a", "instrumentation.provider": "newRelic",
            "collector.name": "newrelic-telemetry", "collector.version": env!("CARGO_PKG_VERSION")}),
        "NaN, the reserved key and the empty key never reach the wire (the identity attributes do)"
    );
}

#[tokio::test]
async fn an_event_over_the_attribute_limit_once_merged_with_common_is_refused() {
    let server = server().await;
    let client = client::<Events>(&server);
    let common: newrelic_telemetry::Attributes = (0..200).map(|i| (format!("c{i}"), i)).collect();
    let own: newrelic_telemetry::Attributes = (0..100).map(|i| (format!("e{i}"), i)).collect();
    let err = client
        .send_batch(
            vec![Event::new("Big").with_attributes(own), Event::new("Small")],
            Common::new().with_attributes(common.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err.report().first_drop_reason(),
        Some(DropReason::Invalid(RecordError::TooManyAttributes {
            count: 300,
            limit: 255
        }))
    ));
    assert_eq!(server.events().len(), 1);

    let batch = newrelic_telemetry::EventBatch::builder()
        .common_attributes(common)
        .build();
    let own: newrelic_telemetry::Attributes = (0..56).map(|i| (format!("e{i}"), i)).collect();
    assert!(matches!(
        batch
            .try_record(Event::new("Big").with_attributes(own))
            .await
            .unwrap_err(),
        RecordError::TooManyAttributes {
            count: 256,
            limit: 255
        }
    ));
}
