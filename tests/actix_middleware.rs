//! The actix-web middleware end to end: real actix-web servers on
//! 127.0.0.1 (an ephemeral port, several workers, each a thread with its
//! own single-threaded runtime) behind `ActixMiddleware`, their spans
//! exported by `Telemetry::tracing_layer`, and everything shut down into a
//! real ingest server on 127.0.0.1. A reqwest client sends the requests;
//! the tests check the JSON that arrives, after `telemetry.shutdown()`.
//!
//! Each test's subscriber is set on its server's worker threads (from the
//! app factory, which actix-web calls on every worker): a global one would
//! be shared by every test of this binary.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle, ServiceResponse};
use actix_web::error::ErrorForbidden;
use actix_web::{App, HttpResponse, HttpServer, web};
use newrelic_telemetry::Telemetry;
use newrelic_telemetry::middleware::ActixMiddleware;
use newrelic_telemetry::test_util::{ReceivedDistribution, TestIngestServer};
use newrelic_telemetry::tracing_layer::{LayerStats, current_trace_context};
use serde_json::Value as Json;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

mod support;
use support::{
    HOUR, assert_server_span, assert_trace_continued, get_durations, is_lower_hex, server,
    spans_named,
};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// What a service's ingest server received, once it stopped.
struct Received {
    spans: Vec<Json>,
    metrics: Vec<Json>,
    /// Request durations arrive as distributions, over OTLP.
    distributions: Vec<ReceivedDistribution>,
    logs: Vec<Json>,
    layer: LayerStats,
}

/// An actix-web server and its telemetry, until [`stop`](Self::stop).
struct Service {
    base: String,
    handle: ServerHandle,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    telemetry: Telemetry,
    ingest: TestIngestServer,
}

thread_local! {
    /// This worker thread's subscriber, set once, when the worker builds
    /// its app; dropped when the worker's thread ends.
    static WORKER_SUBSCRIBER: RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { RefCell::new(None) };
}

/// Makes `dispatch` the subscriber of the calling worker thread.
fn subscribe_this_worker(dispatch: &tracing::Dispatch) {
    WORKER_SUBSCRIBER.with(|guard| {
        let mut guard = guard.borrow_mut();
        if guard.is_none() {
            *guard = Some(tracing::dispatcher::set_default(dispatch));
        }
    });
}

/// The routes:
/// * `GET /orders/{id}`: waits a little (so that a worker interleaves
///   requests), then a child span and a log; answers with the worker's
///   thread name and the `traceparent` and `tracestate` an outgoing request
///   made in the child span would carry, one a line;
/// * `POST /orders`: a 201; `GET /fail`: a 500; `GET /teapot`: a 418;
/// * `GET /admin/{page}`: refused with a 403 by a middleware of its scope
///   (an error returned through the middleware, not a response);
/// * anything else: the default 404.
fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/orders/{id}", web::get().to(order))
        .route("/busy/{id}", web::get().to(busy))
        .route(
            "/orders",
            web::post().to(|| async { HttpResponse::Created().body("placed") }),
        )
        .route(
            "/fail",
            web::get().to(|| async { HttpResponse::InternalServerError().body("broken") }),
        )
        .route(
            "/teapot",
            web::get().to(|| async { HttpResponse::ImATeapot().body("tea") }),
        )
        .service(
            web::scope("/admin")
                .wrap_fn(|_request, _service| async {
                    Err::<ServiceResponse, _>(ErrorForbidden("admins only"))
                })
                .route("/{page}", web::get().to(|| async { "admin" })),
        );
}

async fn order(id: web::Path<u64>) -> String {
    let id = id.into_inner();
    tokio::time::sleep(Duration::from_millis(3)).await;
    tracing::info_span!("load order", order.id = id).in_scope(|| {
        tracing::info!(order.id = id, "order loaded");
        let context = current_trace_context();
        format!(
            "{}\n{}\n{}",
            std::thread::current().name().unwrap_or("unnamed"),
            context
                .as_ref()
                .map(|c| c.traceparent())
                .unwrap_or_default(),
            context
                .as_ref()
                .and_then(|c| c.trace_state())
                .unwrap_or_default()
        )
    })
}

/// A handler with no wait: a child span, a log in it, and another log.
async fn busy(id: web::Path<u64>) -> &'static str {
    let id = id.into_inner();
    tracing::info_span!("work", job.id = id).in_scope(|| {
        tracing::info!(job.id = id, "working");
    });
    tracing::info!(job.id = id, "done");
    "done"
}

impl Service {
    /// Starts the routes behind the middleware (changed by `configure`) on
    /// `workers` workers, with a tracing layer that samples every new trace.
    async fn start(workers: usize, configure: fn(ActixMiddleware) -> ActixMiddleware) -> Service {
        Service::start_enabled(workers, configure, true).await
    }

    /// [`start`](Self::start), with telemetry on or off.
    async fn start_enabled(
        workers: usize,
        configure: fn(ActixMiddleware) -> ActixMiddleware,
        enabled: bool,
    ) -> Service {
        let ingest = server().await;
        let telemetry = ingest
            .telemetry_builder()
            .service_name("orders")
            .harvest_interval(HOUR)
            .enabled(enabled)
            .build()
            .expect("telemetry");
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(telemetry.tracing_layer().with_filter(LevelFilter::INFO)),
        );
        let middleware = configure(ActixMiddleware::new(&telemetry));
        let server = HttpServer::new(move || {
            subscribe_this_worker(&dispatch);
            App::new().wrap(middleware.clone()).configure(routes)
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(5)
        .bind(("127.0.0.1", 0))
        .expect("bind");
        let base = format!("http://{}", server.addrs()[0]);
        let server: Server = server.run();
        let handle = server.handle();
        let serving = tokio::spawn(server);
        Service {
            base,
            handle,
            serving,
            telemetry,
            ingest,
        }
    }

    /// Stops the server (gracefully: the requests in flight finish), then
    /// shuts the telemetry down and returns what arrived.
    async fn stop(self) -> Received {
        tokio::time::timeout(BOUND, self.handle.stop(true))
            .await
            .expect("the server stops");
        tokio::time::timeout(BOUND, self.serving)
            .await
            .expect("the server ends")
            .expect("the server task")
            .expect("the server ran");
        let report = tokio::time::timeout(BOUND, self.telemetry.shutdown())
            .await
            .expect("the telemetry shuts down");
        assert_eq!(report.items_dropped(), 0);
        Received {
            spans: self.ingest.spans(),
            metrics: self.ingest.metrics(),
            distributions: self.ingest.distributions(),
            logs: self.ingest.logs(),
            layer: report.layer,
        }
    }
}

/// A client that opens a new connection for every request, so that
/// actix-web hands requests to its workers in turn, and that leaves no
/// idle connection to hold up a graceful stop.
fn client() -> reqwest::Client {
    newrelic_telemetry::client::http_client_builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

thread_local! {
    /// One client per test thread (each test has its own thread and
    /// runtime): building one loads the platform's certificates.
    static CLIENT: reqwest::Client = client();
}

/// Sends `method base+path` with `headers`; returns the status and body.
async fn send(
    method: reqwest::Method,
    base: &str,
    path: &str,
    headers: &[(&str, reqwest::header::HeaderValue)],
) -> (u16, String) {
    let mut request = CLIENT.with(|c| c.request(method, format!("{base}{path}")));
    for (name, value) in headers {
        request = request.header(*name, value.clone());
    }
    let response = tokio::time::timeout(BOUND, request.send())
        .await
        .expect("bounded")
        .expect("response");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn get(base: &str, path: &str) -> (u16, String) {
    send(reqwest::Method::GET, base, path, &[]).await
}

async fn get_with(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let headers: Vec<_> = headers
        .iter()
        .map(|(n, v)| {
            (
                *n,
                reqwest::header::HeaderValue::from_str(v).expect("value"),
            )
        })
        .collect();
    send(reqwest::Method::GET, base, path, &headers).await
}

fn server_spans(spans: &[Json]) -> Vec<&Json> {
    spans
        .iter()
        .filter(|s| s["attributes"]["span.kind"] == "server")
        .collect()
}

fn metric<'a>(metrics: &'a [Json], name: &str) -> Vec<&'a Json> {
    metrics.iter().filter(|m| m["name"] == name).collect()
}

/// The sum of the `http.server.requests` counts.
fn requests_counted(metrics: &[Json]) -> f64 {
    metric(metrics, "http.server.requests")
        .iter()
        .map(|m| m["value"].as_f64().expect("a count"))
        .sum()
}

/// The number of `http.server.duration.ms` observations.
fn requests_timed(distributions: &[ReceivedDistribution]) -> u64 {
    distributions
        .iter()
        .filter(|d| d.name == "http.server.duration.ms")
        .map(|d| d.distribution.count())
        .sum()
}

fn default_middleware(middleware: ActixMiddleware) -> ActixMiddleware {
    middleware
}

fn classes(middleware: ActixMiddleware) -> ActixMiddleware {
    middleware.status_classes(true)
}

#[tokio::test]
async fn a_valid_traceparent_is_continued_and_passed_on() {
    let service = Service::start(2, default_middleware).await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (status, body) = get_with(
        &service.base,
        "/orders/7",
        &[
            ("traceparent", &traceparent),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "1234@nr=0-0-1"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let received = service.stop().await;

    let (_, load) = assert_trace_continued(
        &received.spans,
        &received.logs,
        ("GET /orders/{id}", "load order"),
        (TRACE_ID, PARENT_ID),
    );

    // Out: the same trace, under the handler's span, sampled, with both
    // tracestate headers carried on as one list.
    let lines: Vec<_> = body.lines().collect();
    let load_id = load["id"].as_str().expect("id");
    assert_eq!(lines[1], format!("00-{TRACE_ID}-{load_id}-01"));
    assert_eq!(lines[2], "congo=t61rcWkgMzE,1234@nr=0-0-1");
}

#[tokio::test]
async fn without_a_traceparent_a_request_starts_a_w3c_trace() {
    let service = Service::start(2, default_middleware).await;
    let (_, body) = get(&service.base, "/orders/1").await;
    let received = service.stop().await;

    let root = spans_named(&received.spans, "GET /orders/{id}")[0];
    assert!(is_lower_hex(&root["trace.id"], 32), "{root}");
    assert_ne!(root["trace.id"], TRACE_ID);
    assert!(root["attributes"].get("parent.id").is_none(), "{root}");
    let trace_id = root["trace.id"].as_str().expect("trace id");
    let out = body.lines().nth(1).expect("a traceparent line");
    assert!(out.starts_with(&format!("00-{trace_id}-")), "{out}");
    assert!(out.ends_with("-01"), "{out}");
}

#[tokio::test]
async fn malformed_duplicated_and_unsupported_traceparents_start_a_new_trace() {
    let service = Service::start(2, default_middleware).await;
    let valid = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let text = |v: &str| reqwest::header::HeaderValue::from_str(v).expect("value");
    let bad: Vec<Vec<(&str, reqwest::header::HeaderValue)>> = vec![
        vec![(
            "traceparent",
            text(&format!("ff-{TRACE_ID}-{PARENT_ID}-01")),
        )], // version ff
        vec![(
            "traceparent",
            text(&format!("00-{}-{PARENT_ID}-01", "0".repeat(32))),
        )], // all-zero trace id
        vec![(
            "traceparent",
            text(&format!("00-{}-{PARENT_ID}-01", TRACE_ID.to_uppercase())),
        )], // uppercase
        vec![(
            "traceparent",
            text(&format!("00-{TRACE_ID}-{PARENT_ID}-01-x")),
        )], // 5 fields in 00
        vec![("traceparent", text("garbage"))],
        // Two traceparent headers, even two valid ones: neither is trusted.
        vec![("traceparent", text(&valid)), ("traceparent", text(&valid))],
        // Not text: a byte outside visible ASCII.
        vec![(
            "traceparent",
            reqwest::header::HeaderValue::from_bytes(format!("{valid}\u{e9}").as_bytes())
                .expect("an obs-text value"),
        )],
    ];
    for (i, headers) in bad.iter().enumerate() {
        let (status, _) = send(
            reqwest::Method::GET,
            &service.base,
            &format!("/orders/{i}"),
            headers,
        )
        .await;
        assert_eq!(status, 200, "a bad header is never an error: {headers:?}");
    }
    // A higher version is read by its first four fields.
    let future = format!("cc-{TRACE_ID}-{PARENT_ID}-01-some-future-field");
    get_with(&service.base, "/orders/99", &[("traceparent", &future)]).await;
    let received = service.stop().await;

    let roots = spans_named(&received.spans, "GET /orders/{id}");
    assert_eq!(roots.len(), bad.len() + 1);
    let continued: Vec<_> = roots.iter().filter(|r| r["trace.id"] == TRACE_ID).collect();
    assert_eq!(continued.len(), 1, "only the future version continues");
    assert_eq!(continued[0]["attributes"]["url.path"], "/orders/99");
    let mut new_traces = HashSet::new();
    for root in roots.iter().filter(|r| r["trace.id"] != TRACE_ID) {
        assert!(is_lower_hex(&root["trace.id"], 32), "{root}");
        assert!(root["attributes"].get("parent.id").is_none(), "{root}");
        new_traces.insert(root["trace.id"].as_str().expect("trace id"));
    }
    assert_eq!(new_traces.len(), bad.len(), "a new trace each");
}

#[tokio::test]
async fn routes_are_patterns_and_spans_carry_http_attributes() {
    let service = Service::start(2, default_middleware).await;
    for id in [1, 22, 333] {
        assert_eq!(get(&service.base, &format!("/orders/{id}")).await.0, 200);
    }
    assert_eq!(get(&service.base, "/no/such/route/42").await.0, 404);
    // `App::route`'s method guard is its resource's: an invented method
    // falls through to the default 404, on a path of the route's pattern.
    let brew = reqwest::Method::from_bytes(b"BREW").expect("method");
    assert_eq!(send(brew, &service.base, "/orders/9", &[]).await.0, 404);
    let received = service.stop().await;

    let requests = metric(&received.metrics, "http.server.requests");
    let get_orders: Vec<_> = requests
        .iter()
        .filter(|m| {
            m["attributes"]["http.route"] == "/orders/{id}"
                && m["attributes"]["http.request.method"] == "GET"
        })
        .collect();
    // Three paths, one series.
    assert_eq!(get_orders.len(), 1, "{requests:?}");
    assert_eq!(get_orders[0]["value"], 3.0);
    assert_eq!(
        get_orders[0]["attributes"]["http.response.status_code"],
        200
    );
    // An invented method is `_OTHER`, with the pattern its path matches.
    let other: Vec<_> = requests
        .iter()
        .filter(|m| m["attributes"]["http.request.method"] == "_OTHER")
        .collect();
    assert_eq!(other.len(), 1, "{requests:?}");
    assert_eq!(other[0]["attributes"]["http.route"], "/orders/{id}");
    assert_eq!(other[0]["attributes"]["http.response.status_code"], 404);
    // The path that matches no pattern: no route, never the raw path.
    let not_found: Vec<_> = requests
        .iter()
        .filter(|m| {
            m["attributes"]["http.response.status_code"] == 404
                && m["attributes"]["http.request.method"] == "GET"
        })
        .collect();
    assert_eq!(not_found.len(), 1);
    assert!(not_found[0]["attributes"].get("http.route").is_none());
    for path in ["/orders/22", "/no/such"] {
        assert!(
            !received
                .metrics
                .iter()
                .any(|m| m.to_string().contains(path)),
            "{path} in the metrics"
        );
    }
    assert_eq!(
        get_durations(&received.distributions, "/orders/{id}").count(),
        3
    );

    assert_server_span(&received.spans, "/orders/{id}", "/orders/22");
    let unrouted = spans_named(&received.spans, "GET")[0];
    assert_eq!(unrouted["attributes"]["url.path"], "/no/such/route/42");
    assert!(unrouted["attributes"].get("http.route").is_none());
    assert_eq!(unrouted["attributes"]["http.response.status_code"], 404);
}

#[tokio::test]
async fn status_classes_and_server_errors() {
    let service = Service::start(2, classes).await;
    assert_eq!(get(&service.base, "/fail").await.0, 500);
    assert_eq!(get(&service.base, "/fail").await.0, 500);
    assert_eq!(get(&service.base, "/teapot").await.0, 418);
    assert_eq!(get(&service.base, "/admin/users").await.0, 403);
    let post = send(reqwest::Method::POST, &service.base, "/orders", &[]).await;
    assert_eq!(post.0, 201);
    let received = service.stop().await;

    let fail = spans_named(&received.spans, "GET /fail");
    assert_eq!(fail.len(), 2);
    assert_eq!(fail[0]["attributes"]["error"], true);
    assert_eq!(fail[0]["attributes"]["http.response.status_code"], 500);
    let teapot = spans_named(&received.spans, "GET /teapot")[0];
    assert!(
        teapot["attributes"].get("error").is_none(),
        "a 4xx is the client's error"
    );
    // An error returned by the scope's middleware: recorded with the status
    // actix-web answers with.
    let admin = spans_named(&received.spans, "GET /admin/{page}")[0];
    assert_eq!(admin["attributes"]["http.response.status_code"], 403);
    assert!(admin["attributes"].get("error").is_none());

    let requests = metric(&received.metrics, "http.server.requests");
    let series = |route: &str| {
        requests
            .iter()
            .find(|m| m["attributes"]["http.route"] == route)
            .unwrap_or_else(|| panic!("the {route} series in {requests:?}"))
    };
    assert_eq!(
        series("/fail")["attributes"]["http.response.status_class"],
        "5xx"
    );
    assert_eq!(series("/fail")["value"], 2.0);
    assert_eq!(
        series("/teapot")["attributes"]["http.response.status_class"],
        "4xx"
    );
    assert_eq!(
        series("/admin/{page}")["attributes"]["http.response.status_class"],
        "4xx"
    );
    assert_eq!(
        series("/orders")["attributes"]["http.response.status_class"],
        "2xx"
    );
    assert!(
        requests
            .iter()
            .all(|m| m["attributes"].get("http.response.status_code").is_none()),
        "classes only: {requests:?}"
    );
    assert_eq!(requests_counted(&received.metrics), 5.0);
}

#[tokio::test]
async fn without_status_classes_an_error_is_recorded_by_its_code() {
    let service = Service::start(1, default_middleware).await;
    assert_eq!(get(&service.base, "/admin/settings").await.0, 403);
    let received = service.stop().await;

    let requests = metric(&received.metrics, "http.server.requests");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["attributes"]["http.route"], "/admin/{page}");
    assert_eq!(requests[0]["attributes"]["http.response.status_code"], 403);
}

#[tokio::test]
async fn counts_are_exact_after_shutdown() {
    let service = Service::start(2, default_middleware).await;
    const N: usize = 60;
    let paths = ["/orders/1", "/fail", "/teapot", "/nowhere", "/admin/x"];
    let requests = (0..N).map(|i| get(&service.base, paths[i % paths.len()]));
    let responses = tokio::time::timeout(BOUND, futures::future::join_all(requests))
        .await
        .expect("bounded");
    assert_eq!(responses.len(), N);
    let received = service.stop().await;

    assert_eq!(requests_counted(&received.metrics), N as f64);
    assert_eq!(requests_timed(&received.distributions), N as u64);
    assert_eq!(server_spans(&received.spans).len(), N);
    // Every route's count is its share.
    let requests = metric(&received.metrics, "http.server.requests");
    for route in ["/orders/{id}", "/fail", "/teapot", "/admin/{page}"] {
        let count: f64 = requests
            .iter()
            .filter(|m| m["attributes"]["http.route"] == route)
            .map(|m| m["value"].as_f64().expect("a count"))
            .sum();
        assert_eq!(count, (N / paths.len()) as f64, "{route}");
    }
    assert_eq!(received.layer.spans_unsampled, 0);
}

#[tokio::test]
async fn a_saturated_service_sends_everything_it_records() {
    // 2 workers, 32 requests always in flight, no wait in the handler:
    // the workers are as busy as this machine lets them be. Each request
    // makes two spans and two logs; nothing may be dropped or refused.
    const N: usize = 1_000;
    const IN_FLIGHT: usize = 32;
    let service = Service::start(2, default_middleware).await;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let load = (0..IN_FLIGHT).map(|_| async {
        let mut ok = 0;
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= N {
                return ok;
            }
            let (status, _) = get(&service.base, &format!("/busy/{i}")).await;
            ok += usize::from(status == 200);
        }
    });
    let served: usize = tokio::time::timeout(BOUND, futures::future::join_all(load))
        .await
        .expect("bounded")
        .into_iter()
        .sum();
    assert_eq!(served, N);
    let received = service.stop().await;

    let layer = received.layer;
    assert_eq!(
        (
            layer.items_dropped_channel_full,
            layer.items_dropped_by_batch
        ),
        (0, 0)
    );
    // (actix-web's own INFO lines, "starting 2 workers" and the like, are
    // logs too.)
    let jobs = received
        .logs
        .iter()
        .filter(|l| l["attributes"]["job.id"].is_u64());
    assert_eq!(jobs.count(), 2 * N);
    assert_eq!(layer.logs_recorded, received.logs.len() as u64);
    assert_eq!(layer.spans_recorded, 2 * N as u64);
    assert_eq!(server_spans(&received.spans).len(), N);
    assert_eq!(spans_named(&received.spans, "work").len(), N);
    assert_eq!(requests_counted(&received.metrics), N as f64);
    assert_eq!(requests_timed(&received.distributions), N as u64);
}

#[tokio::test]
async fn requests_served_by_every_worker_are_recorded() {
    // Each worker is a thread with a single-threaded runtime: the
    // middleware's futures stay on their worker, which interleaves its
    // requests (each handler waits), and all record into one batch.
    const WORKERS: usize = 2;
    const N: usize = 40;
    let service = Service::start(WORKERS, default_middleware).await;
    let requests = (0..N).map(|i| {
        let traceparent = format!("00-{:032x}-{PARENT_ID}-01", i + 1);
        let base = service.base.clone();
        async move {
            let (status, body) = get_with(
                &base,
                &format!("/orders/{i}"),
                &[("traceparent", &traceparent)],
            )
            .await;
            (i, status, body)
        }
    });
    let responses = tokio::time::timeout(BOUND, futures::future::join_all(requests))
        .await
        .expect("bounded");
    let mut workers = BTreeSet::new();
    for (i, status, body) in &responses {
        assert_eq!(*status, 200);
        let mut lines = body.lines();
        workers.insert(lines.next().expect("a worker").to_owned());
        // The handler ran in its own request's trace, whatever else its
        // worker was doing meanwhile.
        let out = lines.next().expect("a traceparent");
        assert!(
            out.starts_with(&format!("00-{:032x}-", i + 1)),
            "{i}: {out}"
        );
    }
    assert_eq!(workers.len(), WORKERS, "{workers:?}");
    let received = service.stop().await;

    assert_eq!(requests_counted(&received.metrics), N as f64);
    assert_eq!(requests_timed(&received.distributions), N as u64);
    let roots = server_spans(&received.spans);
    assert_eq!(roots.len(), N);
    let loads = spans_named(&received.spans, "load order");
    assert_eq!(loads.len(), N);
    for load in loads {
        let root = roots
            .iter()
            .find(|r| r["id"] == load["attributes"]["parent.id"])
            .expect("the child's root");
        assert_eq!(load["trace.id"], root["trace.id"]);
        let path = format!("/orders/{}", load["attributes"]["order.id"]);
        assert_eq!(root["attributes"]["url.path"], path.as_str());
    }
    let traces: HashSet<_> = roots.iter().map(|r| r["trace.id"].to_string()).collect();
    assert_eq!(traces.len(), N, "a trace per request");
}

#[tokio::test]
async fn disabled_telemetry_serves_requests_and_records_nothing() {
    let service = Service::start_enabled(2, default_middleware, false).await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    for path in ["/orders/7", "/nowhere"] {
        let (status, _) = get_with(&service.base, path, &[("traceparent", &traceparent)]).await;
        assert!(status == 200 || status == 404, "{path}: {status}");
    }
    // Off means off: no series made, no span or log exported.
    assert_eq!(service.telemetry.metrics().series_count(), 0);
    let received = service.stop().await;
    assert!(received.spans.is_empty() && received.metrics.is_empty() && received.logs.is_empty());
    assert_eq!(
        (received.layer.spans_recorded, received.layer.logs_recorded),
        (0, 0)
    );
}
