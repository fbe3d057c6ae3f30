//! Every data type and every flushed batch serialises to exactly the JSON the
//! ingest contract describes.

use std::io::Read;
use std::time::{Duration, UNIX_EPOCH};

use newrelic_telemetry::client::{Events, Kind, Logs, Metrics, Spans, encode_payload};
use newrelic_telemetry::{
    Common, CountMetric, Event, EventBatch, GaugeMetric, Log, LogBatch, Metric, MetricBatch, Span,
    SpanBatch, SpanEvent, Summary, SummaryMetric, attrs,
};
use serde_json::{Value as Json, json};

const T0: u64 = 1_700_000_000_000;

/// `collector.version`, one of the identity attributes every payload carries.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn at(ms: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

async fn wire<K: Kind>(items: &[K::Item], common: &Common) -> Json {
    let body = encode_payload::<K>(items, common).await.expect("encodes");
    let mut json = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut json)
        .expect("valid gzip");
    serde_json::from_str(&json).expect("valid JSON")
}

#[test]
fn count_metric() {
    let m = CountMetric::new("errors", 5.0, Duration::from_secs(10))
        .with_end_time(at(T0 + 10_000))
        .with_attribute("host", "a");
    assert_eq!(
        serde_json::to_value(Metric::from(m)).unwrap(),
        json!({"name": "errors", "type": "count", "value": 5.0,
               "timestamp": T0, "interval.ms": 10_000, "attributes": {"host": "a"}})
    );
}

#[test]
fn gauge_metric() {
    let m = GaugeMetric::new("temperature", 78.6)
        .with_timestamp(at(T0 + 4000))
        .with_attribute("units", "F");
    assert_eq!(
        serde_json::to_value(&m).unwrap(),
        json!({"name": "temperature", "type": "gauge", "value": 78.6,
               "timestamp": T0 + 4000, "attributes": {"units": "F"}})
    );
}

#[test]
fn summary_metric_without_attributes() {
    let m = SummaryMetric::new(
        "latency",
        Summary::new(2, 3.0, 1.0, 2.0),
        Duration::from_secs(5),
    )
    .with_end_time(at(T0 + 5000));
    assert_eq!(
        serde_json::to_value(&m).unwrap(),
        json!({"name": "latency", "type": "summary",
               "value": {"count": 2, "sum": 3.0, "min": 1.0, "max": 2.0},
               "timestamp": T0, "interval.ms": 5000})
    );
}

#[test]
fn event_is_flat_and_intrinsics_win() {
    let e = Event::new("Purchase")
        .with_timestamp(at(T0))
        .with_attribute("amount", 12.5)
        .with_attribute("eventType", "Spoofed")
        .with_attribute("timestamp", 1)
        .with_attribute("paid", true)
        .with_attribute("items", 3);
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"eventType": "Purchase", "timestamp": T0, "amount": 12.5, "paid": true, "items": 3})
    );
}

#[tokio::test]
async fn event_payload_merges_common_attributes_own_win() {
    let e = Event::new("Purchase")
        .with_timestamp(at(T0))
        .with_attribute("amount", 12.5);
    let common = Common::new().with_attributes(attrs! {
        "host" => "web-1", "amount" => 0, "eventType" => "Nope", "timestamp" => 0,
    });
    assert_eq!(
        wire::<Events>(&[e], &common).await,
        json!([{"eventType": "Purchase", "timestamp": T0, "amount": 12.5, "host": "web-1",
                "instrumentation.provider": "newRelic", "collector.name": "newrelic-telemetry", "collector.version": VERSION}])
    );
}

#[test]
fn log_record() {
    let l = Log::new("payment declined")
        .with_timestamp(at(T0))
        .with_level("ERROR")
        .with_error("card expired", "CardError", Some("at checkout.rs:10"));
    assert_eq!(
        serde_json::to_value(&l).unwrap(),
        json!({"timestamp": T0, "message": "payment declined",
               "attributes": {"level": "ERROR", "error.message": "card expired",
                              "error.class": "CardError", "error.stack": "at checkout.rs:10"}})
    );
}

#[test]
fn span_with_intrinsics_attributes_and_events() {
    let s = Span::new("checkout")
        .with_id("0000000000000001")
        .with_trace_id("00000000000000aa")
        .with_parent_id("0000000000000000")
        .with_service_name("shop")
        .with_timestamp(at(T0))
        .with_duration(Duration::from_micros(12_500))
        .with_attribute("name", "shadowed by the span's name")
        .with_attribute("http.status", 200)
        .with_event(
            SpanEvent::new("retry")
                .with_timestamp(at(T0 + 3))
                .with_attribute("attempt", 2),
        );
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        json!({"id": "0000000000000001", "trace.id": "00000000000000aa", "timestamp": T0,
               "attributes": {"name": "checkout", "duration.ms": 12.5, "parent.id": "0000000000000000",
                              "service.name": "shop", "http.status": 200},
               "events": [{"name": "retry", "timestamp": T0 + 3, "attributes": {"attempt": 2}}]})
    );
}

#[test]
fn span_error_flag() {
    let s = Span::new("op").with_error("boom", "Panic", None);
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["attributes"]["error"], true);
    assert_eq!(v["attributes"]["error.message"], "boom");
    assert_eq!(v["attributes"]["error.class"], "Panic");
    assert!(v.get("events").is_none());
}

#[tokio::test(start_paused = true)]
async fn flushed_metric_batch_payload() {
    let batch = MetricBatch::builder()
        .common_attributes(attrs!["host" => "a"])
        .build();
    batch.record_count("errors", 2.0, [("code", 500)]).await;
    batch.record_count("errors", 3.0, [("code", 500)]).await;
    batch.record_summary("latency", 1.0, ()).await;
    batch.record_summary("latency", 2.0, ()).await;
    tokio::time::advance(Duration::from_millis(5000)).await;
    batch
        .record_gauge("temperature", 78.6, [("units", "F")])
        .await;

    let (metrics, common) = batch.flush().await;
    let ts = common.timestamp_ms().expect("interval start");
    assert_eq!(common.interval_ms(), Some(5000));
    let gauge_ts = metrics
        .iter()
        .find(|m| m.name() == "temperature")
        .and_then(Metric::timestamp_ms)
        .expect("gauge has its own timestamp");
    assert_eq!(
        gauge_ts,
        ts + 5000,
        "gauge timestamped when set, on the batch's clock"
    );

    let mut payload = wire::<Metrics>(&metrics, &common).await;
    let items = payload[0]["metrics"].as_array_mut().unwrap();
    items.sort_by_key(|m| m["name"].as_str().unwrap().to_owned());
    assert_eq!(
        payload,
        json!([{"common": {"timestamp": ts, "interval.ms": 5000,
                           "attributes": {"host": "a", "instrumentation.provider": "newRelic", "collector.name": "newrelic-telemetry", "collector.version": VERSION}},
                "metrics": [
                    {"name": "errors", "type": "count", "value": 5.0, "attributes": {"code": 500}},
                    {"name": "latency", "type": "summary",
                     "value": {"count": 2, "sum": 3.0, "min": 1.0, "max": 2.0}},
                    {"name": "temperature", "type": "gauge", "value": 78.6,
                     "timestamp": gauge_ts, "attributes": {"units": "F"}}]}])
    );
}

#[tokio::test]
async fn flushed_log_and_span_batches_carry_a_common_block() {
    let logs = LogBatch::builder()
        .common_attributes(attrs!["service.name" => "shop"])
        .build();
    // The Log API drops logs older than 48 hours, so the batch takes only
    // recent ones: an hour ago.
    let recent = std::time::SystemTime::now() - Duration::from_secs(3600);
    let recent_ms = recent
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    logs.record(Log::new("hello").with_timestamp(recent)).await;
    let (items, common) = logs.flush().await;
    assert_eq!(
        wire::<Logs>(&items, &common).await,
        json!([{"common": {"attributes": {"service.name": "shop", "instrumentation.provider": "newRelic", "collector.name": "newrelic-telemetry", "collector.version": VERSION}},
                "logs": [{"timestamp": recent_ms, "message": "hello"}]}])
    );

    let spans = SpanBatch::new();
    let span = Span::new("op")
        .with_id("1")
        .with_trace_id("2")
        .with_timestamp(at(T0));
    spans.record(span).await;
    let (items, common) = spans.flush().await;
    assert_eq!(
        wire::<Spans>(&items, &common).await,
        json!([{"common": {"attributes": {"instrumentation.provider": "newRelic", "collector.name": "newrelic-telemetry", "collector.version": VERSION}},
                "spans": [{"id": "1", "trace.id": "2", "timestamp": T0, "attributes": {"name": "op"}}]}])
    );
}

#[tokio::test]
async fn flushed_event_batch_merges_its_common_attributes() {
    let events = EventBatch::builder()
        .common_attributes(attrs!["app" => "shop", "region" => "eu"])
        .build();
    events
        .record(
            Event::new("Login")
                .with_timestamp(at(T0))
                .with_attribute("region", "us"),
        )
        .await;
    let (items, common) = events.flush().await;
    assert_eq!(
        wire::<Events>(&items, &common).await,
        json!([{"eventType": "Login", "timestamp": T0, "region": "us", "app": "shop",
                "instrumentation.provider": "newRelic", "collector.name": "newrelic-telemetry", "collector.version": VERSION}])
    );
}

#[tokio::test]
async fn empty_flushes_are_empty() {
    let (metrics, common) = MetricBatch::new().flush().await;
    assert!(metrics.is_empty());
    assert!(common.interval_ms().is_some());
    let (events, _) = EventBatch::new().flush().await;
    assert!(events.is_empty());
}

#[tokio::test]
async fn payloads_of_many_chunks_are_encoded_whole_and_in_order() {
    let n = 2_500; // more than two encoding chunks
    let metrics: Vec<Metric> = (0..n)
        .map(|i| CountMetric::new(format!("m{i}"), i as f64, Duration::from_secs(1)).into())
        .collect();
    let common = Common::new().with_attributes(attrs!["host" => "a"]);
    let payload = wire::<Metrics>(&metrics, &common).await;
    let items = payload[0]["metrics"].as_array().unwrap();
    assert_eq!(items.len(), n);
    assert!(
        items
            .iter()
            .enumerate()
            .all(|(i, m)| m["name"] == format!("m{i}"))
    );
    assert_eq!(payload[0]["common"]["attributes"]["host"], "a");
    assert_eq!(
        serde_json::to_value(&metrics).unwrap(),
        payload[0]["metrics"]
    );

    let events: Vec<Event> = (0..n)
        .map(|i| Event::new("E").with_attribute("i", i as i64))
        .collect();
    let payload = wire::<Events>(&events, &common).await;
    let items = payload.as_array().unwrap();
    assert_eq!(items.len(), n);
    assert!(
        items
            .iter()
            .enumerate()
            .all(|(i, e)| e["i"] == i as i64 && e["host"] == "a")
    );

    assert_eq!(
        wire::<Logs>(&[], &Common::new()).await,
        json!([{"common": {"attributes": {"instrumentation.provider": "newRelic", "collector.name": "newrelic-telemetry", "collector.version": VERSION}}, "logs": []}])
    );
    assert_eq!(wire::<Events>(&[], &Common::new()).await, json!([]));
}
