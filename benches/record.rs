//! Target 1: one `record_*` call into an existing series, against the floor of
//! the same update on a pre-hashed `HashMap` behind an uncontended lock.
//!
//! Workload: 100 names x 10 attribute sets of 3 string attributes = 1,000
//! series, cycled with names varying fastest, on a current_thread runtime.
//! Floor, measured in the same run: a `HashMap<u64, _>` whose keys (the
//! series' hashes) are computed beforehand, behind an uncontended
//! `std::sync::Mutex` (the lock the batch's shards use), updated exactly as the
//! batch updates a series (a gauge also reads the clock). For reference the
//! same floor behind a `tokio::sync::Mutex` is measured too.

mod support;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use newrelic_telemetry::{MetricBatch, Summary};
use support::{Goal, Samples, Workload, attrs, report};
use tokio::runtime::Runtime;

type Hasher = foldhash::fast::RandomState;

#[derive(Clone, Copy, Debug)]
enum Op {
    Count,
    Gauge,
    Summary,
}

/// The value stored per series in the floors: what the batch keeps (written,
/// never read back, as in the batch until a flush).
#[derive(Clone, Copy)]
#[allow(dead_code)]
enum Slot {
    Count(f64),
    Gauge { value: f64, timestamp_ms: u64 },
    Summary(Summary),
}

/// The batch's clock, rebuilt for the floor: wall-clock anchor + tokio elapsed.
struct Clock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl Clock {
    fn start() -> Self {
        Clock {
            base_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            base: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

#[inline(always)]
fn update(slot: &mut Slot, op: Op, value: f64, clock: &Clock) {
    match (slot, op) {
        (Slot::Count(v), Op::Count) => *v += value,
        (slot @ Slot::Gauge { .. }, Op::Gauge) => {
            *slot = Slot::Gauge {
                value,
                timestamp_ms: clock.now_ms(),
            }
        }
        (Slot::Summary(s), Op::Summary) => s.observe(value),
        _ => unreachable!(),
    }
}

fn initial(op: Op) -> Slot {
    match op {
        Op::Count => Slot::Count(0.0),
        Op::Gauge => Slot::Gauge {
            value: 0.0,
            timestamp_ms: 0,
        },
        Op::Summary => Slot::Summary(Summary::from_value(0.0)),
    }
}

fn bench_op(c: &mut Criterion, rt: &Runtime, w: &'static Workload, op: Op) {
    let n = w.len();
    let build = Hasher::default();
    // Pre-hashed keys: the hashing is done here, outside the measurement.
    let keys: &'static [u64] = (0..n)
        .map(|i| {
            let (name, host) = w.series(i);
            build.hash_one((name, host, "prod", "us-east-1"))
        })
        .collect::<Vec<_>>()
        .leak();
    let map = || -> HashMap<u64, Slot, Hasher> { keys.iter().map(|&k| (k, initial(op))).collect() };
    let tokio_floor = &*Box::leak(Box::new(tokio::sync::Mutex::new(map())));
    let std_floor = &*Box::leak(Box::new(std::sync::Mutex::new(map())));
    let batch = &*Box::leak(Box::new(
        MetricBatch::builder().max_series(1_000_000).build(),
    ));
    rt.block_on(async {
        for i in 0..n {
            let (name, host) = w.series(i);
            match op {
                Op::Count => batch.record_count(name, 1.0, attrs(host)).await,
                Op::Gauge => batch.record_gauge(name, 1.0, attrs(host)).await,
                Op::Summary => batch.record_summary(name, 1.0, attrs(host)).await,
            }
            .unwrap();
        }
    });
    let clock = &*Box::leak(Box::new(Clock::start()));
    let table: &'static [(&'static str, &'static str)] = w.table().leak();

    let (s_tokio, s_std, s_batch) = (Samples::default(), Samples::default(), Samples::default());
    let mut group = c.benchmark_group(format!("record/{op:?}").to_lowercase());

    let s = s_tokio.clone();
    group.bench_function("reference: tokio::Mutex<HashMap<u64,_>> pre-hashed", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let s = s.clone();
            async move {
                let start = Instant::now();
                let mut i = 0;
                for k in 0..iters {
                    let mut guard = tokio_floor.lock().await;
                    update(
                        guard.get_mut(black_box(&keys[i])).unwrap(),
                        op,
                        k as f64,
                        clock,
                    );
                    drop(guard);
                    i += 1;
                    if i == n {
                        i = 0;
                    }
                }
                let d = start.elapsed();
                s.push(iters, d);
                d
            }
        })
    });

    let s = s_std.clone();
    group.bench_function("floor: std::Mutex<HashMap<u64,_>> pre-hashed", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let s = s.clone();
            async move {
                let start = Instant::now();
                let mut i = 0;
                for k in 0..iters {
                    let mut guard = std_floor.lock().unwrap();
                    update(
                        guard.get_mut(black_box(&keys[i])).unwrap(),
                        op,
                        k as f64,
                        clock,
                    );
                    drop(guard);
                    i += 1;
                    if i == n {
                        i = 0;
                    }
                }
                let d = start.elapsed();
                s.push(iters, d);
                d
            }
        })
    });

    let s = s_batch.clone();
    group.bench_function("measured: MetricBatch", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let s = s.clone();
            async move {
                let start = Instant::now();
                let mut i = 0;
                for k in 0..iters {
                    let (name, host) = table[black_box(i)];
                    let v = k as f64;
                    match op {
                        Op::Count => batch.record_count(name, v, attrs(host)).await,
                        Op::Gauge => batch.record_gauge(name, v, attrs(host)).await,
                        Op::Summary => batch.record_summary(name, v, attrs(host)).await,
                    }
                    .unwrap();
                    i += 1;
                    if i == n {
                        i = 0;
                    }
                }
                let d = start.elapsed();
                s.push(iters, d);
                d
            }
        })
    });
    group.finish();
    assert_eq!(batch.series_count(), n, "every call hit an existing series");

    let samples = 20;
    let name = format!("{op:?}").to_lowercase();
    report(
        &format!("target 1: record_{name} into an existing series (1,000 series)"),
        "op",
        (
            "std::Mutex<HashMap<u64,_>>, pre-hashed key",
            s_std.median_ns(samples),
        ),
        (
            &format!("MetricBatch::record_{name}"),
            s_batch.median_ns(samples),
        ),
        Goal::TimeAtMost(2.0),
    );
    println!(
        "  reference tokio::Mutex<HashMap<u64,_>>, pre-hashed key: {:.1} ns/op (batch = {:.2}x)",
        s_tokio.median_ns(samples),
        s_batch.median_ns(samples) / s_tokio.median_ns(samples)
    );
}

fn main() {
    let mut c = support::criterion(Duration::from_secs(2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let w: &'static Workload = Box::leak(Box::new(Workload::new(100, 10)));
    for op in [Op::Count, Op::Gauge, Op::Summary] {
        bench_op(&mut c, &rt, w, op);
    }
    c.final_summary();
}
