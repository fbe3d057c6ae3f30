//! Target 4: flush + JSON + gzip of 10,000 items, against the floor of
//! `serde_json` on an equivalent pre-built `Vec` of plain derive-`Serialize`
//! structs plus gzip at the same level (6), measured in the same run, for
//! metrics, events, logs and spans.
//!
//! The measured path is the public `flush()` of the batch followed by
//! `encode_payload::<K>` (the JSON and gzip exactly as a client posts them).
//! Filling the batch with 10,000 items before each iteration is not timed.
//!
//! Distributions (issue 20's target: encode + gzip of 10,000 points within
//! 1.5x of the JSON summary path per point): 10,000 series, each given the
//! same 20 values (1 to about 1,000) as a distribution and as a summary;
//! flush, then `encode_payload::<Otlp>` of the points against flush, then
//! `encode_payload::<Metrics>` of the summaries, in interleaved rounds.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use newrelic_telemetry::MetricBatch;
use newrelic_telemetry::client::{Metrics, Otlp, encode_payload};
use support::encode::{Case, EventCase, ITEMS, LogCase, MetricCase, SpanCase, gunzip};
use support::{Goal, Samples, report};
use tokio::runtime::Runtime;

fn bench_case<C: Case>(c: &mut Criterion, rt: &Runtime, case: C) {
    let case: &'static C = Box::leak(Box::new(case));
    // The floor's items are built once from a real flush, so both sides
    // serialize the same values.
    let (floor, measured_json) = rt.block_on(async {
        case.fill().await;
        let (items, common) = case.flush().await;
        let body = encode_payload::<C::K>(&items, &common).await.unwrap();
        (C::floor(&items, &common), gunzip(&body))
    });
    let floor_json = floor.json();
    let floor_gz = floor.encode();

    let (s_floor, s_measured) = (Samples::default(), Samples::default());
    let mut group = c.benchmark_group(format!("encode/{}", C::NAME));
    let s = s_floor.clone();
    group.bench_function("floor: serde_json(pre-built Vec) + gzip", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(floor.encode());
            }
            let d = start.elapsed();
            s.push(iters, d);
            d
        })
    });
    let s = s_measured.clone();
    group.bench_function("measured: flush + encode_payload", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let s = s.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    case.fill().await;
                    let start = Instant::now();
                    let (items, common) = case.flush().await;
                    let body = encode_payload::<C::K>(&items, &common).await.unwrap();
                    total += start.elapsed();
                    black_box(body);
                    drop(items);
                }
                s.push(iters, total);
                total
            }
        })
    });
    group.finish();

    let (floor_ns, measured_ns) = (
        s_floor.median_ns(20) / ITEMS as f64,
        s_measured.median_ns(20) / ITEMS as f64,
    );
    report(
        &format!("target 4: flush + JSON + gzip of {ITEMS} {}", C::NAME),
        "item",
        ("serde_json of a pre-built Vec + gzip", floor_ns),
        ("batch.flush() + encode_payload", measured_ns),
        Goal::ThroughputAtLeast(0.8),
    );
    println!(
        "  JSON bytes: measured {} / floor {}; gzip bytes: floor {}",
        measured_json.len(),
        floor_json.len(),
        floor_gz.len()
    );
    println!(
        "  measured {:.2} M items/s, {:.0} MB/s of JSON; floor {:.2} M items/s, {:.0} MB/s",
        1e3 / measured_ns,
        measured_json.len() as f64 / (measured_ns * ITEMS as f64) * 1e3,
        1e3 / floor_ns,
        floor_json.len() as f64 / (floor_ns * ITEMS as f64) * 1e3,
    );
}

/// Records the same 20 values into each of 10,000 series of `batch`, as
/// distributions or as summaries.
async fn fill_series(batch: &MetricBatch, distributions: bool) {
    for series in 0..ITEMS {
        let attrs = [("series", series as i64), ("region", 3)];
        for k in 0..20u32 {
            let v = f64::from(1 + (k * 53 + series as u32 * 7) % 1_000);
            if distributions {
                batch.record_distribution("latency.ms", v, attrs).await;
            } else {
                batch.record_summary("latency.ms", v, attrs).await;
            }
        }
    }
}

fn bench_distributions(rt: &Runtime) {
    let measuring = std::env::args().any(|a| a == "--bench");
    let rounds = if measuring { 15 } else { 1 };
    let (mut dist_ns, mut summary_ns) = (Vec::new(), Vec::new());
    let (mut dist_bytes, mut summary_bytes) = (0, 0);
    // 10,000 series whose values reach ten powers of two hold about 5 KiB
    // of bucket pages each: more than the default budget of 16 MiB.
    let budget = 256 << 20;
    let dist = MetricBatch::builder()
        .series_limit(0)
        .memory_budget(budget)
        .build();
    let summaries = MetricBatch::builder()
        .series_limit(0)
        .memory_budget(budget)
        .build();
    rt.block_on(async {
        for round in 0..rounds {
            for turn in 0..2 {
                let distributions = (turn + round) % 2 == 0;
                if distributions {
                    fill_series(&dist, true).await;
                    let start = Instant::now();
                    dist.flush().await;
                    let (points, common) = dist.distributions().flush().await;
                    let body = encode_payload::<Otlp>(&points, &common).await.unwrap();
                    dist_ns.push(start.elapsed().as_nanos() as f64 / ITEMS as f64);
                    assert_eq!(points.len(), ITEMS);
                    dist_bytes = body.len();
                } else {
                    fill_series(&summaries, false).await;
                    let start = Instant::now();
                    let (metrics, common) = summaries.flush().await;
                    let body = encode_payload::<Metrics>(&metrics, &common).await.unwrap();
                    summary_ns.push(start.elapsed().as_nanos() as f64 / ITEMS as f64);
                    assert_eq!(metrics.len(), ITEMS);
                    summary_bytes = body.len();
                }
            }
        }
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    report(
        &format!(
            "target: flush + encode + gzip of {ITEMS} distribution points ({rounds} interleaved rounds)"
        ),
        "point",
        ("summaries: flush + JSON + gzip", median(&mut summary_ns)),
        (
            "distributions: flush + OTLP protobuf + gzip",
            median(&mut dist_ns),
        ),
        Goal::TimeAtMost(1.5),
    );
    println!("  gzip bytes: distributions {dist_bytes}, summaries {summary_bytes}");
}

fn main() {
    let mut c = support::criterion(Duration::from_secs(2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // ENCODE_ONLY=distributions: the distribution target alone.
    if std::env::var("ENCODE_ONLY").as_deref() != Ok("distributions") {
        bench_case(&mut c, &rt, MetricCase::default());
        bench_case(&mut c, &rt, EventCase::default());
        bench_case(&mut c, &rt, LogCase::default());
        bench_case(&mut c, &rt, SpanCase::default());
    }
    bench_distributions(&rt);
    c.final_summary();
}
