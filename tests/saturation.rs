//! axum services behind `HttpServerLayer`, kept as busy as this machine lets
//! them be by a client with 32 requests always in flight (the actix-web
//! counterpart is in `actix_middleware.rs`): everything recorded is sent,
//! with nothing dropped or refused, and a single-threaded runtime busy with
//! requests still harvests on time.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use newrelic_telemetry::Telemetry;
use newrelic_telemetry::middleware::HttpServerLayer;
use newrelic_telemetry::test_util::TestIngestServer;
use tokio::sync::oneshot;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

mod support;
use support::{HOUR, server, spans_named};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(60);

/// Requests always in flight.
const IN_FLIGHT: usize = 32;

/// A handler with no wait: a child span, a log in it, and another log.
async fn busy(Path(id): Path<u64>) -> &'static str {
    tracing::info_span!("work", job.id = id).in_scope(|| {
        tracing::info!(job.id = id, "working");
    });
    tracing::info!(job.id = id, "done");
    "done"
}

fn router(telemetry: &Telemetry) -> Router {
    Router::new()
        .route("/busy/{id}", get(busy))
        .layer(HttpServerLayer::new(telemetry))
}

thread_local! {
    /// The subscriber of a service's runtime thread, for the thread's life.
    static THREAD_SUBSCRIBER: RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { RefCell::new(None) };
}

/// The subscriber a service's threads export through.
fn dispatch(telemetry: &Telemetry) -> tracing::Dispatch {
    tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(telemetry.tracing_layer().with_filter(LevelFilter::INFO)),
    )
}

/// Sends `n` requests to `base`, `IN_FLIGHT` at a time, from this runtime;
/// returns how many were answered 200.
async fn load(base: &str, n: usize) -> usize {
    let client = newrelic_telemetry::client::http_client_builder()
        .no_proxy()
        .build()
        .expect("client");
    let next = AtomicUsize::new(0);
    let senders = (0..IN_FLIGHT).map(|_| async {
        let mut ok = 0;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return ok;
            }
            let response = client.get(format!("{base}/busy/{i}")).send().await;
            ok += usize::from(response.is_ok_and(|r| r.status().is_success()));
        }
    });
    let served = tokio::time::timeout(BOUND, futures::future::join_all(senders))
        .await
        .expect("bounded");
    served.into_iter().sum()
}

/// Checks that `n` requests' telemetry arrived whole at `ingest`.
fn assert_all_sent(
    ingest: &TestIngestServer,
    report: &newrelic_telemetry::TelemetryReport,
    n: usize,
) {
    let layer = &report.layer;
    assert_eq!(
        (
            layer.items_dropped_channel_full,
            layer.items_dropped_by_batch
        ),
        (0, 0),
        "{layer:?}"
    );
    assert_eq!((report.items_dropped(), report.items_refused()), (0, 0));
    assert_eq!(layer.spans_recorded, 2 * n as u64);
    assert_eq!(layer.logs_recorded, 2 * n as u64);
    let spans = ingest.spans();
    assert_eq!(spans_named(&spans, "work").len(), n);
    assert_eq!(spans.len(), 2 * n);
    assert_eq!(ingest.logs().len(), 2 * n);
    let requests: f64 = ingest
        .metrics()
        .iter()
        .filter(|m| m["name"] == "http.server.requests")
        .map(|m| m["value"].as_f64().expect("a count"))
        .sum();
    assert_eq!(requests, n as f64);
    let timed: u64 = ingest
        .distributions()
        .iter()
        .filter(|d| d.name == "http.server.duration.ms")
        .map(|d| d.distribution.count())
        .sum();
    assert_eq!(timed, n as u64);
}

#[tokio::test]
async fn a_saturated_two_worker_service_sends_everything_it_records() {
    const N: usize = 1_000;
    let ingest = server().await;
    let telemetry = ingest
        .telemetry_builder()
        .service_name("busy")
        .harvest_interval(HOUR)
        .build()
        .expect("telemetry");
    let dispatch = dispatch(&telemetry);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let dispatch = dispatch.clone();
            THREAD_SUBSCRIBER.with(|guard| {
                *guard.borrow_mut() = Some(tracing::dispatcher::set_default(&dispatch));
            });
        })
        .build()
        .expect("runtime");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(&telemetry);
    let serving = runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });

    assert_eq!(load(&base, N).await, N);
    let _ = stop.send(());
    tokio::time::timeout(BOUND, serving)
        .await
        .expect("the server stops")
        .expect("the server task")
        .expect("the server ran");
    let report = tokio::time::timeout(BOUND, telemetry.shutdown())
        .await
        .expect("the telemetry shuts down");
    runtime.shutdown_background();
    assert_all_sent(&ingest, &report, N);
}

#[test]
fn a_single_threaded_runtime_busy_with_requests_still_harvests_on_time() {
    // The service, its telemetry and the layer's worker share one
    // current_thread runtime, on a thread of their own; the client runs on
    // another runtime. Harvests every 100 ms must go on during the load.
    const N: usize = 1_500;
    let client = support::multi_thread(2);
    let ingest = client.block_on(server());
    let builder = ingest
        .telemetry_builder()
        .service_name("busy")
        .harvest_interval(Duration::from_millis(100));
    let (ready, base) = std::sync::mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let service = std::thread::spawn(move || {
        support::current_thread().block_on(async move {
            let telemetry = builder.build().expect("telemetry");
            let _guard = tracing::dispatcher::set_default(&dispatch(&telemetry));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let address = listener.local_addr().expect("address");
            let _ = ready.send(format!("http://{address}"));
            axum::serve(listener, router(&telemetry))
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
            telemetry.shutdown().await
        })
    });
    let base = base.recv_timeout(BOUND).expect("the service starts");

    let started = Instant::now();
    let served = client.block_on(async {
        let loading = load(&base, N);
        tokio::pin!(loading);
        // While the load runs, spans keep arriving, harvest after harvest.
        let mut seen_during_load = Vec::new();
        let served = loop {
            tokio::select! {
                served = &mut loading => break served,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    seen_during_load.push(ingest.spans().len());
                }
            }
        };
        let distinct: std::collections::BTreeSet<_> = seen_during_load.iter().collect();
        // The load lasts several harvest intervals (here, a second or
        // more): at least three harvests must have sent spans meanwhile.
        assert!(
            distinct.len() >= 4 || started.elapsed() < Duration::from_millis(400),
            "span counts seen during the load: {seen_during_load:?}"
        );
        served
    });
    assert_eq!(served, N);
    let _ = stop.send(());
    let report = service.join().expect("the service thread");
    assert_all_sent(&ingest, &report, N);
}
