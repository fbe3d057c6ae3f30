//! A cardinality explosion: past a name's series limit, new attribute sets
//! are recorded into the name's overflow series (`otel.metric.overflow =
//! true`), so totals stay exact, other names lose nothing and memory stays
//! within the budget; handles, the `metrics` facade and the batch-wide
//! limits divert the same way; the culprit is reported and logged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use newrelic_telemetry::batch::OVERFLOW_ATTRIBUTE;
use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::{Metric, MetricBatch, RecordError, Value};
use support::Captured;

mod support;

fn is_overflow(metric: &Metric) -> bool {
    metric.attributes().get(OVERFLOW_ATTRIBUTE) == Some(&Value::Bool(true))
}

/// Per name: the sum of its counts' values, the number of its own series,
/// and the value of its overflow series.
#[derive(Debug, Default, PartialEq)]
struct Sent {
    total: f64,
    own: usize,
    overflow: f64,
}

fn sent(metrics: &[Metric]) -> BTreeMap<String, Sent> {
    let mut by_name: BTreeMap<String, Sent> = BTreeMap::new();
    for metric in metrics {
        let Metric::Count(c) = metric else {
            panic!("counts only: {metric:?}")
        };
        let e = by_name.entry(c.name().to_owned()).or_default();
        e.total += c.value();
        if is_overflow(metric) {
            assert_eq!(c.attributes().len(), 1, "the mark is its only attribute");
            e.overflow += c.value();
        } else {
            e.own += 1;
        }
    }
    by_name
}

#[tokio::test(flavor = "current_thread")]
async fn a_million_user_ids_beside_ten_well_behaved_names() {
    let batch = MetricBatch::builder()
        .memory_budget(4 * 1024 * 1024)
        .build();
    const USERS: u32 = 1_000_000;
    for user in 0..USERS {
        batch
            .record_count("logins", 1.0, [("user.id", i64::from(user))])
            .await;
        if user % 100 == 0 {
            for name in 0..10 {
                let route = ["/", "/orders", "/cart"][(user / 100 % 3) as usize];
                batch
                    .record_count(format!("requests.{name}"), 1.0, [("route", route)])
                    .await;
            }
        }
    }
    let memory = batch.memory();
    assert!(
        memory.peak_bytes <= memory.record_limit_bytes,
        "within the budget: {memory:?}"
    );
    assert_eq!(batch.series_count(), 2_000 + 1 + 10 * 3);
    let refused = batch.record_stats();
    assert_eq!(refused.items_dropped(), 0, "nothing refused: {refused:?}");

    let (metrics, _) = batch.flush().await;
    let by_name = sent(&metrics);
    let logins = &by_name["logins"];
    assert_eq!(logins.own, 2_000);
    assert_eq!(logins.total, f64::from(USERS));
    assert_eq!(logins.overflow, f64::from(USERS - 2_000), "the exact rest");
    for name in 0..10 {
        let requests = &by_name[&format!("requests.{name}")];
        assert_eq!(
            (requests.own, requests.total, requests.overflow),
            (3, f64::from(USERS / 100), 0.0),
            "a well-behaved name loses nothing"
        );
    }

    let report = batch.overflows();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].name, "logins");
    assert_eq!(report[0].limit, Some(2_000));
    assert_eq!(report[0].overflowed_last_interval, u64::from(USERS - 2_000));
    let (key, values) = report[0].top_attribute.clone().expect("a likely cause");
    assert_eq!(key, "user.id");
    // One in 64 of the 998,000 diverted measurements is sampled, each a
    // different user, and counted by a sketch of 256 registers (a standard
    // error of 6.5%, its hash seeded anew in each process): within five
    // standard errors. Three (20%) failed about once in 300 runs.
    let sampled = f64::from(USERS - 2_000) / 64.0;
    assert!(
        (values as f64 - sampled).abs() < sampled * 0.33,
        "{values} distinct values in the sample, about {sampled} expected"
    );
    assert_eq!(
        batch.record_stats().measurements_overflowed,
        u64::from(USERS - 2_000)
    );
    assert_eq!(batch.memory().held_bytes, 0, "everything given back");
}

/// Two OS threads, each with its own `current_thread` runtime (as
/// actix-web runs), record distinct and shared attribute sets into a name
/// with a small limit while a third thread flushes all along: every flush
/// lets go of every series, so the name fills, overflows and empties again
/// and again; the totals are exact.
#[test]
fn exact_totals_from_two_threads_through_the_limit() {
    const PER_THREAD: u32 = 40_000;
    let batch = Arc::new(MetricBatch::builder().series_limit(50).build());
    let start = Arc::new(Barrier::new(3));
    let done = Arc::new(AtomicBool::new(false));
    let recorders: Vec<_> = (0..2u32)
        .map(|thread| {
            let (batch, start) = (batch.clone(), start.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a runtime");
                start.wait();
                rt.block_on(async {
                    for i in 0..PER_THREAD {
                        // Half shared between the threads, half their own.
                        let id = if i % 2 == 0 {
                            i % 200
                        } else {
                            thread * PER_THREAD + i
                        };
                        batch
                            .record_count("jobs", 1.0, [("id", i64::from(id))])
                            .await;
                        batch
                            .record_summary("job.ms", f64::from(i % 7), [("id", i64::from(id))])
                            .await;
                    }
                });
            })
        })
        .collect();
    let flusher = {
        let (batch, start, done) = (batch.clone(), start.clone(), done.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            start.wait();
            rt.block_on(async {
                let mut all = Vec::new();
                let mut flushes = 0;
                while !done.load(Ordering::Acquire) {
                    all.extend(batch.flush().await.0);
                    flushes += 1;
                    tokio::task::yield_now().await;
                }
                all.extend(batch.flush().await.0);
                (all, flushes)
            })
        })
    };
    for recorder in recorders {
        recorder.join().expect("a recorder");
    }
    done.store(true, Ordering::Release);
    let (metrics, flushes) = flusher.join().expect("the flusher");
    let (mut count, mut observations, mut sum) = (0.0, 0, 0.0);
    for metric in &metrics {
        match metric {
            Metric::Count(c) => count += c.value(),
            Metric::Summary(s) => {
                observations += s.summary().count;
                sum += s.summary().sum;
            }
            other => panic!("only counts and summaries: {other:?}"),
        }
    }
    let expected_sum: f64 = 2.0 * (0..PER_THREAD).map(|i| f64::from(i % 7)).sum::<f64>();
    assert_eq!(count, f64::from(2 * PER_THREAD), "after {flushes} flushes");
    assert_eq!(observations, u64::from(2 * PER_THREAD));
    assert_eq!(sum, expected_sum);
    assert!(
        metrics.iter().any(is_overflow),
        "the limit was reached at least once"
    );
    assert_eq!(batch.record_stats().items_dropped(), 0);
    assert_eq!(batch.memory().held_bytes, 0, "everything given back");
}

#[tokio::test(flavor = "current_thread")]
async fn handles_bound_before_and_after_the_limit() {
    let batch = MetricBatch::builder().series_limit(2).build();
    let first = batch.counter("hits", [("user", "a")]).await.unwrap();
    let second = batch.counter("hits", [("user", "b")]).await.unwrap();
    // Past the limit: bound to the overflow series, which it keeps.
    let third = batch.counter("hits", [("user", "c")]).await.unwrap();
    let fourth = batch.counter("hits", [("user", "d")]).await.unwrap();
    batch.record_count("hits", 10.0, [("user", "e")]).await;
    for (handle, n) in [(&first, 1.0), (&second, 2.0), (&third, 3.0), (&fourth, 4.0)] {
        handle.add(n);
    }
    let (metrics, _) = batch.flush().await;
    let by_name = sent(&metrics);
    assert_eq!(
        by_name["hits"],
        Sent {
            total: 20.0,
            own: 2,
            overflow: 17.0
        }
    );
    // A raised limit: a new handle gets a series of its own; the bound
    // ones keep theirs.
    batch.set_series_limit(3);
    let fifth = batch.counter("hits", [("user", "f")]).await.unwrap();
    fifth.add(5.0);
    third.add(1.0);
    let (metrics, _) = batch.flush().await;
    let hits = &sent(&metrics)["hits"];
    assert_eq!((hits.own, hits.overflow, hits.total), (1, 1.0, 6.0));
}

#[tokio::test(flavor = "current_thread")]
async fn a_gauge_overflow_series_keeps_the_last_value() {
    let batch = MetricBatch::builder().series_limit(1).build();
    batch
        .record_gauge("queue.depth", 1.0, [("queue", "a")])
        .await;
    batch
        .record_gauge("queue.depth", 2.0, [("queue", "b")])
        .await;
    batch
        .record_gauge("queue.depth", 3.0, [("queue", "c")])
        .await;
    let (metrics, _) = batch.flush().await;
    let overflow: Vec<f64> = metrics
        .iter()
        .filter(|m| is_overflow(m))
        .map(|m| match m {
            Metric::Gauge(g) => g.value(),
            other => panic!("a gauge: {other:?}"),
        })
        .collect();
    assert_eq!(overflow, [3.0]);
    assert_eq!(metrics.len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn the_batch_wide_limits_divert_known_names_and_refuse_new_ones() {
    // Room for two names, each with its overflow series reserved.
    let batch = MetricBatch::builder().max_series(4).series_limit(0).build();
    batch.record_count("a", 1.0, [("i", 0)]).await;
    batch.record_count("b", 1.0, [("i", 0)]).await;
    for i in 1..100 {
        // "a" exploding cannot stop "b" from recording, nor lose anything.
        batch.record_count("a", 1.0, [("i", i)]).await;
        batch.record_count("b", 1.0, [("i", 0)]).await;
    }
    assert_eq!(
        batch.try_record_count("c", 1.0, ()).await,
        Err(RecordError::SeriesLimitReached { limit: 4 })
    );
    let (metrics, _) = batch.flush().await;
    let by_name = sent(&metrics);
    assert_eq!((by_name["a"].own, by_name["a"].overflow), (1, 99.0));
    assert_eq!((by_name["b"].own, by_name["b"].total), (1, 100.0));
    let report = batch.overflows();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(
        (
            report[0].name.as_str(),
            report[0].limit,
            report[0].overflowed_last_interval
        ),
        ("a", None, 99),
        "no limit of its own: the batch's diverted it"
    );

    // The memory budget the same way: "a" explodes until the budget is
    // full, then goes on into its overflow series.
    let batch = MetricBatch::builder()
        .memory_budget(4 * 1024 * 1024)
        .series_limit(0)
        .build();
    batch.record_count("b", 1.0, ()).await;
    let mut recorded = 0;
    while batch.overflows().is_empty() && recorded < 1_000_000 {
        for _ in 0..1_000 {
            batch.record_count("a", 1.0, [("i", recorded)]).await;
            recorded += 1;
        }
    }
    for _ in 0..1_000 {
        batch.record_count("a", 1.0, [("i", recorded)]).await;
        recorded += 1;
        batch.record_count("b", 1.0, ()).await;
    }
    let memory = batch.memory();
    assert!(memory.peak_bytes <= memory.record_limit_bytes, "{memory:?}");
    assert_eq!(batch.record_stats().items_dropped(), 0);
    let (metrics, _) = batch.flush().await;
    let by_name = sent(&metrics);
    assert_eq!(by_name["a"].total, recorded as f64);
    assert!(by_name["a"].overflow >= 1_000.0);
    assert_eq!(by_name["b"].total, 1_001.0);
}

#[test]
fn an_overflowing_name_is_logged_once_an_hour_with_its_likely_cause() {
    let captured = Captured::default();
    let subscriber = captured.subscriber();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let batch = MetricBatch::builder().series_limit(10).build();
            for round in 0..3 {
                for session in 0..100 {
                    let id = format!("s-{round}-{session}");
                    batch
                        .record_count(
                            "checkouts",
                            1.0,
                            [("route", "/pay"), ("session", id.as_str())],
                        )
                        .await;
                }
                batch.flush().await;
            }
        });
    });
    let warnings = captured.warnings();
    assert_eq!(warnings.len(), 1, "once, not at every flush: {warnings:?}");
    assert!(warnings[0].contains("metric=checkouts"), "{}", warnings[0]);
    assert!(warnings[0].contains("top_key=session"), "{}", warnings[0]);
    assert!(warnings[0].contains("overflowed=90"), "{}", warnings[0]);
}

#[tokio::test(flavor = "current_thread")]
async fn the_overflow_mark_is_reserved() {
    let batch = MetricBatch::builder().series_limit(1).build();
    let spelled_out = [(OVERFLOW_ATTRIBUTE, true)];
    let refused = Err(RecordError::ReservedAttribute {
        key: OVERFLOW_ATTRIBUTE.into(),
    });
    assert_eq!(
        batch.try_record_count("hits", 1.0, spelled_out).await,
        refused
    );
    // Refused too once the overflow series exists, and the name is under
    // its limit again: a recording cannot spell its way into it.
    batch.record_count("hits", 1.0, [("user", 1)]).await;
    batch.record_count("hits", 1.0, [("user", 2)]).await;
    batch.set_series_limit(10);
    assert_eq!(
        batch.try_record_count("hits", 1.0, spelled_out).await,
        refused
    );
    assert!(batch.counter("hits", spelled_out).await.is_err());
    let (metrics, _) = batch.flush().await;
    assert_eq!(sent(&metrics)["hits"].overflow, 1.0);
}

/// The `metrics` facade's series go through the same limit, on the wire.
#[tokio::test(flavor = "current_thread")]
async fn the_metrics_facade_past_the_limit() {
    let server = TestIngestServer::start().await.unwrap();
    let telemetry = server
        .telemetry_builder()
        .metric_series_limit(5)
        .harvest_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let recorder = telemetry.metrics_recorder();
    metrics::with_local_recorder(&recorder, || {
        for user in 0..50 {
            metrics::counter!("signups", "user" => user.to_string()).increment(2);
        }
    });
    // Registration binds through the batch's lock without waiting; give a
    // deferred binding a turn.
    tokio::task::yield_now().await;
    telemetry.shutdown().await;
    let metrics = server.metrics();
    let signups: Vec<_> = metrics.iter().filter(|m| m["name"] == "signups").collect();
    let total: f64 = signups.iter().filter_map(|m| m["value"].as_f64()).sum();
    assert_eq!(total, 100.0, "{signups:?}");
    let overflow: Vec<_> = signups
        .iter()
        .filter(|m| m["attributes"][OVERFLOW_ATTRIBUTE] == true)
        .collect();
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0]["value"], 90.0);
    assert_eq!(signups.len(), 6);
    // Each key past the limit bound a handle to the overflow series.
    let report = telemetry.metrics().overflows();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(
        (report[0].name.as_str(), report[0].overflowed_last_interval),
        ("signups", 45)
    );
}
