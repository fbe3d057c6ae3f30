//! The `metrics` facade recorder, end to end on a loopback ingest server:
//! counters sent as the increase per interval, gauges as their last value,
//! histograms as distributions (or, when asked, summaries), labels as
//! attributes; refusals counted; the global recorder installed once.

use std::time::Duration;

use newrelic_telemetry::batch::HistogramKind;
use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::{Api, Telemetry, TelemetryBuilder};
use serde_json::Value as Json;

mod support;
use support::server;

const INTERVAL: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(10);

fn builder(server: &TestIngestServer) -> TelemetryBuilder {
    server.telemetry_builder().harvest_interval(INTERVAL)
}

/// The metrics of the `n`th Metric API request the server received.
fn request_metrics(server: &TestIngestServer, n: usize) -> Vec<Json> {
    let requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.api == Some(Api::Metric))
        .collect();
    let body = &requests[n].body;
    body[0]["metrics"].as_array().cloned().unwrap_or_default()
}

fn find<'a>(metrics: &'a [Json], name: &str) -> &'a Json {
    metrics
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {metrics:?}"))
}

#[tokio::test(start_paused = true)]
async fn three_kinds_across_two_intervals() {
    let server = server().await;
    let telemetry = builder(&server)
        .service_name("facade")
        .histogram_kind(HistogramKind::Summary)
        .build()
        .unwrap();
    let recorder = telemetry.metrics_recorder();

    // Interval 1.
    metrics::with_local_recorder(&recorder, || {
        let jobs = metrics::counter!("jobs", "queue" => "mail");
        jobs.increment(2);
        jobs.increment(3);
        metrics::counter!("bytes.total").absolute(100);
        metrics::gauge!("depth", "queue" => "mail").set(4.0);
        metrics::gauge!("depth", "queue" => "mail").increment(3.0);
        metrics::histogram!("job.ms").record(10.0);
        metrics::histogram!("job.ms").record(30.0);
    });
    assert!(server.wait_for_requests(1, WAIT).await);
    let first = request_metrics(&server, 0);
    assert_eq!(first.len(), 4, "{first:?}");
    let jobs = find(&first, "jobs");
    assert_eq!(
        (jobs["type"].as_str(), jobs["value"].as_f64()),
        (Some("count"), Some(5.0))
    );
    assert_eq!(jobs["attributes"]["queue"], "mail");
    assert_eq!(
        find(&first, "bytes.total")["value"],
        100.0,
        "the first total whole"
    );
    let depth = find(&first, "depth");
    assert_eq!(
        (depth["type"].as_str(), depth["value"].as_f64()),
        (Some("gauge"), Some(7.0))
    );
    let job_ms = find(&first, "job.ms");
    assert_eq!(job_ms["type"], "summary");
    assert_eq!(
        job_ms["value"],
        serde_json::json!({"count": 2, "sum": 40.0, "min": 10.0, "max": 30.0})
    );
    let common = &server.requests()[0].body[0]["common"];
    assert_eq!(common["interval.ms"], 5_000);
    assert_eq!(common["attributes"]["service.name"], "facade");

    // Interval 2: counts restart, totals are diffed, the gauge goes on from
    // where it was, the summary holds only the new observations.
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("jobs", "queue" => "mail").increment(1);
        metrics::counter!("bytes.total").absolute(150);
        metrics::counter!("bytes.total").absolute(120); // lower: ignored
        metrics::gauge!("depth", "queue" => "mail").decrement(2.0);
        metrics::histogram!("job.ms").record(5.0);
    });
    assert!(server.wait_for_requests(2, WAIT).await);
    let second = request_metrics(&server, 1);
    assert_eq!(second.len(), 4, "{second:?}");
    assert_eq!(find(&second, "jobs")["value"], 1.0);
    assert_eq!(find(&second, "bytes.total")["value"], 50.0);
    assert_eq!(find(&second, "depth")["value"], 5.0);
    assert_eq!(
        find(&second, "job.ms")["value"],
        serde_json::json!({"count": 1, "sum": 5.0, "min": 5.0, "max": 5.0})
    );

    // Interval 3: nothing written. Only the gauge goes out again, with its
    // last value at the harvest's time (as an exporter that is scraped shows
    // a gauge); the series are all still bound.
    assert!(server.wait_for_requests(3, WAIT).await);
    let third = request_metrics(&server, 2);
    assert_eq!(third.len(), 1, "{third:?}");
    let again = find(&third, "depth");
    assert_eq!(again["value"], 5.0);
    let set_at = find(&second, "depth")["timestamp"].as_u64().unwrap();
    assert!(again["timestamp"].as_u64().unwrap() > set_at, "{again:?}");
    assert_eq!(telemetry.metrics().series_count(), 4);

    // The last harvest sends it once more.
    let report = telemetry.shutdown().await;
    assert_eq!(report.metrics.delivery.items_sent, 10);
    assert_eq!(report.items_refused(), 0);
    let last = request_metrics(&server, 3);
    assert_eq!(find(&last, "depth")["value"], 5.0);
}

#[tokio::test(flavor = "current_thread")]
async fn labels_are_attributes_in_any_order_and_refusals_are_counted() {
    let server = server().await;
    let telemetry = builder(&server).build().unwrap();
    let recorder = telemetry.metrics_recorder();
    metrics::with_local_recorder(&recorder, || {
        // Two spellings of one label set: one series.
        metrics::counter!("hits", "page" => "/", "status" => "200").increment(1);
        metrics::counter!("hits", "status" => "200", "page" => "/").increment(2);
        // `value` is a reserved attribute of a count: refused once, when
        // registered; its recordings are ignored.
        let bad = metrics::counter!("misses", "value" => "x");
        bad.increment(1);
        bad.increment(1);
        // Not a finite value: refused by the handle, and counted.
        metrics::gauge!("ratio").set(f64::NAN);
        metrics::histogram!("size").record(f64::INFINITY);
        // Descriptions and units are ignored.
        metrics::describe_counter!("hits", metrics::Unit::Count, "page hits");
    });
    let stats = telemetry.metrics().record_stats();
    assert_eq!(stats.items_dropped_invalid, 3, "{stats:?}");

    let report = telemetry.shutdown().await;
    let metrics = server.metrics();
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    assert_eq!(metrics[0]["name"], "hits");
    assert_eq!(metrics[0]["value"], 3.0);
    assert_eq!(metrics[0]["attributes"]["page"], "/");
    assert_eq!(metrics[0]["attributes"]["status"], "200");
    assert_eq!(report.items_refused(), 3);

    // After shutdown: ignored and counted, never a panic.
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("hits", "page" => "/", "status" => "200").increment(1);
        metrics::counter!("new.after.shutdown").increment(1);
    });
    assert_eq!(telemetry.metrics().record_stats().items_dropped_closed, 2);
}

#[tokio::test(flavor = "current_thread")]
async fn every_call_gives_the_same_recorder() {
    let server = server().await;
    let telemetry = builder(&server).build().unwrap();
    let (a, b) = (
        telemetry.metrics_recorder(),
        telemetry.clone().metrics_recorder(),
    );
    metrics::with_local_recorder(&a, || metrics::counter!("total").absolute(10));
    // The same total: 10 -> 15 adds 5, not 15.
    metrics::with_local_recorder(&b, || metrics::counter!("total").absolute(15));
    telemetry.shutdown().await;
    assert_eq!(server.metrics()[0]["value"], 15.0);
}

/// The only test of this binary that sets the process's global recorder.
#[tokio::test(flavor = "current_thread")]
async fn the_global_recorder_is_installed_once() {
    let server = server().await;
    let telemetry = builder(&server).build().unwrap();
    telemetry.install_metrics_recorder().unwrap();

    let other: Telemetry = builder(&server).build().unwrap();
    let err = other.install_metrics_recorder().unwrap_err();
    assert!(err.to_string().contains("already installed"), "{err}");

    // From another thread, with no local recorder: the global one.
    std::thread::spawn(|| metrics::counter!("global.hits").increment(4))
        .join()
        .unwrap();
    telemetry.shutdown().await;
    other.shutdown().await;
    let metrics = server.metrics();
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    assert_eq!(metrics[0]["name"], "global.hits");
    assert_eq!(metrics[0]["value"], 4.0);
}

#[tokio::test(start_paused = true)]
async fn histograms_are_distributions_per_interval_by_default() {
    let server = server().await;
    let telemetry = builder(&server).service_name("facade").build().unwrap();
    let recorder = telemetry.metrics_recorder();
    metrics::with_local_recorder(&recorder, || {
        for ms in 1..=100 {
            metrics::histogram!("job.ms", "queue" => "mail").record(f64::from(ms));
        }
        metrics::histogram!("job.ms", "queue" => "mail").record_many(1000.0, 10);
    });
    // Interval 2: only the new values.
    assert!(support::eventually(WAIT, || server.distributions().len() == 1).await);
    metrics::with_local_recorder(&recorder, || {
        metrics::histogram!("job.ms", "queue" => "mail").record(7.0);
    });
    let report = telemetry.shutdown().await;
    let received = server.distributions();
    assert_eq!(received.len(), 2, "{received:?}");
    let (first, second) = (&received[0].distribution, &received[1].distribution);
    assert_eq!(
        (first.count(), first.sum(), first.max()),
        (110, 15_050.0, Some(1000.0))
    );
    // p50 of 1..=100 and ten 1000s: the 55th value, 55.
    let p50 = first.quantile(0.5).unwrap();
    assert!((p50 - 55.0).abs() / 55.0 < 0.03, "{p50}");
    assert_eq!((second.count(), second.min()), (1, Some(7.0)));
    assert_eq!(received[0].attributes.get("queue"), Some(&"mail".into()));
    assert_eq!(
        received[0].resource.get("service.name"),
        Some(&"facade".into())
    );
    assert_eq!(report.distributions.map(|r| r.delivery.items_sent), Some(2));
    // Nothing went to the Metric API as a summary.
    assert!(server.metrics().iter().all(|m| m["name"] != "job.ms"));
}
