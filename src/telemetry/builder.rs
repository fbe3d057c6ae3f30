//! [`TelemetryBuilder`]: the settings made in code, which win over the
//! environment, and `build()`, which resolves them and starts the pipelines.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::env::{Config, FromCode, Source};
use super::handle::Telemetry;
use super::per_api::ConfigureClients;
use super::pipelines;
use crate::api::Region;
use crate::attributes::{Attributes, Value};
use crate::batch::refusal::OnRefused;
use crate::batch::{HistogramKind, SeriesLimits};
use crate::budget::DEFAULT_MEMORY_BUDGET;
use crate::client::ClientSettings;
use crate::error::{ConfigError, RecordError};
use crate::harvester::DEFAULT_SHUTDOWN_TIMEOUT;

/// Configures a [`Telemetry`]. Settings made in code win over environment
/// variables (see [`env`](crate::env)); a malformed variable is an
/// error naming it.
///
/// | setting | code | environment | default |
/// |---|---|---|---|
/// | on or off | [`enabled`](Self::enabled) | `NEW_RELIC_ENABLED` (`true`, `false`) | on |
/// | key | [`api_key`](Self::api_key) | `NEW_RELIC_API_KEY`, then `NEW_RELIC_LICENSE_KEY` | none: an error (unless off, or [`require_api_key(false)`](Self::require_api_key): off with a WARN) |
/// | region | [`region`](Self::region) | `NEW_RELIC_REGION` (`US`, `EU`, `FEDRAMP`) | EU for `eu01xx` keys, else US |
/// | endpoints | [`metric_endpoint`](Self::metric_endpoint), ..., [`otlp_endpoint`](Self::otlp_endpoint) | `NEW_RELIC_METRIC_API_URL`, `NEW_RELIC_EVENT_API_URL`, `NEW_RELIC_LOG_API_URL`, `NEW_RELIC_SPAN_API_URL`, `NEW_RELIC_OTLP_API_URL` (no path: the API's path is appended) | the region's |
/// | harvest interval | [`harvest_interval`](Self::harvest_interval) | `NEW_RELIC_HARVEST_INTERVAL` (seconds, 0.001 to 86,400) | 5 s |
/// | service name | [`service_name`](Self::service_name) | `NEW_RELIC_SERVICE_NAME`, then `OTEL_SERVICE_NAME` | none |
/// | common attributes | [`common_attributes`](Self::common_attributes) (wins key by key, `service.name` included) | `NEW_RELIC_COMMON_ATTRIBUTES` (`k=v,k2=v2`; a service name from the variables above wins over its `service.name`) | none |
/// | trace sample ratio | [`trace_sample_ratio`](Self::trace_sample_ratio) | `NEW_RELIC_TRACE_SAMPLE_RATIO` (0 to 1) | 1 |
/// | proxy | [`client`](Self::client)`(\|c\| c.proxy(..))` | `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` (reqwest's handling) | none |
///
/// Everything else the four clients share (request timeout, retry policy,
/// key header, `User-Agent` tokens, audit logging, the `on_drop` callback,
/// your own `reqwest::Client`) is set with [`client`](Self::client), in terms
/// of [`ClientSettings`]' own methods.
///
/// ```
/// use newrelic_telemetry::{Region, Telemetry};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::ConfigError> {
/// let telemetry = Telemetry::builder()
///     .environment([("NEW_RELIC_API_KEY", "eu01xx-example"), ("NEW_RELIC_REGION", "nowhere")])
///     .region(Region::Us) // code wins: the variable is not even read
///     .harvest_interval(Duration::from_secs(2))
///     .client(|c| c.timeout(Duration::from_secs(5)))
///     .build()?;
/// assert_eq!(telemetry.endpoints().metrics, "https://metric-api.newrelic.com/metric/v1");
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build()` is called"]
pub struct TelemetryBuilder {
    source: Source,
    code: FromCode,
    shutdown_timeout: Duration,
    memory_budget: usize,
    series_limits: SeriesLimits,
    histograms: HistogramKind,
    token: Option<CancellationToken>,
    /// Laid over the attributes from the environment and the service name.
    common_attributes: Attributes,
    /// Applied in order to the four clients' shared settings, once the key
    /// and region are known.
    configure_clients: Vec<ConfigureClients>,
    on_refused: Option<OnRefused>,
}

impl std::fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = &self.code;
        f.debug_struct("TelemetryBuilder")
            .field("environment", &self.source.names())
            .field("enabled", &code.enabled)
            .field("api_key", &code.api_key.as_ref().map(|_| "<redacted>"))
            .field("region", &code.region)
            .field("endpoints", &code.endpoints)
            .field("harvest_interval", &code.harvest_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("memory_budget", &self.memory_budget)
            .field("series_limits", &self.series_limits)
            .field("histograms", &self.histograms)
            .field("common_attributes", &self.common_attributes)
            .field("client_closures", &self.configure_clients.len())
            .finish_non_exhaustive()
    }
}

impl Default for TelemetryBuilder {
    fn default() -> Self {
        TelemetryBuilder {
            source: Source::Process,
            code: FromCode::default(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            series_limits: SeriesLimits::default(),
            histograms: HistogramKind::default(),
            token: None,
            common_attributes: Attributes::new(),
            configure_clients: Vec::new(),
            on_refused: None,
        }
    }
}

impl TelemetryBuilder {
    /// Reads unset settings from these pairs instead of the process
    /// environment (for tests, or configuration from another source).
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let telemetry = Telemetry::builder()
    ///     .environment([("NEW_RELIC_API_KEY", "key"), ("NEW_RELIC_REGION", "EU")])
    ///     .build()?;
    /// assert_eq!(telemetry.endpoints().logs, "https://log-api.eu.newrelic.com/log/v1");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn environment<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.source = Source::Map(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Whether anything is sent (default: on, unless `NEW_RELIC_ENABLED` says
    /// `false`; this setting wins over the variable). Off means off: a
    /// disabled `Telemetry` needs no key and makes no request; recording by
    /// name and recording items return at once, before any check, keeping
    /// and counting nothing; the tracing layer and the HTTP middlewares
    /// build no span or log for export; the `metrics` recorder hands out
    /// handles that do nothing. Handles bound with
    /// [`MetricBatch::counter`](crate::MetricBatch::counter) and its siblings
    /// still work, and what they aggregate is let go at each harvest,
    /// counted in
    /// [`DeliveryStats::items_discarded`](crate::client::DeliveryStats::items_discarded).
    /// Since no span is built, a disabled service does not pass an incoming
    /// `traceparent` on: a trace through it starts again after it. For
    /// development machines and tests, instead of carrying an
    /// `Option<Telemetry>` around.
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder().environment(no_env).enabled(false).build()?; // no key
    /// telemetry.metrics().record_count("requests", 1, [("route", "/")]).await;
    /// // Not even checked: nothing is kept, so nothing is refused.
    /// assert_eq!(telemetry.metrics().try_record_gauge("load", f64::NAN, ()).await, Ok(()));
    /// assert_eq!(telemetry.metrics().series_count(), 0);
    ///
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.items_sent(), 0);
    /// assert_eq!(report.items_discarded(), 0);
    /// assert_eq!(report.items_refused(), 0);
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.code.enabled = Some(enabled);
        self
    }

    /// The API key.
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder().environment(no_env).api_key("eu01xxkey").build()?;
    /// // An `eu01xx` key picks the EU region unless one is set.
    /// assert_eq!(telemetry.endpoints().metrics, "https://metric-api.eu.newrelic.com/metric/v1");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.code.api_key = Some(key.into());
        self
    }

    /// The data center (a region set in [`client`](Self::client) wins over
    /// this one).
    ///
    /// ```
    /// use newrelic_telemetry::{Region, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder().environment(no_env).api_key("key").region(Region::Eu).build()?;
    /// assert_eq!(telemetry.endpoints().spans, "https://trace-api.eu.newrelic.com/trace/v1");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn region(mut self, region: Region) -> Self {
        self.code.region = Some(region);
        self
    }

    /// The Metric API's URL.
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder()
    ///     .environment(no_env)
    ///     .api_key("key")
    ///     .metric_endpoint("http://localhost:8080/metric")
    ///     .build()?;
    /// assert_eq!(telemetry.endpoints().metrics, "http://localhost:8080/metric");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn metric_endpoint(mut self, url: impl Into<String>) -> Self {
        self.code.endpoints.metrics = Some(url.into());
        self
    }

    /// The Event API's URL.
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder()
    ///     .environment(no_env)
    ///     .api_key("key")
    ///     .event_endpoint("http://localhost:8080/event")
    ///     .build()?;
    /// assert_eq!(telemetry.endpoints().events, "http://localhost:8080/event");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn event_endpoint(mut self, url: impl Into<String>) -> Self {
        self.code.endpoints.events = Some(url.into());
        self
    }

    /// The Log API's URL.
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder()
    ///     .environment(no_env)
    ///     .api_key("key")
    ///     .log_endpoint("http://localhost:8080/log")
    ///     .build()?;
    /// assert_eq!(telemetry.endpoints().logs, "http://localhost:8080/log");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn log_endpoint(mut self, url: impl Into<String>) -> Self {
        self.code.endpoints.logs = Some(url.into());
        self
    }

    /// The Trace API's URL.
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder()
    ///     .environment(no_env)
    ///     .api_key("key")
    ///     .span_endpoint("http://localhost:8080/trace")
    ///     .build()?;
    /// assert_eq!(telemetry.endpoints().spans, "http://localhost:8080/trace");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn span_endpoint(mut self, url: impl Into<String>) -> Self {
        self.code.endpoints.spans = Some(url.into());
        self
    }

    /// New Relic's OTLP endpoint, where distributions go (a URL with no
    /// path means that host's `/v1/metrics`).
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder()
    ///     .environment(no_env)
    ///     .api_key("key")
    ///     .otlp_endpoint("http://localhost:4318")
    ///     .build()?;
    /// assert_eq!(telemetry.endpoints().otlp, "http://localhost:4318/v1/metrics");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn otlp_endpoint(mut self, url: impl Into<String>) -> Self {
        self.code.otlp_endpoint = Some(url.into());
        self
    }

    /// How often each harvester harvests: from 1 ms to a day; outside that
    /// range [`build`](Self::build) fails with
    /// [`ConfigError::InvalidSetting`].
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// use std::time::Duration;
    /// // Overrides NEW_RELIC_HARVEST_INTERVAL.
    /// let telemetry = server.telemetry_builder().harvest_interval(Duration::from_millis(100)).build()?;
    /// telemetry.events().record(newrelic_telemetry::Event::new("Order")).await;
    /// // Sent by the next harvest, with the telemetry still running.
    /// assert!(server.wait_for_requests(1, Duration::from_secs(10)).await);
    /// assert_eq!(server.events()[0]["eventType"], "Order");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn harvest_interval(mut self, interval: Duration) -> Self {
        self.code.harvest_interval = Some(interval);
        self
    }

    /// How long each harvester's shutdown may take (default 10 s).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// use std::time::Duration;
    /// let telemetry = server.telemetry_builder().shutdown_timeout(Duration::from_secs(2)).build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("bye")).await;
    /// let report = telemetry.shutdown().await;
    /// assert!(!report.deadline_exceeded());
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The most bytes each pipeline may hold in memory (default
    /// [`DEFAULT_MEMORY_BUDGET`], 16 MiB, so 64 MiB for the four, and 16 MiB
    /// more for the distributions' once it starts; at least 4 MiB each):
    /// what waits in its batch, what is being encoded, and the compressed
    /// payloads waiting to be sent. A distribution series' bucket pages
    /// count in the metric pipeline's. Past it a new item is refused
    /// ([`RecordError::MemoryBudgetFull`](crate::RecordError::MemoryBudgetFull),
    /// counted) and the oldest queued payloads make room for newer data.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().memory_budget(4 * 1024 * 1024).build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("hello")).await;
    ///
    /// let stats = telemetry.stats();
    /// assert_eq!(stats.logs.memory.budget_bytes, 4 * 1024 * 1024);
    /// assert_eq!(stats.held_items(), 1);
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// What the HTTP server middleware's request durations and the
    /// `metrics` facade's `histogram!` become: distributions (the default:
    /// percentiles in New Relic, sent over OTLP), or, with
    /// [`HistogramKind::Summary`], summaries (count, sum, min and max, sent
    /// to the Metric API), as before distributions existed.
    ///
    /// ```
    /// use newrelic_telemetry::batch::HistogramKind;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().histogram_kind(HistogramKind::Summary).build()?;
    /// telemetry.metrics().record_histogram("job.ms", 30.0, ()).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.metrics()[0]["type"], "summary");
    /// assert!(server.distributions().is_empty());
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn histogram_kind(mut self, kind: HistogramKind) -> Self {
        self.histograms = kind;
        self
    }

    /// Stops everything when `token` is cancelled (one token for the service).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// use tokio_util::sync::CancellationToken;
    /// let service = CancellationToken::new();
    /// let telemetry = server.telemetry_builder().cancellation_token(service.clone()).build()?;
    /// service.cancel(); // stops the telemetry along with the rest of the service
    /// assert!(telemetry.join().await.metrics.completed);
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn cancellation_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Attributes shared by every metric, event, log and span.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// use newrelic_telemetry::attrs;
    /// let telemetry = server
    ///     .telemetry_builder()
    ///     .common_attributes(attrs!["host" => "web-1", "env" => "prod"])
    ///     .build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.logs()[0]["attributes"]["env"], "prod");
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn common_attributes(mut self, attributes: impl Into<Attributes>) -> Self {
        self.common_attributes.absorb(attributes.into());
        self
    }

    /// Calls `f` with every item any of the batches refuses (the four, and
    /// the distributions' batch: a point it has no room for) (an
    /// invalid metric, a full buffer, the series limit, the memory budget,
    /// a recording after shutdown). Recording never returns an error: a
    /// refusal is counted in [`stats`](Telemetry::stats), logged at WARN
    /// once per harvest interval for each reason, and handed to `f`, which
    /// runs on the recording task or thread (keep it short).
    ///
    /// ```
    /// use newrelic_telemetry::{RecordError, test_util::TestIngestServer};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let refused = Arc::new(Mutex::new(Vec::new()));
    /// let seen = refused.clone();
    /// let telemetry = server
    ///     .telemetry_builder()
    ///     .on_refused(move |e: &RecordError| seen.lock().unwrap().push(e.clone()))
    ///     .build()?;
    /// telemetry.metrics().record_gauge("cpu", f64::NAN, ()).await;
    /// assert_eq!(*refused.lock().unwrap(), [RecordError::NonFiniteValue { name: "cpu".into() }]);
    /// telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn on_refused(mut self, f: impl Fn(&RecordError) + Send + Sync + 'static) -> Self {
        self.on_refused = Some(OnRefused::new(f));
        self
    }

    /// The most series each metric name holds before new attribute sets
    /// are recorded into its overflow series (default 2,000; 0: no limit);
    /// see [`MetricBatchBuilder::series_limit`](crate::batch::MetricBatchBuilder::series_limit).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().metric_series_limit(1).build()?;
    /// telemetry.metrics().record_count("logins", 1.0, [("user.id", 1)]).await;
    /// telemetry.metrics().record_count("logins", 1.0, [("user.id", 2)]).await;
    /// telemetry.shutdown().await;
    /// let metrics = server.metrics();
    /// assert_eq!(metrics.len(), 2);
    /// assert!(metrics.iter().any(|m| m["attributes"]["otel.metric.overflow"] == true));
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn metric_series_limit(mut self, limit: usize) -> Self {
        self.series_limits.set_default(limit);
        self
    }

    /// The series limit of one metric name, or of the names starting with
    /// a prefix when `pattern` ends in `*`; see
    /// [`MetricBatchBuilder::series_limit_for`](crate::batch::MetricBatchBuilder::series_limit_for).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server
    ///     .telemetry_builder()
    ///     .metric_series_limit_for("tenant.*", 10_000) // many tenants, on purpose
    ///     .build()?;
    /// for tenant in 0..3_000 {
    ///     telemetry.metrics().record_count("tenant.requests", 1.0, [("tenant", tenant)]).await;
    /// }
    /// assert!(telemetry.metrics().overflows().is_empty());
    /// telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn metric_series_limit_for(mut self, pattern: &str, limit: usize) -> Self {
        self.series_limits.set(pattern, limit);
        self
    }

    /// Sets the common attribute `service.name` (which names the service of
    /// every payload, the tracing layers' spans and logs included), instead of
    /// [`env::SERVICE_NAME`](crate::env::SERVICE_NAME) or
    /// [`env::OTEL_SERVICE_NAME`](crate::env::OTEL_SERVICE_NAME). A
    /// `service.name` given to [`common_attributes`](Self::common_attributes)
    /// wins over it.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().service_name("checkout").build()?;
    /// telemetry.events().record(newrelic_telemetry::Event::new("Order")).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.events()[0]["service.name"], "checkout");
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn service_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.code.service_name = Some(name.into());
        self
    }

    /// The share of traces the tracing layers of
    /// [`Telemetry::tracing_layer`](crate::Telemetry::tracing_layer) keep,
    /// from 0 to 1 (default 1), instead of
    /// [`env::TRACE_SAMPLE_RATIO`](crate::env::TRACE_SAMPLE_RATIO). The
    /// decision is made once per trace, at its root. A ratio outside 0 to 1,
    /// or NaN, fails [`build`](Self::build) with
    /// [`ConfigError::InvalidSetting`]; it is never clamped.
    ///
    /// ```
    /// use newrelic_telemetry::{ConfigError, Telemetry};
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().trace_sample_ratio(0.0).build()?;
    /// let _guard = tracing::subscriber::set_default(
    ///     tracing_subscriber::registry().with(telemetry.tracing_layer()),
    /// );
    /// tracing::info_span!("request").in_scope(|| {});
    /// let report = telemetry.shutdown().await;
    /// assert_eq!((report.layer.spans_recorded, report.layer.spans_unsampled), (0, 1));
    ///
    /// let err = server.telemetry_builder().trace_sample_ratio(f64::NAN).build().unwrap_err();
    /// assert!(matches!(err, ConfigError::InvalidSetting { name: "trace_sample_ratio", .. }));
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn trace_sample_ratio(mut self, ratio: f64) -> Self {
        self.code.trace_sample_ratio = Some(ratio);
        self
    }

    /// Whether a missing API key fails [`build`](Self::build) (`true`, the
    /// default: [`ConfigError::MissingApiKey`]). With `false`, a service
    /// started with no key (no key in code, no
    /// [`env::API_KEY`](crate::env::API_KEY) or
    /// [`env::LICENSE_KEY`](crate::env::LICENSE_KEY)) starts with telemetry
    /// disabled and one WARN, instead of not starting: recording returns at
    /// once, nothing is kept or sent (see [`enabled`](Self::enabled)).
    ///
    /// ```
    /// use newrelic_telemetry::{ConfigError, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_key: [(&str, &str); 0] = [];
    /// let err = Telemetry::builder().environment(no_key).build().unwrap_err();
    /// assert!(matches!(err, ConfigError::MissingApiKey));
    ///
    /// let telemetry = Telemetry::builder().environment(no_key).require_api_key(false).build()?;
    /// assert!(!telemetry.is_enabled());
    /// telemetry.metrics().record_count("requests", 1, ()).await;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!((report.items_sent(), report.items_refused()), (0, 0));
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn require_api_key(mut self, required: bool) -> Self {
        self.code.key_optional = !required;
        self
    }

    /// Configures the five clients (metric, event, log, span, OTLP) at once, with
    /// [`ClientSettings`]' own methods (those of a
    /// [`ClientBuilder`](crate::client::ClientBuilder) that belong to all
    /// four): request timeout, retry policy, key header, `User-Agent`
    /// tokens, identity attributes, proxy or your own `reqwest::Client`,
    /// payload size, audit logging, the `on_drop` callback. Calls add up, in
    /// order.
    ///
    /// The closure runs in [`build`](Self::build), after the key and region
    /// are resolved, so a region it sets wins over [`region`](Self::region)
    /// and the environment. Endpoints are per API: set them with
    /// [`metric_endpoint`](Self::metric_endpoint) and its siblings.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Log, RetryPolicy};
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(503));
    /// let dropped = Arc::new(AtomicUsize::new(0));
    /// let counter = dropped.clone();
    /// let telemetry = server
    ///     .telemetry_builder()
    ///     .client(move |c| {
    ///         c.timeout(Duration::from_secs(5))
    ///             .retry_policy(RetryPolicy::none()) // one attempt per payload
    ///             .license_key_header()
    ///             .add_version_info("checkout", "2.1.0")
    ///             .on_drop(move |report| {
    ///                 counter.fetch_add(report.items(), Ordering::Relaxed);
    ///             })
    ///     })
    ///     .build()?;
    /// telemetry.logs().record(Log::new("lost to the 503")).await;
    /// let report = telemetry.shutdown().await;
    ///
    /// assert_eq!(report.logs.delivery.items_dropped_retries_exhausted, 1);
    /// assert_eq!(dropped.load(Ordering::Relaxed), 1);
    /// let request = &server.requests()[0];
    /// assert_eq!(request.header("x-license-key"), Some("test-key"));
    /// assert!(request.header("user-agent").unwrap().ends_with(" checkout/2.1.0"));
    /// # Ok(()) }
    /// ```
    #[must_use = "builder methods return the changed builder"]
    pub fn client(
        mut self,
        configure: impl FnOnce(ClientSettings) -> ClientSettings + Send + Sync + 'static,
    ) -> Self {
        self.configure_clients.push(Box::new(configure));
        self
    }

    /// Reads the settings code did not make from the environment, builds the
    /// batches and clients, and spawns the four harvesters.
    ///
    /// Fails with a [`ConfigError`] naming the variable when one is malformed,
    /// when there is no key (unless telemetry is [disabled](Self::enabled)),
    /// or outside a Tokio runtime.
    ///
    /// ```
    /// use newrelic_telemetry::{ConfigError, Telemetry};
    ///
    /// // Outside a Tokio runtime there is nothing to run the harvesters on.
    /// let err = Telemetry::builder().api_key("key").build().unwrap_err();
    /// assert!(matches!(err, ConfigError::NoRuntime));
    /// ```
    #[must_use = "dropping the Telemetry stops its harvesters"]
    pub fn build(self) -> Result<Telemetry, ConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::NoRuntime);
        }
        let mut config = Config::resolve(&self.code, &self.source)?;
        // The environment's attributes, then the service name, then code's.
        let mut common_attributes = std::mem::take(&mut config.common_attributes);
        if let Some(name) = &config.service_name {
            common_attributes.insert("service.name", Value::String(name.clone()));
        }
        common_attributes.absorb(self.common_attributes);
        pipelines::start(
            config,
            self.configure_clients,
            pipelines::Settings {
                common_attributes,
                shutdown_timeout: self.shutdown_timeout,
                memory_budget: self.memory_budget,
                series_limits: self.series_limits,
                histograms: self.histograms,
                on_refused: self.on_refused,
                parent: self.token,
            },
        )
    }
}

// Where a `Telemetry` starts: beside the builder, so that the handle knows
// nothing of how it was built.
impl Telemetry {
    /// A builder; settings it is not given come from the environment.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// // `server.telemetry_builder()` is `Telemetry::builder()` pointed at the test server.
    /// let telemetry = server.telemetry_builder().service_name("checkout").build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.metrics()[0]["attributes"]["service.name"], "checkout");
    /// # Ok(()) }
    /// ```
    #[must_use = "a builder does nothing until `build()` is called"]
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// Everything from the environment: `Telemetry::builder().build()`.
    ///
    /// ```
    /// use newrelic_telemetry::{ConfigError, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // Fails with a `ConfigError` when no key is set (and telemetry is on).
    /// let keyed = ["NEW_RELIC_API_KEY", "NEW_RELIC_LICENSE_KEY"]
    ///     .iter()
    ///     .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
    /// match Telemetry::from_env() {
    ///     Ok(telemetry) => telemetry.shutdown().await.items_sent(),
    ///     Err(e) => {
    ///         assert!(matches!(e, ConfigError::MissingApiKey) && !keyed);
    ///         0
    ///     }
    /// };
    /// # }
    /// ```
    pub fn from_env() -> Result<Telemetry, ConfigError> {
        Telemetry::builder().build()
    }
}
