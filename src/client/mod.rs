//! Clients for the four ingest APIs, and the delivery guarantees.
//!
//! [`MetricClient`], [`EventClient`], [`LogClient`] and [`SpanClient`] are one
//! generic [`Client`] specialised by API [`Kind`]. A client gzips items into
//! payloads under the 10^6-byte limit, posts them with the headers the APIs
//! document, and follows the delivery policy of the ingest contract: drop on
//! 400/401/403/404/405/409/410/411, split on 413, wait `Retry-After` on 429,
//! retry everything else with bounded backoff. A
//! [`Harvester`](crate::Harvester) sends each harvest through one; a
//! [`Telemetry`](crate::Telemetry) sets up four, whose shared settings are a
//! [`ClientSettings`].
//!
//! # Delivery guarantees
//!
//! Every item a batch accepts ends up either accepted by New Relic or counted
//! as dropped with a reason ([`DeliveryStats`],
//! [`HarvestReport`](crate::harvester::HarvestReport)), and every such drop is
//! logged at ERROR with the number of items lost and passed to the
//! [`on_drop`](ClientBuilder::on_drop) callback if one is set. Items a batch
//! refuses are never silent either: the batch counts them
//! ([`RecordStats`](crate::batch::RecordStats), also in each `HarvestReport`),
//! logs each reason at WARN once per harvest interval, and hands each to the
//! `on_refused` callback if one is set (the `try_record_*` calls return them
//! too; see the [`batch`](crate::batch) module for what is refused). Nothing
//! is retried without end.
//!
//! | what happens | what the SDK does |
//! |---|---|
//! | 2xx | accepted |
//! | 400, 401, 403, 404, 405, 409, 410, 411 | dropped at once, not retried (`items_dropped_rejected`) |
//! | 3xx | dropped as a rejection: the SDK's HTTP client follows no redirect, so the key never travels to another host (a `reqwest::Client` of your own must be built with `redirect::Policy::none()` for the same promise) |
//! | 408, 5xx, any other status | retried with backoff 0, 1, 2, 4, 8, 16, 16, 16 s; at most 8 retries and 2 minutes per payload (both configurable with [`RetryPolicy`], or [`RetryPolicy::none`]), then dropped (`items_dropped_retries_exhausted`) |
//! | connection refused or cut, request timeout ([`DEFAULT_TIMEOUT`], 15 s) | retried like a 5xx. A timed-out request may have been processed: its retry carries the same `x-request-id`, the one case where an item can arrive twice |
//! | 429 | waits `Retry-After` (seconds or an HTTP date, capped at 60 s; the backoff, at least 1 s, when missing), then retries within the same limits |
//! | payload size | payloads are cut while they are encoded, each under [`MAX_PAYLOAD_BYTES`] (10^6) gzipped ([`max_payload_bytes`](ClientBuilder::max_payload_bytes)); a single item whose payload is over that is never sent (`items_dropped_too_large`) |
//! | 413 on several items | split in two (new request ids), again if needed. The client then cuts payloads to half the refused size (never below 64 KiB) for a minute, so a proxy with a smaller limit costs one 413 a minute |
//! | 413 on one item | that item alone is dropped (`items_dropped_too_large`); nothing is learned from it, so a transient 413 never costs later data |
//! | endpoint down or slow | harvests go on every interval and queue their payloads, one in flight at a time; past [`DEFAULT_MAX_QUEUED_ITEMS`](crate::harvester::DEFAULT_MAX_QUEUED_ITEMS) (200,000) items or **half the record limit** (the memory budget less 2 MB kept for sending work) waiting, the **oldest** payload is dropped (`items_dropped_queue_full`) |
//! | memory budget full ([`DEFAULT_MEMORY_BUDGET`](crate::batch::DEFAULT_MEMORY_BUDGET), 16 MiB per pipeline: the batch, payloads being encoded, queued and in flight) | a new item (for metrics, the first series of a new name; a known name's new series goes to its overflow series) is refused with [`RecordError::MemoryBudgetFull`](crate::RecordError::MemoryBudgetFull) (`items_dropped_over_budget`) and an early harvest is asked for, which moves the batch into the queue and drops the oldest queued payloads; existing series keep aggregating. `memory()` on batches and harvesters shows the bytes and items held now and the peak |
//! | a batch fills up | at half capacity it asks for an early harvest; when full (50,000 items; 100,000 metric series) new items are refused with `RecordError::BufferFull` / `SeriesLimitReached`, buffered ones kept; a metric name the batch holds records a new series into its overflow series instead (`measurements_overflowed`) |
//! | shutdown | [`Telemetry::shutdown`](crate::Telemetry::shutdown) first drains its tracing layers into the batches; a span or log exported after that is counted (`items_refused`). Then, for each harvester, the deadline (10 s) starts when the harvester is stopped and covers everything: the batch is closed (a later recording gets `RecordError::Closed` and is counted), flushed, encoded in slices that yield, and the queue is sent; at the deadline the work is abandoned within [`SHUTDOWN_SLACK`](crate::harvester::SHUTDOWN_SLACK) (100 ms) and what is left, encoded or not, is dropped and reported (`items_dropped_shutdown`, `deadline_exceeded`); a request cut off at the deadline may still have been processed by the server. Calling shutdown twice is harmless |
//!
//! ```
//! use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
//! use newrelic_telemetry::{Event, EventClient};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestIngestServer::start().await?;
//! let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
//!
//! // A 503 is retried (the first retry at once), then accepted.
//! server.respond_with(ScriptedResponse::status(503));
//! let report = client.send(Event::new("Order")).await?;
//! assert_eq!(report.payloads()[0].attempts(), 2);
//!
//! // A 400 is dropped at once, with its reason, and never retried.
//! server.respond_with(ScriptedResponse::status(400));
//! let err = client.send(Event::new("Order")).await.unwrap_err();
//! assert!(err.is_rejected());
//! assert_eq!(client.stats().items_dropped_rejected, 1);
//! assert_eq!(server.requests().len(), 3);
//! # Ok(()) }
//! ```
//!
//! Recording never waits on the network: the SDK never calls `block_on`,
//! never holds a batch lock across I/O and never blocks in `Drop`. Dropping
//! a `Harvester` cancels it and it flushes in the background, as long as
//! the runtime keeps running; when `main` returns the runtime drops its
//! tasks, so await `shutdown()` (or [`Harvester::join`](crate::Harvester::join))
//! before leaving `main`: that is the only way to know what was sent. Audit
//! logging of every payload at DEBUG (target `newrelic_telemetry::audit`)
//! is off by default ([`audit_logging`](ClientBuilder::audit_logging)). The
//! API key never appears in logs, errors or `Debug` output.

mod delivery;
mod encode;
mod error;
mod kind;
// Crate-visible: the test server and the local endpoint decode OTLP requests.
pub(crate) mod otlp;
mod report;
mod retry;
mod stats;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};

pub use delivery::MAX_PAYLOAD_BYTES;
pub(crate) use delivery::{Prepared, Sender};
pub use encode::encode_payload;
pub(crate) use encode::{Encoded, Payload, PayloadEncoder};
pub use kind::{AllApis, Events, Kind, Logs, Metrics, Otlp, Spans};
pub use report::{
    AttemptFailure, ConnectionError, DropReason, PayloadOutcome, PayloadReport, SendReport,
};
pub use retry::RetryPolicy;

use crate::api::{Api, Region};
pub use crate::common::{
    COLLECTOR_NAME, COLLECTOR_VERSION, DEFAULT_INSTRUMENTATION_PROVIDER, IDENTITY_KEYS,
};
use crate::common::{Common, Identity};
use crate::error::BuildError;
use crate::validate::Validate;
pub use error::SendError;
pub use stats::DeliveryStats;

/// A client for the Metric API.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{CountMetric, MetricClient};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let client = MetricClient::builder("test-key").endpoint(server.metric_url()).build()?;
/// client.send(CountMetric::new("jobs.done", 3.0, Duration::from_secs(10)).into()).await?;
/// assert_eq!(server.metrics()[0]["name"], "jobs.done");
/// # Ok(()) }
/// ```
pub type MetricClient = Client<Metrics>;
/// A client for the Event API.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Event, EventClient};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
/// client.send(Event::new("Signup").with_attribute("plan", "free")).await?;
/// assert_eq!(server.events()[0]["plan"], "free");
/// # Ok(()) }
/// ```
pub type EventClient = Client<Events>;
/// A client for the Log API.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Log, LogClient};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
/// client.send(Log::new("started").with_level("INFO")).await?;
/// assert_eq!(server.logs()[0]["message"], "started");
/// # Ok(()) }
/// ```
pub type LogClient = Client<Logs>;
/// A client for the Trace API.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Span, SpanClient};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let client = SpanClient::builder("test-key").endpoint(server.span_url()).build()?;
/// client.send(Span::new("GET /orders").finish()).await?;
/// assert_eq!(server.spans()[0]["attributes"]["name"], "GET /orders");
/// # Ok(()) }
/// ```
pub type SpanClient = Client<Spans>;

/// Settings for the four clients of a [`Telemetry`](crate::Telemetry) at
/// once, as [`TelemetryBuilder::client`](crate::TelemetryBuilder::client)
/// hands them to its closure: a [`ClientBuilder`] with no API of its own and
/// no `build()` (the builder only collects settings; `Telemetry` builds the
/// four clients from them).
///
/// ```
/// use newrelic_telemetry::RetryPolicy;
/// use newrelic_telemetry::client::ClientSettings;
/// use std::time::Duration;
///
/// // A function that configures the clients of any Telemetry it is given to.
/// fn patient(clients: ClientSettings) -> ClientSettings {
///     clients
///         .timeout(Duration::from_secs(30))
///         .retry_policy(RetryPolicy::default().with_max_retries(3))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = newrelic_telemetry::test_util::TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().client(patient).build()?;
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
pub type ClientSettings = ClientBuilder<AllApis>;

/// How long one request may take unless told otherwise: 15 s. See
/// [`ClientBuilder::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting may take, in the HTTP client the SDK builds for itself:
/// 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest `instrumentation.provider` sent: the Trace API's value limit, the
/// smallest of the four APIs'.
const MAX_PROVIDER_CHARS: usize = 4000;

const SDK_USER_AGENT: &str = concat!("NewRelic-Rust-TelemetrySDK/", env!("CARGO_PKG_VERSION"));

/// Which header carries the key.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Event, EventClient};
/// use newrelic_telemetry::client::KeyHeader;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// assert_eq!(KeyHeader::default(), KeyHeader::ApiKey);
/// let server = TestIngestServer::start().await?;
/// let client = EventClient::builder("test-key")
///     .endpoint(server.event_url())
///     .key_header(KeyHeader::LicenseKey)
///     .build()?;
/// client.send(Event::new("Ping")).await?;
/// let request = &server.requests()[0];
/// assert_eq!(request.header("x-license-key"), Some("test-key"));
/// assert_eq!(request.header("api-key"), None);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyHeader {
    /// `Api-Key` (the default): an ingest or license key.
    #[default]
    ApiKey,
    /// `X-License-Key`: a license key, as some accounts authenticate.
    LicenseKey,
}

/// A client for one ingest API. Cheap to clone: clones share the connection
/// pool and the delivery counters.
///
/// ```no_run
/// use newrelic_telemetry::{Common, CountMetric, MetricClient};
/// use std::time::Duration;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = MetricClient::builder(std::env::var("NEW_RELIC_API_KEY")?).build()?;
/// let report = client
///     .send(CountMetric::new("jobs.done", 3.0, Duration::from_secs(10)).into())
///     .await?;
/// println!("sent {} items", report.items_sent());
/// # Ok(()) }
/// ```
pub struct Client<K: Kind> {
    sender: Arc<Sender<K>>,
}

impl<K: Kind> Clone for Client<K> {
    fn clone(&self) -> Self {
        Client {
            sender: self.sender.clone(),
        }
    }
}

impl<K: Kind> fmt::Debug for Client<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api", &K::API)
            .field("endpoint", &self.sender.url.as_str())
            .field("api_key", &"<redacted>")
            .field("timeout", &self.sender.timeout)
            .field("retry", &self.sender.retry)
            .finish_non_exhaustive()
    }
}

impl<K: Kind> Client<K> {
    /// A builder for a client that authenticates with `api_key`.
    ///
    /// ```
    /// use newrelic_telemetry::MetricClient;
    ///
    /// let client = MetricClient::builder("key").build().unwrap();
    /// assert_eq!(client.endpoint(), "https://metric-api.newrelic.com/metric/v1");
    /// ```
    pub fn builder(api_key: impl Into<String>) -> ClientBuilder<K> {
        ClientBuilder::new(api_key)
    }

    /// Sends `items` sharing `common`, under the client's delivery policy.
    ///
    /// Items that break an API rule are dropped before sending; the rest are
    /// split into payloads under the size limit, each retried as the policy
    /// says. `Ok` means every item was accepted; otherwise the [`SendError`]
    /// carries the report of what was accepted and what was dropped and why.
    /// Sending no items makes no request. Metrics that come out of a
    /// [`MetricBatch`](crate::MetricBatch) flush unchanged were validated
    /// when they were recorded: only their timestamps are checked again.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Common, GaugeMetric, MetricClient, attrs};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = MetricClient::builder("test-key").endpoint(server.metric_url()).build()?;
    /// let common = Common::new().with_attributes(attrs!["host" => "web-1"]);
    /// let items = vec![GaugeMetric::new("cpu", 0.5).into(), GaugeMetric::new("mem", 0.25).into()];
    /// let report = client.send_batch(items, common).await?;
    /// assert_eq!(report.items_sent(), 2);
    /// assert_eq!(server.metrics()[1]["attributes"]["host"], "web-1");
    /// # Ok(()) }
    /// ```
    pub async fn send_batch(
        &self,
        mut items: Vec<K::Item>,
        common: Common,
    ) -> Result<SendReport, SendError> {
        if self.sender.disabled {
            self.sender.discard(items.len());
            return Ok(SendReport::new(Vec::new()));
        }
        let common = match common.attributes() {
            Some(attributes) => {
                let cleaned = K::Item::sanitize_common(attributes.clone());
                common.with_attributes(cleaned)
            }
            None => common,
        };
        let mut reports = Vec::new();
        let mut invalid = None;
        let mut invalid_count = 0;
        items.retain_mut(|item| {
            let checked = match K::prevalidated(item) {
                Some(result) => result,
                None => item.validate(common.attributes()),
            };
            match checked {
                Ok(_) => true,
                Err(e) => {
                    invalid.get_or_insert(e);
                    invalid_count += 1;
                    false
                }
            }
        });
        if let Some(error) = invalid {
            let report = PayloadReport::dropped(
                K::API,
                None,
                invalid_count,
                0,
                0,
                DropReason::Invalid(error),
            );
            self.sender.report_drop(&report);
            reports.push(report);
        }
        let Prepared { payloads, dropped } = self.sender.prepare(items, common).await;
        reports.extend(dropped);
        let resolved = AtomicUsize::new(0);
        for payload in payloads {
            reports.extend(self.sender.deliver(payload, &resolved).await);
        }
        let report = SendReport::new(reports);
        if report.items_dropped() > 0 {
            Err(SendError::new(report))
        } else {
            Ok(report)
        }
    }

    /// Sends one item with no common block.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Log, LogClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let report = client.send(Log::new("cache warmed")).await?;
    /// assert_eq!(report.items_sent(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, item: K::Item) -> Result<SendReport, SendError> {
        self.send_batch(vec![item], Common::new()).await
    }

    /// The client's delivery counters so far (shared by its clones).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Log, LogClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let clone = client.clone();
    /// clone.send(Log::new("one")).await?;
    /// assert_eq!(client.stats().items_sent, 1); // clones share the counters
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> DeliveryStats {
        self.sender.counters.snapshot()
    }

    /// The URL the client posts to.
    ///
    /// ```
    /// use newrelic_telemetry::{LogClient, Region};
    ///
    /// let client = LogClient::builder("key").region(Region::Eu).build().unwrap();
    /// assert_eq!(client.endpoint(), "https://log-api.eu.newrelic.com/log/v1");
    /// ```
    pub fn endpoint(&self) -> &str {
        self.sender.url.as_str()
    }

    pub(crate) fn sender(&self) -> &Sender<K> {
        &self.sender
    }
}

/// Configures a [`Client`].
///
/// ```
/// use newrelic_telemetry::{LogClient, Region, RetryPolicy};
/// use std::time::Duration;
///
/// let client = LogClient::builder("eu01xx0000000000000000000000000000000000")
///     .region(Region::Eu)
///     .timeout(Duration::from_secs(5))
///     .retry_policy(RetryPolicy::default().with_max_retries(3))
///     .add_version_info("checkout", "2.1.0")
///     .build()
///     .unwrap();
/// assert_eq!(client.endpoint(), "https://log-api.eu.newrelic.com/log/v1");
/// ```
#[must_use = "a builder does nothing until `build()` is called"]
pub struct ClientBuilder<K> {
    config: ClientConfig,
    kind: PhantomData<fn() -> K>,
}

/// A client's settings, the same for every API.
#[derive(Clone)]
struct ClientConfig {
    api_key: String,
    key_header: KeyHeader,
    region: Region,
    endpoint: Option<String>,
    timeout: Duration,
    http: Option<reqwest::Client>,
    proxy: Option<reqwest::Proxy>,
    version_info: Vec<(String, String)>,
    retry: RetryPolicy,
    max_payload_bytes: usize,
    audit: bool,
    on_drop: Option<delivery::DropCallback>,
    disabled: bool,
    /// Whether payloads carry the identity attributes.
    identity_attributes: bool,
    /// Their `instrumentation.provider`.
    instrumentation_provider: Arc<str>,
}

impl<K> Clone for ClientBuilder<K> {
    fn clone(&self) -> Self {
        ClientBuilder {
            config: self.config.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for ClientBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("ClientBuilder")
            .field("api_key", &"<redacted>")
            .field("key_header", &c.key_header)
            .field("region", &c.region)
            .field("endpoint", &c.endpoint)
            .field("timeout", &c.timeout)
            .field("retry", &c.retry)
            .field("max_payload_bytes", &c.max_payload_bytes)
            .field("audit", &c.audit)
            .field("identity_attributes", &c.identity_attributes)
            .field("instrumentation_provider", &c.instrumentation_provider)
            .finish_non_exhaustive()
    }
}

/// A `reqwest::ClientBuilder` set up as the SDK sets up its own client, to
/// add your settings to (proxies, timeouts, headers) and hand the client to
/// [`ClientBuilder::http_client`]: the TLS backend of this crate's features
/// (reqwest's default rustls stack, or `native-tls`), a connect timeout of
/// [`DEFAULT_CONNECT_TIMEOUT`], and no redirects (the key travels in a
/// custom header that reqwest would carry to another host; the ingest APIs
/// never redirect). A plain `reqwest::Client::builder()` builds as well (the
/// crate's features never leave reqwest without a crypto provider), but it
/// follows redirects: give it `.redirect(reqwest::redirect::Policy::none())`
/// before handing it to a client.
///
/// ```
/// use std::time::Duration;
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Log, LogClient, client};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let http = client::http_client_builder()
///     .timeout(Duration::from_secs(20))
///     .build()?;
/// let logs = LogClient::builder("key").endpoint(server.log_url()).http_client(http).build()?;
/// logs.send(Log::new("through my own reqwest client")).await?;
/// assert_eq!(server.logs()[0]["message"], "through my own reqwest client");
/// # Ok(()) }
/// ```
pub fn http_client_builder() -> reqwest::ClientBuilder {
    with_tls(
        reqwest::Client::builder()
            .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none()),
    )
}

/// The HTTP client the SDK builds for itself ([`http_client_builder`], with
/// the builder's proxy if one was given).
pub(crate) fn sdk_http_client(
    proxy: Option<reqwest::Proxy>,
) -> Result<reqwest::Client, BuildError> {
    let mut builder = http_client_builder();
    if let Some(proxy) = proxy {
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(BuildError::HttpClient)
}

/// The TLS backend of the features enabled: `native-tls` if on, else
/// reqwest's default (rustls with aws-lc-rs, feature `default-tls`); without
/// either, only `http://` endpoints work.
fn with_tls(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    #[cfg(feature = "native-tls")]
    return builder.tls_backend_native();
    #[cfg(not(feature = "native-tls"))]
    builder
}

/// An endpoint URL for `api`, checked to be absolute `http(s)` with a host.
/// A URL with no path (`http://127.0.0.1:4318`, or just `/`) means "this
/// host": the API's own path is appended. An explicit path is kept. Code and
/// the environment both go through here.
pub(crate) fn parse_endpoint(url: &str, api: Api) -> Result<reqwest::Url, String> {
    let mut parsed = reqwest::Url::parse(url.trim()).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    if parsed.path() == "/" {
        parsed.set_path(api.path());
    }
    Ok(parsed)
}

impl<K> ClientBuilder<K> {
    fn new(api_key: impl Into<String>) -> Self {
        ClientBuilder {
            config: ClientConfig {
                api_key: api_key.into(),
                key_header: KeyHeader::ApiKey,
                region: Region::Us,
                endpoint: None,
                timeout: DEFAULT_TIMEOUT,
                http: None,
                proxy: None,
                version_info: Vec::new(),
                retry: RetryPolicy::default(),
                max_payload_bytes: MAX_PAYLOAD_BYTES,
                audit: false,
                on_drop: None,
                disabled: false,
                identity_attributes: true,
                instrumentation_provider: Arc::from(DEFAULT_INSTRUMENTATION_PROVIDER),
            },
            kind: PhantomData,
        }
    }

    /// The same settings for another API (the endpoint override is not carried).
    pub(crate) fn for_kind<K2>(&self) -> ClientBuilder<K2> {
        ClientBuilder {
            config: ClientConfig {
                endpoint: None,
                ..self.config.clone()
            },
            kind: PhantomData,
        }
    }

    pub(crate) fn with_api_key(mut self, key: String) -> Self {
        self.config.api_key = key;
        self
    }

    /// A client that sends nothing: what it is given is counted in
    /// [`DeliveryStats::items_discarded`] (a disabled `Telemetry`).
    pub(crate) fn disabled(mut self, disabled: bool) -> Self {
        self.config.disabled = disabled;
        self
    }

    pub(crate) fn has_http_client(&self) -> bool {
        self.config.http.is_some()
    }

    pub(crate) fn take_proxy(&mut self) -> Option<reqwest::Proxy> {
        self.config.proxy.take()
    }

    /// Sends the key in `X-License-Key` instead of `Api-Key`.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Event, EventClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = EventClient::builder("test-key")
    ///     .endpoint(server.event_url())
    ///     .license_key_header()
    ///     .build()?;
    /// client.send(Event::new("Ping")).await?;
    /// assert_eq!(server.requests()[0].header("x-license-key"), Some("test-key"));
    /// # Ok(()) }
    /// ```
    pub fn license_key_header(mut self) -> Self {
        self.config.key_header = KeyHeader::LicenseKey;
        self
    }

    /// Chooses the header that carries the key.
    ///
    /// ```
    /// use newrelic_telemetry::MetricClient;
    /// use newrelic_telemetry::client::KeyHeader;
    ///
    /// // The same as `.license_key_header()`; see [`KeyHeader`] for a full example.
    /// let client = MetricClient::builder("key").key_header(KeyHeader::LicenseKey).build();
    /// assert!(client.is_ok());
    /// ```
    pub fn key_header(mut self, header: KeyHeader) -> Self {
        self.config.key_header = header;
        self
    }

    /// Chooses the data center (US by default).
    ///
    /// ```
    /// use newrelic_telemetry::{Region, SpanClient};
    ///
    /// let client = SpanClient::builder("key").region(Region::Eu).build().unwrap();
    /// assert_eq!(client.endpoint(), "https://trace-api.eu.newrelic.com/trace/v1");
    /// ```
    pub fn region(mut self, region: Region) -> Self {
        self.config.region = region;
        self
    }

    /// The timeout of each request, from sending to the end of the answer
    /// (default 15 s). It applies to a caller's own `reqwest::Client` too.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient, RetryPolicy};
    /// use newrelic_telemetry::client::{AttemptFailure, DropReason};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// tokio::time::pause(); // the 30 s below pass instantly
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(202).with_delay(Duration::from_secs(30)));
    /// let client = EventClient::builder("test-key")
    ///     .endpoint(server.event_url())
    ///     .timeout(Duration::from_secs(1))
    ///     .retry_policy(RetryPolicy::none())
    ///     .build()?;
    /// let err = client.send(Event::new("Slow")).await.unwrap_err();
    /// assert!(matches!(
    ///     err.report().first_drop_reason(),
    ///     Some(DropReason::RetriesExhausted { last: AttemptFailure::Timeout })
    /// ));
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Uses the caller's `reqwest::Client` (its proxies, pools and TLS
    /// settings). Configure it not to follow redirects
    /// (`reqwest::redirect::Policy::none()`), as the SDK's own client does:
    /// reqwest would carry the key header to another host.
    ///
    /// [`http_client_builder`] starts from the SDK's own settings (connect
    /// timeout, no redirects).
    ///
    /// ```
    /// use newrelic_telemetry::{LogClient, client};
    ///
    /// let http = client::http_client_builder()
    ///     .user_agent("checkout/1.4")
    ///     .build()
    ///     .unwrap();
    /// let client = LogClient::builder("key").http_client(http).build();
    /// assert!(client.is_ok());
    /// ```
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.config.http = Some(client);
        self
    }

    /// A proxy for the HTTP client the SDK builds. Without one, reqwest's
    /// standard `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` handling applies. Ignored
    /// when a client is given with [`http_client`](Self::http_client).
    ///
    /// ```
    /// use newrelic_telemetry::LogClient;
    ///
    /// let proxy = reqwest::Proxy::all("http://proxy.internal:3128").unwrap();
    /// let client = LogClient::builder("key").proxy(proxy).build();
    /// assert!(client.is_ok());
    /// ```
    pub fn proxy(mut self, proxy: reqwest::Proxy) -> Self {
        self.config.proxy = Some(proxy);
        self
    }

    /// Appends ` product/version` to the `User-Agent` header; calls accumulate.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Event, EventClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = EventClient::builder("test-key")
    ///     .endpoint(server.event_url())
    ///     .add_version_info("checkout", "2.1.0")
    ///     .build()?;
    /// client.send(Event::new("Ping")).await?;
    /// let agent = server.requests()[0].header("user-agent").unwrap().to_owned();
    /// assert!(agent.starts_with("NewRelic-Rust-TelemetrySDK/"));
    /// assert!(agent.ends_with(" checkout/2.1.0"));
    /// # Ok(()) }
    /// ```
    pub fn add_version_info(
        mut self,
        product: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        self.config
            .version_info
            .push((product.into(), version.into()));
        self
    }

    /// The retry policy ([`RetryPolicy::none`] sends each payload once).
    ///
    /// ```
    /// use newrelic_telemetry::{MetricClient, RetryPolicy};
    /// use std::time::Duration;
    ///
    /// let client = MetricClient::builder("key")
    ///     .retry_policy(RetryPolicy::default().with_max_retries(3).with_total_budget(Some(Duration::from_secs(30))))
    ///     .build();
    /// assert!(client.is_ok());
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// The largest compressed payload to post (default and maximum: the APIs'
    /// 10^6 bytes); larger ones are split before sending.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Common, Span, SpanClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = SpanClient::builder("test-key")
    ///     .endpoint(server.span_url())
    ///     .max_payload_bytes(1_000)
    ///     .build()?;
    /// let spans: Vec<Span> = (0..200).map(|i| Span::new(format!("step {i}")).finish()).collect();
    /// let report = client.send_batch(spans, Common::new()).await?;
    /// assert!(report.payloads().len() >= 2); // split to stay under 1,000 bytes
    /// assert!(server.requests().iter().all(|r| r.wire_bytes <= 1_000));
    /// assert_eq!(server.spans().len(), 200);
    /// # Ok(()) }
    /// ```
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.config.max_payload_bytes = bytes.clamp(1, MAX_PAYLOAD_BYTES);
        self
    }

    /// Logs every payload's JSON at DEBUG under the target
    /// `newrelic_telemetry::audit` (off by default).
    ///
    /// ```
    /// use newrelic_telemetry::LogClient;
    ///
    /// let client = LogClient::builder("key").audit_logging(true).build();
    /// assert!(client.is_ok());
    /// ```
    pub fn audit_logging(mut self, enabled: bool) -> Self {
        self.config.audit = enabled;
        self
    }

    /// The `instrumentation.provider` every item carries (default
    /// [`DEFAULT_INSTRUMENTATION_PROVIDER`], `newRelic`: see there why).
    /// Name the system that made the telemetry when this SDK only carries
    /// it, e.g. `opentelemetry` for a bridge from OpenTelemetry.
    ///
    /// An empty or blank name, or one over 4,000 characters (the smallest
    /// value limit of the four APIs), fails [`build`](Self::build) with
    /// [`BuildError::InvalidInstrumentationProvider`]; it is never cut or
    /// ignored. An attribute of the same key that a user sets (a common
    /// attribute, or an event's own) still wins.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Event, EventClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let client = EventClient::builder("test-key")
    ///     .endpoint(server.event_url())
    ///     .instrumentation_provider("opentelemetry")
    ///     .build()?;
    /// client.send(Event::new("Ping")).await?;
    /// let event = &server.events()[0];
    /// assert_eq!(event["instrumentation.provider"], "opentelemetry");
    /// assert_eq!(event["collector.name"], "newrelic-telemetry");
    /// assert_eq!(event["collector.version"], env!("CARGO_PKG_VERSION"));
    /// # Ok(()) }
    /// ```
    pub fn instrumentation_provider(mut self, provider: impl Into<String>) -> Self {
        self.config.instrumentation_provider = Arc::from(provider.into());
        self
    }

    /// Whether every item carries the identity attributes New Relic's
    /// exporter specification asks for (on by default):
    /// `instrumentation.provider` (see
    /// [`instrumentation_provider`](Self::instrumentation_provider)),
    /// `collector.name` ([`COLLECTOR_NAME`]) and `collector.version`
    /// ([`COLLECTOR_VERSION`]).
    ///
    /// Metric, Log and Trace payloads carry them once, in the common block's
    /// attributes; events, which have no common block, each carry them. They
    /// are defaults: an attribute of the same key that a user sets wins, and
    /// they take only the room the limit leaves where this crate checks it:
    /// an event's own and common attributes together (an event with 255 is
    /// sent without them), and a common block's own count. For metrics, logs
    /// and spans the APIs' per-item limit is checked on an item's own
    /// attributes, as for common attributes a user sets: the identity
    /// attributes add up to three to what each item carries. Turn them off only if
    /// something downstream cannot take them: the specification makes
    /// `instrumentation.provider` a MUST.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Log, LogClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let on = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// on.send(Log::new("with identity")).await?;
    /// let off = LogClient::builder("test-key")
    ///     .endpoint(server.log_url())
    ///     .identity_attributes(false)
    ///     .build()?;
    /// off.send(Log::new("without")).await?;
    ///
    /// let logs = server.logs();
    /// assert_eq!(logs[0]["attributes"]["instrumentation.provider"], "newRelic");
    /// assert_eq!(logs[0]["attributes"]["collector.name"], "newrelic-telemetry");
    /// assert!(logs[1].get("attributes").is_none());
    /// // The common block is where they travel on the Log, Metric and Trace APIs.
    /// assert_eq!(
    ///     server.requests()[0].body[0]["common"]["attributes"]["collector.version"],
    ///     env!("CARGO_PKG_VERSION")
    /// );
    /// # Ok(()) }
    /// ```
    pub fn identity_attributes(mut self, enabled: bool) -> Self {
        self.config.identity_attributes = enabled;
        self
    }

    /// Calls `callback` with the report of every dropped payload, after it is
    /// counted and logged. Keep it quick: it runs on the sending task.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient};
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(400));
    /// let dropped = Arc::new(AtomicUsize::new(0));
    /// let counter = dropped.clone();
    /// let client = EventClient::builder("test-key")
    ///     .endpoint(server.event_url())
    ///     .on_drop(move |report| { counter.fetch_add(report.items(), Ordering::Relaxed); })
    ///     .build()?;
    /// assert!(client.send(Event::new("Order")).await.is_err());
    /// assert_eq!(dropped.load(Ordering::Relaxed), 1);
    /// # Ok(()) }
    /// ```
    pub fn on_drop(mut self, callback: impl Fn(&PayloadReport) + Send + Sync + 'static) -> Self {
        self.config.on_drop = Some(Arc::new(callback));
        self
    }
}

impl<K: Kind> ClientBuilder<K> {
    /// Posts to this URL instead of the region's endpoint (plain `http://` is
    /// allowed, for local servers and alternative back ends). A URL with no
    /// path means "this host": the API's own path is appended. A path given
    /// is kept as it is.
    ///
    /// ```
    /// use newrelic_telemetry::{LogClient, MetricClient};
    ///
    /// let client = MetricClient::builder("key").endpoint("http://localhost:8080/metric/v1").build().unwrap();
    /// assert_eq!(client.endpoint(), "http://localhost:8080/metric/v1");
    /// // A host and port only: the Log API's path is appended.
    /// let client = LogClient::builder("key").endpoint("http://127.0.0.1:4318").build().unwrap();
    /// assert_eq!(client.endpoint(), "http://127.0.0.1:4318/log/v1");
    /// // Any other path is kept (a proxy that forwards it, say).
    /// let client = LogClient::builder("key").endpoint("https://proxy.internal/nr-logs").build().unwrap();
    /// assert_eq!(client.endpoint(), "https://proxy.internal/nr-logs");
    /// ```
    /// (Not on [`ClientSettings`]: a `Telemetry`'s endpoints are per API,
    /// set with [`TelemetryBuilder::metric_endpoint`](crate::TelemetryBuilder::metric_endpoint)
    /// and its siblings.)
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.endpoint = Some(url.into());
        self
    }

    /// Builds the client. Fails on an empty key or one that cannot be sent in a
    /// header, on an endpoint that is not an absolute `http(s)` URL, and on a
    /// bad product token.
    ///
    /// ```
    /// use newrelic_telemetry::{BuildError, EventClient};
    ///
    /// assert!(EventClient::builder("key").build().is_ok());
    /// let err = EventClient::builder("key").endpoint("not a url").build().unwrap_err();
    /// assert!(matches!(err, BuildError::InvalidEndpoint { .. }));
    /// ```
    pub fn build(self) -> Result<Client<K>, BuildError> {
        let c = self.config;
        if c.api_key.trim().is_empty() {
            return Err(BuildError::EmptyApiKey);
        }
        let mut key = HeaderValue::from_str(&c.api_key).map_err(|_| BuildError::InvalidApiKey)?;
        let provider = &c.instrumentation_provider;
        if provider.trim().is_empty() || provider.chars().count() > MAX_PROVIDER_CHARS {
            return Err(BuildError::InvalidInstrumentationProvider {
                provider: provider.to_string(),
            });
        }
        if let Some(reason) = c.retry.invalid() {
            return Err(BuildError::InvalidRetryPolicy { reason });
        }
        key.set_sensitive(true);

        let url_text = c
            .endpoint
            .clone()
            .unwrap_or_else(|| K::API.endpoint(c.region).to_owned());
        let url =
            parse_endpoint(&url_text, K::API).map_err(|reason| BuildError::InvalidEndpoint {
                url: url_text.clone(),
                reason,
            })?;

        let mut headers = HeaderMap::new();
        let key_header = match c.key_header {
            KeyHeader::ApiKey => "api-key",
            KeyHeader::LicenseKey => "x-license-key",
        };
        headers.insert(
            HeaderName::from_static(K::KEY_HEADER.unwrap_or(key_header)),
            key,
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(K::CONTENT_TYPE));
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(USER_AGENT, user_agent(&c.version_info)?);
        if K::DATA_FORMAT_HEADERS {
            headers.insert("data-format", HeaderValue::from_static("newrelic"));
            headers.insert("data-format-version", HeaderValue::from_static("1"));
        }

        let http = match c.http {
            Some(http) => http,
            None => sdk_http_client(c.proxy)?,
        };
        let mut sender = Sender::new(
            http,
            url,
            headers,
            c.timeout,
            c.retry,
            c.max_payload_bytes,
            c.audit,
            c.on_drop,
        );
        sender.disabled = c.disabled;
        sender.identity = c
            .identity_attributes
            .then(|| Identity::new(c.instrumentation_provider));
        Ok(Client {
            sender: Arc::new(sender),
        })
    }
}

/// `NewRelic-Rust-TelemetrySDK/<version>` plus ` product/version` tokens.
fn user_agent(version_info: &[(String, String)]) -> Result<HeaderValue, BuildError> {
    let mut agent = String::from(SDK_USER_AGENT);
    for (product, version) in version_info {
        let token_ok =
            |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        if !token_ok(product) || !token_ok(version) {
            return Err(BuildError::InvalidVersionInfo {
                token: format!("{product}/{version}"),
            });
        }
        agent.push(' ');
        agent.push_str(product);
        agent.push('/');
        agent.push_str(version);
    }
    HeaderValue::from_str(&agent).map_err(|_| BuildError::InvalidVersionInfo { token: agent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let builder = MetricClient::builder("super-secret-key-123");
        assert!(!format!("{builder:?}").contains("super-secret"));
        let client = builder.build().unwrap();
        assert!(!format!("{client:?}").contains("super-secret"));
    }

    #[test]
    fn bad_keys_are_errors_that_do_not_echo_the_key() {
        assert!(matches!(
            MetricClient::builder("").build(),
            Err(BuildError::EmptyApiKey)
        ));
        assert!(matches!(
            MetricClient::builder("   ").build(),
            Err(BuildError::EmptyApiKey)
        ));
        let err = MetricClient::builder("secret\nkey").build().unwrap_err();
        assert!(matches!(err, BuildError::InvalidApiKey));
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn endpoints_by_region_and_override() {
        let c = SpanClient::builder("k").build().unwrap();
        assert_eq!(c.endpoint(), "https://trace-api.newrelic.com/trace/v1");
        let c = EventClient::builder("k")
            .region(Region::Eu)
            .build()
            .unwrap();
        assert_eq!(
            c.endpoint(),
            "https://insights-collector.eu01.nr-data.net/v1/accounts/events"
        );
        let c = MetricClient::builder("k")
            .endpoint("http://127.0.0.1:9/metric/v1")
            .build()
            .unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:9/metric/v1");
        assert!(matches!(
            MetricClient::builder("k").endpoint("ftp://x/y").build(),
            Err(BuildError::InvalidEndpoint { .. })
        ));
        assert!(matches!(
            MetricClient::builder("k").endpoint("not a url").build(),
            Err(BuildError::InvalidEndpoint { .. })
        ));
    }

    /// A user's own `reqwest::Client` still builds beside the SDK's: the
    /// crate's TLS features never leave reqwest without a crypto provider.
    #[test]
    fn a_plain_reqwest_client_builds_beside_the_sdks() {
        assert!(sdk_http_client(None).is_ok());
        let plain = reqwest::Client::builder().build();
        assert!(plain.is_ok(), "{plain:?}");
    }

    #[test]
    fn the_sdk_http_client_builds_with_the_features_enabled() {
        assert!(sdk_http_client(None).is_ok());
    }

    #[test]
    fn version_info_is_validated() {
        assert!(matches!(
            MetricClient::builder("k")
                .add_version_info("my app", "1")
                .build(),
            Err(BuildError::InvalidVersionInfo { .. })
        ));
        assert!(
            MetricClient::builder("k")
                .add_version_info("app", "1.2")
                .build()
                .is_ok()
        );
    }
}
