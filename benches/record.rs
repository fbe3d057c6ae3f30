//! Target 1: one `record_*` call into an existing series, against the floor of
//! the same update on a pre-hashed `HashMap` behind an uncontended lock.
//!
//! Workload: 100 names x 10 attribute sets of 3 string attributes = 1,000
//! series, cycled with names varying fastest, on a current_thread runtime.
//! Floor, measured in the same run: a `HashMap<u64, _>` whose keys (the
//! series' hashes) are computed beforehand, behind an uncontended
//! `std::sync::Mutex`, updated exactly as the batch updates a series (a gauge
//! also reads the clock). For reference the same floor behind a
//! `tokio::sync::Mutex` (the lock the batch's shards use) is measured too.
//!
//! Measured in the same run, on the same inputs: the string path
//! (`record_count(name, v, attrs).await`), the bound handles (`CounterHandle::add`,
//! `GaugeHandle::set`, `SummaryHandle::record`, `DistributionHandle::record`,
//! one handle per series), and the peer, `opentelemetry_sdk`'s
//! `Counter::add`, `Gauge::record` and `Histogram::record` (explicit
//! buckets for summaries, a base-2 exponential aggregation of 160 buckets
//! from scale 20 for distributions; one instrument per name, the three
//! `KeyValue`s of each series built beforehand, delta temporality, a
//! manual reader). The distributions' floor updates a `Distribution` in
//! the map; their rounds also run `record_summary` (issue 20's target:
//! `record_distribution` at most 1.2x `record_summary`). Values walk
//! 1..=1,000 (a distribution's pages for those powers of two are made
//! before the measurement).

mod support;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use newrelic_telemetry::distribution::Distribution;
use newrelic_telemetry::{
    CounterHandle, DistributionHandle, GaugeHandle, MetricBatch, Summary, SummaryHandle,
};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{
    Aggregation, ManualReader, SdkMeterProvider, Stream, Temporality,
};
use support::{Goal, Samples, Workload, attrs, report};
use tokio::runtime::Runtime;

type Hasher = foldhash::fast::RandomState;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Count,
    Gauge,
    Summary,
    Distribution,
}

/// The value stored per series in the floors: what the batch keeps (written,
/// never read back, as in the batch until a flush).
#[derive(Clone)]
#[allow(dead_code)]
enum Slot {
    Count(f64),
    Gauge { value: f64, timestamp_ms: u64 },
    Summary(Summary),
    Distribution(Box<Distribution>),
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
        (Slot::Distribution(d), Op::Distribution) => {
            let _ = d.record(value);
        }
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
        Op::Distribution => {
            let mut d = Distribution::new();
            // The range the walk records: the scale it settles at.
            for v in [1.0, 1_000.0] {
                let _ = d.record(v);
            }
            Slot::Distribution(Box::new(d))
        }
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
    // For distributions, `record_summary` on the same workload, in the same
    // rounds.
    let summaries = &*Box::leak(Box::new(
        MetricBatch::builder().max_series(1_000_000).build(),
    ));
    rt.block_on(async {
        for i in 0..n {
            let (name, host) = w.series(i);
            match op {
                Op::Count => batch.try_record_count(name, 1.0, attrs(host)).await,
                Op::Gauge => batch.try_record_gauge(name, 1.0, attrs(host)).await,
                Op::Summary => batch.try_record_summary(name, 1.0, attrs(host)).await,
                Op::Distribution => {
                    summaries
                        .try_record_summary(name, 1.0, attrs(host))
                        .await
                        .unwrap();
                    // Each power of two the walk reaches: its bucket page.
                    for e in 0..=10 {
                        let v = f64::from(1 << e);
                        batch
                            .try_record_distribution(name, v, attrs(host))
                            .await
                            .unwrap();
                    }
                    Ok(())
                }
            }
            .unwrap();
        }
    });
    let clock = &*Box::leak(Box::new(Clock::start()));
    let table: &'static [(&'static str, &'static str)] = w.table().leak();
    let handles: &'static [Handle] = rt
        .block_on(async {
            let mut v = Vec::with_capacity(n);
            for &(name, host) in table {
                v.push(match op {
                    Op::Count => Handle::Count(batch.counter(name, attrs(host)).await.unwrap()),
                    Op::Gauge => Handle::Gauge(batch.gauge(name, attrs(host)).await.unwrap()),
                    Op::Summary => Handle::Summary(batch.summary(name, attrs(host)).await.unwrap()),
                    Op::Distribution => {
                        Handle::Distribution(batch.distribution(name, attrs(host)).await.unwrap())
                    }
                });
            }
            v
        })
        .leak();
    let otel: &'static Otel = Box::leak(Box::new(Otel::new(w, op)));

    let (s_tokio, s_std, s_batch) = (Samples::default(), Samples::default(), Samples::default());
    let (s_handle, s_otel) = (Samples::default(), Samples::default());
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
                        value(k),
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
                        value(k),
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
                    let v = value(k);
                    match op {
                        Op::Count => batch.record_count(name, v, attrs(host)).await,
                        Op::Gauge => batch.record_gauge(name, v, attrs(host)).await,
                        Op::Summary => batch.record_summary(name, v, attrs(host)).await,
                        Op::Distribution => batch.record_distribution(name, v, attrs(host)).await,
                    }
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
    let s = s_handle.clone();
    group.bench_function("measured: bound handle", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut i = 0;
            for k in 0..iters {
                let v = value(k);
                match &handles[black_box(i)] {
                    Handle::Count(c) => c.add(v),
                    Handle::Gauge(g) => g.set(v),
                    Handle::Summary(h) => h.record(v),
                    Handle::Distribution(h) => h.record(v),
                }
                i += 1;
                if i == n {
                    i = 0;
                }
            }
            let d = start.elapsed();
            s.push(iters, d);
            d
        })
    });

    let s = s_otel.clone();
    group.bench_function("peer: opentelemetry_sdk", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut i = 0;
            for k in 0..iters {
                let v = value(k);
                let (name, set) = otel.series[black_box(i)];
                let kvs = &otel.sets[set];
                match &otel.instruments[name] {
                    Instrument::Counter(c) => c.add(v, kvs),
                    Instrument::Gauge(g) => g.record(v, kvs),
                    Instrument::Histogram(h) => h.record(v, kvs),
                }
                i += 1;
                if i == n {
                    i = 0;
                }
            }
            let d = start.elapsed();
            s.push(iters, d);
            d
        })
    });
    group.finish();
    assert_eq!(batch.series_count(), n, "every call hit an existing series");

    // The verdicts come from rounds that run every path in turn on chunks of
    // the same calls, so that a change in the machine's load between
    // criterion's groups cannot tilt a ratio: the median of each path's
    // rounds is reported.
    let name = format!("{op:?}").to_lowercase();
    // `cargo test --benches` runs this once as a smoke test: one short round.
    let measuring = std::env::args().any(|a| a == "--bench");
    let (rounds_n, chunk) = if measuring { (31, 200_000) } else { (1, 2_000) };
    let mut rounds: [Vec<f64>; 6] = Default::default();
    let paths = if op == Op::Distribution { 6 } else { 5 };
    for round in 0..rounds_n {
        for k in 0..paths {
            // Rotate which path runs first.
            let path = (k + round) % paths;
            let start = Instant::now();
            match path {
                0 => {
                    let mut i = 0;
                    for j in 0..chunk {
                        let mut guard = std_floor.lock().unwrap();
                        let slot = guard.get_mut(black_box(&keys[i])).unwrap();
                        update(slot, op, value(j), clock);
                        i = next(i, n);
                    }
                }
                1 => rt.block_on(async {
                    let mut i = 0;
                    for j in 0..chunk {
                        let mut guard = tokio_floor.lock().await;
                        let slot = guard.get_mut(black_box(&keys[i])).unwrap();
                        update(slot, op, value(j), clock);
                        i = next(i, n);
                    }
                }),
                2 => rt.block_on(async {
                    let mut i = 0;
                    for j in 0..chunk {
                        let (name, host) = table[black_box(i)];
                        let v = value(j);
                        match op {
                            Op::Count => batch.record_count(name, v, attrs(host)).await,
                            Op::Gauge => batch.record_gauge(name, v, attrs(host)).await,
                            Op::Summary => batch.record_summary(name, v, attrs(host)).await,
                            Op::Distribution => {
                                batch.record_distribution(name, v, attrs(host)).await
                            }
                        }
                        i = next(i, n);
                    }
                }),
                3 => {
                    let mut i = 0;
                    for j in 0..chunk {
                        let v = value(j);
                        match &handles[black_box(i)] {
                            Handle::Count(c) => c.add(v),
                            Handle::Gauge(g) => g.set(v),
                            Handle::Summary(h) => h.record(v),
                            Handle::Distribution(h) => h.record(v),
                        }
                        i = next(i, n);
                    }
                }
                5 => rt.block_on(async {
                    let mut i = 0;
                    for j in 0..chunk {
                        let (name, host) = table[black_box(i)];
                        summaries.record_summary(name, value(j), attrs(host)).await;
                        i = next(i, n);
                    }
                }),
                _ => {
                    let mut i = 0;
                    for j in 0..chunk {
                        let v = value(j);
                        let (name, set) = otel.series[black_box(i)];
                        let kvs = &otel.sets[set];
                        match &otel.instruments[name] {
                            Instrument::Counter(c) => c.add(v, kvs),
                            Instrument::Gauge(g) => g.record(v, kvs),
                            Instrument::Histogram(h) => h.record(v, kvs),
                        }
                        i = next(i, n);
                    }
                }
            }
            rounds[path].push(start.elapsed().as_nanos() as f64 / chunk as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [std_r, tokio_r, batch_r, handle_r, otel_r, summary_r] = &mut rounds;
    let (std_ns, tokio_ns, batch_ns, handle_ns, otel_ns) = (
        median(std_r),
        median(tokio_r),
        median(batch_r),
        median(handle_r),
        median(otel_r),
    );
    println!(
        "  criterion medians (ns/op): std floor {:.1}, tokio floor {:.1}, string path {:.1}, handle {:.1}, peer {:.1}",
        s_std.median_ns(20),
        s_tokio.median_ns(20),
        s_batch.median_ns(20),
        s_handle.median_ns(20),
        s_otel.median_ns(20)
    );
    let (handle_label, otel_label) = match op {
        Op::Count => (
            "CounterHandle::add (bound handle)",
            "opentelemetry_sdk Counter::add",
        ),
        Op::Gauge => (
            "GaugeHandle::set (bound handle)",
            "opentelemetry_sdk Gauge::record",
        ),
        Op::Summary => (
            "SummaryHandle::record (bound handle)",
            "opentelemetry_sdk Histogram::record",
        ),
        Op::Distribution => (
            "DistributionHandle::record (bound handle)",
            "opentelemetry_sdk Histogram::record, exponential",
        ),
    };
    report(
        &format!("target 1: {handle_label}, 1 task (1,000 series; {rounds_n} interleaved rounds)"),
        "op",
        ("std::Mutex<HashMap<u64,_>>, pre-hashed key", std_ns),
        (handle_label, handle_ns),
        // A distribution's handle: within 3x (issue 20).
        Goal::TimeAtMost(if op == Op::Distribution { 3.0 } else { 2.0 }),
    );
    if op == Op::Distribution {
        report(
            &format!(
                "target: record_distribution against record_summary, the same calls ({rounds_n} interleaved rounds)"
            ),
            "op",
            ("MetricBatch::record_summary", median(summary_r)),
            ("MetricBatch::record_distribution", batch_ns),
            Goal::TimeAtMost(1.2),
        );
    }
    // The string path against the peer: at most 0.8x for counts, at most
    // 1x for gauges and summaries.
    let limit = if matches!(op, Op::Count) { 0.8 } else { 1.0 };
    report(
        &format!(
            "target 1: record_{name}(name, v, 3 string pairs).await against the peer ({rounds_n} interleaved rounds)"
        ),
        "op",
        (otel_label, otel_ns),
        (&format!("MetricBatch::record_{name}"), batch_ns),
        Goal::TimeAtMost(limit),
    );
    println!(
        "  floors: std::Mutex<HashMap<u64,_>> {std_ns:.1} ns, tokio::Mutex<HashMap<u64,_>> {tokio_ns:.1} ns (pre-hashed); \
         string path = {:.2}x the tokio floor",
        batch_ns / tokio_ns
    );
}

/// The value of call `k`: 1..=1,000, spread over ten powers of two.
#[inline(always)]
fn value(k: u64) -> f64 {
    (k % 1_000 + 1) as f64
}

/// The next index of a walk over `n` series.
#[inline(always)]
fn next(i: usize, n: usize) -> usize {
    if i + 1 == n { 0 } else { i + 1 }
}

/// A bound handle of one of the three types.
enum Handle {
    Count(CounterHandle),
    Gauge(GaugeHandle),
    Summary(SummaryHandle),
    Distribution(DistributionHandle),
}

enum Instrument {
    Counter(opentelemetry::metrics::Counter<f64>),
    Gauge(opentelemetry::metrics::Gauge<f64>),
    Histogram(opentelemetry::metrics::Histogram<f64>),
}

/// The peer on the same workload: one instrument per name, each series'
/// attributes as three `KeyValue`s built beforehand.
struct Otel {
    _provider: SdkMeterProvider,
    instruments: Vec<Instrument>,
    sets: Vec<[KeyValue; 3]>,
    /// (instrument, attribute set) of every series, in the batch's order.
    series: Vec<(usize, usize)>,
}

impl Otel {
    fn new(w: &Workload, op: Op) -> Self {
        let reader = ManualReader::builder()
            .with_temporality(Temporality::Delta)
            .build();
        let mut provider = SdkMeterProvider::builder().with_reader(reader);
        if op == Op::Distribution {
            // OpenTelemetry's exponential histogram, as a service that
            // wants percentiles configures it.
            provider = provider.with_view(|_: &opentelemetry_sdk::metrics::Instrument| {
                Stream::builder()
                    .with_aggregation(Aggregation::Base2ExponentialHistogram {
                        max_size: 160,
                        max_scale: 20,
                        record_min_max: true,
                    })
                    .build()
                    .ok()
            });
        }
        let provider = provider.build();
        let meter = provider.meter("bench");
        let instruments = w
            .names
            .iter()
            .map(|name| match op {
                Op::Count => Instrument::Counter(meter.f64_counter(name.clone()).build()),
                Op::Gauge => Instrument::Gauge(meter.f64_gauge(name.clone()).build()),
                Op::Summary | Op::Distribution => {
                    Instrument::Histogram(meter.f64_histogram(name.clone()).build())
                }
            })
            .collect();
        let sets = support::otel_sets(w);
        let names = w.names.len();
        let series = (0..w.len())
            .map(|i| (i % names, (i / names) % w.hosts.len()))
            .collect();
        let otel = Otel {
            _provider: provider,
            instruments,
            sets,
            series,
        };
        // Create every series once, as the batch's are.
        for &(name, set) in &otel.series {
            let kvs = &otel.sets[set];
            match &otel.instruments[name] {
                Instrument::Counter(c) => c.add(1.0, kvs),
                Instrument::Gauge(g) => g.record(1.0, kvs),
                Instrument::Histogram(h) => {
                    // The range the walk records: the scale it settles at.
                    h.record(1.0, kvs);
                    h.record(1_000.0, kvs);
                }
            }
        }
        otel
    }
}

/// A name at its series limit (`logins`, 1,000 series): recording a new
/// attribute set (a user id never seen) goes to the name's overflow series.
/// Target: no more than recording into an existing series of the same shape
/// plus one hash of the name (measured here as foldhash's `hash_one` of
/// it), in the same interleaved rounds. Also reported: the same new-set
/// recordings against the peer's `Counter::add` with its cardinality
/// limit (its default of 2,000, past which it too records into an
/// overflow series).
fn bench_overflow(rt: &Runtime) {
    const SERIES: i64 = 1_000;
    let at_limit = MetricBatch::builder().series_limit(SERIES as usize).build();
    let existing = MetricBatch::builder().series_limit(0).build();
    rt.block_on(async {
        for user in 0..SERIES {
            let pairs = overflow_attrs(user);
            at_limit
                .try_record_count("logins", 1.0, pairs)
                .await
                .unwrap();
            existing
                .try_record_count("logins", 1.0, pairs)
                .await
                .unwrap();
        }
        // The overflow series exists from the first new id on.
        at_limit
            .try_record_count("logins", 1.0, overflow_attrs(SERIES))
            .await
            .unwrap();
    });
    let build = Hasher::default();
    let measuring = std::env::args().any(|a| a == "--bench");
    let (rounds_n, chunk) = if measuring { (31, 200_000) } else { (1, 2_000) };
    let mut rounds: [Vec<f64>; 3] = Default::default();
    let mut next_user = SERIES + 1;
    for round in 0..rounds_n {
        for k in 0..3 {
            let path = (k + round) % 3;
            let start = Instant::now();
            match path {
                0 => rt.block_on(async {
                    for j in 0..chunk {
                        let pairs = overflow_attrs(black_box(j as i64 % SERIES));
                        existing.record_count("logins", 1.0, pairs).await;
                    }
                }),
                1 => rt.block_on(async {
                    for _ in 0..chunk {
                        let pairs = overflow_attrs(black_box(next_user));
                        next_user += 1;
                        at_limit.record_count("logins", 1.0, pairs).await;
                    }
                }),
                _ => {
                    for _ in 0..chunk {
                        black_box(build.hash_one(black_box("logins")));
                    }
                }
            }
            rounds[path].push(start.elapsed().as_nanos() as f64 / chunk as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [existing_r, overflow_r, hash_r] = &mut rounds;
    let (existing_ns, overflow_ns, hash_ns) =
        (median(existing_r), median(overflow_r), median(hash_r));
    assert_eq!(
        at_limit.series_count(),
        SERIES as usize + 1,
        "one overflow series"
    );
    report(
        &format!(
            "series limit: a new attribute set of a name at its limit, into its overflow series ({rounds_n} interleaved rounds)"
        ),
        "op",
        (
            "an existing series of the name + one hash of the name",
            existing_ns + hash_ns,
        ),
        ("record_count, new user id past the limit", overflow_ns),
        Goal::TimeAtMost(1.0),
    );
    println!(
        "  existing series {existing_ns:.1} ns, one hash {hash_ns:.1} ns, overflow {overflow_ns:.1} ns"
    );
}

/// Three pairs, one of them a user id.
fn overflow_attrs(user: i64) -> [(&'static str, newrelic_telemetry::ValueRef<'static>); 3] {
    use newrelic_telemetry::ValueRef;
    [
        ("user.id", ValueRef::Int(user)),
        ("env", ValueRef::Str("prod")),
        ("region", ValueRef::Str("us-east-1")),
    ]
}

fn main() {
    let mut c = support::criterion(Duration::from_secs(2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let w: &'static Workload = Box::leak(Box::new(Workload::new(100, 10)));
    let ops: Vec<Op> = match std::env::var("RECORD_OPS").ok().as_deref() {
        // RECORD_OPS=distribution: that one alone.
        Some(only) if !only.is_empty() => [Op::Count, Op::Gauge, Op::Summary, Op::Distribution]
            .into_iter()
            .filter(|op| format!("{op:?}").eq_ignore_ascii_case(only))
            .collect(),
        _ => vec![Op::Count, Op::Gauge, Op::Summary, Op::Distribution],
    };
    for op in ops {
        bench_op(&mut c, &rt, w, op);
    }
    bench_overflow(&rt);
    c.final_summary();
}
