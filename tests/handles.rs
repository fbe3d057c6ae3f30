//! Bound series handles: what a flush sends, what stays in memory, exact sums
//! under concurrency (tasks, OS threads, string calls and harvests mixed), and
//! the memory budget's figures around them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use newrelic_telemetry::batch::Batch;
use newrelic_telemetry::client::Metrics;
use newrelic_telemetry::{Metric, MetricBatch, MetricKind, RecordError, Summary};

mod support;
use support::{client, current_thread, multi_thread, on_demand_harvester, server};

fn count_of(metrics: &[Metric], name: &str) -> Option<f64> {
    metrics.iter().find_map(|m| match m {
        Metric::Count(c) if c.name() == name => Some(c.value()),
        _ => None,
    })
}

fn summary_of(metrics: &[Metric], name: &str) -> Option<Summary> {
    metrics.iter().find_map(|m| match m {
        Metric::Summary(s) if s.name() == name => Some(s.summary()),
        _ => None,
    })
}

#[tokio::test(flavor = "current_thread")]
async fn counts_restart_at_every_flush_and_the_handle_stays_bound() {
    let batch = MetricBatch::new();
    let hits = batch.counter("hits", [("page", "/")]).await.unwrap();
    hits.add(1.0);
    hits.add(2.0);
    let (metrics, _) = batch.flush().await;
    assert_eq!(count_of(&metrics, "hits"), Some(3.0));

    hits.add(5.0);
    // The string form names the same series.
    batch.record_count("hits", 1.0, [("page", "/")]).await;
    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), 1);
    assert_eq!(count_of(&metrics, "hits"), Some(6.0));

    // Nothing added: nothing sent, and the series is still there.
    assert!(batch.flush().await.0.is_empty());
    assert_eq!(batch.series_count(), 1);
    hits.add(0.0); // an explicit zero is still a write
    assert_eq!(count_of(&batch.flush().await.0, "hits"), Some(0.0));
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A set is stamped within a few milliseconds of when it happened (gauges
/// may read a coarse clock), across flushes and on a running clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauge_sets_are_stamped_within_a_few_ms_of_the_set() {
    let batch = MetricBatch::new();
    let g = batch.gauge("g", ()).await.unwrap();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let before = wall_ms();
        if round == 1 {
            batch.record_gauge("g", 1.0, ()).await;
        } else {
            g.set(1.0);
        }
        let after = wall_ms();
        let (metrics, _) = batch.flush().await;
        let at = metrics[0].timestamp_ms().unwrap();
        assert!(
            at + 10 >= before && at <= after + 10,
            "round {round}: set between {before} and {after}, stamped {at}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn gauges_keep_the_last_value_and_its_time() {
    let batch = MetricBatch::new();
    let depth = batch.gauge("queue.depth", ()).await.unwrap();
    depth.set(3.0);
    depth.set(9.0);
    batch.record_gauge("queue.depth", 4.0, ()).await;
    depth.set(7.0);
    let (metrics, _) = batch.flush().await;
    match &metrics[..] {
        [Metric::Gauge(g)] => {
            assert_eq!(g.value(), 7.0);
            assert!(g.timestamp_ms().is_some_and(|t| t > 1_600_000_000_000));
        }
        other => panic!("unexpected: {other:?}"),
    }
    assert!(batch.flush().await.0.is_empty(), "not set since: not sent");
}

#[tokio::test(flavor = "current_thread")]
async fn summaries_merge_handles_string_calls_and_prebuilt_metrics() {
    let batch = MetricBatch::new();
    let latency = batch.summary("latency", [("route", "/a")]).await.unwrap();
    latency.record(4.0);
    batch
        .record_summary("latency", 10.0, [("route", "/a")])
        .await;
    batch
        .record_metric(
            newrelic_telemetry::SummaryMetric::new(
                "latency",
                Summary::new(2, 3.0, 1.0, 2.0),
                Duration::from_secs(1),
            )
            .with_attribute("route", "/a"),
        )
        .await;
    let (metrics, _) = batch.flush().await;
    assert_eq!(
        summary_of(&metrics, "latency"),
        Some(Summary::new(4, 17.0, 1.0, 10.0))
    );
    latency.record(-1.0);
    assert_eq!(
        summary_of(&batch.flush().await.0, "latency"),
        Some(Summary::new(1, -1.0, -1.0, -1.0))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn only_series_written_to_are_sent() {
    let batch = MetricBatch::new();
    let used = batch.counter("used", ()).await.unwrap();
    let _unused = batch.counter("unused", ()).await.unwrap();
    let _gauge = batch.gauge("gauge", ()).await.unwrap();
    let _summary = batch.summary("summary", ()).await.unwrap();
    used.add(1.0);
    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].name(), "used");
    assert_eq!(batch.series_count(), 4, "bound series stay");
}

#[tokio::test(flavor = "current_thread")]
async fn handles_validate_once_and_ignore_bad_values() {
    let batch = MetricBatch::new();
    assert!(matches!(
        batch.counter("m", [("value", 1)]).await,
        Err(RecordError::ReservedAttribute { .. })
    ));
    assert_eq!(
        batch.counter("", ()).await.unwrap_err(),
        RecordError::EmptyName
    );
    let c = batch.counter("m", [("k", "v")]).await.unwrap();
    assert_eq!((c.name(), c.attributes().len()), ("m", 1));
    c.add(f64::NAN);
    c.add(f64::INFINITY);
    c.add(f64::MAX);
    c.add(f64::MAX); // would overflow: ignored
    // Two refused bindings and three ignored values.
    assert_eq!(batch.record_stats().items_dropped_invalid, 5);
    assert_eq!(count_of(&batch.flush().await.0, "m"), Some(f64::MAX));

    let g = batch.gauge("g", ()).await.unwrap();
    g.set(f64::NAN);
    let s = batch.summary("s", ()).await.unwrap();
    s.record(f64::NEG_INFINITY);
    assert!(batch.flush().await.0.is_empty());
    assert_eq!(batch.record_stats().items_dropped_invalid, 7);
}

#[tokio::test(flavor = "current_thread")]
async fn the_series_limit_and_the_budget_apply_when_binding() {
    // "a" and the room for its overflow series.
    let batch = MetricBatch::builder().max_series(2).build();
    let a = batch.counter("a", ()).await.unwrap();
    assert_eq!(
        batch.counter("b", ()).await.unwrap_err(),
        RecordError::SeriesLimitReached { limit: 2 }
    );
    // Binding the same series again is no new series.
    let again = batch.counter("a", ()).await.unwrap();
    a.add(1.0);
    again.add(1.0);
    assert_eq!(count_of(&batch.flush().await.0, "a"), Some(2.0));
    // The bound series survived the flush, so the limit still holds.
    assert!(batch.counter("b", ()).await.is_err());
    drop((a, again));
    batch.flush().await; // unbound and idle: let go of
    assert!(batch.counter("b", ()).await.is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn idle_series_leave_memory_unless_a_handle_holds_them() {
    let batch = MetricBatch::builder().idle_harvests(2).build();
    let bound = batch.counter("bound", ()).await.unwrap();
    batch.record_count("unbound", 1.0, ()).await;
    bound.add(1.0);

    // Harvests (not flush(), which lets go of every unbound series at once).
    let harvest = || async {
        let taken = Batch::take(&batch).await;
        drop(taken);
    };
    harvest().await; // both written: both stay
    assert_eq!(batch.series_count(), 2);
    harvest().await; // idle 1
    assert_eq!(batch.series_count(), 2);
    batch.record_count("unbound", 1.0, ()).await; // written again
    harvest().await;
    harvest().await; // idle 1
    assert_eq!(batch.series_count(), 2);
    harvest().await; // idle 2: the unbound one leaves, the bound one stays
    assert_eq!(batch.series_count(), 1);
    for _ in 0..5 {
        harvest().await;
    }
    assert_eq!(batch.series_count(), 1, "a live handle keeps its series");
    bound.add(1.0); // and keeps working
    drop(bound);
    harvest().await; // written: stays one more round
    assert_eq!(batch.series_count(), 1);
    harvest().await;
    harvest().await;
    assert_eq!(batch.series_count(), 0, "unbound and idle: gone");
    // What it interned went with it.
    assert_eq!(batch.memory().held_bytes, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn flush_lets_go_of_unbound_series_and_the_budget_follows() {
    // One shard, so that both series share their interners.
    let batch = MetricBatch::builder().shards(1).build();
    let bound = batch.counter("bound", [("k", "v")]).await.unwrap();
    let bound_only = batch.memory();
    assert_eq!(bound_only.held_items, 0, "a bound series holds no data yet");
    assert!(bound_only.held_bytes > 0);
    bound.add(1.0);
    assert_eq!(batch.memory().held_items, 1);
    batch.record_count("other", 1.0, [("k", "w")]).await;
    assert_eq!(batch.memory().held_items, 2);

    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), 2);
    assert_eq!(batch.memory().held_items, 0);
    assert_eq!(batch.series_count(), 1);
    // The strings of the series let go of stay interned (and counted) while
    // the metrics just taken use them; the next flush sweeps them.
    assert!(batch.memory().held_bytes >= bound_only.held_bytes);
    drop(metrics);
    batch.flush().await;
    assert_eq!(batch.memory().held_bytes, bound_only.held_bytes);
    drop(bound);
    batch.flush().await;
    assert_eq!(batch.memory().held_bytes, 0);
    assert_eq!(batch.series_count(), 0);
}

/// Binding a handle to a series made by recording by name shares its cell:
/// what the series held stays, for every type, nothing is counted twice, and
/// the budget is given back exactly once the handles and the series go.
#[tokio::test(flavor = "current_thread")]
async fn binding_a_series_recorded_by_name_keeps_what_it_held() {
    let batch = MetricBatch::builder().shards(1).build();
    let page = [("page", "/")];
    batch.record_count("hits", 2.0, page).await;
    batch.record_gauge("load", 0.5, page).await;
    batch.record_summary("latency", 3.0, page).await;
    batch.record_summary("latency", 1.0, page).await;
    let packed = batch.memory();
    assert_eq!(packed.held_items, 3);

    let hits = batch.counter("hits", page).await.unwrap();
    let load = batch.gauge("load", page).await.unwrap();
    let latency = batch.summary("latency", page).await.unwrap();
    let bound = batch.memory();
    assert_eq!(bound, packed, "binding adds nothing to hold");
    assert_eq!(bound.held_items, 3, "the pending values are still held");

    // A second handle shares the cell too.
    let hits_again = batch.counter("hits", page).await.unwrap();
    assert_eq!(batch.memory().held_bytes, bound.held_bytes);

    hits.add(3.0);
    hits_again.add(1.0);
    batch.record_count("hits", 4.0, page).await;
    latency.record(7.0);
    let (metrics, _) = batch.flush().await;
    assert_eq!(count_of(&metrics, "hits"), Some(10.0));
    assert_eq!(
        summary_of(&metrics, "latency"),
        Some(Summary::new(3, 11.0, 1.0, 7.0))
    );
    let gauge = metrics.iter().find_map(|m| match m {
        Metric::Gauge(g) => Some(g.value()),
        _ => None,
    });
    assert_eq!(
        gauge,
        Some(0.5),
        "the gauge set by name before binding is sent"
    );
    assert_eq!(batch.memory().held_items, 0);

    drop(metrics);
    drop((hits, hits_again, load, latency));
    batch.flush().await;
    batch.flush().await;
    assert_eq!(batch.series_count(), 0);
    assert_eq!(
        batch.memory().held_bytes,
        0,
        "everything was given back exactly"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_closed_batch_ignores_and_counts_handle_writes() {
    let batch = MetricBatch::new();
    let c = batch.counter("c", ()).await.unwrap();
    c.add(1.0);
    batch.close().await;
    c.add(1.0);
    assert_eq!(batch.record_stats().items_dropped_closed, 1);
    assert_eq!(
        batch.counter("d", ()).await.unwrap_err(),
        RecordError::Closed
    );
    assert_eq!(count_of(&batch.flush().await.0, "c"), Some(1.0));
}

/// Many tasks and OS threads add through handles and string calls, into
/// shared and private series, while another task flushes over and over; every
/// addition and observation is in exactly one flush.
#[test]
fn exact_sums_under_concurrency_with_harvests() {
    const TASKS: usize = 4;
    const THREADS: usize = 2;
    const ROUNDS: u64 = 20_000;
    let rt = multi_thread(2);
    let batch = Arc::new(MetricBatch::builder().shards(4).build());
    let done = Arc::new(AtomicBool::new(false));
    // Flushes so far: recorders wait for two at half time, so that flushes
    // certainly run while they record, however the scheduler runs them.
    let flushed = Arc::new(AtomicUsize::new(0));
    let (shared_count, shared_summary) = rt.block_on(async {
        (
            batch.counter("shared", [("k", "v")]).await.unwrap(),
            batch.summary("observed", [("k", "v")]).await.unwrap(),
        )
    });

    let flusher = {
        let (batch, done, flushed) = (batch.clone(), done.clone(), flushed.clone());
        rt.spawn(async move {
            // The summary's count and sum, and the lowest min and highest
            // max over every summary sent.
            let mut totals = (
                0.0,
                0.0,
                Summary::new(0, 0.0, f64::INFINITY, f64::NEG_INFINITY),
                0usize,
            );
            let mut add = |metrics: Vec<Metric>| {
                for m in metrics {
                    match m {
                        Metric::Count(c) if c.name() == "shared" => totals.0 += c.value(),
                        Metric::Count(c) => totals.1 += c.value(),
                        Metric::Summary(s) => {
                            let s = s.summary();
                            // Each summary whole: its mean between its min and
                            // max, both among the values recorded (0 to 6).
                            let mean = s.sum / s.count as f64;
                            assert!(
                                s.count > 0
                                    && 0.0 <= s.min
                                    && s.min <= mean
                                    && mean <= s.max
                                    && s.max <= 6.0,
                                "a consistent summary: {s:?}"
                            );
                            totals.2.count += s.count;
                            totals.2.sum += s.sum;
                            totals.2.min = totals.2.min.min(s.min);
                            totals.2.max = totals.2.max.max(s.max);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            };
            while !done.load(Ordering::Relaxed) {
                add(batch.flush().await.0);
                totals.3 += 1;
                flushed.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            add(batch.flush().await.0);
            totals
        })
    };

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (batch, shared, summary, flushed) = (
                batch.clone(),
                shared_count.clone(),
                shared_summary.clone(),
                flushed.clone(),
            );
            rt.spawn(async move {
                let own = format!("task-{t}");
                let private = batch.counter(&own, ()).await.unwrap();
                for i in 0..ROUNDS {
                    if i == ROUNDS / 2 {
                        while flushed.load(Ordering::Relaxed) < 2 {
                            tokio::task::yield_now().await;
                        }
                    }
                    shared.add(1.0);
                    private.add(1.0);
                    summary.record((i % 7) as f64);
                    batch.record_count("shared", 2.0, [("k", "v")]).await;
                    batch.record_count(&own, 1.0, [("string", "call")]).await;
                    batch.record_summary("observed", 1.0, [("k", "v")]).await;
                }
            })
        })
        .collect();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (shared, summary) = (shared_count.clone(), shared_summary.clone());
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    shared.add(0.5);
                    summary.record((i % 3) as f64);
                }
            })
        })
        .collect();
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let (shared, private, summary, flushes) = rt.block_on(flusher).unwrap();

    let rounds = ROUNDS as f64;
    let tasks = TASKS as f64;
    assert_eq!(shared, tasks * rounds * 3.0 + THREADS as f64 * rounds * 0.5);
    assert_eq!(private, tasks * rounds * 2.0);
    assert_eq!(summary.count, (TASKS as u64 * 2 + THREADS as u64) * ROUNDS);
    let per_task: f64 = (0..ROUNDS).map(|i| (i % 7) as f64 + 1.0).sum();
    let per_thread: f64 = (0..ROUNDS).map(|i| (i % 3) as f64).sum();
    assert_eq!(summary.sum, tasks * per_task + THREADS as f64 * per_thread);
    assert_eq!((summary.min, summary.max), (0.0, 6.0), "min and max exact");
    assert!(flushes > 1, "harvests ran while recording");
    let memory = batch.memory();
    assert_eq!(memory.held_items, 0);
}

/// Handles bound over and over to series that string calls keep writing,
/// while flushes let go of unbound series and make them anew: a bind moves a
/// packed cell into a block of its own only when nothing else holds it, no
/// addition is lost or counted twice, and the budget ends where it started.
#[test]
fn binding_while_string_calls_and_flushes_run_loses_nothing() {
    const TASKS: u64 = 4;
    const ROUNDS: u64 = 5_000;
    const SERIES: u64 = 8;
    let rt = multi_thread(2);
    let batch = Arc::new(MetricBatch::builder().shards(2).build());
    let done = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (batch, done) = (batch.clone(), done.clone());
        rt.spawn(async move {
            let mut total = 0.0;
            let mut add = |metrics: Vec<Metric>| {
                for m in metrics {
                    match m {
                        Metric::Count(c) => total += c.value(),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            };
            while !done.load(Ordering::Relaxed) {
                add(batch.flush().await.0);
                tokio::task::yield_now().await;
            }
            add(batch.flush().await.0);
            total
        })
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let batch = batch.clone();
            rt.spawn(async move {
                let mut kept = None;
                for i in 0..ROUNDS {
                    let name = format!("s{}", (i + t) % SERIES);
                    batch.record_count(&name, 1.0, [("k", "v")]).await;
                    let handle = batch.counter(&name, [("k", "v")]).await.unwrap();
                    handle.add(2.0);
                    // Now and then a handle lives on, so that some binds find
                    // a cell already held (which must stay where it is).
                    if i % 16 == 0 {
                        kept = Some(handle);
                    }
                }
                drop(kept);
            })
        })
        .collect();
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    done.store(true, Ordering::Relaxed);
    let total = rt.block_on(flusher).unwrap();
    assert_eq!(total, (TASKS * ROUNDS * 3) as f64);
    rt.block_on(async {
        batch.flush().await;
        batch.flush().await;
    });
    assert_eq!(batch.series_count(), 0);
    let memory = batch.memory();
    assert_eq!((memory.held_bytes, memory.held_items), (0, 0), "{memory:?}");
}

/// Two tasks on one series through clones of one handle, and two more through
/// the string form: exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_on_one_series_sum_exactly() {
    let batch = Arc::new(MetricBatch::new());
    let counter = batch.counter("same", ()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let c = counter.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..100_000 {
                c.add(1.0);
            }
        }));
        let b = batch.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                b.record_count("same", 1.0, ()).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(count_of(&batch.flush().await.0, "same"), Some(220_000.0));
}

#[test]
fn handles_work_from_sync_code_and_a_current_thread_runtime() {
    let rt = current_thread();
    let batch = MetricBatch::new();
    let (c, g, s) = rt.block_on(async {
        (
            batch.counter("c", ()).await.unwrap(),
            batch.gauge("g", ()).await.unwrap(),
            batch.summary("s", ()).await.unwrap(),
        )
    });
    // Outside the runtime, as a Drop guard or a callback would.
    struct Guard(newrelic_telemetry::CounterHandle);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.add(1.0);
        }
    }
    drop(Guard(c.clone()));
    g.set(2.0);
    s.record(3.0);
    let (metrics, _) = rt.block_on(batch.flush());
    let mut kinds: Vec<MetricKind> = metrics.iter().map(Metric::kind).collect();
    kinds.sort_by_key(|k| k.as_str());
    assert_eq!(
        kinds,
        [MetricKind::Count, MetricKind::Gauge, MetricKind::Summary]
    );
    assert_eq!(count_of(&metrics, "c"), Some(1.0));
}

#[tokio::test]
async fn a_harvester_sends_handle_writes_and_ends_holding_no_items() {
    let server = server().await;
    let batch = Arc::new(MetricBatch::new());
    let harvester = on_demand_harvester(batch.clone(), client::<Metrics>(&server)).spawn();
    let requests = batch.counter("requests", [("route", "/")]).await.unwrap();
    requests.add(1.0);
    harvester.harvest_now();
    assert!(server.wait_for_requests(1, Duration::from_secs(10)).await);
    requests.add(2.0);
    batch.record_count("other", 1.0, ()).await;

    let report = harvester.shutdown().await;
    assert_eq!(report.delivery.items_sent, 3);
    assert_eq!(report.memory.held_items, 0);
    let values: Vec<f64> = server
        .metrics()
        .iter()
        .filter(|m| m["name"] == "requests")
        .map(|m| m["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [1.0, 2.0]);
    // The live handle keeps its series (and its bytes); the rest was let go.
    assert_eq!(batch.series_count(), 1);
    assert!(batch.memory().held_bytes > 0);
    drop(requests);
}

#[tokio::test(flavor = "current_thread")]
async fn series_let_go_of_out_of_order_leave_the_rest_findable() {
    let batch = MetricBatch::builder().shards(2).build();
    let mut bound = Vec::new();
    for i in 0..2000i64 {
        batch.record_count("m", 1.0, [("i", i)]).await;
        if i % 3 == 0 {
            bound.push((i, batch.counter("m", [("i", i)]).await.unwrap()));
        }
    }
    assert_eq!(batch.flush().await.0.len(), 2000);
    assert_eq!(batch.series_count(), bound.len());
    for (i, c) in &bound {
        c.add(*i as f64);
        // The string form finds the same series after the others moved.
        batch.record_count("m", 1.0, [("i", *i)]).await;
    }
    assert_eq!(
        batch.series_count(),
        bound.len(),
        "nothing was created twice"
    );
    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), bound.len());
    for m in &metrics {
        let Metric::Count(c) = m else {
            panic!("unexpected {m:?}")
        };
        let i = match c.attributes().get("i") {
            Some(newrelic_telemetry::Value::Int(i)) => *i,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(c.value(), i as f64 + 1.0);
    }
    // Half the handles go; the next flush lets go of their series only.
    bound.truncate(bound.len() / 2);
    batch.flush().await;
    assert_eq!(batch.series_count(), bound.len());
    for (i, c) in &bound {
        c.add(1.0);
        batch.record_count("m", 1.0, [("i", *i)]).await;
    }
    let (metrics, _) = batch.flush().await;
    assert_eq!(metrics.len(), bound.len());
    assert!(
        metrics
            .iter()
            .all(|m| matches!(m, Metric::Count(c) if c.value() == 2.0))
    );
}
