//! One-call setup: the four batches, clients and harvesters from one key, one
//! HTTP client and one cancellation token, shut down with one awaited call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::attributes::{Attributes, Value};
use crate::batch::{EventBatch, LogBatch, MetricBatch, SpanBatch};
use crate::client::{
    Client, ClientBuilder, Events, Kind, Logs, Metrics, PayloadReport, Region, RetryPolicy, Spans,
    parse_endpoint, sdk_http_client,
};
use crate::error::ConfigError;
use crate::harvester::{
    DEFAULT_HARVEST_INTERVAL, DEFAULT_SHUTDOWN_TIMEOUT, HarvestReport, Harvester,
};

/// The environment variables [`TelemetryBuilder::build`] reads.
///
/// ```
/// use newrelic_telemetry::{Telemetry, env};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::ConfigError> {
/// assert_eq!(env::API_KEY, "NEW_RELIC_API_KEY");
/// let telemetry = Telemetry::builder()
///     .environment([(env::API_KEY, "key"), (env::LOG_API_URL, "http://127.0.0.1:9/log/v1")])
///     .build()?;
/// assert_eq!(telemetry.endpoints().log, "http://127.0.0.1:9/log/v1");
/// # telemetry.cancellation_token().cancel();
/// # Ok(()) }
/// ```
pub mod env {
    /// The API key (an ingest license key or an insert key).
    ///
    /// ```
    /// assert_eq!(newrelic_telemetry::env::API_KEY, "NEW_RELIC_API_KEY");
    /// ```
    pub const API_KEY: &str = "NEW_RELIC_API_KEY";
    /// Read when `NEW_RELIC_API_KEY` is not set.
    ///
    /// ```
    /// assert_eq!(newrelic_telemetry::env::LICENSE_KEY, "NEW_RELIC_LICENSE_KEY");
    /// ```
    pub const LICENSE_KEY: &str = "NEW_RELIC_LICENSE_KEY";
    /// `US` or `EU` (case-insensitive).
    ///
    /// ```
    /// assert_eq!(newrelic_telemetry::env::REGION, "NEW_RELIC_REGION");
    /// ```
    pub const REGION: &str = "NEW_RELIC_REGION";
    /// A full URL for the Metric API.
    ///
    /// ```
    /// assert_eq!(newrelic_telemetry::env::METRIC_API_URL, "NEW_RELIC_METRIC_API_URL");
    /// ```
    pub const METRIC_API_URL: &str = "NEW_RELIC_METRIC_API_URL";
    /// A full URL for the Event API.
    ///
    /// ```
    /// assert_eq!(newrelic_telemetry::env::EVENT_API_URL, "NEW_RELIC_EVENT_API_URL");
    /// ```
    pub const EVENT_API_URL: &str = "NEW_RELIC_EVENT_API_URL";
    /// A full URL for the Log API.
    ///
    /// ```
    /// assert_eq!(newrelic_telemetry::env::LOG_API_URL, "NEW_RELIC_LOG_API_URL");
    /// ```
    pub const LOG_API_URL: &str = "NEW_RELIC_LOG_API_URL";
    /// A full URL for the Trace API.
    ///
    /// ```
    /// assert_eq!(newrelic_telemetry::env::TRACE_API_URL, "NEW_RELIC_TRACE_API_URL");
    /// ```
    pub const TRACE_API_URL: &str = "NEW_RELIC_TRACE_API_URL";
    /// The harvest period in seconds (a positive number; fractions allowed).
    ///
    /// ```
    /// assert_eq!(newrelic_telemetry::env::HARVEST_INTERVAL, "NEW_RELIC_HARVEST_INTERVAL");
    /// ```
    pub const HARVEST_INTERVAL: &str = "NEW_RELIC_HARVEST_INTERVAL";
}

/// Where configuration values that code did not set come from.
#[derive(Clone)]
enum Source {
    Process,
    Map(HashMap<String, String>),
}

impl Source {
    fn get(&self, name: &str) -> Option<String> {
        let value = match self {
            Source::Process => std::env::var(name).ok(),
            Source::Map(map) => map.get(name).cloned(),
        };
        value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// The names of the variables this source holds (for `Debug`: never values).
    fn names(&self) -> Vec<String> {
        match self {
            Source::Process => vec!["<process environment>".to_owned()],
            Source::Map(map) => {
                let mut names: Vec<_> = map.keys().cloned().collect();
                names.sort();
                names
            }
        }
    }
}

/// The four pipelines of a service, set up and shut down together.
///
/// ```no_run
/// use newrelic_telemetry::{Event, Telemetry};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Key, region, endpoints and harvest interval from NEW_RELIC_* variables.
/// let telemetry = Telemetry::builder().service_name("checkout").build()?;
///
/// telemetry.metrics().record_count("orders", 1.0, [("plan", "pro")]).await?;
/// telemetry.events().record(Event::new("Order").with_attribute("total", 42.0)).await?;
///
/// // On SIGTERM: stop all four harvesters, send what is buffered, report.
/// let report = telemetry.shutdown().await;
/// println!("sent {} items, dropped {}", report.items_sent(), report.items_dropped());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Telemetry {
    endpoints: Endpoints,
    metrics: Arc<MetricBatch>,
    events: Arc<EventBatch>,
    logs: Arc<LogBatch>,
    spans: Arc<SpanBatch>,
    harvesters: [Harvester; 4],
    token: CancellationToken,
}

/// Where a [`Telemetry`] sends each kind of data.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().build()?;
/// let endpoints = telemetry.endpoints();
/// assert_eq!(endpoints.metric, server.metric_url());
/// assert_eq!(endpoints.trace, server.trace_url());
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoints {
    /// The Metric API's URL.
    pub metric: String,
    /// The Event API's URL.
    pub event: String,
    /// The Log API's URL.
    pub log: String,
    /// The Trace API's URL.
    pub trace: String,
}

/// How the four harvesters of a [`Telemetry`] ended.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().build()?;
/// telemetry.metrics().record_count("signups", 1.0, ()).await?;
/// telemetry.metrics().record_gauge("queue.depth", 3.0, ()).await?;
///
/// let report = telemetry.shutdown().await;
/// assert_eq!(report.metrics.delivery.items_sent, 2);
/// assert_eq!((report.items_sent(), report.items_dropped()), (2, 0));
/// assert!(!report.deadline_exceeded());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TelemetryReport {
    /// The metric harvester's report.
    pub metrics: HarvestReport,
    /// The event harvester's report.
    pub events: HarvestReport,
    /// The log harvester's report.
    pub logs: HarvestReport,
    /// The span harvester's report.
    pub spans: HarvestReport,
}

impl TelemetryReport {
    fn all(&self) -> [&HarvestReport; 4] {
        [&self.metrics, &self.events, &self.logs, &self.spans]
    }

    /// Items sent by all four harvesters.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.items_sent(), 2); // one metric, one log
    /// # Ok(()) }
    /// ```
    pub fn items_sent(&self) -> u64 {
        self.all().iter().map(|r| r.delivery.items_sent).sum()
    }

    /// Items dropped by all four harvesters, for any reason.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.items_dropped(), 0);
    /// # Ok(()) }
    /// ```
    pub fn items_dropped(&self) -> u64 {
        self.all().iter().map(|r| r.delivery.items_dropped()).sum()
    }

    /// Whether any harvester hit its shutdown deadline.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert!(!report.deadline_exceeded());
    /// # Ok(()) }
    /// ```
    pub fn deadline_exceeded(&self) -> bool {
        self.all().iter().any(|r| r.deadline_exceeded)
    }
}

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
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.metrics()[0]["attributes"]["service.name"], "checkout");
    /// # Ok(()) }
    /// ```
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// Everything from the environment: `Telemetry::builder().build()`.
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // Fails with a `ConfigError` when no key is set.
    /// match Telemetry::from_env() {
    ///     Ok(telemetry) => { telemetry.shutdown().await; }
    ///     Err(e) => eprintln!("telemetry disabled: {e}"),
    /// }
    /// # }
    /// ```
    pub fn from_env() -> Result<Telemetry, ConfigError> {
        Telemetry::builder().build()
    }

    /// The URLs the four pipelines send to (worth logging at startup).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// assert_eq!(telemetry.endpoints().event, server.event_url());
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The metric batch.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.metrics()[0]["name"], "orders");
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> &Arc<MetricBatch> {
        &self.metrics
    }

    /// The event batch.
    ///
    /// ```
    /// use newrelic_telemetry::Event;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.events().record(Event::new("Order")).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.events()[0]["eventType"], "Order");
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> &Arc<EventBatch> {
        &self.events
    }

    /// The log batch.
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.logs().record(Log::new("ready")).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.logs()[0]["message"], "ready");
    /// # Ok(()) }
    /// ```
    pub fn logs(&self) -> &Arc<LogBatch> {
        &self.logs
    }

    /// The span batch.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.spans().record(Span::new("checkout").finish()).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.spans()[0]["attributes"]["name"], "checkout");
    /// # Ok(()) }
    /// ```
    pub fn spans(&self) -> &Arc<SpanBatch> {
        &self.spans
    }

    /// The token that stops all four harvesters (a child of the one given to
    /// the builder, if any).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.cancellation_token().cancel(); // stops all four harvesters
    /// let report = telemetry.join().await;
    /// assert!(report.metrics.completed && report.spans.completed);
    /// # Ok(()) }
    /// ```
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.token
    }

    /// Asks all four harvesters for a harvest now.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// telemetry.harvest_now(); // no need to wait for the next tick
    /// assert!(server.wait_for_requests(1, std::time::Duration::from_secs(10)).await);
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn harvest_now(&self) {
        for h in &self.harvesters {
            h.harvest_now();
        }
    }

    /// Stops the harvesters and waits for them to send what is buffered (each
    /// within its shutdown deadline, all four at once). Calling it again
    /// returns the same report.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.events().record(newrelic_telemetry::Event::new("Order")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.events.delivery.items_sent, 1);
    /// assert_eq!(telemetry.shutdown().await, report); // calling it again is harmless
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> TelemetryReport {
        self.token.cancel();
        self.join().await
    }

    /// Waits for the harvesters to end without stopping them (for when the
    /// token given to the builder is cancelled elsewhere).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let service = CancellationToken::new();
    /// let telemetry = server.telemetry_builder().cancellation_token(service.clone()).build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("bye")).await?;
    ///
    /// service.cancel(); // elsewhere, on SIGTERM
    /// assert_eq!(telemetry.join().await.logs.delivery.items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub async fn join(&self) -> TelemetryReport {
        let [m, e, l, s] = &self.harvesters;
        let (metrics, events, logs, spans) = tokio::join!(m.join(), e.join(), l.join(), s.join());
        TelemetryReport {
            metrics,
            events,
            logs,
            spans,
        }
    }
}

/// Configures a [`Telemetry`]. Settings made in code win over environment
/// variables (see [`env`](crate::env)); a malformed variable is an
/// error naming it.
///
/// | setting | code | environment | default |
/// |---|---|---|---|
/// | key | [`api_key`](Self::api_key) | `NEW_RELIC_API_KEY`, then `NEW_RELIC_LICENSE_KEY` | none: an error |
/// | region | [`region`](Self::region) | `NEW_RELIC_REGION` (`US`, `EU`) | EU for `eu01xx` keys, else US |
/// | endpoints | [`metric_endpoint`](Self::metric_endpoint), ... | `NEW_RELIC_METRIC_API_URL`, `NEW_RELIC_EVENT_API_URL`, `NEW_RELIC_LOG_API_URL`, `NEW_RELIC_TRACE_API_URL` | the region's |
/// | harvest interval | [`harvest_interval`](Self::harvest_interval) | `NEW_RELIC_HARVEST_INTERVAL` (seconds) | 5 s |
/// | proxy | [`proxy`](Self::proxy) | `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` (reqwest's handling) | none |
///
/// ```
/// use newrelic_telemetry::{Region, Telemetry};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::ConfigError> {
/// let telemetry = Telemetry::builder()
///     .environment([("NEW_RELIC_API_KEY", "eu01xx-example"), ("NEW_RELIC_HARVEST_INTERVAL", "10")])
///     .harvest_interval(Duration::from_secs(2)) // code wins
///     .build()?;
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
pub struct TelemetryBuilder {
    source: Source,
    api_key: Option<String>,
    region: Option<Region>,
    endpoints: [Option<String>; 4],
    harvest_interval: Option<Duration>,
    shutdown_timeout: Duration,
    token: Option<CancellationToken>,
    common_attributes: Attributes,
    client: ClientBuilder<Metrics>,
}

impl std::fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("environment", &self.source.names())
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("region", &self.region)
            .field("endpoints", &self.endpoints)
            .field("harvest_interval", &self.harvest_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("common_attributes", &self.common_attributes)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Default for TelemetryBuilder {
    fn default() -> Self {
        TelemetryBuilder {
            source: Source::Process,
            api_key: None,
            region: None,
            endpoints: Default::default(),
            harvest_interval: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            token: None,
            common_attributes: Attributes::new(),
            client: Client::<Metrics>::builder(String::new()),
        }
    }
}

const METRIC: usize = 0;
const EVENT: usize = 1;
const LOG: usize = 2;
const TRACE: usize = 3;
const URL_VARIABLES: [&str; 4] = [
    env::METRIC_API_URL,
    env::EVENT_API_URL,
    env::LOG_API_URL,
    env::TRACE_API_URL,
];

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
    /// assert_eq!(telemetry.endpoints().log, "https://log-api.eu.newrelic.com/log/v1");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
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
    /// assert_eq!(telemetry.endpoints().metric, "https://metric-api.eu.newrelic.com/metric/v1");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The data center.
    ///
    /// ```
    /// use newrelic_telemetry::{Region, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder().environment(no_env).api_key("key").region(Region::EU).build()?;
    /// assert_eq!(telemetry.endpoints().trace, "https://trace-api.eu.newrelic.com/trace/v1");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn region(mut self, region: Region) -> Self {
        self.region = Some(region);
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
    /// assert_eq!(telemetry.endpoints().metric, "http://localhost:8080/metric");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn metric_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints[METRIC] = Some(url.into());
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
    /// assert_eq!(telemetry.endpoints().event, "http://localhost:8080/event");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn event_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints[EVENT] = Some(url.into());
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
    /// assert_eq!(telemetry.endpoints().log, "http://localhost:8080/log");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn log_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints[LOG] = Some(url.into());
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
    ///     .trace_endpoint("http://localhost:8080/trace")
    ///     .build()?;
    /// assert_eq!(telemetry.endpoints().trace, "http://localhost:8080/trace");
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn trace_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints[TRACE] = Some(url.into());
        self
    }

    /// How often each harvester harvests.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// use std::time::Duration;
    /// // Overrides NEW_RELIC_HARVEST_INTERVAL.
    /// let telemetry = server.telemetry_builder().harvest_interval(Duration::from_secs(60)).build()?;
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn harvest_interval(mut self, interval: Duration) -> Self {
        self.harvest_interval = Some(interval);
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
    /// telemetry.logs().record(newrelic_telemetry::Log::new("bye")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert!(!report.deadline_exceeded());
    /// # Ok(()) }
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
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
    /// use newrelic_telemetry::attributes;
    /// let telemetry = server
    ///     .telemetry_builder()
    ///     .common_attributes(attributes! { "host" => "web-1", "env" => "prod" })
    ///     .build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.logs()[0]["attributes"]["env"], "prod");
    /// # Ok(()) }
    /// ```
    pub fn common_attributes(mut self, attributes: Attributes) -> Self {
        self.common_attributes.absorb(attributes);
        self
    }

    /// Sets the common attribute `service.name`.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().service_name("checkout").build()?;
    /// telemetry.events().record(newrelic_telemetry::Event::new("Order")).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.events()[0]["service.name"], "checkout");
    /// # Ok(()) }
    /// ```
    pub fn service_name(mut self, name: impl Into<Value>) -> Self {
        self.common_attributes.insert("service.name", name);
        self
    }

    /// A proxy for the shared HTTP client (ignored when a client is given
    /// with [`http_client`](Self::http_client)).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let proxy = reqwest::Proxy::https("http://proxy.internal:3128")?;
    /// let telemetry = server.telemetry_builder().proxy(proxy).build()?;
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn proxy(mut self, proxy: reqwest::Proxy) -> Self {
        self.client = self.client.proxy(proxy);
        self
    }

    /// Uses the caller's `reqwest::Client` for all four APIs. Configure it not
    /// to follow redirects (`reqwest::redirect::Policy::none()`), as the SDK's
    /// own client does: reqwest would carry the key header to another host.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let http = reqwest::Client::builder()
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .build()?;
    /// let telemetry = server.telemetry_builder().http_client(http).build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.logs().len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = self.client.http_client(client);
        self
    }

    /// The request timeout of every client.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// use std::time::Duration;
    /// let telemetry = server.telemetry_builder().timeout(Duration::from_secs(5)).build()?;
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.timeout(timeout);
        self
    }

    /// The retry policy of every client.
    ///
    /// ```
    /// use newrelic_telemetry::RetryPolicy;
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(503));
    /// let telemetry = server.telemetry_builder().retry_policy(RetryPolicy::none()).build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("lost")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.logs.delivery.items_dropped_retries_exhausted, 1);
    /// # Ok(()) }
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.client = self.client.retry_policy(policy);
        self
    }

    /// Sends the key in `X-License-Key` instead of `Api-Key`.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().license_key_header().build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.requests()[0].header("x-license-key"), Some("test-key"));
    /// # Ok(()) }
    /// ```
    pub fn license_key_header(mut self) -> Self {
        self.client = self.client.license_key_header();
        self
    }

    /// Appends ` product/version` to every client's `User-Agent`.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().add_version_info("checkout", "2.1.0").build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// telemetry.shutdown().await;
    /// assert!(server.requests()[0].header("user-agent").unwrap().ends_with(" checkout/2.1.0"));
    /// # Ok(()) }
    /// ```
    pub fn add_version_info(
        mut self,
        product: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        self.client = self.client.add_version_info(product, version);
        self
    }

    /// Logs every payload at DEBUG under `newrelic_telemetry::audit`.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().audit_logging(true).build()?;
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn audit_logging(mut self, enabled: bool) -> Self {
        self.client = self.client.audit_logging(enabled);
        self
    }

    /// Calls `callback` with every dropped payload's report, for all four APIs.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(403));
    /// let apis = Arc::new(Mutex::new(Vec::new()));
    /// let seen = apis.clone();
    /// let telemetry = server
    ///     .telemetry_builder()
    ///     .on_drop(move |report| seen.lock().unwrap().push(report.api()))
    ///     .build()?;
    /// telemetry.events().record(newrelic_telemetry::Event::new("Order")).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(*apis.lock().unwrap(), ["event"]);
    /// # Ok(()) }
    /// ```
    pub fn on_drop(mut self, callback: impl Fn(&PayloadReport) + Send + Sync + 'static) -> Self {
        self.client = self.client.on_drop(callback);
        self
    }

    fn invalid(name: &'static str, value: &str, expected: &'static str) -> ConfigError {
        ConfigError::InvalidVariable {
            name,
            value: value.to_owned(),
            expected,
        }
    }

    /// Reads the settings code did not make from the environment, builds the
    /// batches and clients, and spawns the four harvesters.
    ///
    /// Fails with a [`ConfigError`] naming the variable when one is malformed,
    /// when there is no key, or outside a Tokio runtime.
    ///
    /// ```
    /// use newrelic_telemetry::{ConfigError, Telemetry};
    ///
    /// // Outside a Tokio runtime there is nothing to run the harvesters on.
    /// let err = Telemetry::builder().api_key("key").build().unwrap_err();
    /// assert!(matches!(err, ConfigError::NoRuntime));
    /// ```
    pub fn build(self) -> Result<Telemetry, ConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::NoRuntime);
        }
        let (key, key_variable) = match self.api_key.clone().filter(|k| !k.trim().is_empty()) {
            Some(key) => (key, None),
            None => [env::API_KEY, env::LICENSE_KEY]
                .into_iter()
                .find_map(|name| self.source.get(name).map(|key| (key, Some(name))))
                .ok_or(ConfigError::MissingApiKey)?,
        };
        if let Some(name) = key_variable {
            if reqwest::header::HeaderValue::from_str(&key).is_err() {
                return Err(ConfigError::InvalidVariable {
                    name,
                    value: "<redacted>".to_owned(),
                    expected: "a key of visible ASCII characters",
                });
            }
        }
        let region = match (self.region, self.source.get(env::REGION)) {
            (Some(region), _) => region,
            (None, Some(text)) => match text.trim().to_ascii_uppercase().as_str() {
                "US" => Region::US,
                "EU" => Region::EU,
                _ => return Err(Self::invalid(env::REGION, &text, "US or EU")),
            },
            (None, None) => Region::from_api_key(&key),
        };
        let interval = match (
            self.harvest_interval,
            self.source.get(env::HARVEST_INTERVAL),
        ) {
            (Some(interval), _) => interval,
            (None, Some(text)) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    Self::invalid(env::HARVEST_INTERVAL, &text, "a number of seconds above 0")
                })?,
            (None, None) => DEFAULT_HARVEST_INTERVAL,
        };
        let mut endpoints: [Option<String>; 4] = Default::default();
        for (i, slot) in endpoints.iter_mut().enumerate() {
            *slot = match (&self.endpoints[i], self.source.get(URL_VARIABLES[i])) {
                (Some(url), _) => Some(url.clone()),
                (None, Some(url)) => {
                    if parse_endpoint(&url).is_err() {
                        return Err(Self::invalid(
                            URL_VARIABLES[i],
                            &url,
                            "an absolute http:// or https:// URL",
                        ));
                    }
                    Some(url)
                }
                (None, None) => None,
            };
        }

        let mut template = self.client.with_api_key(key).region(region);
        if !template.has_http_client() {
            // One connection pool for all four APIs.
            let proxy = template.take_proxy();
            template = template.http_client(sdk_http_client(proxy)?);
        }
        let [metric_url, event_url, log_url, trace_url] = endpoints;
        let metric_client = client_for::<Metrics>(&template, metric_url)?;
        let event_client = client_for::<Events>(&template, event_url)?;
        let log_client = client_for::<Logs>(&template, log_url)?;
        let span_client = client_for::<Spans>(&template, trace_url)?;
        let endpoints = Endpoints {
            metric: metric_client.endpoint().to_owned(),
            event: event_client.endpoint().to_owned(),
            log: log_client.endpoint().to_owned(),
            trace: span_client.endpoint().to_owned(),
        };

        // The builders drop an empty set of common attributes.
        let common = self.common_attributes;
        let metrics = Arc::new(
            MetricBatch::builder()
                .common_attributes(common.clone())
                .build(),
        );
        let events = Arc::new(
            EventBatch::builder()
                .common_attributes(common.clone())
                .build(),
        );
        let logs = Arc::new(
            LogBatch::builder()
                .common_attributes(common.clone())
                .build(),
        );
        let spans = Arc::new(SpanBatch::builder().common_attributes(common).build());

        let token = self
            .token
            .as_ref()
            .map_or_else(CancellationToken::new, CancellationToken::child_token);
        let harvesters = [
            spawn_harvester(
                metrics.clone(),
                metric_client,
                interval,
                self.shutdown_timeout,
                &token,
            ),
            spawn_harvester(
                events.clone(),
                event_client,
                interval,
                self.shutdown_timeout,
                &token,
            ),
            spawn_harvester(
                logs.clone(),
                log_client,
                interval,
                self.shutdown_timeout,
                &token,
            ),
            spawn_harvester(
                spans.clone(),
                span_client,
                interval,
                self.shutdown_timeout,
                &token,
            ),
        ];
        Ok(Telemetry {
            endpoints,
            metrics,
            events,
            logs,
            spans,
            harvesters,
            token,
        })
    }
}

fn client_for<K: Kind>(
    template: &ClientBuilder<Metrics>,
    endpoint: Option<String>,
) -> Result<Client<K>, ConfigError> {
    let builder = template.for_kind::<K>();
    let builder = match endpoint {
        Some(url) => builder.endpoint(url),
        None => builder,
    };
    Ok(builder.build()?)
}

fn spawn_harvester<K: Kind>(
    batch: Arc<K::Batch>,
    client: Client<K>,
    interval: Duration,
    shutdown_timeout: Duration,
    token: &CancellationToken,
) -> Harvester {
    Harvester::builder(batch, client)
        .harvest_interval(interval)
        .shutdown_timeout(shutdown_timeout)
        .cancellation_token(token.clone())
        .spawn()
}
