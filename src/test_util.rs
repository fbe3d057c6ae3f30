//! An in-process ingest server for tests (feature `test-util`).
//!
//! [`TestIngestServer`] listens on 127.0.0.1, speaks the four ingest APIs
//! and OTLP/HTTP metrics, decompresses and parses what it receives, answers
//! as scripted (statuses, headers, delays, dropped connections; 202, or 200
//! for events and OTLP, by default), and lets a test assert on the metrics,
//! events, logs, spans and distributions that arrived.
//!
//! OTLP/HTTP metrics (`POST /v1/metrics`, [`otlp_metrics_url`]) are binary
//! protobuf `ExportMetricsServiceRequest`s (`Content-Type:
//! application/x-protobuf`, gzipped or not) with an `api-key` header. Each
//! exponential-histogram point is rebuilt as a [`Distribution`] and kept
//! ([`distributions`]); other metric types are skipped. The answer is 200
//! with an empty `ExportMetricsServiceResponse`, or one whose
//! `partial_success` counts the points that do not make a distribution
//! (counts that do not add up, a scale out of range, ...); 403 without an
//! `api-key`, 415 for another content type or encoding, 400 for a body that
//! does not decode, each with a `google.rpc.Status` body saying why.
//!
//! [`otlp_metrics_url`]: TestIngestServer::otlp_metrics_url
//! [`distributions`]: TestIngestServer::distributions
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
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::api::Api;
use crate::attributes::{Attributes, Value};
use crate::client::otlp::{self, DecodedPoint, DecodedRequest, PartialSuccess};
use crate::distribution::Distribution;
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
    /// An OTLP answer's partial success: points refused, and why.
    partial_success: Option<(u64, String)>,
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
            partial_success: None,
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

    /// An OTLP metrics export answered 200 with a `partial_success` that
    /// refuses `rejected` points for `message` (the points still show in
    /// [`TestIngestServer::distributions`]: the server read them).
    ///
    /// ```
    /// use newrelic_telemetry::client::{Client, DropReason, Otlp};
    /// use newrelic_telemetry::distribution::{Distribution, DistributionPoint};
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_to_otlp_metrics(ScriptedResponse::otlp_partial_success(1, "too old"));
    /// let client = Client::<Otlp>::builder("test-key").endpoint(server.otlp_metrics_url()).build()?;
    /// let mut d = Distribution::new();
    /// d.record(3.0)?;
    /// let points: Vec<_> = ["a", "b"]
    ///     .map(|name| DistributionPoint::new(name, d.clone(), Duration::from_secs(5)))
    ///     .into();
    /// let err = client.send_batch(points, Default::default()).await.unwrap_err();
    /// assert!(matches!(
    ///     err.report().first_drop_reason(),
    ///     Some(DropReason::PartiallyRejected { message }) if message == "too old"
    /// ));
    /// assert_eq!((client.stats().items_sent, client.stats().items_dropped_rejected), (1, 1));
    /// # Ok(()) }
    /// ```
    pub fn otlp_partial_success(rejected: u64, message: impl Into<String>) -> Self {
        ScriptedResponse {
            partial_success: Some((rejected, message.into())),
            ..ScriptedResponse::status(200)
        }
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
    /// The API its path named (`Api::Otlp` for OTLP metrics,
    /// [`is_otlp_metrics`](Self::is_otlp_metrics)); `None` for an unknown
    /// path, answered 404.
    pub api: Option<Api>,
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The headers, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped (when `Content-Encoding: gzip`) and parsed; `Null`
    /// if it was not JSON.
    ///
    /// For OTLP metrics, the protobuf request decoded and shown as JSON
    /// (`Null` if it did not decode), with OTLP/JSON's field names; unlike
    /// OTLP/JSON, attributes are objects (`{"route": "/a"}`) and 64-bit
    /// integers are numbers. Optional fields not sent (`sum`, `min`, `max`)
    /// are left out; a side with no buckets has offset 0 and no counts.
    /// Metrics of other types are not shown, only counted.
    ///
    /// ```json
    /// {
    ///   "resourceMetrics": [{
    ///     "resource": { "attributes": { "service.name": "checkout" } },
    ///     "scopeMetrics": [{
    ///       "scope": { "name": "newrelic-telemetry", "version": "0.1.0" },
    ///       "metrics": [{
    ///         "name": "http.server.duration", "description": "", "unit": "ms",
    ///         "exponentialHistogram": {
    ///           "aggregationTemporality": 1,
    ///           "dataPoints": [{
    ///             "attributes": { "route": "/orders" },
    ///             "startTimeUnixNano": 1700000000000000000,
    ///             "timeUnixNano": 1700000005000000000,
    ///             "count": 3, "sum": 35.0, "min": 5.0, "max": 20.0,
    ///             "scale": 0, "zeroCount": 0, "zeroThreshold": 0.0, "flags": 0,
    ///             "positive": { "offset": 2, "bucketCounts": [1, 1, 1] },
    ///             "negative": { "offset": 0, "bucketCounts": [] }
    ///           }]
    ///         }
    ///       }]
    ///     }]
    ///   }],
    ///   "skippedMetrics": 0
    /// }
    /// ```
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

    /// Whether it was an OTLP/HTTP metrics export (`/v1/metrics`).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let answer = reqwest::Client::new()
    ///     .post(server.otlp_metrics_url())
    ///     .header("api-key", "test-key")
    ///     .header("content-type", "application/x-protobuf")
    ///     .body(Vec::new()) // an empty request: no metrics
    ///     .send()
    ///     .await?;
    /// assert_eq!(answer.status(), 200);
    /// let request = &server.requests()[0];
    /// assert!(request.is_otlp_metrics());
    /// assert_eq!(request.api, Some(newrelic_telemetry::Api::Otlp));
    /// assert_eq!(request.body["resourceMetrics"], serde_json::json!([]));
    /// # Ok(()) }
    /// ```
    pub fn is_otlp_metrics(&self) -> bool {
        self.api == Some(Api::Otlp)
    }
}

/// A distribution the server received: one exponential-histogram point of
/// an OTLP metrics export, rebuilt as a [`Distribution`]
/// ([`TestIngestServer::distributions`]).
///
/// Its `Display` is one line: the name, the unit, the attributes, then the
/// count, the sum and p50, p90 and p99 read from the buckets (4
/// significant digits).
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::Value;
///
/// # // An OTLP request written by hand (the crate's encoder is internal):
/// # // `latency` in ms, one point of 5, 10 and 20 at scale 0 (buckets
/// # // (2^i, 2^(i+1)], so offset 2 and three counts of 1).
/// # fn varint(mut v: u64, out: &mut Vec<u8>) { while v >= 0x80 { out.push(v as u8 | 0x80); v >>= 7; } out.push(v as u8); }
/// # fn field(n: u64, body: &[u8]) -> Vec<u8> { let mut out = Vec::new(); varint(n << 3 | 2, &mut out); varint(body.len() as u64, &mut out); out.extend_from_slice(body); out }
/// # fn fixed(n: u64, v: u64) -> Vec<u8> { let mut out = Vec::new(); varint(n << 3 | 1, &mut out); out.extend(v.to_le_bytes()); out }
/// # fn otlp_request() -> Vec<u8> {
/// #     let attr = |k: &str, v: &str| field(1, &[field(1, k.as_bytes()), field(2, &field(1, v.as_bytes()))].concat());
/// #     let buckets = [vec![0x08, 4], field(2, &[1, 1, 1])].concat();
/// #     let point = [attr("route", "/orders"), fixed(4, 3), fixed(5, 35f64.to_bits()), field(8, &buckets), fixed(12, 5f64.to_bits()), fixed(13, 20f64.to_bits())].concat();
/// #     let metric = [field(1, b"latency"), field(3, b"ms"), field(10, &[field(1, &point), vec![0x10, 1]].concat())].concat();
/// #     field(1, &[field(1, &attr("service.name", "checkout")), field(2, &field(2, &metric))].concat())
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// reqwest::Client::new()
///     .post(server.otlp_metrics_url())
///     .header("api-key", "test-key")
///     .header("content-type", "application/x-protobuf")
///     .body(otlp_request())
///     .send()
///     .await?;
///
/// let latency = &server.distributions()[0];
/// assert_eq!((latency.name.as_str(), latency.unit.as_str()), ("latency", "ms"));
/// assert_eq!(latency.attributes.get("route"), Some(&Value::from("/orders")));
/// assert_eq!(latency.resource.get("service.name"), Some(&Value::from("checkout")));
/// assert_eq!((latency.distribution.count(), latency.distribution.sum()), (3, 35.0));
/// // p50 is the midpoint of 10's bucket, (8, 16]: 2^3.5. p90 and p99 are
/// // in 20's bucket, (16, 32], whose midpoint is above the maximum, 20.
/// assert_eq!(
///     latency.to_string(),
///     r#"latency [ms] {route="/orders"}: count 3, sum 35, p50 11.31, p90 20, p99 20"#
/// );
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReceivedDistribution {
    /// The metric's name.
    pub name: String,
    /// Its unit (`""` when none was sent).
    pub unit: String,
    /// Its description (`""` when none was sent).
    pub description: String,
    /// The point's attributes: the series. String, bool, int and double
    /// values (other kinds are left out).
    pub attributes: Attributes,
    /// The resource's attributes: who sent it (`service.name`, the sender's
    /// common attributes).
    pub resource: Attributes,
    /// The start of the interval it covers, in nanoseconds since the epoch.
    pub start_time_unix_nano: u64,
    /// The end of the interval, in nanoseconds since the epoch.
    pub time_unix_nano: u64,
    /// The distribution, rebuilt from the point's scale, zero count, buckets,
    /// count, sum, min and max ([`Distribution::from_parts`]): its
    /// quantiles are read from the buckets that arrived.
    pub distribution: Distribution,
}

impl fmt::Display for ReceivedDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.unit.is_empty() {
            write!(f, " [{}]", self.unit)?;
        }
        if !self.attributes.is_empty() {
            f.write_str(" {")?;
            for (i, (key, value)) in self.attributes.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                match value {
                    Value::String(s) => write!(f, "{key}={s:?}")?,
                    other => write!(f, "{key}={other}")?,
                }
            }
            f.write_str("}")?;
        }
        let d = &self.distribution;
        write!(f, ": count {}, sum {}", d.count(), Significant(d.sum()))?;
        for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            if let Some(v) = d.quantile(q) {
                write!(f, ", {label} {}", Significant(v))?;
            }
        }
        Ok(())
    }
}

/// A number written with 4 significant digits (trailing zeros dropped), in
/// scientific notation outside `[0.001, 10^6)`.
struct Significant(f64);

impl fmt::Display for Significant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let magnitude = v.abs();
        if v == 0.0 || !v.is_finite() {
            return write!(f, "{}", if v == 0.0 { 0.0 } else { v });
        }
        if !(1e-3..1e6).contains(&magnitude) {
            return write!(f, "{v:.3e}");
        }
        let decimals = (3 - magnitude.log10().floor() as i32).max(0) as usize;
        let text = format!("{v:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        f.write_str(text)
    }
}

/// Which requests a script answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Any,
    Api(Api),
    OtlpMetrics,
}

#[derive(Default)]
struct State {
    requests: Vec<ReceivedRequest>,
    /// Each distribution received, with the index of its request (kept
    /// when that request is answered 2xx).
    distributions: Vec<(usize, ReceivedDistribution)>,
    scripts: VecDeque<(Target, ScriptedResponse)>,
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

    /// The OTLP/HTTP metrics export's URL (`/v1/metrics`), where
    /// distributions are sent as exponential histograms.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// assert_eq!(server.otlp_metrics_url(), format!("http://{}/v1/metrics", server.addr()));
    /// # Ok(()) }
    /// ```
    pub fn otlp_metrics_url(&self) -> String {
        format!("http://{}{}", self.addr, otlp::METRICS_PATH)
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
            .otlp_endpoint(self.otlp_metrics_url())
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
        self.shared
            .lock()
            .scripts
            .push_back((Target::Any, response));
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
        self.shared
            .lock()
            .scripts
            .push_back((Target::Api(api), response));
    }

    /// Answers the next OTLP metrics export (`/v1/metrics`) as `response`;
    /// its distributions are kept only if `response` is 2xx.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_to_otlp_metrics(ScriptedResponse::status(503).with_header("Retry-After", "1"));
    /// let events = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// events.send(Event::new("Order")).await?; // not scripted for events
    /// let http = reqwest::Client::new();
    /// let export = || {
    ///     http.post(server.otlp_metrics_url())
    ///         .header("api-key", "test-key")
    ///         .header("content-type", "application/x-protobuf")
    ///         .send()
    /// };
    /// let first = export().await?;
    /// assert_eq!(first.status(), 503);
    /// assert_eq!(first.headers()["retry-after"], "1");
    /// assert_eq!(export().await?.status(), 200); // the script was used once
    /// # Ok(()) }
    /// ```
    pub fn respond_to_otlp_metrics(&self, response: ScriptedResponse) {
        self.shared
            .lock()
            .scripts
            .push_back((Target::OtlpMetrics, response));
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
            state.scripts.push_back((Target::Any, response.clone()));
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

    /// The distributions of accepted OTLP metrics exports, in the order
    /// they arrived: each exponential-histogram point rebuilt as a
    /// [`Distribution`], with its metric's name and unit, its attributes and
    /// its resource's. A point that makes no distribution (counts that do
    /// not add up, a scale out of range, no sum, ...) is not kept: the
    /// server counts it as rejected in its answer's `partial_success`.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use std::io::Write;
    ///
    /// # // An OTLP request written by hand (the crate's encoder is internal):
    /// # // `latency` in ms, one point of 5, 10 and 20 at scale 0 (buckets
    /// # // (2^i, 2^(i+1)], so offset 2 and three counts of 1).
    /// # fn varint(mut v: u64, out: &mut Vec<u8>) { while v >= 0x80 { out.push(v as u8 | 0x80); v >>= 7; } out.push(v as u8); }
    /// # fn field(n: u64, body: &[u8]) -> Vec<u8> { let mut out = Vec::new(); varint(n << 3 | 2, &mut out); varint(body.len() as u64, &mut out); out.extend_from_slice(body); out }
    /// # fn fixed(n: u64, v: u64) -> Vec<u8> { let mut out = Vec::new(); varint(n << 3 | 1, &mut out); out.extend(v.to_le_bytes()); out }
    /// # fn otlp_request() -> Vec<u8> {
    /// #     let attr = |k: &str, v: &str| field(1, &[field(1, k.as_bytes()), field(2, &field(1, v.as_bytes()))].concat());
    /// #     let buckets = [vec![0x08, 4], field(2, &[1, 1, 1])].concat();
    /// #     let point = [attr("route", "/orders"), fixed(4, 3), fixed(5, 35f64.to_bits()), field(8, &buckets), fixed(12, 5f64.to_bits()), fixed(13, 20f64.to_bits())].concat();
    /// #     let metric = [field(1, b"latency"), field(3, b"ms"), field(10, &[field(1, &point), vec![0x10, 1]].concat())].concat();
    /// #     field(1, &[field(1, &attr("service.name", "checkout")), field(2, &field(2, &metric))].concat())
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    /// gzip.write_all(&otlp_request())?;
    /// let answer = reqwest::Client::new()
    ///     .post(server.otlp_metrics_url())
    ///     .header("api-key", "test-key")
    ///     .header("content-type", "application/x-protobuf")
    ///     .header("content-encoding", "gzip")
    ///     .body(gzip.finish()?)
    ///     .send()
    ///     .await?;
    /// assert_eq!(answer.status(), 200);
    /// assert_eq!(answer.headers()["content-type"], "application/x-protobuf");
    /// assert!(answer.bytes().await?.is_empty()); // full success
    ///
    /// for received in server.distributions() {
    ///     println!("{received}"); // latency [ms] {route="/orders"}: count 3, sum 35, p50 11.31, ...
    /// }
    /// let latency = &server.distributions()[0].distribution;
    /// assert_eq!((latency.count(), latency.min(), latency.max()), (3, Some(5.0), Some(20.0)));
    /// assert_eq!((latency.scale(), latency.positive().offset(), latency.positive().counts()), (0, 2, &[1, 1, 1][..]));
    /// assert_eq!(latency.quantile(0.5), Some(2f64.powf(3.5)));
    /// # Ok(()) }
    /// ```
    pub fn distributions(&self) -> Vec<ReceivedDistribution> {
        let state = self.shared.lock();
        state
            .distributions
            .iter()
            .filter(|(index, _)| state.requests.get(*index).is_some_and(|r| r.accepted()))
            .map(|(_, received)| received.clone())
            .collect()
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

/// An OTLP metrics export as read: the request shown as JSON, its points
/// that make distributions, and why the others do not.
struct OtlpExport {
    json: Json,
    distributions: Vec<ReceivedDistribution>,
    rejected: Vec<String>,
}

/// Why an OTLP metrics export could not be read: the status to answer and
/// the message of the `google.rpc.Status` body.
struct OtlpRefusal {
    status: u16,
    message: String,
}

/// `google.rpc.Code.PERMISSION_DENIED` and `RESOURCE_EXHAUSTED`, for the
/// `google.rpc.Status` of a 403 and a 413.
const STATUS_PERMISSION_DENIED: u64 = 7;
const STATUS_RESOURCE_EXHAUSTED: u64 = 8;

/// Reads an OTLP metrics export: a protobuf body, gzipped or not.
fn read_otlp(headers: &hyper::HeaderMap, raw: &[u8]) -> Result<OtlpExport, OtlpRefusal> {
    let refuse = |status: u16, message: String| OtlpRefusal { status, message };
    let content_type = headers
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case(otlp::CONTENT_TYPE) {
        return Err(refuse(
            415,
            format!(
                "content-type {content_type:?} is not {}: OTLP/HTTP metrics are binary protobuf here",
                otlp::CONTENT_TYPE
            ),
        ));
    }
    let encoding = headers.get(hyper::header::CONTENT_ENCODING).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    let gunzipped;
    let body = match encoding.as_deref() {
        None | Some("" | "identity") => raw,
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw)
                .read_to_end(&mut out)
                .map_err(|e| refuse(400, format!("the body is not valid gzip: {e}")))?;
            gunzipped = out;
            &gunzipped
        }
        Some(other) => {
            return Err(refuse(
                415,
                format!("content-encoding {other:?} is not supported: gzip or none"),
            ));
        }
    };
    let request = otlp::decode_request(body).map_err(|e| refuse(400, e.to_string()))?;
    let mut distributions = Vec::new();
    let mut rejected = Vec::new();
    for resource_metrics in &request.resource_metrics {
        for metric in resource_metrics
            .scope_metrics
            .iter()
            .flat_map(|scope| &scope.metrics)
        {
            for (i, point) in metric.points.iter().enumerate() {
                match rebuild(point) {
                    Ok(distribution) => distributions.push(ReceivedDistribution {
                        name: metric.name.clone(),
                        unit: metric.unit.clone(),
                        description: metric.description.clone(),
                        attributes: point.attributes.clone(),
                        resource: resource_metrics.resource.clone(),
                        start_time_unix_nano: point.start_time_unix_nano,
                        time_unix_nano: point.time_unix_nano,
                        distribution,
                    }),
                    Err(reason) => {
                        rejected.push(format!("metric {:?}, point {i}: {reason}", metric.name));
                    }
                }
            }
        }
    }
    Ok(OtlpExport {
        json: otlp_json(&request),
        distributions,
        rejected,
    })
}

/// The distribution a point describes, or why it makes none.
fn rebuild(point: &DecodedPoint) -> Result<Distribution, String> {
    if point.sum.is_none() && point.count > 0 {
        return Err("no sum was sent".to_owned());
    }
    point.to_distribution().map_err(|e| e.to_string())
}

/// The answer's `partial_success` for the points refused, if any.
fn partial_success(rejected: &[String]) -> Option<PartialSuccess> {
    let first = rejected.first()?;
    Some(PartialSuccess {
        rejected_data_points: rejected.len() as u64,
        error_message: format!(
            "{} point(s) make no distribution; the first: {first}",
            rejected.len()
        ),
    })
}

/// A decoded OTLP request as the JSON [`ReceivedRequest::body`] describes.
fn otlp_json(request: &DecodedRequest) -> Json {
    use serde_json::json;
    let attributes = |a: &Attributes| serde_json::to_value(a).unwrap_or(Json::Null);
    let buckets = |b: &otlp::Buckets| json!({ "offset": b.offset, "bucketCounts": b.counts });
    let point = |p: &DecodedPoint| {
        let mut out = json!({
            "attributes": attributes(&p.attributes),
            "startTimeUnixNano": p.start_time_unix_nano,
            "timeUnixNano": p.time_unix_nano,
            "count": p.count,
            "scale": p.scale,
            "zeroCount": p.zero_count,
            "zeroThreshold": p.zero_threshold,
            "flags": p.flags,
            "positive": buckets(&p.positive),
            "negative": buckets(&p.negative),
        });
        if let Json::Object(fields) = &mut out {
            for (key, value) in [("sum", p.sum), ("min", p.min), ("max", p.max)] {
                if let Some(value) = value {
                    fields.insert(key.to_owned(), json!(value));
                }
            }
        }
        out
    };
    let resource_metrics: Vec<Json> = request
        .resource_metrics
        .iter()
        .map(|rm| {
            let scope_metrics: Vec<Json> = rm
                .scope_metrics
                .iter()
                .map(|sm| {
                    let metrics: Vec<Json> = sm
                        .metrics
                        .iter()
                        .map(|m| {
                            json!({
                                "name": m.name,
                                "description": m.description,
                                "unit": m.unit,
                                "exponentialHistogram": {
                                    "aggregationTemporality": m.aggregation_temporality,
                                    "dataPoints": m.points.iter().map(point).collect::<Vec<_>>(),
                                },
                            })
                        })
                        .collect();
                    json!({
                        "scope": { "name": sm.scope_name, "version": sm.scope_version },
                        "metrics": metrics,
                    })
                })
                .collect();
            json!({
                "resource": { "attributes": attributes(&rm.resource) },
                "scopeMetrics": scope_metrics,
            })
        })
        .collect();
    json!({
        "resourceMetrics": resource_metrics,
        "skippedMetrics": request.skipped_metrics,
    })
}

/// The status the server answers an unscripted OTLP metrics export with,
/// and the message of its `google.rpc.Status` body when it refuses it.
fn otlp_status(
    parts: &hyper::http::request::Parts,
    wire_bytes: usize,
    max_body: Option<usize>,
    read: &Result<OtlpExport, OtlpRefusal>,
) -> (u16, Option<String>) {
    let key = parts
        .headers
        .get("api-key")
        .is_some_and(|v| !v.as_bytes().trim_ascii().is_empty());
    if !key {
        return (403, Some("no api-key header".to_owned()));
    }
    if max_body.is_some_and(|max| wire_bytes > max) {
        return (
            413,
            Some(format!("the body's {wire_bytes} bytes are too many")),
        );
    }
    if parts.method != hyper::Method::POST {
        return (400, Some("an OTLP/HTTP export is a POST".to_owned()));
    }
    match read {
        Ok(_) => (200, None),
        Err(refusal) => (refusal.status, Some(refusal.message.clone())),
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let received_at = tokio::time::Instant::now();
    let api = Api::from_path(request.uri().path());
    let is_otlp = api == Some(Api::Otlp);
    let (parts, body) = request.into_parts();
    let raw = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(CloseConnection),
    };
    let decoded = if is_otlp {
        None
    } else {
        decode(&parts.headers, &raw)
    };
    let mut otlp_read = is_otlp.then(|| read_otlp(&parts.headers, &raw));

    let (script, max_body, index) = {
        let mut state = shared.lock();
        let position = state.scripts.iter().position(|(target, _)| match target {
            Target::Any => true,
            Target::Api(target) => Some(*target) == api,
            Target::OtlpMetrics => is_otlp,
        });
        let script = position
            .and_then(|i| state.scripts.remove(i))
            .map(|(_, s)| s);
        let body = match &otlp_read {
            Some(Ok(export)) => export.json.clone(),
            Some(Err(_)) => Json::Null,
            None => decoded.clone().unwrap_or(Json::Null),
        };
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
            body,
            wire_bytes: raw.len(),
            status: 0,
            received_at,
        });
        let index = state.requests.len() - 1;
        // Kept with their request: `distributions()` shows them once it is
        // answered 2xx.
        if let Some(Ok(export)) = &mut otlp_read {
            let received = std::mem::take(&mut export.distributions);
            state
                .distributions
                .extend(received.into_iter().map(|d| (index, d)));
        }
        (script, state.max_body_bytes, index)
    };
    shared.changed.notify_waiters();
    if let Some(script) = &script {
        if !script.delay.is_zero() {
            tokio::time::sleep(script.delay).await;
        }
    }
    let mut refusal = None;
    let status = match (&script, api, &otlp_read) {
        (Some(s), _, _) if s.close => 0,
        (Some(s), _, _) => s.status,
        (None, _, Some(read)) => {
            let (status, message) = otlp_status(&parts, raw.len(), max_body, read);
            refusal = message;
            status
        }
        (None, None, None) => 404,
        (None, Some(_), _) if max_body.is_some_and(|max| raw.len() > max) => 413,
        (None, Some(_), _) if decoded.is_none() || parts.method != hyper::Method::POST => 400,
        (None, Some(Api::Event), _) => 200,
        (None, Some(_), _) => 202,
    };
    shared.lock().requests[index].status = status;
    shared.changed.notify_waiters();

    if status == 0 {
        return Err(CloseConnection);
    }
    let body = match (status, api, &otlp_read) {
        // OTLP: an ExportMetricsServiceResponse, empty on full success; a
        // google.rpc.Status when the server refuses on its own.
        (200..=299, _, Some(read)) => match script.as_ref().and_then(|s| s.partial_success.clone())
        {
            Some((rejected_data_points, error_message)) => {
                otlp::encode_response(Some(&PartialSuccess {
                    rejected_data_points,
                    error_message,
                }))
            }
            None => {
                let rejected = read.as_ref().map(|e| &e.rejected[..]).unwrap_or(&[]);
                otlp::encode_response(partial_success(rejected).as_ref())
            }
        },
        (_, _, Some(_)) => match refusal {
            Some(message) => {
                let code = match status {
                    403 => STATUS_PERMISSION_DENIED,
                    413 => STATUS_RESOURCE_EXHAUSTED,
                    _ => otlp::STATUS_INVALID_ARGUMENT,
                };
                otlp::encode_status(code, &message)
            }
            None => Vec::new(),
        },
        (200..=299, Some(Api::Event), None) => {
            format!(r#"{{"success":true,"uuid":"{}"}}"#, uuid::Uuid::new_v4()).into_bytes()
        }
        (200..=299, _, None) => {
            format!(r#"{{"requestId":"{}"}}"#, uuid::Uuid::new_v4()).into_bytes()
        }
        _ => Vec::new(),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if is_otlp {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(otlp::CONTENT_TYPE),
        );
    }
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

#[cfg(test)]
mod tests {
    //! The OTLP receiver against requests from the crate's own encoder,
    //! posted with reqwest as a client would.

    use std::io::Write;

    use super::*;
    use crate::client::otlp::{
        ExponentialMetric, ExponentialPoint, OtlpResource, WireReader, decode_response,
        encode_request,
    };

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// POSTs `body` to the server's OTLP URL with these headers; the status,
    /// the response's content type and its body.
    async fn post(
        server: &TestIngestServer,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Option<String>, Vec<u8>) {
        let mut request = http().post(server.otlp_metrics_url()).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        (
            status,
            content_type,
            response.bytes().await.unwrap().to_vec(),
        )
    }

    /// A request header, name and value.
    type Header = (&'static str, &'static str);

    const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
    const KEY: (&str, &str) = ("api-key", "test-key");
    const GZIP: (&str, &str) = ("content-encoding", "gzip");

    fn distribution(values: &[f64]) -> Distribution {
        let mut d = Distribution::new();
        for &v in values {
            d.record(v).unwrap();
        }
        d
    }

    /// Two metrics, three series; the distributions in the order sent.
    fn sample() -> (
        Attributes,
        Vec<ExponentialMetric>,
        Vec<(String, Attributes, Distribution)>,
    ) {
        let latency_a = distribution(&(1..=1000).map(|i| f64::from(i) * 0.1).collect::<Vec<_>>());
        let latency_b = distribution(&[0.0, 0.0, 3.0, 250.0, 1e4]);
        let deltas = distribution(&[-12.5, -0.001, 0.0, 4.0, 8.0, 1e6]);
        let route = |r: &str| Attributes::from_iter([("route", r)]);
        let common = Attributes::from_iter([
            ("host", Value::from("web-1")),
            ("service.name", Value::from("checkout")),
        ]);
        let point = |d: &Distribution, a: &Attributes| {
            ExponentialPoint::from_distribution(
                d,
                Arc::new(a.clone()),
                1_700_000_000_000_000_000,
                1_700_000_005_000_000_000,
            )
        };
        let metrics = vec![
            ExponentialMetric {
                name: "http.server.duration".into(),
                description: Some("Time to answer".into()),
                unit: Some("ms".into()),
                points: vec![
                    point(&latency_a, &route("/orders")),
                    point(&latency_b, &route("/health")),
                ],
            },
            ExponentialMetric {
                name: "balance.delta".into(),
                points: vec![point(&deltas, &Attributes::new())],
                ..ExponentialMetric::default()
            },
        ];
        let expected = vec![
            (
                "http.server.duration".to_owned(),
                route("/orders"),
                latency_a,
            ),
            (
                "http.server.duration".to_owned(),
                route("/health"),
                latency_b,
            ),
            ("balance.delta".to_owned(), Attributes::new(), deltas),
        ];
        (common, metrics, expected)
    }

    fn sample_request() -> (Vec<u8>, Vec<(String, Attributes, Distribution)>) {
        let (common, metrics, expected) = sample();
        let resource = OtlpResource {
            attributes: Some(&common),
            service_name: Some("ignored: the common attribute wins"),
        };
        (encode_request(&resource, &metrics), expected)
    }

    /// The `google.rpc.Status` message of a refusal.
    fn status_message(body: &[u8]) -> String {
        let mut reader = WireReader::new(body);
        while let Some(field) = reader.next_field().unwrap() {
            if field.number == 2 {
                return field.string().unwrap().to_owned();
            }
        }
        panic!("no message in {body:?}")
    }

    #[tokio::test]
    async fn distributions_arrive_with_their_buckets_and_quantiles() {
        let server = TestIngestServer::start().await.unwrap();
        let (body, expected) = sample_request();
        for (headers, body) in [
            (&[PROTOBUF, KEY, GZIP][..], gzip(&body)),
            (&[PROTOBUF, KEY][..], body.clone()),
        ] {
            let (status, content_type, answer) = post(&server, headers, body).await;
            assert_eq!(status, 200);
            assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
            assert!(answer.is_empty(), "an empty ExportMetricsServiceResponse");
            assert_eq!(decode_response(&answer), Ok(None));
        }

        let received = server.distributions();
        assert_eq!(received.len(), 2 * expected.len(), "both requests kept");
        let resource = Attributes::from_iter([
            ("host", Value::from("web-1")),
            ("service.name", Value::from("checkout")),
        ]);
        for (got, (name, attributes, sent)) in received.iter().zip(expected.iter().cycle()) {
            assert_eq!(&got.name, name);
            assert_eq!(&got.attributes, attributes);
            assert_eq!(got.resource, resource);
            assert_eq!(
                (got.start_time_unix_nano, got.time_unix_nano),
                (1_700_000_000_000_000_000, 1_700_000_005_000_000_000)
            );
            let d = &got.distribution;
            assert_eq!(d, sent, "the same distribution, field for field");
            assert_eq!(
                (
                    d.count(),
                    d.sum(),
                    d.min(),
                    d.max(),
                    d.zero_count(),
                    d.scale()
                ),
                (
                    sent.count(),
                    sent.sum(),
                    sent.min(),
                    sent.max(),
                    sent.zero_count(),
                    sent.scale()
                )
            );
            assert_eq!(
                (d.positive(), d.negative()),
                (sent.positive(), sent.negative())
            );
            for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                assert_eq!(d.quantile(q), sent.quantile(q), "{name} q {q}");
            }
        }
        assert_eq!(
            (received[0].unit.as_str(), received[0].description.as_str()),
            ("ms", "Time to answer")
        );
        assert_eq!(received[2].unit, "");
        // 1000 values 0.1 apart: p99 is 99, read within a bucket's width.
        let latency = &received[0].distribution;
        let width = 2f64.powf(2f64.powi(-i32::from(latency.scale()))) - 1.0;
        let p99 = latency.quantile(0.99).unwrap();
        assert!(
            (p99 - 99.0).abs() / 99.0 <= width,
            "{p99} at scale {}",
            latency.scale()
        );

        // Printable: count, sum, p50, p90 and p99 (of 0, 0, 3, 250, 10^4).
        let health = &expected[1].2;
        let q = |p: f64| Significant(health.quantile(p).unwrap()).to_string();
        let p50 = health.quantile(0.5).unwrap();
        assert!(
            (p50 - 3.0).abs() < 0.1,
            "p50 is read from 3's bucket: {p50}"
        );
        assert_eq!(
            received[1].to_string(),
            format!(
                r#"http.server.duration [ms] {{route="/health"}}: count 5, sum 10253, p50 {}, p90 {}, p99 {}"#,
                q(0.5),
                q(0.9),
                q(0.99)
            )
        );
        assert!(
            received[2]
                .to_string()
                .starts_with("balance.delta: count 6, sum 999999, p50 0, ")
        );

        // The requests, with the body as JSON.
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        for request in &requests {
            assert!(request.is_otlp_metrics());
            assert_eq!((request.api, request.status), (Some(Api::Otlp), 200));
            assert_eq!(request.header("api-key"), Some("test-key"));
            let rm = &request.body["resourceMetrics"][0];
            assert_eq!(rm["resource"]["attributes"]["service.name"], "checkout");
            assert_eq!(rm["scopeMetrics"][0]["scope"]["name"], "newrelic-telemetry");
            let metric = &rm["scopeMetrics"][0]["metrics"][0];
            assert_eq!(metric["name"], "http.server.duration");
            assert_eq!(metric["unit"], "ms");
            let histogram = &metric["exponentialHistogram"];
            assert_eq!(histogram["aggregationTemporality"], 1);
            let point = &histogram["dataPoints"][1];
            let sent = &expected[1].2;
            assert_eq!(
                point["attributes"],
                serde_json::json!({ "route": "/health" })
            );
            assert_eq!(point["count"], 5);
            assert_eq!(point["zeroCount"], 2);
            assert_eq!(point["sum"], sent.sum());
            assert_eq!(point["min"], 0.0);
            assert_eq!(point["scale"], i64::from(sent.scale()));
            assert_eq!(point["positive"]["offset"], sent.positive().offset());
            assert_eq!(
                point["positive"]["bucketCounts"],
                serde_json::json!(sent.positive().counts())
            );
            assert_eq!(
                point["negative"],
                serde_json::json!({ "offset": 0, "bucketCounts": [] })
            );
            assert_eq!(request.body["skippedMetrics"], 0);
        }
        assert!(
            requests[0].wire_bytes < requests[1].wire_bytes,
            "gzip made it smaller"
        );
    }

    #[tokio::test]
    async fn a_request_without_a_key_is_refused_with_403_and_nothing_kept() {
        let server = TestIngestServer::start().await.unwrap();
        let (body, _) = sample_request();
        for headers in [
            &[PROTOBUF, GZIP][..],
            &[PROTOBUF, GZIP, ("api-key", " ")][..],
        ] {
            let (status, content_type, answer) = post(&server, headers, gzip(&body)).await;
            assert_eq!(status, 403);
            assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
            assert_eq!(status_message(&answer), "no api-key header");
        }
        assert!(server.distributions().is_empty());
        let requests = server.requests();
        assert_eq!(
            requests.iter().map(|r| r.status).collect::<Vec<_>>(),
            [403, 403]
        );
        // What arrived is still shown.
        assert_eq!(
            requests[0].body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][1]["name"],
            "balance.delta"
        );
    }

    #[tokio::test]
    async fn garbage_is_refused_with_400_and_its_reason_and_nothing_kept() {
        let server = TestIngestServer::start().await.unwrap();
        let (body, _) = sample_request();
        let cut = body[..body.len() / 2].to_vec();
        let cases: Vec<(&[Header], Vec<u8>, u16, &str)> = vec![
            // Protobuf cut in half, gzipped and not.
            (
                &[PROTOBUF, KEY, GZIP],
                gzip(&cut),
                400,
                "malformed OTLP ExportMetricsServiceRequest at byte 0: the body ends inside a field",
            ),
            (
                &[PROTOBUF, KEY],
                cut.clone(),
                400,
                "malformed OTLP ExportMetricsServiceRequest at byte 0",
            ),
            // Not gzip at all.
            (
                &[PROTOBUF, KEY, GZIP],
                body.clone(),
                400,
                "the body is not valid gzip",
            ),
            // Invalid wire type 7.
            (&[PROTOBUF, KEY], vec![0x0f], 400, "invalid wire type 7"),
            // JSON, or no content type; an encoding not supported.
            (
                &[("content-type", "application/json"), KEY],
                b"{}".to_vec(),
                415,
                "is not application/x-protobuf",
            ),
            (&[KEY], body.clone(), 415, "content-type \"\""),
            (
                &[PROTOBUF, KEY, ("content-encoding", "zstd")],
                body.clone(),
                415,
                "content-encoding \"zstd\"",
            ),
        ];
        for (headers, bytes, want, message) in cases {
            let (status, content_type, answer) = post(&server, headers, bytes).await;
            assert_eq!(status, want, "{message}");
            assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
            let got = status_message(&answer);
            assert!(got.contains(message), "{got:?} should say {message:?}");
        }
        assert!(server.distributions().is_empty());
        let requests = server.requests();
        assert!(
            requests
                .iter()
                .all(|r| r.body.is_null() && r.is_otlp_metrics())
        );
        // A content type with parameters is still protobuf; an empty body is
        // an empty request.
        let (status, _, _) = post(
            &server,
            &[
                ("content-type", "Application/X-Protobuf; charset=binary"),
                KEY,
            ],
            Vec::new(),
        )
        .await;
        assert_eq!(status, 200);
        // Not a POST.
        let response = http()
            .get(server.otlp_metrics_url())
            .header(KEY.0, KEY.1)
            .header(PROTOBUF.0, PROTOBUF.1)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }

    #[tokio::test]
    async fn points_that_make_no_distribution_are_a_partial_success() {
        let server = TestIngestServer::start().await.unwrap();
        let good = ExponentialPoint::from_distribution(
            &distribution(&[1.0, 2.0]),
            Arc::new(Attributes::new()),
            1,
            2,
        );
        let bad_count = ExponentialPoint {
            count: 3, // the buckets hold 2
            ..good.clone()
        };
        let bad_scale = ExponentialPoint {
            scale: 21,
            ..good.clone()
        };
        let metrics = vec![ExponentialMetric {
            name: "m".into(),
            points: vec![bad_count, good.clone(), bad_scale],
            ..ExponentialMetric::default()
        }];
        let body = encode_request(&OtlpResource::default(), &metrics);
        let (status, _, answer) = post(&server, &[PROTOBUF, KEY], body).await;
        assert_eq!(status, 200);
        let partial = decode_response(&answer)
            .unwrap()
            .expect("a partial success");
        assert_eq!(partial.rejected_data_points, 2);
        assert_eq!(
            partial.error_message,
            "2 point(s) make no distribution; the first: metric \"m\", point 0: invalid distribution parts: count is 3 but the zero bucket and the buckets hold 2"
        );
        let kept = server.distributions();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].distribution, distribution(&[1.0, 2.0]));
        // The request shows all three points.
        let points = &server.requests()[0].body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
            [0]["exponentialHistogram"]["dataPoints"];
        assert_eq!(points.as_array().map(Vec::len), Some(3));
        // A point with no sum.
        let no_sum = ExponentialPoint {
            sum: f64::INFINITY, // left out of the encoding
            ..good
        };
        let body = encode_request(
            &OtlpResource::default(),
            &[ExponentialMetric {
                name: "n".into(),
                points: vec![no_sum],
                ..ExponentialMetric::default()
            }],
        );
        let (_, _, answer) = post(&server, &[PROTOBUF, KEY], body).await;
        let partial = decode_response(&answer).unwrap().unwrap();
        assert!(
            partial
                .error_message
                .ends_with("metric \"n\", point 0: no sum was sent"),
            "{}",
            partial.error_message
        );
        assert_eq!(server.distributions().len(), 1);
    }

    #[tokio::test]
    async fn scripted_failures_apply_and_their_distributions_are_not_kept() {
        let server = TestIngestServer::start().await.unwrap();
        let (body, expected) = sample_request();
        server
            .respond_to_otlp_metrics(ScriptedResponse::status(503).with_header("Retry-After", "3"));
        server.respond_with(ScriptedResponse::status(429));
        // An Event API request first: the OTLP script is not its.
        let events = crate::EventClient::builder("test-key")
            .endpoint(server.event_url())
            .retry_policy(crate::RetryPolicy::none())
            .build()
            .unwrap();
        assert!(
            events.send(crate::Event::new("Order")).await.is_err(),
            "429: the script for any API"
        );
        let first = http()
            .post(server.otlp_metrics_url())
            .header(KEY.0, KEY.1)
            .header(PROTOBUF.0, PROTOBUF.1)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 503);
        assert_eq!(first.headers()["retry-after"], "3");
        assert!(
            server.distributions().is_empty(),
            "not kept when answered 503"
        );
        // The retry is accepted and kept, once.
        let (status, _, _) = post(&server, &[PROTOBUF, KEY], body.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(server.distributions().len(), expected.len());
        // A dropped connection, and a script for any API, apply too.
        server.respond_with(ScriptedResponse::close_connection());
        let dropped = http()
            .post(server.otlp_metrics_url())
            .header(KEY.0, KEY.1)
            .header(PROTOBUF.0, PROTOBUF.1)
            .body(body)
            .send()
            .await;
        assert!(dropped.is_err());
        assert_eq!(server.distributions().len(), expected.len());
        let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 503, 200, 0]);
        // A scripted 2xx accepts.
        server.respond_to_otlp_metrics(ScriptedResponse::status(202));
        let (status, _, _) = post(&server, &[PROTOBUF, KEY], sample_request().0).await;
        assert_eq!(status, 202);
        assert_eq!(server.distributions().len(), 2 * expected.len());
    }

    #[tokio::test]
    async fn size_limits_and_waiting_apply_to_otlp_too() {
        let server = TestIngestServer::start().await.unwrap();
        let (body, _) = sample_request();
        server.set_max_body_bytes(Some(body.len() - 1));
        let (status, _, answer) = post(&server, &[PROTOBUF, KEY], body.clone()).await;
        assert_eq!(status, 413);
        assert!(status_message(&answer).contains("too many"));
        assert!(server.distributions().is_empty());
        server.set_max_body_bytes(None);
        let sender = {
            let url = server.otlp_metrics_url();
            tokio::spawn(async move {
                http()
                    .post(url)
                    .header(KEY.0, KEY.1)
                    .header(PROTOBUF.0, PROTOBUF.1)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        };
        assert!(
            server
                .wait_until(Duration::from_secs(10), |r| r
                    .iter()
                    .any(|r| r.is_otlp_metrics() && r.accepted()))
                .await
        );
        assert_eq!(sender.await.unwrap().unwrap(), 200);
        assert!(server.wait_for_requests(2, Duration::from_secs(10)).await);
    }

    #[test]
    fn numbers_print_with_four_significant_digits() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (35.0, "35"),
            (11.313708498984761, "11.31"),
            (-2.5, "-2.5"),
            (0.001234567, "0.001235"),
            (999.96, "1000"),
            (123_456.7, "123457"),
            (1e6, "1.000e6"),
            (1.5e-7, "1.500e-7"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(Significant(v).to_string(), want, "{v}");
        }
    }

    #[test]
    fn a_received_distribution_prints_its_attributes_and_skips_quantiles_of_nothing() {
        let received = ReceivedDistribution {
            name: "jobs".into(),
            unit: String::new(),
            description: String::new(),
            attributes: Attributes::from_iter([
                ("queue", Value::from("mail \"urgent\"")),
                ("shard", Value::from(3)),
                ("ok", Value::from(true)),
            ]),
            resource: Attributes::new(),
            start_time_unix_nano: 0,
            time_unix_nano: 0,
            distribution: Distribution::new(),
        };
        assert_eq!(
            received.to_string(),
            r#"jobs {ok=true, queue="mail \"urgent\"", shard=3}: count 0, sum 0"#
        );
    }
}
