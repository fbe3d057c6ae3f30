//! The `tracing` layer end to end: spans and events go through the layer, its
//! worker, the batches and the harvesters to a real HTTP server on 127.0.0.1,
//! and the tests check the JSON that arrives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use newrelic_telemetry::client::{Logs, Spans};
use newrelic_telemetry::test_util::{ReceivedRequest, TestIngestServer};
use newrelic_telemetry::tracing_layer::{
    DEFAULT_EXCLUDED_TARGETS, LayerStats, NewRelicLayer, NewRelicLayerBuilder,
};
use newrelic_telemetry::{Harvester, LogBatch, SpanBatch};
use serde_json::Value as Json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, debug_span, error, info, info_span, trace, warn};
use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

mod support;
use support::{Captured, client, server};

const WAIT: Duration = Duration::from_secs(5);

/// A test server, a span and a log batch, and a harvester for each.
struct Pipeline {
    server: TestIngestServer,
    spans: Arc<SpanBatch>,
    logs: Arc<LogBatch>,
    span_harvester: Harvester,
    log_harvester: Harvester,
}

impl Pipeline {
    async fn start(harvest_interval: Duration) -> Pipeline {
        let server = server().await;
        let spans = Arc::new(SpanBatch::new());
        let logs = Arc::new(LogBatch::new());
        let span_harvester = Harvester::builder(spans.clone(), client::<Spans>(&server))
            .harvest_interval(harvest_interval)
            .shutdown_timeout(WAIT)
            .spawn();
        let log_harvester = Harvester::builder(logs.clone(), client::<Logs>(&server))
            .harvest_interval(harvest_interval)
            .shutdown_timeout(WAIT)
            .spawn();
        Pipeline {
            server,
            spans,
            logs,
            span_harvester,
            log_harvester,
        }
    }

    /// A layer builder exporting into both batches as service `svc`.
    fn layer(&self) -> NewRelicLayerBuilder {
        NewRelicLayer::builder()
            .spans(self.spans.clone())
            .logs(self.logs.clone())
            .service_name("svc")
    }

    /// The documented shutdown order: stop and await the worker (it drains its
    /// channel), then shut the harvesters down (their final flush sends it).
    async fn finish(&self, stop: CancellationToken, worker: JoinHandle<LayerStats>) -> LayerStats {
        stop.cancel();
        let stats = tokio::time::timeout(WAIT, worker)
            .await
            .expect("the worker ends once cancelled")
            .expect("the worker does not panic");
        let spans = self.span_harvester.shutdown().await;
        let logs = self.log_harvester.shutdown().await;
        assert!(spans.completed && !spans.deadline_exceeded, "{spans:?}");
        assert!(logs.completed && !logs.deadline_exceeded, "{logs:?}");
        stats
    }
}

/// The item whose `key` (top level or attribute) is `value`; panics if none.
fn find<'a>(items: &'a [Json], key: &str, value: &str) -> &'a Json {
    items
        .iter()
        .find(|item| item.get(key).or_else(|| item["attributes"].get(key)) == Some(&value.into()))
        .unwrap_or_else(|| panic!("no item with {key} = {value:?} in {items:#?}"))
}

fn span<'a>(spans: &'a [Json], name: &str) -> &'a Json {
    find(spans, "name", name)
}

fn log<'a>(logs: &'a [Json], message: &str) -> &'a Json {
    find(logs, "message", message)
}

fn messages(logs: &[Json]) -> Vec<&str> {
    let mut m: Vec<&str> = logs.iter().filter_map(|l| l["message"].as_str()).collect();
    m.sort_unstable();
    m
}

fn names(spans: &[Json]) -> Vec<&str> {
    let mut n: Vec<&str> = spans
        .iter()
        .filter_map(|s| s["attributes"]["name"].as_str())
        .collect();
    n.sort_unstable();
    n
}

/// Whether any accepted log request holds a record with `message`.
fn received_log(requests: &[ReceivedRequest], message: &str) -> bool {
    requests
        .iter()
        .filter(|r| r.path == "/log/v1" && r.accepted())
        .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
        .flat_map(|block| block["logs"].as_array().cloned().unwrap_or_default())
        .any(|l| l["message"] == message)
}

/// Whether a JSON number is `expected` up to parsing precision.
fn close(v: &Json, expected: f64) -> bool {
    v.as_f64()
        .is_some_and(|x| (x - expected).abs() <= expected.abs() * 1e-12)
}

/// A W3C span id: 16 lowercase hex digits.
fn is_hex_id(v: &Json) -> bool {
    is_hex(v, 16)
}

/// A W3C trace id: 32 lowercase hex digits.
fn is_trace_id(v: &Json) -> bool {
    is_hex(v, 32)
}

fn is_hex(v: &Json, len: usize) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == len && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')))
}

fn is_excluded(target: &str) -> bool {
    DEFAULT_EXCLUDED_TARGETS.iter().any(|p| {
        target
            .strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Another layer of the same subscriber: records the target of every event it
/// sees, to show what the New Relic layer's filters leave to the others.
#[derive(Clone, Default)]
struct SeenTargets(Arc<Mutex<Vec<String>>>);

impl SeenTargets {
    fn targets(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl<S: tracing::Subscriber> Layer<S> for SeenTargets {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        self.0
            .lock()
            .unwrap()
            .push(event.metadata().target().to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_spans_share_a_trace_and_link_to_their_parents() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    let (layer, worker) = p.layer().build();
    let stop = CancellationToken::new();
    let worker = worker.spawn(stop.clone());

    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let root = info_span!("checkout", order.id = 42);
        root.in_scope(|| {
            info_span!("charge").in_scope(|| {
                info_span!("call bank").in_scope(|| {});
            });
        });
        info_span!(parent: &root, "explicit child").in_scope(|| {});
        drop(root);
        info_span!("unrelated").in_scope(|| {});
    });

    let stats = p.finish(stop, worker).await;
    assert_eq!(stats.spans_recorded, 5, "{stats:?}");
    assert_eq!(
        stats.items_dropped_channel_full + stats.items_dropped_by_batch,
        0
    );
    let spans = p.server.spans();
    assert_eq!(
        names(&spans),
        [
            "call bank",
            "charge",
            "checkout",
            "explicit child",
            "unrelated"
        ]
    );

    let root = span(&spans, "checkout");
    let charge = span(&spans, "charge");
    let bank = span(&spans, "call bank");
    let explicit = span(&spans, "explicit child");
    let unrelated = span(&spans, "unrelated");
    for s in &spans {
        assert!(is_hex_id(&s["id"]) && is_trace_id(&s["trace.id"]), "{s}");
        assert_eq!(s["attributes"]["service.name"], "svc");
        assert_eq!(s["attributes"]["code.namespace"], "tracing_layer");
        assert!(
            s["attributes"]["duration.ms"]
                .as_f64()
                .is_some_and(|d| d >= 0.0)
        );
        assert!(
            s["timestamp"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000)
        );
    }
    // One trace, linked parent to child.
    assert!(root["attributes"].get("parent.id").is_none());
    assert_eq!(root["attributes"]["order.id"], 42);
    for child in [charge, bank, explicit] {
        assert_eq!(child["trace.id"], root["trace.id"]);
    }
    assert_eq!(charge["attributes"]["parent.id"], root["id"]);
    assert_eq!(bank["attributes"]["parent.id"], charge["id"]);
    assert_eq!(explicit["attributes"]["parent.id"], root["id"]);
    // A root span starts its own trace.
    assert_ne!(unrelated["trace.id"], root["trace.id"]);
    assert!(unrelated["attributes"].get("parent.id").is_none());
    // A parent starts before and lasts at least as long as its children.
    let duration = |s: &Json| s["attributes"]["duration.ms"].as_f64().unwrap_or(-1.0);
    assert!(root["timestamp"].as_u64() <= charge["timestamp"].as_u64());
    assert!(duration(root) >= duration(charge));
    assert!(duration(charge) >= duration(bank));
    // Distinct span ids.
    let mut ids: Vec<&str> = spans.iter().filter_map(|s| s["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5);
}

#[tokio::test]
async fn events_become_logs_carrying_their_span_and_trace_ids() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    let (layer, worker) = p.layer().build();
    let stop = CancellationToken::new();
    let worker = worker.spawn(stop.clone());

    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        info!(target: "my_app::startup", port = 8080, "listening");
        let request = info_span!("request", route = "/pay");
        let _entered = request.enter();
        warn!(attempt = 2, "retrying");
        debug_span!("db").in_scope(|| info!(rows = 3, "query done"));
        error!("gave up");
    });

    let stats = p.finish(stop, worker).await;
    assert_eq!((stats.spans_recorded, stats.logs_recorded), (2, 4));
    let spans = p.server.spans();
    let logs = p.server.logs();
    assert_eq!(
        messages(&logs),
        ["gave up", "listening", "query done", "retrying"]
    );
    let request = span(&spans, "request");
    let db = span(&spans, "db");

    let listening = log(&logs, "listening");
    let a = &listening["attributes"];
    assert_eq!(a["level"], "INFO");
    assert_eq!(a["target"], "my_app::startup");
    assert_eq!(a["port"], 8080);
    assert_eq!(a["service.name"], "svc");
    assert!(a.get("trace.id").is_none() && a.get("span.id").is_none());
    assert!(
        a.get("message").is_none(),
        "the message is not an attribute"
    );
    assert!(
        listening["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );

    let retrying = &log(&logs, "retrying")["attributes"];
    assert_eq!(retrying["level"], "WARN");
    assert_eq!(retrying["target"], "tracing_layer");
    assert_eq!(retrying["attempt"], 2);
    assert_eq!(retrying["trace.id"], request["trace.id"]);
    assert_eq!(retrying["span.id"], request["id"]);

    let query = &log(&logs, "query done")["attributes"];
    assert_eq!(query["span.id"], db["id"]);
    assert_eq!(query["trace.id"], request["trace.id"]);
    assert_eq!(query["rows"], 3);

    let gave_up = &log(&logs, "gave up")["attributes"];
    assert_eq!(gave_up["level"], "ERROR");
    assert_eq!(gave_up["span.id"], request["id"]);
}

#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct Order {
    id: u32,
}

#[tokio::test]
async fn fields_of_every_type_keep_their_types() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    let (layer, worker) = p.layer().build();
    let stop = CancellationToken::new();
    let worker = worker.spawn(stop.clone());
    let err = std::io::Error::other("disk full");

    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let typed = info_span!(
            "typed",
            i = -7i64,
            u = 7u64,
            big = u64::MAX,
            f = 2.5f64,
            nan = f64::NAN,
            inf = f64::NEG_INFINITY,
            b = true,
            s = "text",
            dbg = ?Order { id: 1 },
            disp = %"shown",
            e = &err as &(dyn std::error::Error + 'static),
            wide = 1i128 << 70,
            late = tracing::field::Empty,
            changed = 1,
        );
        typed.record("late", "filled");
        typed.record("changed", 2.25);
        typed.in_scope(|| {
            info!(
                i = -7i64,
                u = 7u64,
                big = u64::MAX,
                f = 2.5f64,
                nan = f64::NAN,
                b = false,
                s = "text",
                dbg = ?vec![1, 2],
                disp = %3,
                e = &err as &(dyn std::error::Error + 'static),
                wide = -(1i128 << 70),
                small = 5u128,
                "typed event"
            );
        });
    });

    p.finish(stop, worker).await;
    let spans = p.server.spans();
    let logs = p.server.logs();
    let s = &span(&spans, "typed")["attributes"];
    assert!(s["i"].is_i64() && s["i"] == -7);
    assert!(s["u"].is_u64() && s["u"] == 7);
    assert!(s["big"].is_f64() && s["big"].as_f64() == Some(u64::MAX as f64));
    assert!(s["f"].is_f64() && s["f"] == 2.5);
    assert_eq!(s["nan"], "NaN");
    assert_eq!(s["inf"], "-inf");
    assert_eq!(s["b"], true);
    assert_eq!(s["s"], "text");
    assert_eq!(s["dbg"], "Order { id: 1 }");
    assert_eq!(s["disp"], "shown");
    assert_eq!(s["e"], "disk full");
    assert!(s["wide"].is_f64() && close(&s["wide"], (1i128 << 70) as f64));
    assert_eq!(s["late"], "filled", "recorded after creation");
    assert_eq!(s["changed"], 2.25, "updated after creation");

    let l = log(&logs, "typed event");
    let a = &l["attributes"];
    assert!(a["i"].is_i64() && a["i"] == -7);
    assert!(a["u"].is_u64() && a["u"] == 7);
    assert!(a["big"].is_f64() && a["big"].as_f64() == Some(u64::MAX as f64));
    assert!(a["f"].is_f64() && a["f"] == 2.5);
    assert_eq!(a["nan"], "NaN");
    assert_eq!(a["b"], false);
    assert_eq!(a["s"], "text");
    assert_eq!(a["dbg"], "[1, 2]");
    assert_eq!(a["disp"], "3");
    assert_eq!(a["e"], "disk full");
    assert!(a["wide"].is_f64() && close(&a["wide"], -(1i128 << 70) as f64));
    assert!(a["small"].is_u64() && a["small"] == 5);
}

#[tokio::test]
async fn otel_name_and_kind_are_read_however_they_were_written() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    let (layer, worker) = p.layer().build();
    let stop = CancellationToken::new();
    let worker = worker.spawn(stop.clone());

    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let route = "/orders/{id}";
        info_span!("a", otel.name = %format_args!("GET {route}"), otel.kind = "Server")
            .in_scope(|| info!(attempt = 2, "retrying {route} after {} ms", 250));
        info_span!("b", otel.name = "plain", otel.kind = %"CONSUMER").in_scope(|| {});
        info_span!("c", otel.kind = "producer", note = %"shown").in_scope(|| {});
    });

    p.finish(stop, worker).await;
    let spans = p.server.spans();
    let get = span(&spans, "GET /orders/{id}");
    assert_eq!(get["attributes"]["span.kind"], "server");
    let plain = span(&spans, "plain");
    assert_eq!(plain["attributes"]["span.kind"], "consumer");
    let c = span(&spans, "c");
    assert_eq!(c["attributes"]["span.kind"], "producer");
    assert_eq!(c["attributes"]["note"], "shown");
    let logs = p.server.logs();
    assert_eq!(logs[0]["message"], "retrying /orders/{id} after 250 ms");
    assert_eq!(logs[0]["attributes"]["attempt"], 2);
}

#[tokio::test]
async fn error_fields_and_error_events_flag_spans() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    let (layer, worker) = p.layer().build();
    let stop = CancellationToken::new();
    let worker = worker.spawn(stop.clone());

    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        info_span!("flagged", error = true).in_scope(|| {});
        info_span!("described", error = %"timeout").in_scope(|| {});
        info_span!("errored by event").in_scope(|| error!(code = 500, "upstream failed"));
        info_span!("described and errored", error = "bad input").in_scope(|| error!("rejected"));
        let later = info_span!("flagged later", error = tracing::field::Empty);
        later.record("error", true);
        drop(later);
        info_span!("fine", error = false).in_scope(|| info!("ok"));
        info_span!("clean").in_scope(|| warn!("just a warning"));
    });

    p.finish(stop, worker).await;
    let spans = p.server.spans();
    let attrs = |name: &str| span(&spans, name)["attributes"].clone();

    let flagged = attrs("flagged");
    assert_eq!(flagged["error"], true);
    assert!(flagged.get("error.message").is_none());
    let described = attrs("described");
    assert_eq!(described["error"], true);
    assert_eq!(described["error.message"], "timeout");
    let by_event = attrs("errored by event");
    assert_eq!(by_event["error"], true);
    assert_eq!(by_event["error.message"], "upstream failed");
    let both = attrs("described and errored");
    assert_eq!(both["error"], true);
    assert_eq!(
        both["error.message"], "bad input",
        "the span's own message wins"
    );
    assert_eq!(attrs("flagged later")["error"], true);
    assert_eq!(attrs("fine")["error"], false);
    let clean = attrs("clean");
    assert!(clean.get("error").is_none() && clean.get("error.message").is_none());

    let logs = p.server.logs();
    assert_eq!(
        log(&logs, "upstream failed")["attributes"]["level"],
        "ERROR"
    );
    assert_eq!(log(&logs, "upstream failed")["attributes"]["code"], 500);
}

#[tokio::test]
async fn the_per_layer_filter_decides_what_is_exported_and_nothing_else() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    let (layer, worker) = p.layer().build();
    let stop = CancellationToken::new();
    let worker = worker.spawn(stop.clone());
    let seen = SeenTargets::default();
    let filter = LevelFilter::INFO.and(filter_fn(|m| m.target() != "noisy"));
    let subscriber = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .with(seen.clone());

    tracing::subscriber::with_default(subscriber, || {
        info!("kept");
        debug!("below the level");
        info!(target: "noisy", "rejected by filter_fn");
        info_span!("outer").in_scope(|| {
            debug_span!("middle").in_scope(|| {
                info_span!("inner").in_scope(|| info!("inside inner"));
                debug!("debug inside middle");
                info!("info inside middle");
            });
        });
        info_span!(target: "noisy", "noisy span").in_scope(|| info!("inside noisy span"));
    });

    p.finish(stop, worker).await;
    let spans = p.server.spans();
    let logs = p.server.logs();
    assert_eq!(names(&spans), ["inner", "outer"]);
    assert_eq!(
        messages(&logs),
        [
            "info inside middle",
            "inside inner",
            "inside noisy span",
            "kept"
        ]
    );
    // The filtered-out span is skipped: its child and its events hang from
    // the nearest exported ancestor.
    let outer = span(&spans, "outer");
    let inner = span(&spans, "inner");
    assert_eq!(inner["attributes"]["parent.id"], outer["id"]);
    assert_eq!(inner["trace.id"], outer["trace.id"]);
    assert_eq!(
        log(&logs, "info inside middle")["attributes"]["span.id"],
        outer["id"]
    );
    assert_eq!(
        log(&logs, "inside inner")["attributes"]["span.id"],
        inner["id"]
    );
    assert!(
        log(&logs, "inside noisy span")["attributes"]
            .get("span.id")
            .is_none()
    );
    // The filter is per layer: the other layer saw every event.
    assert_eq!(seen.targets().len(), 7);
}

#[tokio::test]
async fn the_sdk_and_its_http_stack_are_never_exported() {
    // Short harvests, and the subscriber is this thread's default while the
    // harvesters, the clients and the test server run on it (current-thread
    // runtime): everything they trace goes through the layer.
    let p = Pipeline::start(Duration::from_millis(20)).await;
    let (layer, worker) = p.layer().build();
    let stop = CancellationToken::new();
    let seen = SeenTargets::default();
    let guard = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(layer.with_filter(LevelFilter::TRACE))
            .with(seen.clone()),
    );
    let worker = worker.spawn(stop.clone());

    info!(target: "newrelic_telemetry::harvester", "sdk diagnostics");
    debug!(target: "hyper::proto::h1::io", "flushed");
    trace!(target: "reqwest::connect", "connecting");
    info!(target: "h2", "frame");
    info!(target: "hyper_util::client::legacy::pool", "pooling");
    info!(target: "tokio_util::codec", "decoded");
    info!(target: "hyperion", "a user crate with a similar name");
    info_span!(target: "hyper_util::client", "pooled connection")
        .in_scope(|| info!("a user event inside an excluded span"));
    info!("first user log");
    assert!(
        p.server
            .wait_until(WAIT, |r| received_log(r, "first user log"))
            .await
    );
    // Sending the first log traced the SDK and HTTP client; a second harvest
    // would carry that telemetry if it were exported.
    info!("second user log");
    assert!(
        p.server
            .wait_until(WAIT, |r| received_log(r, "second user log"))
            .await
    );

    let stats = p.finish(stop, worker).await;
    drop(guard);
    let logs = p.server.logs();
    assert_eq!(
        messages(&logs),
        [
            "a user crate with a similar name",
            "a user event inside an excluded span",
            "first user log",
            "second user log",
        ]
    );
    assert_eq!(stats.logs_recorded, 4);
    assert!(
        log(&logs, "a user event inside an excluded span")["attributes"]
            .get("span.id")
            .is_none()
    );
    assert!(p.server.spans().is_empty(), "the only span was excluded");
    // The other layer did see the excluded targets.
    let targets = seen.targets();
    let excluded = targets.iter().filter(|t| is_excluded(t)).count();
    assert!(excluded >= 6, "{targets:?}");
    // Including the SDK's own diagnostics of the real harvests, not only the
    // events emitted above.
    let sdk = targets
        .iter()
        .filter(|t| t.starts_with("newrelic_telemetry::"))
        .count();
    assert!(sdk >= 2, "{targets:?}");
}

#[tokio::test]
async fn spans_and_logs_are_recorded_at_once_with_no_hop_through_the_worker() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    let (layer, worker) = p.layer().channel_capacity(1).build();
    let handle = layer.handle();

    // The worker is not running, and its channel holds one item: with
    // nothing else holding the batches' locks, everything is recorded at once.
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        info_span!("request").in_scope(|| {
            for i in 0..5 {
                info!(i, "burst");
            }
        });
        info_span!("another").in_scope(|| {});
    });
    let stats = handle.stats();
    assert_eq!((stats.logs_recorded, stats.spans_recorded), (5, 2));
    assert_eq!(stats.items_dropped_channel_full, 0);

    // The layer went with its subscriber: the worker finds nothing and ends.
    let stats = tokio::time::timeout(WAIT, worker.run(CancellationToken::new()))
        .await
        .expect("the worker ends when the layer is dropped");
    assert_eq!(stats, handle.stats());

    p.span_harvester.shutdown().await;
    p.log_harvester.shutdown().await;
    let mut kept: Vec<i64> = p
        .server
        .logs()
        .iter()
        .filter_map(|l| l["attributes"]["i"].as_i64())
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, [0, 1, 2, 3, 4]);
    assert_eq!(p.server.spans().len(), 2);
}

#[tokio::test]
async fn a_refusal_inside_a_callback_is_counted_at_once_and_logged_at_the_next_flush() {
    // `tracing` dispatches no event from inside a subscriber's callback, so
    // the batch cannot log its WARN while the layer records into it: the
    // warning waits for the next flush, which logs it.
    let logs = Arc::new(LogBatch::new());
    let (layer, _worker) = NewRelicLayer::builder().logs(logs.clone()).build();
    let handle = layer.handle();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        // A key longer than the APIs' 255 characters: the log is refused.
        info!(
            "a.key.far.too.long.for.any.ingest.api.a.key.far.too.long.for.any.ingest.api.a.key.far.too.long.for.any.ingest.api.a.key.far.too.long.for.any.ingest.api.a.key.far.too.long.for.any.ingest.api.a.key.far.too.long.for.any.ingest.api.a.key.far.too.long.for.any.ingest.api.a.key.far.too.long" =
                1,
            "refused"
        );
        info!("kept");
    });
    assert_eq!(handle.stats().items_dropped_by_batch, 1);
    assert_eq!(logs.record_stats().items_dropped_invalid, 1);

    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let (kept, _) = logs.flush().await;
    assert_eq!(kept.len(), 1);
    let warnings = captured.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("items_dropped_invalid"),
        "{warnings:?}"
    );
    // Owed once: the next flush has nothing more to say.
    logs.flush().await;
    assert_eq!(captured.warnings().len(), 1);
}

#[tokio::test]
async fn a_cancelled_worker_drains_then_later_items_are_counted_as_lost() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    let (layer, worker) = p.layer().build();
    let handle = layer.handle();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    info!("before stop");
    let stop = CancellationToken::new();
    stop.cancel();
    let stats = tokio::time::timeout(WAIT, worker.run(stop))
        .await
        .expect("a cancelled worker ends");
    assert_eq!(stats.logs_recorded, 1, "what was queued is recorded");

    info!("after stop");
    assert_eq!(handle.stats().items_dropped_worker_gone, 1);

    p.span_harvester.shutdown().await;
    p.log_harvester.shutdown().await;
    assert_eq!(messages(&p.server.logs()), ["before stop"]);
}

#[tokio::test]
async fn a_full_batch_refuses_without_blocking_the_worker() {
    let logs = Arc::new(LogBatch::builder().capacity(1).build());
    let (layer, worker) = NewRelicLayer::builder().logs(logs.clone()).build();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        info!("fits");
        info!("refused by the full batch");
    });
    let stats = tokio::time::timeout(WAIT, worker.run(CancellationToken::new()))
        .await
        .expect("the worker ends");
    assert_eq!((stats.logs_recorded, stats.items_dropped_by_batch), (1, 1));
    assert_eq!(logs.record_stats().items_dropped_buffer_full, 1);
}

#[tokio::test]
async fn span_events_and_two_layers_in_one_subscriber() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    // One layer exports spans with span events, another only logs; they keep
    // their own span data side by side.
    let (with_events, events_worker) = NewRelicLayer::builder()
        .spans(p.spans.clone())
        .span_events(true)
        .build();
    let (logs_only, logs_worker) = NewRelicLayer::builder().logs(p.logs.clone()).build();
    let stop = CancellationToken::new();
    let events_worker = events_worker.spawn(stop.clone());
    let logs_worker = logs_worker.spawn(stop.clone());

    let subscriber = tracing_subscriber::registry()
        .with(with_events)
        .with(logs_only);
    tracing::subscriber::with_default(subscriber, || {
        info_span!("with events").in_scope(|| {
            info!(step = 1, "step one");
            warn!("step two");
        });
    });

    // Both workers drain before the harvesters' final flush.
    stop.cancel();
    let span_stats = events_worker.await.expect("worker");
    let log_stats = logs_worker.await.expect("worker");
    p.span_harvester.shutdown().await;
    p.log_harvester.shutdown().await;
    assert_eq!(
        (span_stats.spans_recorded, span_stats.logs_recorded),
        (1, 0)
    );
    assert_eq!((log_stats.spans_recorded, log_stats.logs_recorded), (0, 2));

    let spans = p.server.spans();
    let s = span(&spans, "with events");
    assert!(s["attributes"].get("service.name").is_none());
    let events = s["events"].as_array().expect("span events");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["name"], "step one");
    assert_eq!(events[0]["attributes"]["step"], 1);
    assert_eq!(events[0]["attributes"]["level"], "INFO");
    assert_eq!(events[1]["name"], "step two");
    assert_eq!(events[1]["attributes"]["level"], "WARN");

    // The logs-only layer has its own span ids, but still links its logs to
    // a span and a trace.
    let logs = p.server.logs();
    let step = &log(&logs, "step one")["attributes"];
    assert!(is_hex_id(&step["span.id"]) && is_trace_id(&step["trace.id"]));
    assert_eq!(
        step["span.id"],
        log(&logs, "step two")["attributes"]["span.id"]
    );
}

#[tokio::test]
async fn span_events_are_capped_per_span_and_the_excess_counted() {
    let p = Pipeline::start(Duration::from_secs(60)).await;
    let (layer, worker) = NewRelicLayer::builder()
        .spans(p.spans.clone())
        .span_events(true)
        .build();
    let stats = layer.handle();
    let stop = CancellationToken::new();
    let worker = worker.spawn(stop.clone());
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        info_span!("long lived").in_scope(|| {
            for i in 0..(newrelic_telemetry::tracing_layer::MAX_SPAN_EVENTS + 5) {
                info!(i, "tick");
            }
        });
    });
    stop.cancel();
    worker.await.expect("worker");
    p.span_harvester.shutdown().await;
    p.log_harvester.shutdown().await;
    let spans = p.server.spans();
    let events = span(&spans, "long lived")["events"]
        .as_array()
        .expect("span events")
        .len();
    assert_eq!(events, newrelic_telemetry::tracing_layer::MAX_SPAN_EVENTS);
    assert_eq!(stats.stats().span_events_dropped, 5);
}
