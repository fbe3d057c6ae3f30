//! Host safety: what the SDK does to the process it runs in when the ingest
//! side misbehaves. A transient 413 storm must not leave the client unable to
//! send; an outage must not let the pipeline's memory grow past its budget;
//! shutdown must return by its deadline however large the backlog; and no
//! field reaches the wire longer (or stranger) than the APIs take.
//!
//! Every test runs against the loopback [`TestIngestServer`] and checks the
//! SDK's own accounting item by item: what was recorded is exactly what was
//! sent plus what the counters report dropped.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use newrelic_telemetry::client::{DropReason, Events, Logs, Metrics, PayloadReport, Spans};
use newrelic_telemetry::harvester::SHUTDOWN_SLACK;
use newrelic_telemetry::test_util::ScriptedResponse;
use newrelic_telemetry::{
    Event, EventBatch, GaugeMetric, Log, LogBatch, LogClient, MetricBatch, RecordError,
    RetryPolicy, Span, Value,
};
use serde_json::Value as Json;

mod support;
use support::{
    HOUR, LOOSE_FACTOR, RefusingPort, accepted_seqs, client, client_builder, eventually,
    loose_shutdown_bound, noise, on_demand_harvester, seq_event, server,
};

const WAIT: Duration = Duration::from_secs(10);

/// Twenty distinct 4,000-character values, shared by every large log: each
/// log still counts (and encodes) ~84 KB, but the test process holds only
/// these 80 KB of text however many logs are recorded. The repeats sit ~84 KB
/// apart in a payload, beyond gzip's 32 KB window, so they do not compress
/// away.
fn pads() -> Vec<Arc<str>> {
    (0..20).map(|i| Arc::from(noise(1000 + i, 4000))).collect()
}

/// A log of ~84 KB: twenty 4,000-character attributes and a `seq`.
fn big_log(seq: i64, pads: &[Arc<str>]) -> Log {
    pads.iter().enumerate().fold(
        Log::new(format!("big {seq}")).with_attribute("seq", seq),
        |log, (i, pad)| log.with_attribute(format!("pad{i}"), Value::from(pad.clone())),
    )
}

fn small_log(seq: i64) -> Log {
    Log::new(format!("small {seq}"))
        .with_level("INFO")
        .with_attribute("seq", seq)
}

/// The `seq`s of the items in a request body (any API, accepted or not).
fn seqs_in(body: &Json) -> Vec<i64> {
    let items: Vec<&Json> = match body.as_array() {
        // Events: an array of items. Logs and spans: an array of blocks.
        Some(array) => array
            .iter()
            .flat_map(|v| match v.get("logs").and_then(Json::as_array) {
                Some(logs) => logs.iter().collect::<Vec<_>>(),
                None => vec![v],
            })
            .collect(),
        None => Vec::new(),
    };
    items
        .iter()
        .filter_map(|item| {
            item.get("seq")
                .or_else(|| item.get("attributes").and_then(|a| a.get("seq")))
                .and_then(Json::as_i64)
        })
        .collect()
}

// --- 1. a transient 413 does not poison the client -------------------------

#[tokio::test(start_paused = true)]
async fn a_transient_413_storm_does_not_poison_the_client() {
    let server = server().await;
    // Seven 413s in a row: the 8-event payload, then its halves and quarters
    // down to single events, three of which are dropped.
    server.respond_n(7, ScriptedResponse::status(413));
    let events = Arc::new(EventBatch::new());
    let harvester = on_demand_harvester(events.clone(), client::<Events>(&server)).spawn();

    for seq in 0..8 {
        events.record(seq_event(seq)).await;
    }
    harvester.harvest_now();
    let settled = eventually(WAIT, || {
        let d = harvester.stats();
        d.items_sent + d.items_dropped() == 8
    })
    .await;
    assert!(settled, "the storm settles: {:?}", harvester.stats());
    let storm = harvester.stats();
    assert_eq!(storm.items_dropped_too_large, 3, "{storm:?}");

    // The storm is over: the next 100 events must all go through.
    for seq in 8..108 {
        events.record(seq_event(seq)).await;
    }
    let report = harvester.shutdown().await;
    let d = report.delivery;
    assert!(report.completed && !report.deadline_exceeded);

    let accepted = accepted_seqs(&server);
    let unique: BTreeSet<i64> = accepted.iter().copied().collect();
    assert_eq!(unique.len(), accepted.len(), "nothing accepted twice");
    assert!(
        (8..108).all(|seq| unique.contains(&seq)),
        "every event after the storm is accepted; missing: {:?}",
        (8..108).filter(|s| !unique.contains(s)).collect::<Vec<_>>()
    );
    assert_eq!(accepted.len() as u64, d.items_sent, "{d:?}");
    assert_eq!(d.items_sent + d.items_dropped(), 108, "{d:?}");
    assert_eq!(d.items_dropped(), d.items_dropped_too_large, "{d:?}");
    assert_eq!(d.items_dropped_too_large, 3, "{d:?}");

    // Each dropped event was sent alone and answered 413 before it was
    // dropped: a 413 on one item says nothing of the others.
    let requests = server.requests();
    for seq in (0..108).filter(|s| !unique.contains(s)) {
        assert!(
            requests
                .iter()
                .any(|r| r.status == 413 && seqs_in(&r.body) == [seq]),
            "event {seq} was dropped without being sent alone"
        );
    }
    // And the 100 later events needed no split: one request after the storm.
    let after_storm: Vec<_> = requests.iter().skip(9).collect();
    assert_eq!(after_storm.len(), 1, "{} requests", after_storm.len());
    assert_eq!(seqs_in(&after_storm[0].body), (8..108).collect::<Vec<_>>());
    assert_eq!(report.memory.held_items, 0);
}

// --- 2. memory stays within the budget during an outage --------------------

#[tokio::test(start_paused = true)]
async fn memory_stays_within_the_budget_during_an_outage() {
    const BUDGET: usize = 4 * 1024 * 1024;
    let server = server().await;
    server.respond_n(1_000_000, ScriptedResponse::status(503));
    let logs = Arc::new(LogBatch::builder().memory_budget(BUDGET).build());
    // Each payload is tried three times over 0.6 s (tokio's clock) and then
    // dropped, so payloads reach the wire one after another while the queue
    // overflows behind them.
    let client = client_builder::<Logs>(&server)
        .retry_policy(
            RetryPolicy::default()
                .with_max_retries(2)
                .with_backoff_factor(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    let harvester = on_demand_harvester(logs.clone(), client)
        .shutdown_timeout(Duration::from_secs(5))
        .spawn();
    let pads = pads();

    let check = |at: &str| {
        let m = harvester.memory();
        assert_eq!(m.budget_bytes, BUDGET);
        assert!(m.held_bytes <= BUDGET, "{at}: {m:?}");
        assert!(m.peak_bytes <= BUDGET, "{at}: {m:?}");
    };
    let (mut recorded, mut refused) = (0u64, 0u64);
    let mut first_refused: Option<i64> = None;
    let mut recorded_after_refusal = 0u64;
    let mut seq = 0i64;
    for burst in 0..16 {
        for i in 0..30 {
            let log = if i % 3 == 2 {
                small_log(seq)
            } else {
                big_log(seq, &pads)
            };
            match logs.try_record(log).await {
                Ok(()) => {
                    recorded += 1;
                    if first_refused.is_some() {
                        recorded_after_refusal += 1;
                    }
                }
                Err(RecordError::MemoryBudgetFull { budget_bytes }) => {
                    assert_eq!(budget_bytes, BUDGET);
                    refused += 1;
                    first_refused.get_or_insert(seq);
                }
                Err(e) => panic!("log {seq}: unexpected {e}"),
            }
            seq += 1;
            check(&format!("burst {burst}, log {i}"));
        }
        // Let the harvester harvest, encode and try to send.
        tokio::time::sleep(Duration::from_millis(100)).await;
        check(&format!("after burst {burst}"));
    }
    let first_refused = first_refused.expect("the budget refused some logs");
    let during = harvester.stats();
    let memory = harvester.memory();
    let report = harvester.shutdown().await;
    let d = report.delivery;
    println!(
        "recorded {recorded}, refused {refused}, peak {} of {} bytes; {d:?}",
        report.memory.peak_bytes, report.memory.budget_bytes
    );

    assert!(refused > 0 && recorded_after_refusal > 0);
    assert_eq!(report.record.items_dropped_over_budget, refused);
    assert!(
        during.items_dropped_queue_full > 0,
        "the queue overflowed during the outage: {during:?}"
    );
    assert!(memory.peak_bytes <= BUDGET, "{memory:?}");
    assert!(report.memory.peak_bytes <= BUDGET, "{:?}", report.memory);
    // The budget was really approached (the test is not vacuous).
    assert!(report.memory.peak_bytes > BUDGET / 2, "{:?}", report.memory);
    // Data recorded after the first refusal reached the wire: the pipeline
    // kept flowing rather than freezing on its oldest data.
    let newest_sent = server
        .requests()
        .iter()
        .flat_map(|r| seqs_in(&r.body))
        .max()
        .unwrap_or(-1);
    assert!(
        newest_sent > first_refused,
        "newest on the wire {newest_sent}, first refusal {first_refused}"
    );
    // Exact accounting: nothing was accepted, everything recorded is counted
    // dropped once, and the pipeline holds nothing at the end.
    assert_eq!(d.items_sent, 0);
    assert_eq!(d.items_sent + d.items_dropped(), recorded, "{d:?}");
    assert_eq!(
        d.items_dropped(),
        d.items_dropped_queue_full + d.items_dropped_retries_exhausted + d.items_dropped_shutdown,
        "{d:?}"
    );
    assert_eq!(report.memory.held_items, 0, "{:?}", report.memory);
    assert_eq!(report.memory.held_bytes, 0, "{:?}", report.memory);
}

// --- 3 and 5. the shutdown deadline covers a big backlog -------------------

const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

/// A backlog of ~76 MB of logs, a payload in flight that the server never
/// answers, and a 500 ms shutdown deadline: shutdown returns in time (in real
/// time, within 3x the deadline plus the documented slack, for a loaded
/// machine) and counts every item.
async fn shutdown_meets_its_deadline_with_a_large_backlog(flavor: &str) {
    let server = server().await;
    server.respond_n(
        1000,
        ScriptedResponse::status(202).with_delay(Duration::from_secs(3600)),
    );
    let logs = Arc::new(LogBatch::builder().memory_budget(256 << 20).build());
    let never_encoded = Arc::new(AtomicUsize::new(0));
    let client = client_builder::<Logs>(&server)
        .on_drop({
            let never_encoded = never_encoded.clone();
            move |report: &PayloadReport| {
                if report.request_id().is_none() {
                    never_encoded.fetch_add(report.items(), Ordering::Relaxed);
                }
            }
        })
        .build()
        .unwrap();
    let harvester = on_demand_harvester(logs.clone(), client)
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .spawn();

    // A first payload goes out and hangs.
    for seq in 0..5 {
        logs.record(small_log(seq)).await;
    }
    harvester.harvest_now();
    assert!(server.wait_for_requests(1, WAIT).await);

    // The backlog.
    let pads = pads();
    let mut recorded = 5u64;
    for seq in 5..905 {
        logs.record(big_log(seq, &pads)).await;
        recorded += 1;
    }
    let held = harvester.memory();
    assert!(held.held_bytes > 60_000_000, "{held:?}");

    let started = std::time::Instant::now();
    let report = harvester.shutdown().await;
    let took = started.elapsed();
    let overrun = took.saturating_sub(SHUTDOWN_TIMEOUT);
    let d = report.delivery;
    println!(
        "{flavor}: shutdown took {took:?} (deadline {SHUTDOWN_TIMEOUT:?}, overrun {overrun:?}); \
         {} of {recorded} items never encoded; {d:?}",
        never_encoded.load(Ordering::Relaxed)
    );
    assert!(
        took <= loose_shutdown_bound(SHUTDOWN_TIMEOUT),
        "{flavor}: shutdown took {took:?}, over {LOOSE_FACTOR} x ({SHUTDOWN_TIMEOUT:?} + \
         {SHUTDOWN_SLACK:?})"
    );
    assert!(
        took >= SHUTDOWN_TIMEOUT,
        "{flavor}: it waited for the deadline"
    );
    assert!(report.deadline_exceeded && report.completed);
    assert_eq!(d.items_sent, 0);
    assert_eq!(d.items_sent + d.items_dropped(), recorded, "{d:?}");
    assert_eq!(d.items_dropped_shutdown, recorded, "{d:?}");
    assert_eq!(report.memory.held_items, 0, "{:?}", report.memory);
    // Early harvests (every 1 MiB) were encoding while the backlog grew, so
    // part of it was still in the batch at the deadline: let go of too.
    assert_eq!(report.memory.held_bytes, 0, "{:?}", report.memory);
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_meets_its_deadline_with_a_large_backlog_on_current_thread() {
    shutdown_meets_its_deadline_with_a_large_backlog("current_thread").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_meets_its_deadline_with_a_large_backlog_on_multi_thread() {
    shutdown_meets_its_deadline_with_a_large_backlog("multi_thread").await;
}

// --- 4. every field bounded on the wire ------------------------------------

fn after_epoch(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn before_epoch() -> SystemTime {
    UNIX_EPOCH - Duration::from_secs(1)
}

fn chars(v: &Json) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

#[tokio::test(start_paused = true)]
async fn every_field_is_bounded_on_the_wire_through_the_batches() {
    let server = server().await;
    let telemetry = server
        .telemetry_builder()
        .harvest_interval(HOUR)
        .build()
        .unwrap();

    // Span names are cut to 4,000 characters (on a character boundary).
    let long_name = "ñ".repeat(10_000);
    telemetry
        .spans()
        .record(Span::new(long_name.clone()).finish())
        .await;
    assert_eq!(telemetry.spans().record_stats().values_truncated, 1);

    // A metric name is an identity: refused whole, not cut.
    let metric_name = "m".repeat(10_000);
    let refused = telemetry
        .metrics()
        .try_record_count(&metric_name, 1.0, ())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            RecordError::NameTooLong {
                chars: 10_000,
                limit: 255,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(telemetry.metrics().record_stats().items_dropped_invalid, 1);
    // A metric recorded and flushed in the same millisecond as its interval
    // began (tokio's clock is paused): interval.ms must still be positive.
    telemetry.metrics().record_count("ok", 1.0, ()).await;

    // Log messages are cut to 32,768 characters.
    telemetry
        .logs()
        .record(Log::new("x".repeat(100_000)).with_attribute("seq", 1))
        .await;
    assert_eq!(telemetry.logs().record_stats().values_truncated, 1);

    // Timestamps past a signed 64-bit count of ms, or before 1970: refused.
    for timestamp in [after_epoch(u64::MAX), before_epoch()] {
        let refused = telemetry
            .events()
            .try_record(Event::new("Odd").with_timestamp(timestamp))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, RecordError::TimestampOutOfRange { .. }),
            "{refused:?}"
        );
    }
    telemetry
        .events()
        .record(Event::new("Fine").with_timestamp(after_epoch(1_700_000_000_000)))
        .await;
    assert_eq!(telemetry.events().record_stats().items_dropped_invalid, 2);

    let report = telemetry.shutdown().await;
    assert_eq!(report.items_sent(), 4, "{report:?}");
    assert_eq!(report.items_dropped(), 0, "{report:?}");
    assert_eq!(report.spans.record.values_truncated, 1);
    assert_eq!(report.logs.record.values_truncated, 1);
    assert_eq!(report.metrics.record.items_dropped_invalid, 1);
    assert_eq!(report.events.record.items_dropped_invalid, 2);

    let spans = server.spans();
    let name = &spans[0]["attributes"]["name"];
    assert_eq!(chars(name), 4000);
    assert!(long_name.starts_with(name.as_str().unwrap()));
    let logs = server.logs();
    assert_eq!(chars(&logs[0]["message"]), 32_768);
    let events = server.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["eventType"], "Fine");
    let metrics = server.metrics();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["name"], "ok");
    assert!(
        metrics[0]["interval.ms"].as_u64().is_some_and(|ms| ms >= 1),
        "{}",
        metrics[0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_flush_in_the_millisecond_its_interval_began_reports_a_positive_interval() {
    let batch = MetricBatch::new();
    batch.record_count("c", 1.0, ()).await;
    let (metrics, common) = batch.flush().await; // no time has passed
    assert_eq!(metrics.len(), 1);
    assert_eq!(common.interval_ms(), Some(1));
    let (_, empty) = batch.flush().await;
    assert_eq!(empty.interval_ms(), Some(1));
}

#[tokio::test]
async fn every_field_is_bounded_on_the_wire_through_the_clients() {
    let server = server().await;
    let dropped: Arc<Mutex<Vec<PayloadReport>>> = Arc::default();
    let keep = |dropped: &Arc<Mutex<Vec<PayloadReport>>>| {
        let dropped = dropped.clone();
        move |report: &PayloadReport| dropped.lock().unwrap().push(report.clone())
    };

    let spans = client::<Spans>(&server);
    spans
        .send(
            Span::new("s".repeat(10_000))
                .with_service_name("v".repeat(10_000))
                .finish(),
        )
        .await
        .unwrap();
    let span = &server.spans()[0];
    assert_eq!(chars(&span["attributes"]["name"]), 4000);
    assert_eq!(chars(&span["attributes"]["service.name"]), 4000);

    // Ids are identities: a 129-character id is refused, not cut.
    let err = spans
        .send(Span::new("s").with_id("i".repeat(129)).finish())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.report().first_drop_reason(),
            Some(DropReason::Invalid(RecordError::SpanIdTooLong { .. }))
        ),
        "{err:?}"
    );
    assert_eq!(spans.stats().items_dropped_invalid, 1);

    let logs = client::<Logs>(&server);
    logs.send(Log::new("é".repeat(100_000))).await.unwrap();
    assert_eq!(chars(&server.logs()[0]["message"]), 32_768);

    let metrics = client_builder::<Metrics>(&server)
        .on_drop(keep(&dropped))
        .build()
        .unwrap();
    let err = metrics
        .send(GaugeMetric::new("m".repeat(10_000), 1.0).into())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.report().first_drop_reason(),
            Some(DropReason::Invalid(RecordError::NameTooLong { .. }))
        ),
        "{err:?}"
    );
    assert_eq!(metrics.stats().items_dropped_invalid, 1);

    let events = client_builder::<Events>(&server)
        .on_drop(keep(&dropped))
        .build()
        .unwrap();
    let err = events
        .send_batch(
            vec![
                Event::new("Odd").with_timestamp(after_epoch(u64::MAX)),
                Event::new("Odd").with_timestamp(after_epoch(i64::MAX as u64 + 1)),
                Event::new("Odd").with_timestamp(before_epoch()),
                Event::new("Fine"),
            ],
            newrelic_telemetry::Common::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.report().items_sent(), 1);
    assert_eq!(err.report().items_dropped(), 3);
    assert!(matches!(
        err.report().first_drop_reason(),
        Some(DropReason::Invalid(RecordError::TimestampOutOfRange { .. }))
    ));
    assert_eq!(events.stats().items_dropped_invalid, 3);
    assert_eq!(server.events().len(), 1);
    assert_eq!(server.events()[0]["eventType"], "Fine");

    // The drops were reported, and no metric request was ever made.
    assert_eq!(dropped.lock().unwrap().len(), 2);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.api != Some(newrelic_telemetry::Api::Metric))
    );
}

// --- the work of sending stays within the budget too ------------------------

/// A 413 on the payload in flight splits it while recording has filled the
/// pipeline to its record limit: the split (the payload and its two halves)
/// fits in the room kept for the work of sending.
#[tokio::test(start_paused = true)]
async fn a_413_split_while_the_pipeline_is_full_stays_within_the_budget() {
    const BUDGET: usize = 4 * 1024 * 1024;
    let server = server().await;
    server.respond_with(ScriptedResponse::status(413).with_delay(Duration::from_secs(10)));
    let logs = Arc::new(LogBatch::builder().memory_budget(BUDGET).build());
    let harvester = on_demand_harvester(logs.clone(), client::<Logs>(&server))
        .shutdown_timeout(Duration::from_secs(30))
        .spawn();
    let pads = pads();

    // A payload of 12 large logs goes out; its 413 comes 10 s later.
    let mut recorded = 0u64;
    for seq in 0..12 {
        logs.record(big_log(seq, &pads)).await;
        recorded += 1;
    }
    harvester.harvest_now();
    assert!(server.wait_for_requests(1, WAIT).await);
    let in_flight = harvester.memory();

    // Meanwhile the batch fills up to just under the budget, without a
    // refusal (which would ask for a harvest).
    let per_log = {
        let scratch = LogBatch::new();
        scratch.record(big_log(100, &pads)).await;
        scratch.memory().held_bytes
    };
    let mut seq = 12;
    let record_limit = harvester.memory().record_limit_bytes;
    while harvester.memory().held_bytes + per_log + 64 <= record_limit {
        logs.record(big_log(seq, &pads)).await;
        recorded += 1;
        seq += 1;
    }
    let full = harvester.memory();
    assert!(full.held_bytes > record_limit - 2 * per_log, "{full:?}");
    assert_eq!(logs.record_stats().items_dropped_over_budget, 0);

    // The 413 arrives and the payload in flight is split.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let report = harvester.shutdown().await;
    let d = report.delivery;
    println!(
        "in flight {in_flight:?}; full {full:?}; end {:?}; {d:?}",
        report.memory
    );
    assert!(d.payloads_split >= 1, "{d:?}");
    assert_eq!(d.items_sent + d.items_dropped(), recorded, "{d:?}");
    assert!(
        report.memory.peak_bytes <= BUDGET,
        "peak {} bytes, budget {BUDGET}",
        report.memory.peak_bytes
    );
}

/// Shutdown while harvests are encoding a large backlog: the harvester
/// notices the stop between two payloads, and the deadline covers the rest of
/// the encoding and what the batch still holds.
async fn shutdown_during_a_harvest_meets_its_deadline(flavor: &str) {
    let server = server().await;
    server.respond_n(
        1000,
        ScriptedResponse::status(202).with_delay(Duration::from_secs(3600)),
    );
    let logs = Arc::new(LogBatch::builder().memory_budget(256 << 20).build());
    let harvester = on_demand_harvester(logs.clone(), client::<Logs>(&server))
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .spawn();
    let pads = pads();
    let recorded = 900u64;
    for seq in 0..recorded as i64 {
        logs.record(big_log(seq, &pads)).await;
    }
    // Harvests are encoding the backlog: the batch asked for one at every
    // 1 MiB while it filled, and one more is asked for now. The pipeline
    // (the batch, the encoder, the queue behind a request that never ends)
    // still holds every item.
    harvester.harvest_now();
    assert!(
        server.wait_for_requests(1, WAIT).await,
        "early harvests are under way: a first payload is out"
    );
    assert_eq!(harvester.memory().held_items, recorded as usize);

    // ...and the harvester is stopped in the middle of it. A shutdown still
    // running after WAIT is a hang; one that returns is held to the loose
    // real-time bound.
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(WAIT, harvester.shutdown()).await;
    let took = started.elapsed();
    println!(
        "{flavor}: shutdown during a harvest returned after {took:?} (deadline \
         {SHUTDOWN_TIMEOUT:?}, bound {:?})",
        loose_shutdown_bound(SHUTDOWN_TIMEOUT)
    );
    let report = report.unwrap_or_else(|_| {
        panic!("{flavor}: shutdown still running after {took:?} (deadline {SHUTDOWN_TIMEOUT:?})")
    });
    assert!(
        took <= loose_shutdown_bound(SHUTDOWN_TIMEOUT),
        "{flavor}: shutdown took {took:?}, over {LOOSE_FACTOR} x ({SHUTDOWN_TIMEOUT:?} + \
         {SHUTDOWN_SLACK:?})"
    );
    assert!(report.deadline_exceeded);
    assert_eq!(report.delivery.items_dropped_shutdown, recorded);
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_during_a_harvest_meets_its_deadline_on_current_thread() {
    shutdown_during_a_harvest_meets_its_deadline("current_thread").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_harvest_meets_its_deadline_on_multi_thread() {
    shutdown_during_a_harvest_meets_its_deadline("multi_thread").await;
}

/// Recording while a harvest encodes: the items' bytes are handed over to the
/// compressed bytes in one change to the budget, so a recording in between
/// never takes room that the compressed bytes need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_while_a_harvest_encodes_stays_within_the_budget() {
    const BUDGET: usize = 4 * 1024 * 1024;
    // A port held but not listened on: connections are refused, and no
    // other test's server can take it meanwhile (as it could a port whose
    // listener was dropped).
    let held = RefusingPort::bind();
    let logs = Arc::new(LogBatch::builder().memory_budget(BUDGET).build());
    let client = LogClient::builder("k")
        .endpoint(held.url("/log/v1"))
        .build()
        .unwrap();
    let harvester = on_demand_harvester(logs.clone(), client)
        .shutdown_timeout(Duration::from_millis(200))
        .spawn();
    let pads = pads();
    let (mut recorded, mut refused, mut seq) = (0u64, 0u64, 0i64);
    let end = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < end && harvester.memory().peak_bytes <= BUDGET {
        match logs.try_record(big_log(seq, &pads)).await {
            Ok(()) => recorded += 1,
            Err(RecordError::MemoryBudgetFull { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        seq += 1;
        tokio::task::yield_now().await;
    }
    let report = harvester.shutdown().await;
    drop(held);
    let d = report.delivery;
    println!(
        "recorded {recorded}, refused {refused}; {:?}; {d:?}",
        report.memory
    );
    assert!(refused > 0);
    assert_eq!(d.items_sent + d.items_dropped(), recorded, "{d:?}");
    assert!(
        report.memory.peak_bytes <= BUDGET,
        "peak {} bytes, budget {BUDGET}",
        report.memory.peak_bytes
    );
}
