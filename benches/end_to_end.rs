//! Target 5: batches of 10,000 metrics harvested and posted to a sink on
//! 127.0.0.1 (a hyper server that gunzips, parses and counts), against the
//! encoding floor (`serde_json` of a pre-built `Vec` + gzip(6)) measured in the
//! same run.
//!
//! Each iteration fills the batch with 10,000 count series (not timed), then
//! times `Harvester::harvest_now()` (flush, JSON, gzip, queue, POST over a kept-alive
//! connection) until the sink has the whole body. The sink answers 202 on
//! receipt, as the ingest APIs do, and decompresses and counts on a blocking
//! thread; the time until it has counted the payload is reported too. The
//! bench waits for the count before filling the batch again, so the sink's
//! work never overlaps a timed section.
//!
//! Second, `MetricClient::send_batch` of the 10,000 metrics a flush returns
//! (the batch filled and flushed untimed), against the plain-POST floor: the
//! same metrics' JSON from pre-built structs, gzip(6), and one POST with
//! `reqwest` over a kept-alive connection to the same sink, until its answer.

mod support;

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use newrelic_telemetry::{Harvester, MetricClient};
use support::encode::{Case, ITEMS, MetricCase};
use support::sink::Sink;
use support::{Goal, Samples, report};

fn main() {
    let mut c = support::criterion(Duration::from_secs(3));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let case: &'static MetricCase = Box::leak(Box::new(MetricCase::default()));
    let sink: &'static Sink = Box::leak(Box::new(rt.block_on(Sink::start())));
    let client = MetricClient::builder("bench-license-key")
        .endpoint(sink.metric_url())
        .build()
        .unwrap();
    let harvester: &'static Harvester = Box::leak(Box::new(rt.block_on(async {
        Harvester::builder(case.batch.clone(), client)
            .harvest_interval(Duration::from_secs(3600))
            .spawn()
    })));
    let counters = sink.counters.clone();

    // The floor's payload, from a real flush of the same workload.
    let floor: &'static _ = Box::leak(Box::new(rt.block_on(async {
        case.fill().await;
        let (items, common) = case.batch.flush().await;
        MetricCase::floor(&items, &common)
    })));

    let (s_floor, s_client, s_counted) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut group = c.benchmark_group("end_to_end/metrics");
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
    let (s1, s2) = (s_client.clone(), s_counted.clone());
    let c2 = counters.clone();
    group.bench_function("measured: harvest_now -> POST -> sink", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (s1, s2, counters) = (s1.clone(), s2.clone(), c2.clone());
            async move {
                let (mut client, mut counted) = (Duration::ZERO, Duration::ZERO);
                for _ in 0..iters {
                    case.fill().await;
                    let target = counters.items.load(Ordering::Relaxed) + ITEMS as u64;
                    let start = Instant::now();
                    harvester.harvest_now();
                    let deadline = start + Duration::from_secs(10);
                    while counters.items.load(Ordering::Relaxed) < target {
                        assert!(
                            Instant::now() < deadline,
                            "the sink did not get the payload"
                        );
                        tokio::time::sleep(Duration::from_micros(100)).await;
                    }
                    let received = counters.last_received.lock().unwrap().unwrap();
                    let done = counters.last_counted.lock().unwrap().unwrap();
                    client += received.saturating_duration_since(start);
                    counted += done.saturating_duration_since(start);
                }
                s1.push(iters, client);
                s2.push(iters, counted);
                client
            }
        })
    });
    let (s_post, s_send) = (Samples::default(), Samples::default());
    // Set up as the SDK's own client is (connect timeout, no redirects).
    let plain = newrelic_telemetry::client::http_client_builder()
        .build()
        .expect("client");
    let sender = MetricClient::builder("bench-license-key")
        .endpoint(sink.metric_url())
        .build()
        .unwrap();
    let url = sink.metric_url();
    let (s, c2, plain, url) = (s_post.clone(), counters.clone(), plain.clone(), url.clone());
    group.bench_function("floor: plain POST of serde_json + gzip(6)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (s, counters, plain, url) = (s.clone(), c2.clone(), plain.clone(), url.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let target = counters.items.load(Ordering::Relaxed) + ITEMS as u64;
                    let start = Instant::now();
                    let body = floor.encode();
                    let response = plain
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("content-encoding", "gzip")
                        .header("api-key", "bench-license-key")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 202);
                    total += start.elapsed();
                    wait_for(&counters, target).await;
                }
                s.push(iters, total);
                total
            }
        })
    });
    let (s, c3, sender) = (s_send.clone(), counters.clone(), sender.clone());
    group.bench_function("measured: send_batch(flushed metrics)", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (s, counters, sender) = (s.clone(), c3.clone(), sender.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    case.fill().await;
                    let (items, common) = case.batch.flush().await;
                    let target = counters.items.load(Ordering::Relaxed) + ITEMS as u64;
                    let start = Instant::now();
                    let report = sender.send_batch(items, common).await.unwrap();
                    total += start.elapsed();
                    assert_eq!(report.items_sent(), ITEMS);
                    wait_for(&counters, target).await;
                }
                s.push(iters, total);
                total
            }
        })
    });
    group.finish();
    // The verdict comes from rounds that run the plain POST and send_batch
    // in turn (alternating which goes first), so that a change in the
    // machine's load between criterion's groups cannot tilt the ratio.
    let measuring = std::env::args().any(|a| a == "--bench");
    let rounds = if measuring { 41 } else { 1 };
    let (mut posts, mut sends) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for round in 0..rounds {
            case.fill().await;
            let (items, common) = case.batch.flush().await;
            let mut batch = Some((items, common));
            for k in 0..2 {
                let target = counters.items.load(Ordering::Relaxed) + ITEMS as u64;
                let start = Instant::now();
                if (k + round) % 2 == 0 {
                    let response = plain
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("content-encoding", "gzip")
                        .header("api-key", "bench-license-key")
                        .body(floor.encode())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 202);
                    posts.push(start.elapsed().as_nanos() as f64 / ITEMS as f64);
                } else if let Some((items, common)) = batch.take() {
                    sender.send_batch(items, common).await.unwrap();
                    sends.push(start.elapsed().as_nanos() as f64 / ITEMS as f64);
                }
                wait_for(&counters, target).await;
            }
        }
    });
    rt.block_on(async {
        let report = harvester.shutdown().await;
        assert_eq!(report.delivery.items_dropped(), 0, "{report:?}");
    });
    assert_eq!(counters.errors.load(Ordering::Relaxed), 0);

    let items = ITEMS as f64;
    let json_per_item = counters.json_bytes.load(Ordering::Relaxed) as f64
        / counters.items.load(Ordering::Relaxed) as f64;
    let floor_ns = s_floor.median_ns(20) / items;
    let client_ns = s_client.median_ns(20) / items;
    let counted_ns = s_counted.median_ns(20) / items;
    report(
        &format!("target 5: end to end, batches of {ITEMS} metrics to a sink on 127.0.0.1"),
        "item",
        ("encoding floor: serde_json + gzip(6)", floor_ns),
        ("harvest_now until the sink has the body", client_ns),
        Goal::ThroughputAtLeast(0.7),
    );
    println!(
        "  harvest_now until the sink has the body: {:.2} M items/s, {:.0} MB/s of JSON ({:.0} bytes/item)",
        1e3 / client_ns,
        json_per_item / client_ns * 1e3,
        json_per_item
    );
    println!(
        "  until the sink has also gunzipped, parsed and counted it: {:.2} M items/s, {:.0} MB/s ({:.0}% of the floor)",
        1e3 / counted_ns,
        json_per_item / counted_ns * 1e3,
        floor_ns / counted_ns * 100.0
    );
    println!(
        "  sink totals: {} requests, {} items, {} MB of JSON",
        counters.requests.load(Ordering::Relaxed),
        counters.items.load(Ordering::Relaxed),
        counters.json_bytes.load(Ordering::Relaxed) / 1_000_000
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "  criterion medians (ns/item): plain POST {:.1}, send_batch {:.1}",
        s_post.median_ns(20) / items,
        s_send.median_ns(20) / items
    );
    report(
        &format!(
            "target: send_batch of {ITEMS} batch-made metrics to a sink on 127.0.0.1 ({rounds} interleaved rounds)"
        ),
        "item",
        (
            "plain POST: serde_json + gzip(6) + reqwest",
            median(&mut posts),
        ),
        ("MetricClient::send_batch", median(&mut sends)),
        Goal::ThroughputAtLeast(0.9),
    );
    c.final_summary();
}

/// Waits (untimed) until the sink has counted `target` items.
async fn wait_for(counters: &support::sink::Counters, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.items.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "the sink did not get the payload"
        );
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}
