//! Target 4: flush + JSON + gzip of 10,000 items, against the floor of
//! `serde_json` on an equivalent pre-built `Vec` of plain derive-`Serialize`
//! structs plus gzip at the same level (6), measured in the same run, for
//! metrics, events, logs and spans.
//!
//! The measured path is the public `flush()` of the batch followed by
//! `encode_payload::<K>` (the JSON and gzip exactly as a client posts them).
//! Filling the batch with 10,000 items before each iteration is not timed.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use newrelic_telemetry::client::encode_payload;
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
    group.bench_function("floor: serde_json(pre-built Vec) + gzip(6)", |b| {
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
        ("serde_json of a pre-built Vec + gzip(6)", floor_ns),
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

fn main() {
    let mut c = support::criterion(Duration::from_secs(2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    bench_case(&mut c, &rt, MetricCase::default());
    bench_case(&mut c, &rt, EventCase::default());
    bench_case(&mut c, &rt, LogCase::default());
    bench_case(&mut c, &rt, SpanCase::default());
    c.final_summary();
}
