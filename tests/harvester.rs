//! The harvester: one send per interval, nothing for an empty batch, the last
//! data sent on cancellation, prompt shutdown, on both runtime flavours.

use std::sync::Arc;
use std::time::Duration;

use newrelic_telemetry::batch::EARLY_HARVEST_BYTES;
use newrelic_telemetry::client::{Events, Logs, Metrics};
use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::{
    Api, Event, EventBatch, Harvester, Log, LogBatch, MetricBatch, MetricClient,
};
use tokio_util::sync::CancellationToken;

mod support;
use support::{client, current_thread, on_demand_harvester, server};

const WAIT: Duration = Duration::from_secs(10);

async fn metric_setup() -> (TestIngestServer, Arc<MetricBatch>, MetricClient) {
    let server = server().await;
    let client = client::<Metrics>(&server);
    (server, Arc::new(MetricBatch::new()), client)
}

#[tokio::test(start_paused = true)]
async fn sends_once_per_interval_and_skips_empty_batches() {
    let (server, batch, client) = metric_setup().await;
    let harvester = Harvester::builder(batch.clone(), client)
        .harvest_interval(Duration::from_secs(5))
        .spawn();

    batch.record_count("ticks", 1.0, ()).await;
    tokio::time::sleep(Duration::from_millis(4900)).await;
    assert!(
        server.requests().is_empty(),
        "nothing before the first tick"
    );
    assert!(
        server
            .wait_for_requests(1, Duration::from_millis(200))
            .await
    );

    // Two empty intervals: no request (waking just before the third tick).
    tokio::time::sleep(Duration::from_millis(9900)).await;
    assert_eq!(server.requests().len(), 1);

    batch.record_count("ticks", 2.0, ()).await;
    assert!(server.wait_for_requests(2, Duration::from_secs(5)).await);
    assert_eq!(server.requests().len(), 2);

    let report = harvester.shutdown().await;
    assert!(report.completed && !report.deadline_exceeded);
    assert_eq!(report.delivery.items_sent, 2);
    assert_eq!(report.harvests, 4, "3 ticks and the final flush");
    let values: Vec<_> = server
        .metrics()
        .iter()
        .map(|m| m["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [1.0, 2.0]);
    // Each payload carries the interval the batch covered: every flush, even
    // an empty one, starts a new interval.
    assert_eq!(server.metrics()[1]["interval.ms"], 5_000);
}

#[tokio::test(start_paused = true)]
async fn cancellation_sends_the_last_data_and_returns_promptly() {
    let (server, batch, client) = metric_setup().await;
    let token = CancellationToken::new();
    let harvester = Harvester::builder(batch.clone(), client)
        .harvest_interval(Duration::from_secs(60))
        .cancellation_token(token.clone())
        .spawn();
    batch.record_count("last", 7.0, ()).await;

    let started = tokio::time::Instant::now();
    token.cancel();
    let report = harvester.join().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no waiting for the next tick"
    );
    assert_eq!(report.delivery.items_sent, 1);
    assert_eq!(server.metrics()[0]["value"], 7.0);
    assert!(harvester.cancellation_token().is_cancelled());
}

#[tokio::test]
async fn shutdown_twice_is_harmless_and_returns_the_same_report() {
    let (server, batch, client) = metric_setup().await;
    let harvester = Harvester::spawn(batch.clone(), client);
    batch.record_count("c", 1.0, ()).await;
    let first = harvester.shutdown().await;
    let second = harvester.shutdown().await;
    assert_eq!(first, second);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn works_on_a_current_thread_runtime() {
    current_thread().block_on(async {
        let server = server().await;
        let events = Arc::new(EventBatch::new());
        let harvester = Harvester::builder(events.clone(), client::<Events>(&server))
            .harvest_interval(Duration::from_millis(20))
            .spawn();
        events.record(Event::new("First")).await;
        assert!(
            server.wait_for_requests(1, WAIT).await,
            "harvested on a tick"
        );
        events.record(Event::new("Last")).await;
        let report = harvester.shutdown().await;
        assert!(report.completed);
        let types: Vec<_> = server
            .events()
            .iter()
            .map(|e| e["eventType"].clone())
            .collect();
        assert_eq!(types, ["First", "Last"]);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_stops_several_harvesters() {
    let server = server().await;
    let token = CancellationToken::new();
    let metrics = Arc::new(MetricBatch::new());
    let events = Arc::new(EventBatch::new());
    let h1 = Harvester::builder(metrics.clone(), client::<Metrics>(&server))
        .cancellation_token(token.clone())
        .spawn();
    let h2 = Harvester::builder(events.clone(), client::<Events>(&server))
        .cancellation_token(token.clone())
        .spawn();
    metrics.record_gauge("g", 1.0, ()).await;
    events.record(Event::new("E")).await;
    token.cancel();
    let (r1, r2) = tokio::join!(h1.join(), h2.join());
    assert_eq!((r1.api, r1.delivery.items_sent), (Api::Metric, 1));
    assert_eq!((r2.api, r2.delivery.items_sent), (Api::Event, 1));
}

#[tokio::test]
async fn dropping_the_handle_flushes_in_the_background() {
    let (server, batch, client) = metric_setup().await;
    let harvester = on_demand_harvester(batch.clone(), client).spawn();
    batch.record_count("c", 1.0, ()).await;
    drop(harvester);
    assert!(server.wait_for_requests(1, WAIT).await);
}

#[tokio::test]
async fn harvest_now_and_early_harvest_when_a_batch_fills() {
    let server = server().await;
    let events = Arc::new(EventBatch::builder().capacity(10).build());
    let harvester = on_demand_harvester(events.clone(), client::<Events>(&server)).spawn();

    events.record(Event::new("Now")).await;
    harvester.harvest_now();
    assert!(server.wait_for_requests(1, WAIT).await);

    // Half full asks for an early harvest: no tick needed.
    for _ in 0..5 {
        events.record(Event::new("Fill")).await;
    }
    assert!(server.wait_for_requests(2, WAIT).await);
    let report = harvester.shutdown().await;
    assert_eq!(report.delivery.items_sent, 6);
    assert_eq!(report.record.items_dropped_buffer_full, 0);
}

/// A batch of few but large items asks for a harvest once it holds 1 MiB,
/// whatever its budget: with the smallest (4 MiB, of which 2 MB are kept for
/// sending, so about 2.19 MB to record) that is under half its room, so it
/// never refuses for want of it; with the default (16 MiB) it is long before
/// half its room (about 7 MB), while its items are still in cache.
#[tokio::test]
async fn a_batch_asks_for_a_harvest_at_one_mebibyte_whatever_its_budget() {
    for budget in [0, newrelic_telemetry::batch::DEFAULT_MEMORY_BUDGET] {
        let server = server().await;
        let logs = Arc::new(LogBatch::builder().memory_budget(budget).build());
        assert!(logs.memory().record_limit_bytes / 2 > EARLY_HARVEST_BYTES);
        let harvester = on_demand_harvester(logs.clone(), client::<Logs>(&server)).spawn();

        // Few items (far from half the capacity of 50,000), but large ones.
        let message = "m".repeat(100_000);
        let mut recorded = 0;
        while logs.memory().held_bytes < EARLY_HARVEST_BYTES - 120_000 {
            logs.record(Log::new(message.clone())).await;
            recorded += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            server.requests().len(),
            0,
            "budget {budget}: below 1 MiB, no harvest yet"
        );

        logs.record(Log::new(message.clone())).await;
        logs.record(Log::new(message)).await;
        assert!(
            server.wait_for_requests(1, WAIT).await,
            "budget {budget}: 1 MiB, a harvest"
        );
        let report = harvester.shutdown().await;
        assert_eq!(report.delivery.items_sent, recorded + 2);
        assert_eq!(report.record.items_dropped_over_budget, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_does_not_delay_harvests() {
    let (server, batch, client) = metric_setup().await;
    // The first request hangs for 12 s (within the 15 s request timeout).
    server.respond_with(
        newrelic_telemetry::test_util::ScriptedResponse::status(202)
            .with_delay(Duration::from_secs(12)),
    );
    let harvester = Harvester::builder(batch.clone(), client)
        .harvest_interval(Duration::from_secs(5))
        .spawn();
    // Record between ticks (at 1, 6 and 11 s), one series per interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        batch.record_count("c", 1.0, [("i", i)]).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // Three harvests happened while the first payload was in flight; they
    // went out one after another once it was answered.
    let arrived = server.wait_for_requests(3, Duration::from_secs(30)).await;
    let stats = harvester.stats();
    assert!(
        arrived,
        "{:?} {stats:?}",
        server
            .requests()
            .iter()
            .map(|r| (r.status, r.body.clone()))
            .collect::<Vec<_>>()
    );
    let report = harvester.shutdown().await;
    assert_eq!(report.delivery.items_sent, 3);
    assert_eq!(report.delivery.items_dropped(), 0);
}

#[tokio::test]
async fn recording_after_shutdown_is_refused_and_counted_not_lost() {
    let server = server().await;
    let events = Arc::new(EventBatch::new());
    let harvester = Harvester::spawn(events.clone(), client::<Events>(&server));
    events.record(Event::new("Before")).await;
    let report = harvester.shutdown().await;
    assert_eq!(report.delivery.items_sent, 1);

    assert_eq!(
        events.try_record(Event::new("After")).await.unwrap_err(),
        newrelic_telemetry::RecordError::Closed
    );
    assert_eq!(events.record_stats().items_dropped_closed, 1);
}

#[tokio::test]
async fn a_metric_batch_half_way_to_its_series_limit_asks_for_a_harvest() {
    let server = server().await;
    let batch = Arc::new(MetricBatch::builder().max_series(4).build());
    let harvester = on_demand_harvester(batch.clone(), client::<Metrics>(&server)).spawn();
    batch.record_count("a", 1.0, ()).await;
    batch.record_count("b", 1.0, ()).await;
    assert!(
        server.wait_for_requests(1, WAIT).await,
        "harvested with no tick"
    );
    harvester.shutdown().await;
    assert_eq!(server.metrics().len(), 2);
}
