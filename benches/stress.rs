//! Multi-task stress program (criterion is single-threaded and hides
//! contention). On a 2-worker runtime:
//!
//! * target 2: ops/s and latency percentiles of `record_count` from 1 and from
//!   2 tasks into one shared batch of 1,000 series (rounds alternate 1 and 2
//!   tasks; the median round is reported);
//! * target 3: recording latency (p50, p99, p99.9, worst) while a batch of
//!   100,000 series is harvested (a `Harvester` flushes, encodes and posts it
//!   to a sink on 127.0.0.1, on the same runtime), next to the same figures
//!   over a window of the same length without a harvest; and, for
//!   comparison, while `flush()` + `encode_payload` run on a task (`flush()`
//!   lets go of every series no handle holds, so the recorders build theirs
//!   again).
//!
//! Run: `cargo bench --bench stress`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use newrelic_telemetry::client::{Metrics, encode_payload};
use newrelic_telemetry::{CounterHandle, Harvester, MetricBatch, MetricClient};
use support::sink::Sink;
use support::{Workload, attrs};

const ROUNDS: usize = 3;
const THROUGHPUT_RUN: Duration = Duration::from_millis(1000);
const LATENCY_RUN: Duration = Duration::from_millis(400);

/// One recorder: records into the first `hot` series of `w` until `stop`,
/// with `record_count`, or through `handles` (bound to those series; the
/// recorder then yields every 256 calls, as a task doing other work would).
/// With `timed`, keeps (start offset from `t0`, latency) of every call, in ns.
async fn recorder(
    batch: Arc<MetricBatch>,
    w: Arc<Workload>,
    offset: usize,
    hot: usize,
    stop: Arc<AtomicBool>,
    timed: Option<Instant>,
    handles: Option<Arc<Vec<CounterHandle>>>,
) -> (u64, Vec<(u64, u32)>) {
    let mut lat = Vec::with_capacity(if timed.is_some() { 4 << 20 } else { 0 });
    let mut ops = 0u64;
    // Each recorder walks the hot series in an order of its own.
    let table: Vec<_> = if hot == w.len() {
        w.shuffled(offset as u64 + 1)
    } else {
        w.table()
    };
    let mut i = offset % hot;
    loop {
        for _ in 0..256 {
            let (name, host) = table[i];
            match timed {
                Some(t0) => {
                    let start = Instant::now();
                    match &handles {
                        Some(h) => h[i].add(1.0),
                        None => batch.record_count(name, 1.0, attrs(host)).await,
                    }
                    let end = Instant::now();
                    if lat.len() < lat.capacity() {
                        lat.push((
                            (start - t0).as_nanos() as u64,
                            (end - start).as_nanos().min(u32::MAX as u128) as u32,
                        ));
                    }
                }
                None => batch.record_count(name, 1.0, attrs(host)).await,
            }
            i += 1;
            if i == hot {
                i = 0;
            }
        }
        ops += 256;
        if handles.is_some() {
            tokio::task::yield_now().await;
        }
        if stop.load(Ordering::Relaxed) {
            return (ops, lat);
        }
    }
}

async fn run(
    batch: &Arc<MetricBatch>,
    w: &Arc<Workload>,
    tasks: usize,
    hot: usize,
    duration: Duration,
    timed: bool,
) -> (f64, Vec<u32>) {
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            tokio::spawn(recorder(
                batch.clone(),
                w.clone(),
                t * hot / 2,
                hot,
                stop.clone(),
                timed.then_some(t0),
                None,
            ))
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    let mut lat = Vec::new();
    for h in handles {
        let (n, l) = h.await.unwrap();
        ops += n;
        lat.extend(l.into_iter().map(|(_, d)| d));
    }
    (ops as f64 / t0.elapsed().as_secs_f64(), lat)
}

struct Percentiles {
    n: usize,
    p50: u32,
    p99: u32,
    p999: u32,
    max: u32,
}

fn percentiles(mut lat: Vec<u32>) -> Percentiles {
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    Percentiles {
        n: lat.len(),
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: *lat.last().unwrap(),
    }
}

fn show(label: &str, p: &Percentiles) {
    println!(
        "  {label:44} n={:>9}  p50 {:>7} ns  p99 {:>7} ns  p99.9 {:>8} ns  worst {:>10} ns",
        p.n, p.p50, p.p99, p.p999, p.max
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `STRESS_SHARDS=n` overrides the batch's default number of shards.
fn builder() -> newrelic_telemetry::batch::MetricBatchBuilder {
    let b = MetricBatch::builder();
    match std::env::var("STRESS_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => b.shards(n),
        None => b,
    }
}

async fn contention() {
    let w = Arc::new(Workload::new(100, 10));
    let batch = Arc::new(builder().max_series(1_000_000).build());
    for i in 0..w.len() {
        let (name, host) = w.series(i);
        batch.record_count(name, 1.0, attrs(host)).await;
    }
    println!(
        "=== target 2: record_count into one shared batch (1,000 series), 2-worker runtime ==="
    );
    let mut throughput = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for tasks in [1, 2] {
            let (ops, _) = run(&batch, &w, tasks, w.len(), THROUGHPUT_RUN, false).await;
            throughput[tasks - 1].push(ops);
        }
    }
    let (one, two) = (median(throughput[0].clone()), median(throughput[1].clone()));
    println!(
        "  1 task : {:>6.2} M ops/s   (rounds: {})",
        one / 1e6,
        rounds(&throughput[0])
    );
    println!(
        "  2 tasks: {:>6.2} M ops/s   (rounds: {})",
        two / 1e6,
        rounds(&throughput[1])
    );
    println!(
        "  2 tasks / 1 task = {:.2} (target >= 1.00): {}",
        two / one,
        if two >= one { "MET" } else { "MISSED" }
    );
    println!("  latency of each call (includes ~20-40 ns of timing overhead):");
    for tasks in [1, 2] {
        let (_, lat) = run(&batch, &w, tasks, w.len(), LATENCY_RUN, true).await;
        show(&format!("{tasks} task(s)"), &percentiles(lat));
    }
    assert_eq!(batch.series_count(), w.len());
}

fn rounds(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{:.2}", x / 1e6))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Records from `tasks` recorders into the 1,000 hot series of a batch that
/// holds `FLUSH_SERIES` series; 100 ms in, harvests or flushes it (or, with
/// [`During::Nothing`], waits for `window`). Returns the latencies of calls that
/// started inside the window, the window, and how many metrics it moved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum During {
    /// No flush: the same window, for comparison.
    Nothing,
    /// A harvester's harvest: flush, encode and POST to a sink on 127.0.0.1,
    /// until the sink has the last payload.
    Harvest,
    /// `flush()` and `encode_payload` on a runtime task.
    FlushThenEncode,
}

async fn flush_run(
    tasks: usize,
    mode: During,
    window: Duration,
    bound: bool,
) -> (Vec<u32>, Duration, usize) {
    const FLUSH_SERIES: usize = 100_000;
    let w = Arc::new(Workload::new(100, FLUSH_SERIES / 100));
    let batch = Arc::new(builder().max_series(4 * FLUSH_SERIES).build());
    for i in 0..FLUSH_SERIES {
        let (name, host) = w.series(i);
        batch.record_count(name, 1.0, attrs(host)).await;
    }
    let sink = remote_sink();
    let client = MetricClient::builder("bench-license-key")
        .endpoint(sink.metric_url())
        .build()
        .unwrap();
    let harvester = Harvester::builder(batch.clone(), client)
        .harvest_interval(Duration::from_secs(3600))
        .spawn();
    let hot = 1_000;
    let handles = if bound {
        let mut v = Vec::with_capacity(hot);
        for &(name, host) in &w.table()[..hot] {
            v.push(batch.counter(name, attrs(host)).await.unwrap());
        }
        Some(Arc::new(v))
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            tokio::spawn(recorder(
                batch.clone(),
                w.clone(),
                t * hot / 2,
                hot,
                stop.clone(),
                Some(t0),
                handles.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let from = t0.elapsed();
    let flushed = Arc::new(AtomicU64::new(0));
    let until = match mode {
        During::Nothing => {
            tokio::time::sleep(window).await;
            from + window
        }
        During::Harvest => {
            harvester.harvest_now();
            let counters = sink.counters.clone();
            while counters.items.load(Ordering::Relaxed) < FLUSH_SERIES as u64 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            flushed.store(counters.items.load(Ordering::Relaxed), Ordering::Relaxed);
            let received = counters.last_received.lock().unwrap().unwrap();
            received.saturating_duration_since(t0)
        }
        During::FlushThenEncode => {
            let (b, f) = (batch.clone(), flushed.clone());
            // A spawned task, as the harvester is.
            tokio::spawn(async move {
                let (items, common) = b.flush().await;
                f.store(items.len() as u64, Ordering::Relaxed);
                drop(encode_payload::<Metrics>(&items, &common).await.unwrap());
            })
            .await
            .unwrap();
            t0.elapsed()
        }
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::Relaxed);
    let (from_ns, until_ns) = (from.as_nanos() as u64, until.as_nanos() as u64);
    let mut lat = Vec::new();
    for h in handles {
        let (_, l) = h.await.unwrap();
        lat.extend(
            l.into_iter()
                .filter(|&(t, _)| t >= from_ns && t < until_ns)
                .map(|(_, d)| d),
        );
    }
    harvester.shutdown().await;
    (
        lat,
        until.saturating_sub(from),
        flushed.load(Ordering::Relaxed) as usize,
    )
}

/// A sink on a runtime and thread of its own, as a remote server would be:
/// its work competes with the recorders for the CPUs, but not for the
/// recorders' runtime workers. The thread lives until the process ends.
fn remote_sink() -> Sink {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tx.send(Sink::start().await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

async fn flush_latency() {
    println!();
    println!("=== target 3: recording latency while 100,000 series are harvested ===");
    for (tasks, bound) in [(1, false), (2, false), (1, true), (2, true)] {
        let (during, window, flushed) =
            flush_run(tasks, During::Harvest, Duration::ZERO, bound).await;
        let (without, _, _) = flush_run(tasks, During::Nothing, window, bound).await;
        let how = if bound {
            "CounterHandle::add (bound handles)"
        } else {
            "record_count"
        };
        println!(
            "  {tasks} task(s) recording with {how}; the harvest of {flushed} metrics took {:.1} ms (until the sink had the last payload):",
            window.as_secs_f64() * 1e3
        );
        let (during, without) = (percentiles(during), percentiles(without));
        show("during the harvest", &during);
        show("same window, no harvest", &without);
        if !bound {
            let (flush_encode, window2, _) =
                flush_run(tasks, During::FlushThenEncode, Duration::ZERO, bound).await;
            show(
                &format!(
                    "during flush() + encode_payload ({:.1} ms)",
                    window2.as_secs_f64() * 1e3
                ),
                &percentiles(flush_encode),
            );
        }
        let ratio = f64::from(during.p99) / f64::from(without.p99);
        println!(
            "  p99 during the harvest / without = {ratio:.2} (target <= 2.00): {}",
            if ratio <= 2.0 { "MET" } else { "MISSED" }
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("stress: run with `cargo bench --bench stress`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("STRESS_ONLY").unwrap_or_default();
    if only.is_empty() || only == "contention" {
        rt.block_on(contention());
    }
    if only.is_empty() || only == "flush" {
        rt.block_on(flush_latency());
    }
}
