//! The HTTP middleware's per-request cost, next to the same axum service
//! without it, measured in the same run.
//!
//! Floor: an axum `Router` with one route (`GET /users/{id}`, a handler that
//! answers `"ok"`). Measured: the same router behind `HttpServerLayer`, with
//! a subscriber whose tracing layer (`Telemetry::tracing_layer`) exports the
//! request span, three ways: every trace sampled, none sampled (ratio 0),
//! and an incoming sampled `traceparent` continued; and with telemetry
//! disabled (`enabled(false)`), which should cost what the floor does.
//! Two settings:
//!
//! * in process: the router called as a `tower` service (no socket), the
//!   worst case for the ratio, since the floor does almost nothing;
//! * over loopback: requests from a reqwest client to the service on
//!   127.0.0.1, one at a time, which is closer to what a service sees.
//!
//! Rounds of each variant alternate, and the median round is reported.
//! Between rounds (untimed) the layer's worker drains its channel and a
//! harvest sends the spans, so each figure is the cost on the request's
//! path: the middleware, the span, and handing it to the layer's channel.
//!
//! Run: `cargo bench --bench middleware`. `cargo test --all-targets` runs
//! this binary without `--bench`: it then serves a few requests of each
//! variant as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::Request;
use axum::routing::get;
use newrelic_telemetry::Telemetry;
use newrelic_telemetry::middleware::HttpServerLayer;
use newrelic_telemetry::test_util::TestIngestServer;
use tower_service::Service;
use tracing_subscriber::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    /// The router alone.
    Bare,
    /// Behind the middleware, every new trace sampled.
    Sampled,
    /// Behind the middleware, sample ratio 0.
    Unsampled,
    /// Behind the middleware, continuing an incoming sampled traceparent.
    Continued,
    /// Behind the middleware, telemetry disabled (`enabled(false)`): off
    /// should cost what the bare router costs.
    Disabled,
}

const VARIANTS: [Variant; 5] = [
    Variant::Bare,
    Variant::Sampled,
    Variant::Unsampled,
    Variant::Continued,
    Variant::Disabled,
];

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn router() -> Router {
    Router::new().route(
        "/users/{id}",
        get(|Path(id): Path<u64>| async move {
            black_box(id);
            "ok"
        }),
    )
}

/// The service of `variant`, with the telemetry it records into.
fn app(variant: Variant, telemetry: &Telemetry) -> Router {
    match variant {
        Variant::Bare => router(),
        _ => router().layer(HttpServerLayer::new(telemetry)),
    }
}

fn request(variant: Variant, i: u64) -> Request<Body> {
    let mut request = Request::get(format!("/users/{}", i % 1000));
    if variant == Variant::Continued {
        request = request.header("traceparent", TRACEPARENT);
    }
    request.body(Body::empty()).expect("a valid request")
}

/// Nanoseconds per request over `n` in-process calls.
async fn in_process_round(service: &mut Router, variant: Variant, n: u64) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let response = Service::call(service, request(variant, i)).await;
        black_box(response.expect("infallible"));
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

/// Microseconds per request over `n` loopback requests.
async fn loopback_round(http: &reqwest::Client, base: &str, variant: Variant, n: u64) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let mut request = http.get(format!("{base}/users/{}", i % 1000));
        if variant == Variant::Continued {
            request = request.header("traceparent", TRACEPARENT);
        }
        let response = request.send().await.expect("a response");
        black_box(response.bytes().await.expect("a body"));
    }
    started.elapsed().as_nanos() as f64 / n as f64 / 1000.0
}

/// Between rounds, untimed: lets the layer's worker record what its channel
/// holds, then harvests and waits for the send, so that no round pays for
/// the export of another's spans. (What exporting costs per span, batch to
/// gzip, is target 4 of BENCHMARKS.md.)
async fn settle(telemetry: &Telemetry) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = telemetry.stats().layer;
        tokio::time::sleep(Duration::from_millis(5)).await;
        if telemetry.stats().layer == before || Instant::now() > deadline {
            break;
        }
    }
    telemetry.harvest_now();
    while telemetry.stats().held_items() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// One variant's service, subscriber and telemetry.
struct Setup {
    telemetry: Telemetry,
    subscriber: tracing::Dispatch,
    service: Router,
}

fn setup(server: &TestIngestServer, variant: Variant) -> Setup {
    let telemetry = server
        .telemetry_builder()
        .service_name("bench")
        .harvest_interval(Duration::from_secs(3600))
        .enabled(variant != Variant::Disabled)
        .build()
        .expect("telemetry");
    let ratio = if variant == Variant::Unsampled {
        0.0
    } else {
        1.0
    };
    let layer = telemetry.tracing_layer_with(|l| l.sample_ratio(ratio));
    let subscriber = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let service = app(variant, &telemetry);
    Setup {
        telemetry,
        subscriber,
        service,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (rounds, in_process_n, loopback_n) = if bench {
        (15, 20_000, 1_000)
    } else {
        (1, 20, 5)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = TestIngestServer::start().await.expect("ingest server");
        let mut setups: Vec<Setup> = VARIANTS.iter().map(|v| setup(&server, *v)).collect();

        // In process.
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
        for _ in 0..rounds {
            for (i, variant) in VARIANTS.iter().enumerate() {
                let setup = &mut setups[i];
                let _guard = tracing::dispatcher::set_default(&setup.subscriber);
                let ns = in_process_round(&mut setup.service, *variant, in_process_n).await;
                results[i].push(ns);
                settle(&setup.telemetry).await;
            }
        }
        let floor = median(results[0].clone());
        println!("=== middleware: per request, in process (tower::Service::call, no socket) ===");
        println!("  floor     axum Router alone                        {floor:8.0} ns");
        for (i, variant) in VARIANTS.iter().enumerate().skip(1) {
            let ns = median(results[i].clone());
            println!(
                "  measured  + HttpServerLayer, {:<26} {ns:8.0} ns  (+{:.0} ns, {:.2}x the floor)",
                format!("{variant:?}"),
                ns - floor,
                ns / floor
            );
        }

        // Over loopback: each variant served on its own port, from this
        // thread (its subscriber covers the service's tasks: one thread).
        // Set up as the SDK's own client is (connect timeout, no redirects).
        let http = newrelic_telemetry::client::http_client_builder()
            .no_proxy()
            .build()
            .expect("client");
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
        let mut bases = Vec::new();
        let mut guards = Vec::new();
        for setup in &setups {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            bases.push(format!(
                "http://{}",
                listener.local_addr().expect("address")
            ));
            let service = setup.service.clone();
            // The runtime has one thread: the connection tasks `serve`
            // spawns run under the subscriber set around each round.
            guards.push(tokio::spawn(async move {
                let _ = axum::serve(listener, service).await;
            }));
        }
        for _ in 0..rounds {
            for (i, variant) in VARIANTS.iter().enumerate() {
                let _guard = tracing::dispatcher::set_default(&setups[i].subscriber);
                results[i].push(loopback_round(&http, &bases[i], *variant, loopback_n).await);
                settle(&setups[i].telemetry).await;
            }
        }
        let floor = median(results[0].clone());
        println!("=== middleware: per request, over loopback (reqwest -> axum on 127.0.0.1) ===");
        println!("  floor     axum Router alone                        {floor:8.1} us");
        for (i, variant) in VARIANTS.iter().enumerate().skip(1) {
            let us = median(results[i].clone());
            println!(
                "  measured  + HttpServerLayer, {:<26} {us:8.1} us  (+{:.1} us, {:.2}x the floor)",
                format!("{variant:?}"),
                us - floor,
                us / floor
            );
        }
        for guard in guards {
            guard.abort();
        }

        let mut spans = 0;
        let mut unsampled = 0;
        let mut dropped = 0;
        for (setup, variant) in setups.iter().zip(VARIANTS) {
            let report = setup.telemetry.shutdown().await;
            let by_api = [
                ("metric", &report.metrics),
                ("event", &report.events),
                ("log", &report.logs),
                ("span", &report.spans),
            ]
            .into_iter()
            .chain(report.distributions.as_ref().map(|r| ("otlp", r)))
            .filter(|(_, r)| r.delivery.items_dropped() > 0)
            .map(|(api, r)| format!("{api} {:?}", r.delivery))
            .collect::<Vec<_>>();
            if !by_api.is_empty() || report.layer.items_dropped_channel_full > 0 {
                println!(
                    "  {variant:?}: dropped by the layer's channel {}, by the clients {by_api:?}",
                    report.layer.items_dropped_channel_full
                );
            }
            spans += report.layer.spans_recorded;
            unsampled += report.layer.spans_unsampled;
            dropped += report.layer.items_dropped_channel_full + report.items_dropped();
        }
        println!("  (spans exported {spans}, unsampled {unsampled}, dropped {dropped})");
        if !bench {
            assert!(
                spans > 0 && unsampled > 0,
                "the smoke run exports and samples"
            );
        }
    });
}
