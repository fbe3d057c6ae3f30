//! Set-up shared by the integration tests: the loopback ingest server,
//! clients and harvesters pointed at it, runtimes for `#[test]`s that drive
//! async code themselves, payload generators, polling with a deadline, a
//! port that refuses connections, the bound on a shutdown in real time, and
//! a writer that captures what a `fmt` subscriber logs.
//!
//! Each test binary includes this module (`mod support;`) and uses a subset
//! of it.

#![allow(dead_code)]

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use newrelic_telemetry::batch::Batch;
use newrelic_telemetry::client::{Client, ClientBuilder, Kind};
use newrelic_telemetry::harvester::{HarvesterBuilder, SHUTDOWN_SLACK};
use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::{Event, Harvester};
use tokio::runtime::Runtime;

// --- servers, clients, harvesters -------------------------------------------

/// Starts a [`TestIngestServer`] on an ephemeral loopback port: the endpoint
/// of almost every test. Panics if it cannot start.
pub async fn server() -> TestIngestServer {
    TestIngestServer::start()
        .await
        .expect("a test ingest server")
}

/// A client builder for `K`'s API on `server`, with the key `"k"`: the start
/// of a client that a test configures further (retry policy, `on_drop`,
/// timeout...) before building it.
pub fn client_builder<K: Kind>(server: &TestIngestServer) -> ClientBuilder<K> {
    Client::<K>::builder("k").endpoint(server.url(K::API))
}

/// A client for `K`'s API on `server`, with the key `"k"` and the default
/// settings.
pub fn client<K: Kind>(server: &TestIngestServer) -> Client<K> {
    client_builder(server).build().expect("a client")
}

/// The interval of a harvester that harvests only when asked (by
/// `harvest_now`, by a batch asking for an early harvest, or at shutdown).
pub const HOUR: Duration = Duration::from_secs(3600);

/// A harvester builder for `batch` and `client` that harvests only when
/// asked: its interval is an [`HOUR`]. Set the rest (shutdown timeout, queue
/// size) and `spawn()` it.
pub fn on_demand_harvester<K, B>(batch: Arc<B>, client: Client<K>) -> HarvesterBuilder<K, B>
where
    K: Kind,
    B: Batch<Item = K::Item>,
{
    Harvester::builder(batch, client).harvest_interval(HOUR)
}

/// A loopback port bound but never listened on: connecting to it is refused
/// at once. Unlike a port whose listener was dropped, no other test's server
/// can take it while this value lives, so keep it alive for as long as the
/// refusing endpoint is used.
pub struct RefusingPort {
    socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl RefusingPort {
    /// Binds an ephemeral loopback port, without listening on it.
    pub fn bind() -> RefusingPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .expect("a loopback port");
        let addr = socket.local_addr().expect("its address");
        RefusingPort { socket, addr }
    }

    /// The port's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<the port's address><path>`, e.g. `url("/log/v1")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

// --- runtimes ---------------------------------------------------------------

/// A current-thread runtime with I/O and time enabled, for a `#[test]` that
/// runs async code itself: on a thread of its own, or between sync calls.
pub fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// [`current_thread`] with tokio's clock paused (it jumps to the next timer
/// whenever the runtime is idle), for a `#[test]` that waits on timers.
pub fn current_thread_paused() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a paused current-thread runtime")
}

/// A multi-thread runtime of `workers` worker threads with I/O and time
/// enabled, for a `#[test]` that mixes tasks with OS threads.
pub fn multi_thread(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a multi-thread runtime")
}

// --- payloads ----------------------------------------------------------------

/// `len` hex characters that gzip cannot squeeze much, different for each
/// seed (and the same for the same seed), so that payload sizes are
/// predictable.
pub fn noise(seed: u64, len: usize) -> String {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

/// A `Work` event carrying a unique `seq` and 64 characters of [`noise`]:
/// the item of the tests that account for what was sent item by item.
pub fn seq_event(seq: i64) -> Event {
    Event::new("Work")
        .with_attribute("seq", seq)
        .with_attribute("pad", noise(seq as u64, 64))
}

/// The `seq`s of the events `server` accepted, in arrival order (duplicates
/// kept).
pub fn accepted_seqs(server: &TestIngestServer) -> Vec<i64> {
    server
        .events()
        .iter()
        .map(|e| e["seq"].as_i64().expect("an event with a seq"))
        .collect()
}

// --- waiting ------------------------------------------------------------------

/// How often [`eventually`] checks its condition.
pub const POLL: Duration = Duration::from_millis(10);

/// Waits until `condition` holds, checking it every [`POLL`] on tokio's
/// clock (paused or not), for at most `timeout`. Returns whether it held.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    poll_until(timeout, POLL, || std::future::ready(condition())).await
}

/// Waits until the async `condition` holds, checking it every `every` on
/// tokio's clock, for at most `timeout`; with `every` zero it yields to the
/// scheduler between checks instead of sleeping (for a condition that other
/// tasks of a current-thread runtime make true). Returns whether it held.
pub async fn poll_until<F, C>(timeout: Duration, every: Duration, mut condition: C) -> bool
where
    C: FnMut() -> F,
    F: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        if every.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(every).await;
        }
    }
    true
}

/// How much longer than its deadline plus [`SHUTDOWN_SLACK`] a shutdown may
/// take in real time on a loaded machine.
pub const LOOSE_FACTOR: u32 = 3;

/// The real-time bound on a shutdown whose deadline is `deadline`: the
/// deadline plus the slack the harvester documents, times [`LOOSE_FACTOR`].
/// Where real time cannot be avoided, a test checks a shutdown against this
/// (and prints the figure it measured).
pub fn loose_shutdown_bound(deadline: Duration) -> Duration {
    (deadline + SHUTDOWN_SLACK) * LOOSE_FACTOR
}

// --- captured logs ----------------------------------------------------------

/// A `MakeWriter` that keeps what a `tracing_subscriber::fmt` subscriber
/// writes, to check the SDK's own log lines.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// A `fmt` subscriber (no colours) writing into this capture.
    ///
    /// With a single dispatcher alive, `tracing` caches a callsite's
    /// interest from whatever subscriber is the default on the thread that
    /// first hits it; another test's thread, with none, then caches "never"
    /// and this capture misses the event (seen as a flake on a loaded
    /// machine). A second dispatcher, kept for the life of the test binary,
    /// makes `tracing` ask every live dispatcher instead.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        static ANOTHER_DISPATCHER: std::sync::OnceLock<tracing::Dispatch> =
            std::sync::OnceLock::new();
        ANOTHER_DISPATCHER
            .get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .finish()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("the buffer")).into_owned()
    }

    /// The lines logged at WARN so far.
    pub fn warnings(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains("WARN"))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

// --- property tests ---------------------------------------------------------

/// Proptest settings for property tests that do real I/O: `cases` cases,
/// and no regression files written into the crate (a failure prints its
/// minimal input).
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// Any error, as a failed property-test case.
pub fn fail(e: impl std::fmt::Display) -> proptest::test_runner::TestCaseError {
    proptest::test_runner::TestCaseError::fail(e.to_string())
}

/// One multi-thread runtime (2 workers) for a whole test binary, so that
/// one HTTP client, built once (its TLS setup takes longer than a case),
/// serves every case of every test.
pub fn shared_runtime() -> &'static Runtime {
    static RUNTIME: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| multi_thread(2))
}

// --- spans as the test server received them ---------------------------------

/// The received spans named `name`.
pub fn spans_named<'a>(spans: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    spans
        .iter()
        .filter(|s| s["attributes"]["name"] == name)
        .collect()
}

/// Whether `value` is a string of `len` lowercase hex digits (a W3C id).
pub fn is_lower_hex(value: &serde_json::Value, len: usize) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == len && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')))
}

/// Asserts that the server span `root` continued the caller's trace
/// (`trace_id`, parent `parent_id`), that the handler's span `child` sits
/// under it, and that the first log is in the child span: what every
/// middleware owes an incoming `traceparent`. Returns `(root, child)`.
pub fn assert_trace_continued<'a>(
    spans: &'a [serde_json::Value],
    logs: &[serde_json::Value],
    (root, child): (&str, &str),
    (trace_id, parent_id): (&str, &str),
) -> (&'a serde_json::Value, &'a serde_json::Value) {
    let root = spans_named(spans, root)[0];
    let child = spans_named(spans, child)[0];
    assert_eq!(root["trace.id"], trace_id);
    assert_eq!(root["attributes"]["parent.id"], parent_id);
    assert_eq!(child["trace.id"], trace_id);
    assert_eq!(child["attributes"]["parent.id"], root["id"]);
    assert!(is_lower_hex(&root["id"], 16) && is_lower_hex(&child["id"], 16));
    let log = &logs[0];
    assert_eq!(log["attributes"]["trace.id"], trace_id);
    assert_eq!(log["attributes"]["span.id"], child["id"]);
    (root, child)
}

/// Asserts the server span of `GET {path}`, matched by `route`, answered
/// 200: kind, method, route, status, no error flag, a duration. Returns it.
pub fn assert_server_span<'a>(
    spans: &'a [serde_json::Value],
    route: &str,
    path: &str,
) -> &'a serde_json::Value {
    let root = spans_named(spans, &format!("GET {route}"))
        .into_iter()
        .find(|s| s["attributes"]["url.path"] == path)
        .unwrap_or_else(|| panic!("the span of {path}"));
    let a = &root["attributes"];
    assert_eq!(a["span.kind"], "server");
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["http.route"], route);
    assert_eq!(a["http.response.status_code"], 200);
    assert!(a.get("error").is_none());
    assert!(a["duration.ms"].as_f64().is_some());
    root
}

/// The middleware's request durations of `GET {route}` (a distribution,
/// which arrives over OTLP). Panics if there is none.
pub fn get_durations<'a>(
    distributions: &'a [newrelic_telemetry::test_util::ReceivedDistribution],
    route: &str,
) -> &'a newrelic_telemetry::distribution::Distribution {
    let found = distributions.iter().find(|d| {
        d.name == "http.server.duration.ms"
            && d.attributes.get("http.route") == Some(&route.into())
            && d.attributes.get("http.request.method") == Some(&"GET".into())
    });
    &found
        .unwrap_or_else(|| panic!("no duration distribution of GET {route}"))
        .distribution
}
