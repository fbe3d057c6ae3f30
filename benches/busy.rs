//! A busy service's spans (issue 16): 10,000 requests a second, five spans
//! each (a server span and four children, with the attributes a handler's
//! spans carry), through `Telemetry::tracing_layer` with the default
//! settings (16 MiB per pipeline, 5 s harvests, early harvests as batches
//! fill), to a do-nothing ingest sink on 127.0.0.1 (202 to every POST).
//!
//! Two tasks on a 2-worker runtime make the requests at a fixed pace (a
//! hundredth of a second's worth at a time) for `BUSY_SECONDS` (10 by
//! default). Reported: the pace kept, the spans sent, refused and dropped
//! (the target is none), the span pipeline's peak memory against its
//! budget, and how long shutdown took.
//!
//! Run: `cargo bench --bench busy`. `cargo test --all-targets` runs this
//! binary without `--bench`: a quarter of a second, as a smoke test.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use newrelic_telemetry::Telemetry;
use tokio::net::TcpListener;
use tracing_subscriber::prelude::*;

const REQUESTS_PER_SECOND: u64 = 10_000;
const SPANS_PER_REQUEST: u64 = 5;
/// Pace: this many ticks a second, each making its share of requests.
const TICKS_PER_SECOND: u64 = 100;
const TASKS: u64 = 2;

/// A sink that answers 202 to everything and counts the bytes it read.
async fn sink(bytes: Arc<AtomicU64>) -> std::io::Result<String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let bytes = bytes.clone();
                    async move {
                        if let Ok(body) = request.into_body().collect().await {
                            bytes.fetch_add(body.to_bytes().len() as u64, Ordering::Relaxed);
                        }
                        let mut response = Response::new(Empty::<Bytes>::new());
                        *response.status_mut() = StatusCode::ACCEPTED;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(url)
}

/// One request's spans: the server span and four children, each with its
/// fields, as a handler's would have.
fn request(id: u64) {
    let server = tracing::info_span!(
        "http.server",
        otel.name = "POST /orders",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/orders",
        url.path = "/orders",
        http.response.status_code = 201,
    );
    server.in_scope(|| {
        tracing::info_span!("place order", order.id = id, items = id % 5).in_scope(|| {
            tracing::info_span!(
                "inventory call",
                otel.name = "GET /inventory",
                otel.kind = "client",
                http.request.method = "GET",
            )
            .in_scope(|| {});
            tracing::info_span!(
                "charge card",
                order.id = id,
                amount = 12.5,
                currency = "EUR"
            )
            .in_scope(|| {});
            tracing::info_span!("send confirmation", order.id = id).in_scope(|| {});
        });
    });
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let seconds: f64 = if measuring {
        std::env::var("BUSY_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10.0)
    } else {
        0.25
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let received = Arc::new(AtomicU64::new(0));
        let url = sink(received.clone()).await.expect("the sink");
        let no_env: [(&str, &str); 0] = [];
        let telemetry = Telemetry::builder()
            .environment(no_env)
            .api_key("busy-bench")
            .service_name("busy")
            .metric_endpoint(&url)
            .event_endpoint(&url)
            .log_endpoint(&url)
            .span_endpoint(&url)
            .build()
            .expect("telemetry");
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(telemetry.tracing_layer()),
        )
        .expect("the only global subscriber");

        let ticks = (seconds * TICKS_PER_SECOND as f64) as u64;
        let per_tick = REQUESTS_PER_SECOND / TICKS_PER_SECOND / TASKS;
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                tokio::spawn(async move {
                    let mut pace =
                        tokio::time::interval(Duration::from_secs(1) / TICKS_PER_SECOND as u32);
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    for tick in 0..ticks {
                        pace.tick().await;
                        for i in 0..per_tick {
                            request((tick * per_tick + i) * TASKS + task);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a request task");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let memory = telemetry.stats().spans.memory;
        let (peak_bytes, budget) = (memory.peak_bytes, memory.budget_bytes);
        let stopping = Instant::now();
        let report = telemetry.shutdown().await;
        let shutdown = stopping.elapsed();

        let made = ticks * per_tick * TASKS * SPANS_PER_REQUEST;
        let spans = &report.spans;
        // What the batch refused, as the layer counted it, and what never
        // reached the batch.
        let layer = &report.layer;
        let refused = layer.items_dropped_by_batch
            + layer.items_dropped_channel_full
            + layer.items_dropped_worker_gone;
        println!(
            "=== busy span pipeline: {} requests/s x {SPANS_PER_REQUEST} spans for {seconds} s, default settings ===",
            REQUESTS_PER_SECOND
        );
        println!(
            "  pace kept: {:.0} spans/s made ({made} in {elapsed:.2} s)",
            made as f64 / elapsed
        );
        println!(
            "  spans sent {}, refused or dropped at recording {refused}, dropped after {} (target: 0 and 0)",
            spans.delivery.items_sent,
            spans.delivery.items_dropped()
        );
        println!(
            "  span pipeline peak memory {:.1} MiB of a {:.0} MiB budget; {:.1} MB of gzip reached the sink; shutdown took {} ms",
            peak_bytes as f64 / (1 << 20) as f64,
            budget as f64 / (1 << 20) as f64,
            received.load(Ordering::Relaxed) as f64 / 1e6,
            shutdown.as_millis()
        );
        assert_eq!(spans.delivery.items_sent + refused + spans.delivery.items_dropped(), made);
    });
}
