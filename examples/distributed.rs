//! One trace across two services: a frontend that calls a backend over HTTP,
//! both axum services on 127.0.0.1 behind the `HttpServerLayer` middleware,
//! each with its own `Telemetry` and service name.
//!
//! ```sh
//! cargo run --example distributed --features tower,axum,log,metrics,local-endpoint
//! ```
//!
//! Each service runs on its own thread, Tokio runtime and `tracing`
//! subscriber, as if it were its own process. The program sends a few
//! requests to the frontend and exits. Per request:
//!
//! 1. the frontend's middleware opens a root span (a new trace, sampled);
//! 2. the handler logs with `log::info!` (the `log` facade, through
//!    `LogTracer`), opens a client span and calls the backend with reqwest,
//!    the client span's trace context injected as `traceparent`, and counts
//!    the cart with `metrics::counter!` (the `metrics` facade);
//! 3. the backend's middleware continues that trace: its root span's
//!    `parent.id` is the frontend's client span; its handler logs and works
//!    in a child span, and records the price with `metrics::histogram!`
//!    (a distribution in New Relic, with percentiles, as is each service's
//!    request latency).
//!
//! With no `NEW_RELIC_API_KEY` both services send to one local ingest
//! endpoint, and the program prints each request's trace as that endpoint
//! received it: every span under one `trace.id`, indented under its parent.
//! With a key they send to New Relic, and the program prints the trace ids
//! to look up there.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use newrelic_telemetry::local::LocalEndpoint;
use newrelic_telemetry::middleware::HttpServerLayer;
use newrelic_telemetry::tracing_layer::{LogTracer, current_trace_context};
use newrelic_telemetry::{Telemetry, TelemetryBuilder, TelemetryReport};
use serde_json::Value as Json;
use tokio::sync::oneshot;
use tracing::Instrument;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// Requests the program sends to the frontend.
const REQUESTS: usize = 3;

/// Every wait of the program is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // `log::info!` lines (here, and in any dependency) become `tracing`
    // events, which each service's tracing layer exports as logs.
    LogTracer::builder()
        .with_max_level(log::LevelFilter::Info)
        .init()?;

    // New Relic when NEW_RELIC_API_KEY is set; a local endpoint otherwise.
    let local = LocalEndpoint::start_unless_keyed().await?;
    let builder = |service: &'static str| {
        Telemetry::builder()
            .service_name(service)
            .local_endpoint(local.as_ref())
    };
    let trace_ids = run(builder("frontend"), builder("backend")).await?;

    match &local {
        Some(local) => {
            for (i, trace) in traces(local, &trace_ids).iter().enumerate() {
                println!("\nrequest {}: trace.id {}", i + 1, trace.id);
                trace.print();
            }
        }
        None => {
            for id in &trace_ids {
                println!("sent trace {id}: look it up in New Relic's distributed tracing");
            }
        }
    }
    Ok(())
}

/// Starts the backend and the frontend, sends [`REQUESTS`] requests to the
/// frontend, stops both and returns the trace id of each request.
async fn run(frontend: TelemetryBuilder, backend: TelemetryBuilder) -> Result<Vec<String>, Error> {
    let backend = Service::start(backend, |_| backend_app()).await?;
    let backend_url = backend.base.clone();
    let frontend = Service::start(frontend, move |http| frontend_app(http, backend_url)).await?;

    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut trace_ids = Vec::new();
    for cart in 1..=REQUESTS {
        let response = tokio::time::timeout(
            BOUND,
            http.get(format!("{}/checkout/{cart}", frontend.base))
                .send(),
        )
        .await??;
        let body = response.error_for_status()?.text().await?;
        println!("GET /checkout/{cart}: {body}");
        // The frontend answers with the trace id of the request.
        trace_ids.push(
            body.split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned(),
        );
    }

    // The frontend first: its calls to the backend are over.
    let front = frontend.stop().await?;
    let back = backend.stop().await?;
    for (name, report) in [("frontend", front), ("backend", back)] {
        println!(
            "{name}: {} items sent, {} dropped, {} spans exported, {} unsampled",
            report.items_sent(),
            report.items_dropped(),
            report.layer.spans_recorded,
            report.layer.spans_unsampled,
        );
    }
    Ok(trace_ids)
}

/// The frontend: `GET /checkout/{cart}` prices the cart at the backend.
fn frontend_app(http: reqwest::Client, backend: String) -> Router {
    Router::new()
        .route("/checkout/{cart}", get(checkout))
        .with_state((http, backend))
}

async fn checkout(
    Path(cart): Path<u32>,
    State((http, backend)): State<(reqwest::Client, String)>,
) -> String {
    log::info!("checking out cart {cart}");
    // A client span for the call: the backend's request span hangs from it.
    let call = tracing::info_span!(
        "call backend",
        otel.name = "GET /price/{item}",
        otel.kind = "client"
    );
    let price = async {
        let request = http.get(format!("{backend}/price/{cart}"));
        let request = match current_trace_context() {
            Some(context) => context.inject_into(request),
            None => request,
        };
        match request.send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "backend unreachable");
                String::from("unknown")
            }
        }
    }
    .instrument(call)
    .await;
    // Counted through the `metrics` facade, into this service's telemetry
    // (its recorder is this thread's default; see `Service::start`).
    let priced = if price == "unknown" { "false" } else { "true" };
    metrics::counter!("checkout.carts", "priced" => priced).increment(1);
    let trace_id = current_trace_context().map(|c| c.trace_id().to_owned());
    format!(
        "cart {cart} costs {price}, trace {}",
        trace_id.unwrap_or_default()
    )
}

/// The backend: `GET /price/{item}` looks a price up.
fn backend_app() -> Router {
    Router::new().route("/price/{item}", get(price))
}

async fn price(Path(item): Path<u32>) -> String {
    log::info!("pricing item {item}");
    let cents = async {
        tokio::time::sleep(Duration::from_millis(5)).await; // the database
        1000 + u64::from(item) * 250
    }
    .instrument(tracing::info_span!("load price", item))
    .await;
    metrics::histogram!("price.cents").record(cents as f64);
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A service running on its own thread, Tokio runtime and subscriber.
struct Service {
    base: String,
    stop: oneshot::Sender<()>,
    report: oneshot::Receiver<TelemetryReport>,
}

impl Service {
    /// Builds the telemetry and serves `app` (given an
    /// HTTP client) behind the middleware on 127.0.0.1, until stopped.
    async fn start(
        builder: TelemetryBuilder,
        app: impl FnOnce(reqwest::Client) -> Router + Send + 'static,
    ) -> Result<Service, Error> {
        let (ready_tx, ready) = oneshot::channel::<Result<String, String>>();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (report_tx, report) = oneshot::channel();
        std::thread::spawn(move || {
            let serve = async move {
                let telemetry = builder.build().map_err(|e| e.to_string())?;
                // This thread's subscriber: the runtime is single-threaded,
                // so every task of the service runs under it.
                let _guard = tracing::subscriber::set_default(
                    tracing_subscriber::registry()
                        .with(telemetry.tracing_layer().with_filter(LevelFilter::INFO)),
                );
                // And its `metrics` recorder: one per service, so per thread
                // (a process-wide one would be `install_metrics_recorder`).
                let recorder = telemetry.metrics_recorder();
                let _metrics = metrics::set_default_local_recorder(&recorder);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?;
                let base = format!(
                    "http://{}",
                    listener.local_addr().map_err(|e| e.to_string())?
                );
                let http = newrelic_telemetry::client::http_client_builder()
                    .no_proxy()
                    .build()
                    .map_err(|e| e.to_string())?;
                let router = app(http).layer(HttpServerLayer::new(&telemetry));
                let _ = ready_tx.send(Ok(base));
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
                // Flush whatever happens: the tracing layer, then the batches.
                let _ = report_tx.send(telemetry.shutdown().await);
                served.map_err(|e| e.to_string())
            };
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(serve),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                eprintln!("service failed: {e}");
            }
        });
        let base = tokio::time::timeout(BOUND, ready).await??;
        Ok(Service {
            base: base?,
            stop,
            report,
        })
    }

    /// Stops accepting, finishes the requests in flight, flushes the
    /// telemetry, and reports.
    fn stop(self) -> impl Future<Output = Result<TelemetryReport, Error>> {
        let _ = self.stop.send(());
        async move { Ok(tokio::time::timeout(BOUND, self.report).await??) }
    }
}

/// One span as the endpoint received it.
#[derive(Clone, Debug)]
struct SpanView {
    id: String,
    parent: Option<String>,
    service: String,
    name: String,
    kind: String,
}

/// One request's trace: its spans, and its logs' `(service, level, message)`.
#[derive(Debug)]
struct Trace {
    id: String,
    spans: Vec<SpanView>,
    logs: Vec<(String, String, String)>,
}

impl Trace {
    /// Prints the spans as a tree (a span whose parent is not in the
    /// trace, such as the remote caller's, at the top), then the logs.
    fn print(&self) {
        let known = |id: &Option<String>| self.spans.iter().any(|s| Some(&s.id) == id.as_ref());
        for root in self.spans.iter().filter(|s| !known(&s.parent)) {
            self.print_from(root, 0);
        }
        for (service, level, message) in &self.logs {
            println!("  log [{service}] {level}: {message}");
        }
    }

    fn print_from(&self, span: &SpanView, depth: usize) {
        let kind = if span.kind.is_empty() {
            String::new()
        } else {
            format!(", {}", span.kind)
        };
        println!(
            "  {:indent$}{} [{}{kind}] id {} parent.id {}",
            "",
            span.name,
            span.service,
            span.id,
            span.parent.as_deref().unwrap_or("-"),
            indent = depth * 2,
        );
        for child in self
            .spans
            .iter()
            .filter(|s| s.parent.as_ref() == Some(&span.id))
        {
            self.print_from(child, depth + 1);
        }
    }
}

/// The traces `ids`, as `local` received them.
fn traces(local: &LocalEndpoint, ids: &[String]) -> Vec<Trace> {
    let mut spans: BTreeMap<String, Vec<SpanView>> = BTreeMap::new();
    let mut logs: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    let text = |v: &Json| v.as_str().unwrap_or_default().to_owned();
    for request in local.requests() {
        for block in request.body.as_array().into_iter().flatten() {
            // An item's own attributes, else its block's common ones (the
            // service's name travels once per payload, in the common block).
            let common = &block["common"]["attributes"];
            let service = |a: &Json| match &a["service.name"] {
                Json::Null => text(&common["service.name"]),
                own => text(own),
            };
            for span in block["spans"].as_array().into_iter().flatten() {
                let a = &span["attributes"];
                spans
                    .entry(text(&span["trace.id"]))
                    .or_default()
                    .push(SpanView {
                        id: text(&span["id"]),
                        parent: a["parent.id"].as_str().map(str::to_owned),
                        service: service(a),
                        name: text(&a["name"]),
                        kind: text(&a["span.kind"]),
                    });
            }
            for log in block["logs"].as_array().into_iter().flatten() {
                let a = &log["attributes"];
                logs.entry(text(&a["trace.id"])).or_default().push((
                    service(a),
                    text(&a["level"]),
                    text(&log["message"]),
                ));
            }
        }
    }
    ids.iter()
        .map(|id| Trace {
            id: id.clone(),
            spans: spans.remove(id).unwrap_or_default(),
            logs: logs.remove(id).unwrap_or_default(),
        })
        .collect()
}

/// Runs the whole program against a local endpoint and checks each trace.
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_span_of_a_request_is_in_one_trace_across_both_services() {
        LogTracer::init().expect("the only logger of this test binary");
        let local = LocalEndpoint::start().await.expect("local endpoint");
        let builder = |service| local.configure(Telemetry::builder().service_name(service));
        let ids = run(builder("frontend"), builder("backend"))
            .await
            .expect("the program runs");
        assert_eq!(ids.len(), REQUESTS);

        let traces = traces(&local, &ids);
        for trace in &traces {
            assert_eq!(trace.id.len(), 32, "a W3C trace id: {trace:?}");
            let find = |service: &str, name: &str| {
                trace
                    .spans
                    .iter()
                    .find(|s| s.service == service && s.name == name)
                    .unwrap_or_else(|| panic!("no {service} span {name:?} in {trace:?}"))
                    .clone()
            };
            let front_root = find("frontend", "GET /checkout/{cart}");
            let client = find("frontend", "GET /price/{item}");
            let back_root = trace
                .spans
                .iter()
                .find(|s| s.service == "backend" && s.kind == "server")
                .unwrap_or_else(|| panic!("no backend request span in {trace:?}"));
            let load = find("backend", "load price");
            // Every span of the request, and only those, under one trace id.
            assert_eq!(trace.spans.len(), 4, "{trace:?}");
            assert_eq!(front_root.parent, None);
            assert_eq!(front_root.kind, "server");
            assert_eq!(client.kind, "client");
            assert_eq!(client.parent.as_ref(), Some(&front_root.id));
            assert_eq!(back_root.parent.as_ref(), Some(&client.id));
            assert_eq!(load.parent.as_ref(), Some(&back_root.id));
            // The `log::info!` lines of both services, in the trace.
            let services: Vec<_> = trace
                .logs
                .iter()
                .map(|(s, l, _)| (s.as_str(), l.as_str()))
                .collect();
            assert!(services.contains(&("frontend", "INFO")), "{trace:?}");
            assert!(services.contains(&("backend", "INFO")), "{trace:?}");
        }
        // The facade's metrics, from each service's own recorder.
        let metrics: Vec<Json> = local
            .requests()
            .iter()
            .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
            .flat_map(|block| block["metrics"].as_array().cloned().unwrap_or_default())
            .collect();
        let carts: f64 = metrics
            .iter()
            .filter(|m| m["name"] == "checkout.carts" && m["attributes"]["priced"] == "true")
            .filter_map(|m| m["value"].as_f64())
            .sum();
        // Histograms and the middleware's latencies arrive as
        // distributions, over OTLP, by service.
        let distributions = local.distributions();
        let count = |name: &str, service: &str| -> u64 {
            distributions
                .iter()
                .filter(|d| {
                    d.name == name && d.resource.get("service.name") == Some(&service.into())
                })
                .map(|d| d.distribution.count())
                .sum()
        };
        let prices = count("price.cents", "backend");
        assert_eq!(
            (carts, prices),
            (REQUESTS as f64, REQUESTS as u64),
            "{metrics:?}"
        );
        for service in ["frontend", "backend"] {
            assert_eq!(
                count("http.server.duration.ms", service),
                REQUESTS as u64,
                "{service}: {distributions:?}"
            );
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), REQUESTS, "one trace per request");
    }
}
