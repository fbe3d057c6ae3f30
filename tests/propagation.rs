//! W3C Trace Context, sampling and the HTTP server middleware, end to end:
//! axum services on 127.0.0.1, each on its own thread, Tokio runtime and
//! `tracing` subscriber (as if in its own process), with the middleware and
//! `Telemetry::tracing_layer`, exporting to a real ingest server on
//! 127.0.0.1. A reqwest client sends the requests; the tests check the JSON
//! that arrives.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use newrelic_telemetry::Telemetry;
use newrelic_telemetry::middleware::HttpServerLayer;
use newrelic_telemetry::test_util::ReceivedDistribution;
use newrelic_telemetry::tracing_layer::{LayerStats, current_trace_context};
use serde_json::Value as Json;
use tokio::sync::oneshot;
use tracing::Instrument;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

mod support;
use support::{
    HOUR, assert_server_span, assert_trace_continued, current_thread, get_durations, is_lower_hex,
    server, spans_named,
};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// What a service's ingest server received, once the service stopped.
struct Received {
    spans: Vec<Json>,
    metrics: Vec<Json>,
    /// Request durations arrive as distributions, over OTLP.
    distributions: Vec<ReceivedDistribution>,
    logs: Vec<Json>,
    layer: LayerStats,
}

/// A service running on its own thread until [`stop`](Self::stop).
struct Service {
    base: String,
    stop: oneshot::Sender<()>,
    received: oneshot::Receiver<Received>,
}

impl Service {
    /// Starts `app` behind the middleware, with a tracing layer that samples
    /// new traces at `ratio`; `configure` may change the middleware.
    async fn start(
        name: &'static str,
        ratio: f64,
        app: fn(Telemetry) -> Router,
        configure: fn(HttpServerLayer) -> HttpServerLayer,
    ) -> Service {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (received_tx, received) = oneshot::channel();
        std::thread::spawn(move || {
            current_thread().block_on(async move {
                let server = server().await;
                let telemetry = server
                    .telemetry_builder()
                    .service_name(name)
                    .harvest_interval(HOUR)
                    .build()
                    .expect("telemetry");
                let layer = telemetry.tracing_layer_with(|l| l.sample_ratio(ratio));
                // This thread's subscriber: the runtime is single-threaded,
                // so every task of the service runs under it.
                let _guard = tracing::subscriber::set_default(
                    tracing_subscriber::registry().with(layer.with_filter(LevelFilter::INFO)),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let base = format!("http://{}", listener.local_addr().expect("address"));
                let router =
                    app(telemetry.clone()).layer(configure(HttpServerLayer::new(&telemetry)));
                let _ = ready_tx.send(base);
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("serve");
                let report = telemetry.shutdown().await;
                let _ = received_tx.send(Received {
                    spans: server.spans(),
                    metrics: server.metrics(),
                    distributions: server.distributions(),
                    logs: server.logs(),
                    layer: report.layer,
                });
            });
        });
        let base = tokio::time::timeout(BOUND, ready_rx)
            .await
            .expect("the service starts")
            .expect("the service thread runs");
        Service {
            base,
            stop,
            received,
        }
    }

    /// Stops the service, flushes its telemetry and returns what arrived.
    async fn stop(self) -> Received {
        let _ = self.stop.send(());
        tokio::time::timeout(BOUND, self.received)
            .await
            .expect("the service stops")
            .expect("the service thread reports")
    }
}

fn client() -> reqwest::Client {
    newrelic_telemetry::client::http_client_builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// `GET /users/{id}`: a child span and a log, and the `traceparent` an
/// outgoing request made in the child span would carry, as the body.
/// `GET /fail`: a 500. `GET /teapot`: a 418.
fn users(_telemetry: Telemetry) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|Path(id): Path<u64>| async move {
                let load = tracing::info_span!("load user", user.id = id);
                async {
                    tracing::info!(user.id = id, "user loaded");
                    let mut headers = HeaderMap::new();
                    if let Some(context) = current_trace_context() {
                        context.inject(&mut headers);
                    }
                    let field = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    format!("{}\n{}", field("traceparent"), field("tracestate"))
                }
                .instrument(load)
                .await
            }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        )
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "tea") }),
        )
}

fn default_layer(layer: HttpServerLayer) -> HttpServerLayer {
    layer
}

fn metric<'a>(metrics: &'a [Json], name: &str) -> Vec<&'a Json> {
    metrics.iter().filter(|m| m["name"] == name).collect()
}

thread_local! {
    /// One client per test thread (each test has its own thread and runtime).
    static CLIENT: reqwest::Client = client();
}

/// Sends `GET base+path` with `headers` and returns the body.
async fn get_with(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = CLIENT.with(|c| c.get(format!("{base}{path}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(BOUND, request.send())
        .await
        .expect("bounded")
        .expect("response");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn a_valid_traceparent_is_continued_and_passed_on() {
    let service = Service::start("users", 1.0, users, default_layer).await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (status, body) = get_with(
        &service.base,
        "/users/7",
        &[
            ("traceparent", &traceparent),
            ("tracestate", "congo=t61rcWkgMzE,1234@nr=0-0-1"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let received = service.stop().await;

    let (_, load) = assert_trace_continued(
        &received.spans,
        &received.logs,
        ("GET /users/{id}", "load user"),
        (TRACE_ID, PARENT_ID),
    );

    // Out: the same trace, under the span the request is made in, sampled,
    // with the tracestate carried on unchanged.
    let (out_parent, out_state) = body.split_once('\n').expect("two lines");
    let load_id = load["id"].as_str().expect("id");
    assert_eq!(out_parent, format!("00-{TRACE_ID}-{load_id}-01"));
    assert_eq!(out_state, "congo=t61rcWkgMzE,1234@nr=0-0-1");
}

#[tokio::test]
async fn without_a_traceparent_a_request_starts_a_w3c_trace() {
    let service = Service::start("users", 1.0, users, default_layer).await;
    let (_, body) = get_with(&service.base, "/users/1", &[]).await;
    let received = service.stop().await;

    let root = spans_named(&received.spans, "GET /users/{id}")[0];
    assert!(is_lower_hex(&root["trace.id"], 32), "{root}");
    assert!(root["attributes"].get("parent.id").is_none(), "{root}");
    let (out_parent, out_state) = body.split_once('\n').expect("two lines");
    let trace_id = root["trace.id"].as_str().expect("trace id");
    assert!(
        out_parent.starts_with(&format!("00-{trace_id}-")),
        "{out_parent}"
    );
    assert!(out_parent.ends_with("-01"));
    assert_eq!(out_state, "");
}

#[tokio::test]
async fn malformed_and_unsupported_traceparents_start_a_new_trace() {
    let service = Service::start("users", 1.0, users, default_layer).await;
    let bad = [
        format!("ff-{TRACE_ID}-{PARENT_ID}-01"),         // version ff
        format!("00-{}-{PARENT_ID}-01", "0".repeat(32)), // all-zero trace id
        format!("00-{TRACE_ID}-{}-01", "0".repeat(16)),  // all-zero parent id
        format!("00-{}-{PARENT_ID}-01", &TRACE_ID[1..]), // 31 digits
        format!(
            "00-{TRACE_ID}-{}-01",
            PARENT_ID.to_uppercase().replace('0', "A")
        ), // uppercase
        format!("00-{}-{PARENT_ID}-01", TRACE_ID.to_uppercase()), // uppercase
        format!("00-{TRACE_ID}-{PARENT_ID}-01-extra"),   // version 00 has 4 fields
        format!("0-{TRACE_ID}-{PARENT_ID}-01"),          // short version
        format!("00_{TRACE_ID}_{PARENT_ID}_01"),         // wrong separators
        "garbage".to_owned(),
    ];
    for (i, header) in bad.iter().enumerate() {
        let (status, _) = get_with(
            &service.base,
            &format!("/users/{i}"),
            &[("traceparent", header)],
        )
        .await;
        assert_eq!(status, 200, "a bad header is never an error: {header}");
    }
    // A higher version is read by its first four fields.
    let future = format!("cc-{TRACE_ID}-{PARENT_ID}-01-some-future-field");
    get_with(&service.base, "/users/99", &[("traceparent", &future)]).await;
    let received = service.stop().await;

    let roots = spans_named(&received.spans, "GET /users/{id}");
    assert_eq!(roots.len(), bad.len() + 1);
    let continued: Vec<_> = roots.iter().filter(|r| r["trace.id"] == TRACE_ID).collect();
    assert_eq!(
        continued.len(),
        1,
        "only the future version continues the trace"
    );
    assert_eq!(continued[0]["attributes"]["url.path"], "/users/99");
    assert_eq!(continued[0]["attributes"]["parent.id"], PARENT_ID);
    for root in roots.iter().filter(|r| r["trace.id"] != TRACE_ID) {
        assert!(is_lower_hex(&root["trace.id"], 32), "{root}");
        assert!(root["attributes"].get("parent.id").is_none(), "{root}");
    }
}

#[tokio::test]
async fn the_incoming_sampled_flag_wins_over_the_ratio() {
    // Ratio 0: no new trace is sampled, but a caller's sampled trace is.
    let service = Service::start("users", 0.0, users, default_layer).await;
    let sampled = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (_, body) = get_with(&service.base, "/users/1", &[("traceparent", &sampled)]).await;
    assert!(body.starts_with(&format!("00-{TRACE_ID}-")) && body.contains("-01\n"));
    // Not sampled by the caller: not exported, and passed on unsampled.
    let unsampled = format!("00-{TRACE_ID}-{PARENT_ID}-00");
    let (_, body) = get_with(&service.base, "/users/2", &[("traceparent", &unsampled)]).await;
    assert!(
        body.starts_with(&format!("00-{TRACE_ID}-")) && body.contains("-00\n"),
        "{body}"
    );
    // No caller: the ratio decides (0: out), and the decision goes on.
    let (_, body) = get_with(&service.base, "/users/3", &[]).await;
    assert!(
        body.lines().next().is_some_and(|l| l.ends_with("-00")),
        "{body}"
    );
    let received = service.stop().await;

    let paths: Vec<_> = received
        .spans
        .iter()
        .map(|s| s["attributes"]["url.path"].clone())
        .collect();
    assert_eq!(received.spans.len(), 2, "{paths:?}"); // the root and its child
    assert_eq!(
        spans_named(&received.spans, "GET /users/{id}")[0]["attributes"]["url.path"],
        "/users/1"
    );
    assert_eq!(received.layer.spans_unsampled, 4);
    // Unsampled requests are still counted, and their logs still sent.
    let count: f64 = metric(&received.metrics, "http.server.requests")
        .iter()
        .map(|m| m["value"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(count, 3.0);
    assert_eq!(received.logs.len(), 3);
}

#[tokio::test]
async fn new_traces_are_sampled_at_the_ratio() {
    let service = Service::start("users", 0.25, users, default_layer).await;
    const N: usize = 400;
    for i in 0..N {
        get_with(&service.base, &format!("/users/{i}"), &[]).await;
    }
    let received = service.stop().await;

    let roots = spans_named(&received.spans, "GET /users/{id}");
    let children = spans_named(&received.spans, "load user");
    // 0.25 of 400 is 100, with a standard deviation of 8.7: 60..140 is
    // more than four of them either way.
    assert!((60..140).contains(&roots.len()), "{} sampled", roots.len());
    // Whole traces: every exported child's root was exported, and no more.
    assert_eq!(children.len(), roots.len());
    for child in &children {
        assert!(
            roots
                .iter()
                .any(|r| r["id"] == child["attributes"]["parent.id"])
        );
    }
    assert_eq!(
        received.layer.spans_unsampled as usize,
        2 * (N - roots.len())
    );
    let count: f64 = metric(&received.metrics, "http.server.requests")
        .iter()
        .map(|m| m["value"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(count, N as f64, "the metrics count every request");
}

/// The frontend calls the backend with the trace context of a client span.
fn frontend(_telemetry: Telemetry) -> Router<String> {
    Router::new().route(
        "/checkout",
        get(|State(backend): State<String>| async move {
            let call = tracing::info_span!("GET /users/{id}", otel.kind = "client");
            async {
                let request = client().get(format!("{backend}/users/5"));
                let request = match current_trace_context() {
                    Some(context) => context.inject_into(request),
                    None => request,
                };
                match request.send().await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                }
            }
            .instrument(call)
            .await
        }),
    )
}

#[tokio::test]
async fn the_decision_travels_across_two_services() {
    // The backend samples every new trace, the frontend none: what the
    // frontend decides (or was told) is what the backend does.
    let backend = Service::start("backend", 1.0, users, default_layer).await;
    let backend_url = backend.base.clone();
    // The frontend's router needs the backend's URL as state.
    let frontend_service = {
        static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let _ = URL.set(backend_url);
        fn app(t: Telemetry) -> Router {
            frontend(t).with_state(URL.get().cloned().unwrap_or_default())
        }
        Service::start("frontend", 0.0, app, default_layer).await
    };

    let sampled = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    get_with(
        &frontend_service.base,
        "/checkout",
        &[("traceparent", &sampled)],
    )
    .await;
    let other_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    get_with(
        &frontend_service.base,
        "/checkout",
        &[("traceparent", other_trace)],
    )
    .await;
    get_with(&frontend_service.base, "/checkout", &[]).await;
    let front = frontend_service.stop().await;
    let back = backend.stop().await;

    // Only the sampled trace is exported, on both sides, as one trace.
    assert!(
        front.spans.iter().all(|s| s["trace.id"] == TRACE_ID),
        "{:?}",
        front.spans
    );
    assert!(
        back.spans.iter().all(|s| s["trace.id"] == TRACE_ID),
        "{:?}",
        back.spans
    );
    assert_eq!((front.spans.len(), back.spans.len()), (2, 2));
    let client_span = spans_named(&front.spans, "GET /users/{id}")[0];
    assert_eq!(client_span["attributes"]["span.kind"], "client");
    let front_root = spans_named(&front.spans, "GET /checkout")[0];
    assert_eq!(client_span["attributes"]["parent.id"], front_root["id"]);
    let back_root = spans_named(&back.spans, "GET /users/{id}")
        .into_iter()
        .find(|s| s["attributes"]["span.kind"] == "server")
        .expect("the backend's request span");
    assert_eq!(back_root["attributes"]["parent.id"], client_span["id"]);
    assert_eq!(back.layer.spans_unsampled, 4);
    assert_eq!(front.layer.spans_unsampled, 4);
}

#[tokio::test]
async fn routes_are_templates_and_spans_carry_http_attributes() {
    let service = Service::start("users", 1.0, users, default_layer).await;
    for id in [1, 22, 333] {
        get_with(&service.base, &format!("/users/{id}"), &[]).await;
    }
    let (status, _) = get_with(&service.base, "/no/such/route/42", &[]).await;
    assert_eq!(status, 404);
    let brew = client()
        .request(
            reqwest::Method::from_bytes(b"BREW").expect("method"),
            format!("{}/users/9", service.base),
        )
        .send()
        .await
        .expect("response");
    assert_eq!(brew.status(), 405);
    let received = service.stop().await;

    let requests = metric(&received.metrics, "http.server.requests");
    let users: Vec<_> = requests
        .iter()
        .filter(|m| m["attributes"]["http.route"] == "/users/{id}")
        .collect();
    // Three paths, one series; and one more for the invented method.
    let get_users: Vec<_> = users
        .iter()
        .filter(|m| m["attributes"]["http.request.method"] == "GET")
        .collect();
    assert_eq!(get_users.len(), 1, "{requests:?}");
    assert_eq!(get_users[0]["value"], 3.0);
    assert_eq!(get_users[0]["attributes"]["http.response.status_code"], 200);
    assert!(
        users
            .iter()
            .any(|m| m["attributes"]["http.request.method"] == "_OTHER")
    );
    // The 404 has no route: never the raw path.
    let not_found: Vec<_> = requests
        .iter()
        .filter(|m| m["attributes"]["http.response.status_code"] == 404)
        .collect();
    assert_eq!(not_found.len(), 1);
    assert!(not_found[0]["attributes"].get("http.route").is_none());
    assert!(
        !received
            .metrics
            .iter()
            .any(|m| m.to_string().contains("/users/22"))
    );
    assert_eq!(
        get_durations(&received.distributions, "/users/{id}").count(),
        3
    );

    assert_server_span(&received.spans, "/users/{id}", "/users/22");
    let unrouted = spans_named(&received.spans, "GET")[0];
    assert_eq!(unrouted["attributes"]["url.path"], "/no/such/route/42");
}

fn classes(layer: HttpServerLayer) -> HttpServerLayer {
    layer.status_classes(true)
}

#[tokio::test]
async fn server_errors_are_flagged() {
    let service = Service::start("users", 1.0, users, classes).await;
    assert_eq!(get_with(&service.base, "/fail", &[]).await.0, 500);
    assert_eq!(get_with(&service.base, "/fail", &[]).await.0, 500);
    assert_eq!(get_with(&service.base, "/teapot", &[]).await.0, 418);
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
    let requests = metric(&received.metrics, "http.server.requests");
    let fail_series = requests
        .iter()
        .find(|m| m["attributes"]["http.route"] == "/fail")
        .expect("the /fail series");
    assert_eq!(
        fail_series["attributes"]["http.response.status_class"],
        "5xx"
    );
    assert_eq!(fail_series["value"], 2.0);
    assert!(
        fail_series["attributes"]
            .get("http.response.status_code")
            .is_none()
    );
}

fn own_routes(layer: HttpServerLayer) -> HttpServerLayer {
    layer.route_with(|head| {
        head.uri
            .path()
            .starts_with("/users/")
            .then(|| "/people/{id}".into())
    })
}

#[tokio::test]
async fn a_route_function_names_the_routes() {
    let service = Service::start("users", 1.0, users, own_routes).await;
    for id in [4, 5] {
        get_with(&service.base, &format!("/users/{id}"), &[]).await;
    }
    get_with(&service.base, "/teapot", &[]).await;
    let received = service.stop().await;

    let requests = metric(&received.metrics, "http.server.requests");
    let people: Vec<_> = requests
        .iter()
        .filter(|m| m["attributes"]["http.route"] == "/people/{id}")
        .collect();
    assert_eq!(people.len(), 1, "{requests:?}");
    assert_eq!(people[0]["value"], 2.0);
    // What the function does not name has no route, even if axum matched it.
    let teapot = requests
        .iter()
        .find(|m| m["attributes"]["http.response.status_code"] == 418)
        .expect("the teapot series");
    assert!(teapot["attributes"].get("http.route").is_none());
    assert_eq!(spans_named(&received.spans, "GET /people/{id}").len(), 2);
}
