//! An in-process ingest server for tests (feature `test-util`).
//!
//! [`TestIngestServer`] listens on 127.0.0.1, speaks the four ingest APIs,
//! decompresses and parses what it receives, answers as scripted (statuses,
//! headers, delays, dropped connections; 202, or 200 for events, by default),
//! and lets a test assert on the metrics, events, logs and spans that arrived.
//!
//! ```
//! use newrelic_telemetry::test_util::TestIngestServer;
//! use newrelic_telemetry::{Common, Event, EventClient};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestIngestServer::start().await?;
//! let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
//! client.send(Event::new("Purchase").with_attribute("amount", 12.5)).await?;
//!
//! let events = server.events();
//! assert_eq!(events[0]["eventType"], "Purchase");
//! assert_eq!(events[0]["amount"], 12.5);
//! assert_eq!(server.requests()[0].header("api-key"), Some("test-key"));
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::api::Api;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value as Json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How the server answers one request.
///
/// ```
/// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
/// use newrelic_telemetry::{Event, EventClient};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// // The next request is refused as too large; the ones after it accepted.
/// server.respond_with(ScriptedResponse::status(413));
/// let client = EventClient::builder("key").endpoint(server.event_url()).build()?;
/// let err = client.send(Event::new("Order")).await.unwrap_err();
/// assert!(err.is_too_large());
/// assert!(client.send(Event::new("Order")).await.is_ok());
///
/// // Other answers a test can script.
/// let busy = ScriptedResponse::status(429).with_header("Retry-After", "2");
/// let slow = ScriptedResponse::status(202).with_delay(Duration::from_secs(30));
/// let cut = ScriptedResponse::close_connection();
/// # let _ = (busy, slow, cut);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a scripted response does nothing until given to the server"]
pub struct ScriptedResponse {
    status: u16,
    headers: Vec<(String, String)>,
    delay: Duration,
    close: bool,
}

impl ScriptedResponse {
    /// Answer with `status`.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient, RetryPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = EventClient::builder("test-key")
    ///     .endpoint(server.event_url())
    ///     .retry_policy(RetryPolicy::none())
    ///     .build()?;
    /// server.respond_with(ScriptedResponse::status(410));
    /// assert!(client.send(Event::new("Order")).await.is_err());
    /// assert_eq!(server.requests()[0].status, 410);
    /// # Ok(()) }
    /// ```
    pub fn status(status: u16) -> Self {
        ScriptedResponse {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            close: false,
        }
    }

    /// Close the connection after reading the request, without answering.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient, RetryPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = EventClient::builder("test-key")
    ///     .endpoint(server.event_url())
    ///     .retry_policy(RetryPolicy::none())
    ///     .build()?;
    /// server.respond_with(ScriptedResponse::close_connection());
    /// assert!(client.send(Event::new("Order")).await.is_err()); // a connection error, not retried here
    /// assert_eq!(server.requests()[0].status, 0);
    /// # Ok(()) }
    /// ```
    pub fn close_connection() -> Self {
        ScriptedResponse {
            close: true,
            ..ScriptedResponse::status(0)
        }
    }

    /// Adds a header to the answer.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// tokio::time::pause(); // the 2 s Retry-After passes instantly
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(429).with_header("Retry-After", "2"));
    /// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// client.send(Event::new("Order")).await?;
    /// let requests = server.requests();
    /// assert!(requests[1].received_at - requests[0].received_at >= Duration::from_secs(2));
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed response"]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Waits this long (on tokio's clock) before answering.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// tokio::time::pause(); // the delay passes instantly
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(202).with_delay(Duration::from_secs(3)));
    /// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let start = tokio::time::Instant::now();
    /// client.send(Event::new("Order")).await?;
    /// assert!(start.elapsed() >= Duration::from_secs(3));
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed response"]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the server received, decoded.
///
/// ```
/// use newrelic_telemetry::Api;
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Event, EventClient};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
/// client.send(Event::new("Order")).await?;
///
/// let request = &server.requests()[0];
/// assert_eq!(request.api, Some(Api::Event));
/// assert_eq!((request.method.as_str(), request.status), ("POST", 200));
/// assert_eq!(request.header("Content-Encoding"), Some("gzip"));
/// assert_eq!(request.body[0]["eventType"], "Order");
/// assert!(request.accepted());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// The API its path named (`None` for an unknown path, answered 404).
    pub api: Option<Api>,
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped (when `Content-Encoding: gzip`) and parsed; `Null`
    /// if it was not JSON.
    pub body: Json,
    /// The body's size on the wire.
    pub wire_bytes: usize,
    /// The status the server answered: 0 while the answer is pending, or if
    /// the server closed the connection, or if the client went away first.
    pub status: u16,
    /// When the request arrived, on tokio's clock, so paused-time tests can
    /// check retry schedules (to within the little real time the requests
    /// themselves take).
    pub received_at: tokio::time::Instant,
}

impl ReceivedRequest {
    /// The first value of header `name` (case-insensitive).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = newrelic_telemetry::EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// client.send(newrelic_telemetry::Event::new("Order")).await?;
    /// let request = &server.requests()[0];
    /// assert_eq!(request.header("API-KEY"), Some("test-key")); // any case
    /// assert_eq!(request.header("x-missing"), None);
    /// # Ok(()) }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server answered 2xx.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Log, LogClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(500)); // then accept the retry
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// client.send(Log::new("hi")).await?;
    /// let accepted: Vec<bool> = server.requests().iter().map(|r| r.accepted()).collect();
    /// assert_eq!(accepted, [false, true]);
    /// # Ok(()) }
    /// ```
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Default)]
struct State {
    requests: Vec<ReceivedRequest>,
    scripts: VecDeque<(Option<Api>, ScriptedResponse)>,
    max_body_bytes: Option<usize>,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An ingest server on 127.0.0.1 for tests and local runs. Stops when dropped.
///
/// ```
/// use newrelic_telemetry::Api;
/// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
/// use newrelic_telemetry::{Log, LogClient};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// server.respond_to(Api::Log, ScriptedResponse::status(502)); // once, then accept
/// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
/// client.send(Log::new("hello")).await?;
///
/// let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
/// assert_eq!(statuses, [502, 202]);
/// assert_eq!(server.logs()[0]["message"], "hello");
/// # Ok(()) }
/// ```
pub struct TestIngestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl std::fmt::Debug for TestIngestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIngestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for TestIngestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestIngestServer {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// assert!(server.addr().ip().is_loopback());
    /// assert!(server.requests().is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn start() -> std::io::Result<TestIngestServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Ok(TestIngestServer { addr, shared, stop })
    }

    /// The address the server listens on.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// assert_eq!(server.url(newrelic_telemetry::Api::Log),
    ///            format!("http://{}/log/v1", server.addr()));
    /// # Ok(()) }
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The full URL of `api` on this server.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// use newrelic_telemetry::Api;
    /// assert!(server.url(Api::Span).ends_with("/trace/v1"));
    /// # Ok(()) }
    /// ```
    pub fn url(&self, api: Api) -> String {
        format!("http://{}{}", self.addr, api.path())
    }

    /// The Metric API's URL.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// assert_eq!(server.metric_url(), format!("http://{}/metric/v1", server.addr()));
    /// # Ok(()) }
    /// ```
    pub fn metric_url(&self) -> String {
        self.url(Api::Metric)
    }

    /// The Event API's URL.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// assert_eq!(server.event_url(), format!("http://{}/v1/accounts/events", server.addr()));
    /// # Ok(()) }
    /// ```
    pub fn event_url(&self) -> String {
        self.url(Api::Event)
    }

    /// The Log API's URL.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// assert_eq!(server.log_url(), format!("http://{}/log/v1", server.addr()));
    /// # Ok(()) }
    /// ```
    pub fn log_url(&self) -> String {
        self.url(Api::Log)
    }

    /// The Trace API's URL.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// assert_eq!(server.span_url(), format!("http://{}/trace/v1", server.addr()));
    /// # Ok(()) }
    /// ```
    pub fn span_url(&self) -> String {
        self.url(Api::Span)
    }

    /// A [`TelemetryBuilder`](crate::TelemetryBuilder) with all four APIs
    /// pointed at this server, a test key, and no settings read from the
    /// process environment: the way to test your own instrumentation.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().service_name("under-test").build()?;
    /// telemetry.metrics().record_count("signups", 1.0, [("plan", "free")]).await;
    /// telemetry.shutdown().await;
    ///
    /// let metrics = server.metrics();
    /// assert_eq!(metrics[0]["name"], "signups");
    /// assert_eq!(metrics[0]["attributes"]["plan"], "free");
    /// assert_eq!(metrics[0]["attributes"]["service.name"], "under-test");
    /// # Ok(()) }
    /// ```
    #[must_use = "a builder does nothing until `build()` is called"]
    pub fn telemetry_builder(&self) -> crate::TelemetryBuilder {
        crate::Telemetry::builder()
            .environment(std::iter::empty::<(String, String)>())
            .api_key("test-key")
            .metric_endpoint(self.metric_url())
            .event_endpoint(self.event_url())
            .log_endpoint(self.log_url())
            .span_endpoint(self.span_url())
    }

    /// Answers the next request (to any API) as `response`. Scripts queue up
    /// and are used once each, in order; unscripted requests are accepted.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient, RetryPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(404));
    /// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// assert!(client.send(Event::new("Order")).await.is_err()); // 404: dropped
    /// assert!(client.send(Event::new("Order")).await.is_ok()); // unscripted: accepted
    /// # Ok(()) }
    /// ```
    pub fn respond_with(&self, response: ScriptedResponse) {
        self.shared.lock().scripts.push_back((None, response));
    }

    /// Answers the next request to `api` as `response`.
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient, Log, LogClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_to(Api::Log, ScriptedResponse::status(403));
    /// let events = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let logs = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// assert!(events.send(Event::new("Order")).await.is_ok()); // not scripted for events
    /// assert!(logs.send(Log::new("hi")).await.is_err());
    /// # Ok(()) }
    /// ```
    pub fn respond_to(&self, api: Api, response: ScriptedResponse) {
        self.shared.lock().scripts.push_back((Some(api), response));
    }

    /// Answers `n` requests in a row (to any API) as `response`.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Log, LogClient, RetryPolicy};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_n(2, ScriptedResponse::status(500));
    /// let client = LogClient::builder("test-key")
    ///     .endpoint(server.log_url())
    ///     .retry_policy(RetryPolicy::default().with_backoff_factor(Duration::from_millis(1)))
    ///     .build()?;
    /// let report = client.send(Log::new("hi")).await?;
    /// assert_eq!(report.payloads()[0].attempts(), 3);
    /// # Ok(()) }
    /// ```
    pub fn respond_n(&self, n: usize, response: ScriptedResponse) {
        let mut state = self.shared.lock();
        for _ in 0..n {
            state.scripts.push_back((None, response.clone()));
        }
    }

    /// Answers 413 to every unscripted request whose body on the wire is over
    /// `bytes` (`None` lifts the limit).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Log, LogClient};
    /// use newrelic_telemetry::client::DropReason;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.set_max_body_bytes(Some(1)); // every body is too large
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let err = client.send(Log::new("hi")).await.unwrap_err();
    /// assert!(matches!(err.report().first_drop_reason(), Some(DropReason::TooLarge { .. })));
    /// assert_eq!(server.requests()[0].status, 413);
    /// # Ok(()) }
    /// ```
    pub fn set_max_body_bytes(&self, bytes: Option<usize>) {
        self.shared.lock().max_body_bytes = bytes;
    }

    /// Every request received so far, in order.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = newrelic_telemetry::LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// client.send(newrelic_telemetry::Log::new("a")).await?;
    /// client.send(newrelic_telemetry::Log::new("b")).await?;
    /// assert_eq!(server.requests().len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Metrics from accepted requests, each with its block's common
    /// `timestamp`, `interval.ms` and attributes filled in (its own win).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Common, CountMetric, MetricClient, attrs};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = MetricClient::builder("test-key").endpoint(server.metric_url()).build()?;
    /// let common = Common::new().with_attributes(attrs!["host" => "web-1"]);
    /// let count = CountMetric::new("jobs", 2.0, Duration::from_secs(10));
    /// client.send_batch(vec![count.into()], common).await?;
    ///
    /// let metric = &server.metrics()[0];
    /// assert_eq!(metric["type"], "count");
    /// assert_eq!(metric["attributes"]["host"], "web-1"); // from the common block
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> Vec<Json> {
        self.blocks(Api::Metric, "metrics")
    }

    /// Events from accepted requests.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = newrelic_telemetry::EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// client.send(newrelic_telemetry::Event::new("Order").with_attribute("total", 42)).await?;
    /// assert_eq!(server.events()[0]["total"], 42);
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> Vec<Json> {
        self.accepted(Api::Event)
            .flat_map(|body| body.as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Log records from accepted requests, with common attributes filled in.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = newrelic_telemetry::LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// client.send(newrelic_telemetry::Log::new("ready").with_level("INFO")).await?;
    /// assert_eq!(server.logs()[0]["attributes"]["level"], "INFO");
    /// # Ok(()) }
    /// ```
    pub fn logs(&self) -> Vec<Json> {
        self.blocks(Api::Log, "logs")
    }

    /// Spans from accepted requests, with common attributes filled in.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = newrelic_telemetry::SpanClient::builder("test-key").endpoint(server.span_url()).build()?;
    /// let span = newrelic_telemetry::Span::new("GET /").with_service_name("web").finish();
    /// client.send(span.clone()).await?;
    /// assert_eq!(server.spans()[0]["id"], span.id());
    /// assert_eq!(server.spans()[0]["attributes"]["service.name"], "web");
    /// # Ok(()) }
    /// ```
    pub fn spans(&self) -> Vec<Json> {
        self.blocks(Api::Span, "spans")
    }

    /// Waits until `condition` holds for the requests received, or `timeout`
    /// passes (on tokio's clock). Returns whether it held.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// use std::time::Duration;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.events().record(newrelic_telemetry::Event::new("Order")).await;
    /// telemetry.harvest_now();
    /// let arrived = server
    ///     .wait_until(Duration::from_secs(10), |requests| requests.iter().any(|r| r.accepted()))
    ///     .await;
    /// assert!(arrived);
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&[ReceivedRequest]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            if condition(&self.shared.lock().requests) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return condition(&self.shared.lock().requests);
            }
        }
    }

    /// Waits until at least `n` requests have been received.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// use std::time::Duration;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await;
    /// telemetry.harvest_now(); // the harvester sends in the background
    /// assert!(server.wait_for_requests(1, Duration::from_secs(10)).await);
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |r| r.len() >= n).await
    }

    fn accepted(&self, api: Api) -> impl Iterator<Item = Json> {
        self.requests()
            .into_iter()
            .filter(move |r| r.api == Some(api) && r.accepted())
            .map(|r| r.body)
    }

    fn blocks(&self, api: Api, key: &str) -> Vec<Json> {
        let mut out = Vec::new();
        for body in self.accepted(api) {
            for block in body.as_array().into_iter().flatten() {
                let common = block.get("common").and_then(Json::as_object);
                for item in block
                    .get(key)
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.push(merge_common(item.clone(), common));
                }
            }
        }
        out
    }
}

/// Fills an item's missing `timestamp` and `interval.ms` from the common
/// block, and its attributes from the common attributes (its own win).
fn merge_common(mut item: Json, common: Option<&Map<String, Json>>) -> Json {
    let (Some(common), Some(obj)) = (common, item.as_object_mut()) else {
        return item;
    };
    for key in ["timestamp", "interval.ms"] {
        if let Some(v) = common.get(key) {
            obj.entry(key).or_insert_with(|| v.clone());
        }
    }
    if let Some(Json::Object(shared)) = common.get("attributes") {
        let attrs = obj
            .entry("attributes")
            .or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(attrs) = attrs {
            for (k, v) in shared {
                attrs.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    item
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "test ingest server: accept failed");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(shared.clone(), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

/// The error a scripted dropped connection returns; hyper closes the
/// connection without answering.
#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted connection close")
    }
}

impl std::error::Error for CloseConnection {}

fn decode(headers: &hyper::HeaderMap, raw: &[u8]) -> Option<Json> {
    let gzip = headers
        .get(hyper::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if gzip {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(raw)
            .read_to_end(&mut json)
            .ok()?;
        serde_json::from_slice(&json).ok()
    } else {
        serde_json::from_slice(raw).ok()
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let received_at = tokio::time::Instant::now();
    let api = Api::from_path(request.uri().path());
    let (parts, body) = request.into_parts();
    let raw = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(CloseConnection),
    };
    let decoded = decode(&parts.headers, &raw);

    let (script, max_body, index) = {
        let mut state = shared.lock();
        let position = state
            .scripts
            .iter()
            .position(|(target, _)| target.is_none() || *target == api);
        let script = position
            .and_then(|i| state.scripts.remove(i))
            .map(|(_, s)| s);
        // Recorded on arrival; the status is filled in when the answer goes out.
        state.requests.push(ReceivedRequest {
            api,
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: decoded.clone().unwrap_or(Json::Null),
            wire_bytes: raw.len(),
            status: 0,
            received_at,
        });
        (script, state.max_body_bytes, state.requests.len() - 1)
    };
    shared.changed.notify_waiters();
    if let Some(script) = &script {
        if !script.delay.is_zero() {
            tokio::time::sleep(script.delay).await;
        }
    }
    let status = match (&script, api) {
        (Some(s), _) if s.close => 0,
        (Some(s), _) => s.status,
        (None, None) => 404,
        (None, Some(_)) if max_body.is_some_and(|max| raw.len() > max) => 413,
        (None, Some(_)) if decoded.is_none() || parts.method != hyper::Method::POST => 400,
        (None, Some(Api::Event)) => 200,
        (None, Some(_)) => 202,
    };
    shared.lock().requests[index].status = status;
    shared.changed.notify_waiters();

    if status == 0 {
        return Err(CloseConnection);
    }
    let body = match (status, api) {
        (200..=299, Some(Api::Event)) => {
            format!(r#"{{"success":true,"uuid":"{}"}}"#, uuid::Uuid::new_v4())
        }
        (200..=299, _) => format!(r#"{{"requestId":"{}"}}"#, uuid::Uuid::new_v4()),
        _ => String::new(),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(script) = script {
        for (name, value) in script.headers {
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                hyper::header::HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
    }
    Ok(response)
}
