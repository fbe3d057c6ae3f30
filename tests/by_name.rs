//! Recording by name: exact totals from OS threads (each with its own
//! `current_thread` runtime, as actix-web runs) and from tasks on a
//! multi-thread runtime, into shared and private series, while flushes let
//! go of series and new ones are made; refusals counted, logged at WARN once
//! per harvest interval and reason, and handed to the callback.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use newrelic_telemetry::{Metric, MetricBatch, RecordError};

mod support;
use support::{Captured, current_thread, multi_thread};

/// What the flushes sent, added up.
#[derive(Debug, Default, PartialEq)]
struct Totals {
    /// Sum of every count, per name.
    counts: std::collections::BTreeMap<String, f64>,
    summary_count: u64,
    summary_sum: f64,
    flushes: usize,
}

impl Totals {
    fn add(&mut self, metrics: Vec<Metric>) {
        for metric in metrics {
            match metric {
                Metric::Count(c) => {
                    *self.counts.entry(c.name().to_owned()).or_default() += c.value()
                }
                Metric::Summary(s) => {
                    let s = s.summary();
                    assert!(s.min <= s.max && s.count > 0, "a consistent summary");
                    self.summary_count += s.count;
                    self.summary_sum += s.sum;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        self.flushes += 1;
    }
}

/// Flushes `batch` until `done`, then once more; every unbound series
/// leaves at every flush, so series are let go of and made anew all along.
fn flusher(batch: Arc<MetricBatch>, done: Arc<AtomicBool>, flushed: Arc<AtomicUsize>) -> Totals {
    current_thread().block_on(async {
        let mut totals = Totals::default();
        while !done.load(Ordering::Acquire) {
            totals.add(batch.flush().await.0);
            flushed.fetch_add(1, Ordering::Release);
            tokio::task::yield_now().await;
        }
        totals.add(batch.flush().await.0);
        totals
    })
}

/// Waits (yielding) until the flusher has flushed `n` times since `from`.
async fn flushes_after(flushed: &AtomicUsize, from: usize, n: usize) {
    while flushed.load(Ordering::Acquire) < from + n {
        tokio::task::yield_now().await;
    }
}

const ROUNDS: u64 = 20_000;

/// What one recorder does: into a shared count, a count of its own, a
/// shared summary, and a count per round modulo 64 (series made and let go
/// of over and over); twice it waits for flushes, so that flushes certainly
/// run while it records.
async fn record_rounds(batch: &MetricBatch, me: usize, flushed: &AtomicUsize) {
    let own = format!("own-{me}");
    let start = flushed.load(Ordering::Acquire);
    for i in 0..ROUNDS {
        if i == ROUNDS / 3 || i == 2 * ROUNDS / 3 {
            flushes_after(flushed, start, 2 * (1 + (i == 2 * ROUNDS / 3) as usize)).await;
        }
        batch.record_count("shared", 1.0, [("k", "v")]).await;
        batch.record_count(&own, 2.0, [("k", "v")]).await;
        batch
            .record_summary("latency", (i % 5) as f64, [("k", "v")])
            .await;
        batch
            .record_count("churn", 1.0, [("slot", (i % 64) as i64)])
            .await;
    }
}

fn assert_exact(totals: &Totals, recorders: usize) {
    let rounds = ROUNDS as f64;
    assert_eq!(totals.counts["shared"], rounds * recorders as f64);
    assert_eq!(totals.counts["churn"], rounds * recorders as f64);
    for me in 0..recorders {
        assert_eq!(
            totals.counts[&format!("own-{me}")],
            rounds * 2.0,
            "own-{me}"
        );
    }
    assert_eq!(totals.summary_count, ROUNDS * recorders as u64);
    let per_recorder: f64 = (0..ROUNDS).map(|i| (i % 5) as f64).sum();
    assert_eq!(totals.summary_sum, per_recorder * recorders as f64);
    assert!(totals.flushes > 4, "flushes ran while recording");
}

/// actix-web's model: each worker thread runs a `current_thread` runtime of
/// its own, and they share one batch.
#[test]
fn exact_totals_from_threads_each_with_its_own_runtime_while_series_come_and_go() {
    const THREADS: usize = 3;
    let batch = Arc::new(MetricBatch::builder().shards(2).idle_harvests(0).build());
    let done = Arc::new(AtomicBool::new(false));
    let flushed = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(THREADS));
    let recorders: Vec<_> = (0..THREADS)
        .map(|me| {
            let (batch, flushed, start) = (batch.clone(), flushed.clone(), start.clone());
            std::thread::spawn(move || {
                let rt = current_thread();
                start.wait();
                rt.block_on(record_rounds(&batch, me, &flushed));
            })
        })
        .collect();
    let flushing = {
        let (batch, done, flushed) = (batch.clone(), done.clone(), flushed.clone());
        std::thread::spawn(move || flusher(batch, done, flushed))
    };
    for r in recorders {
        r.join().expect("a recorder");
    }
    done.store(true, Ordering::Release);
    let totals = flushing.join().expect("the flusher");
    assert_exact(&totals, THREADS);
    assert_eq!(batch.record_stats().items_dropped(), 0);
    assert_eq!(batch.memory().held_items, 0);
    assert_eq!(batch.series_count(), 0);
}

/// Tasks on a multi-thread runtime, the flusher a task beside them.
#[test]
fn exact_totals_from_tasks_on_a_multi_thread_runtime_while_series_come_and_go() {
    const TASKS: usize = 4;
    let rt = multi_thread(2);
    let batch = Arc::new(MetricBatch::builder().shards(4).idle_harvests(0).build());
    let done = Arc::new(AtomicBool::new(false));
    let flushed = Arc::new(AtomicUsize::new(0));
    let flushing = {
        let (batch, done, flushed) = (batch.clone(), done.clone(), flushed.clone());
        std::thread::spawn(move || flusher(batch, done, flushed))
    };
    rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|me| {
                let (batch, flushed) = (batch.clone(), flushed.clone());
                tokio::spawn(async move { record_rounds(&batch, me, &flushed).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("a recorder");
        }
    });
    done.store(true, Ordering::Release);
    let totals = flushing.join().expect("the flusher");
    assert_exact(&totals, TASKS);
    assert_eq!(batch.memory().held_items, 0);
}

/// A series recorded into by name and through a handle at once, from two
/// threads, while flushes run: the handle keeps it bound, nothing is lost.
#[test]
fn a_series_written_by_name_and_by_handle_from_two_threads_adds_up() {
    let batch = Arc::new(MetricBatch::builder().idle_harvests(0).build());
    let rt = current_thread();
    let handle = rt
        .block_on(batch.counter("mixed", [("k", "v")]))
        .expect("a handle");
    let done = Arc::new(AtomicBool::new(false));
    let flushed = Arc::new(AtomicUsize::new(0));
    let flushing = {
        let (batch, done, flushed) = (batch.clone(), done.clone(), flushed.clone());
        std::thread::spawn(move || flusher(batch, done, flushed))
    };
    let by_handle = std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            handle.add(1.0);
        }
    });
    rt.block_on(async {
        for _ in 0..ROUNDS {
            batch.record_count("mixed", 3.0, [("k", "v")]).await;
        }
    });
    by_handle.join().expect("the handle's thread");
    done.store(true, Ordering::Release);
    let totals = flushing.join().expect("the flusher");
    assert_eq!(totals.counts["mixed"], ROUNDS as f64 * 4.0);
}

#[test]
fn refusals_are_counted_warned_once_per_interval_and_reason_and_handed_to_the_callback() {
    let captured = Captured::default();
    let subscriber = captured.subscriber();
    let refused = Arc::new(Mutex::new(Vec::new()));
    let seen = refused.clone();
    let batch = MetricBatch::builder()
        // Two names, each with the room for its overflow series.
        .max_series(4)
        .on_refused(move |e: &RecordError| seen.lock().expect("the list").push(e.clone()))
        .build();
    let rt = current_thread();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            for _ in 0..100 {
                batch.record_count("bad", f64::NAN, ()).await;
            }
            batch.record_count("a", 1.0, ()).await;
            batch.record_count("b", 1.0, ()).await;
            for i in 0..10 {
                batch.record_count("over", 1.0, [("i", i)]).await;
            }
            assert_eq!(captured.warnings().len(), 2, "{:?}", captured.warnings());
            batch.flush().await;
            batch.record_count("bad", f64::INFINITY, ()).await;
            batch.record_count("bad", f64::INFINITY, ()).await;
            assert_eq!(
                captured.warnings().len(),
                3,
                "one more for the new interval"
            );
        });
    });
    let stats = batch.record_stats();
    assert_eq!(stats.items_dropped_invalid, 102);
    assert_eq!(stats.series_dropped_limit, 10);
    let refused = refused.lock().expect("the list");
    assert_eq!(refused.len(), 112, "every refusal reaches the callback");
    assert_eq!(
        refused[0],
        RecordError::NonFiniteValue { name: "bad".into() }
    );
    assert!(matches!(
        refused[100],
        RecordError::SeriesLimitReached { limit: 4 }
    ));
    let warnings = captured.warnings();
    assert!(
        warnings[0].contains("items_dropped_invalid"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("series_dropped_limit"), "{warnings:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn try_record_returns_what_record_counts() {
    let batch = MetricBatch::builder().max_series(2).build();
    assert_eq!(batch.try_record_count("a", 1.0, ()).await, Ok(()));
    assert_eq!(
        batch.try_record_count("b", 1.0, ()).await,
        Err(RecordError::SeriesLimitReached { limit: 2 })
    );
    assert_eq!(
        batch.try_record_summary("a", f64::NAN, ()).await,
        Err(RecordError::NonFiniteValue { name: "a".into() })
    );
    batch.close().await;
    assert_eq!(
        batch.try_record_gauge("a", 1.0, ()).await,
        Err(RecordError::Closed)
    );
    let stats = batch.record_stats();
    assert_eq!(
        (
            stats.series_dropped_limit,
            stats.items_dropped_invalid,
            stats.items_dropped_closed
        ),
        (1, 1, 1)
    );
    let (metrics, _) = batch.flush().await;
    assert!(matches!(&metrics[..], [Metric::Count(c)] if c.value() == 1.0));
}

/// A callback that records into the batch that refused (the service's own
/// count of refusals) is not called again from inside itself, even once
/// the batch refuses everything.
#[tokio::test(flavor = "current_thread")]
async fn a_callback_that_records_into_a_closed_batch_does_not_call_itself() {
    let batch = Arc::new(MetricBatch::new());
    let refusals = batch
        .counter("telemetry.refused", ())
        .await
        .expect("a handle");
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let counting = MetricBatch::builder()
        .on_refused(move |_: &RecordError| {
            seen.fetch_add(1, Ordering::Relaxed);
            refusals.add(1.0);
        })
        .build();
    counting.record_count("bad", f64::NAN, ()).await;
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    // Now the callback's own writes are refused by a closed batch.
    let own = Arc::new(Mutex::new(None));
    let slot = own.clone();
    let closed = Arc::new(
        MetricBatch::builder()
            .on_refused(move |_: &RecordError| {
                if let Some(handle) = slot.lock().expect("the slot").as_ref() {
                    newrelic_telemetry::CounterHandle::add(handle, 1.0);
                }
            })
            .build(),
    );
    *own.lock().expect("the slot") = Some(closed.counter("self", ()).await.expect("a handle"));
    closed.close().await;
    closed.record_count("late", 1.0, ()).await; // refused: the callback writes, is refused, is not called again
    assert_eq!(closed.record_stats().items_dropped_closed, 2);
}
