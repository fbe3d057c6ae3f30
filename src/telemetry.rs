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
pub mod env {
    /// The API key (an ingest license key or an insert key).
    pub const API_KEY: &str = "NEW_RELIC_API_KEY";
    /// Read when `NEW_RELIC_API_KEY` is not set.
    pub const LICENSE_KEY: &str = "NEW_RELIC_LICENSE_KEY";
    /// `US` or `EU` (case-insensitive).
    pub const REGION: &str = "NEW_RELIC_REGION";
    /// A full URL for the Metric API.
    pub const METRIC_API_URL: &str = "NEW_RELIC_METRIC_API_URL";
    /// A full URL for the Event API.
    pub const EVENT_API_URL: &str = "NEW_RELIC_EVENT_API_URL";
    /// A full URL for the Log API.
    pub const LOG_API_URL: &str = "NEW_RELIC_LOG_API_URL";
    /// A full URL for the Trace API.
    pub const TRACE_API_URL: &str = "NEW_RELIC_TRACE_API_URL";
    /// The harvest period in seconds (a positive number; fractions allowed).
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
    pub fn items_sent(&self) -> u64 {
        self.all().iter().map(|r| r.delivery.items_sent).sum()
    }

    /// Items dropped by all four harvesters, for any reason.
    pub fn items_dropped(&self) -> u64 {
        self.all().iter().map(|r| r.delivery.items_dropped()).sum()
    }

    /// Whether any harvester hit its shutdown deadline.
    pub fn deadline_exceeded(&self) -> bool {
        self.all().iter().any(|r| r.deadline_exceeded)
    }
}

impl Telemetry {
    /// A builder; settings it is not given come from the environment.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// Everything from the environment: `Telemetry::builder().build()`.
    pub fn from_env() -> Result<Telemetry, ConfigError> {
        Telemetry::builder().build()
    }

    /// The URLs the four pipelines send to (worth logging at startup).
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The metric batch.
    pub fn metrics(&self) -> &Arc<MetricBatch> {
        &self.metrics
    }

    /// The event batch.
    pub fn events(&self) -> &Arc<EventBatch> {
        &self.events
    }

    /// The log batch.
    pub fn logs(&self) -> &Arc<LogBatch> {
        &self.logs
    }

    /// The span batch.
    pub fn spans(&self) -> &Arc<SpanBatch> {
        &self.spans
    }

    /// The token that stops all four harvesters (a child of the one given to
    /// the builder, if any).
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.token
    }

    /// Asks all four harvesters for a harvest now.
    pub fn harvest_now(&self) {
        for h in &self.harvesters {
            h.harvest_now();
        }
    }

    /// Stops the harvesters and waits for them to send what is buffered (each
    /// within its shutdown deadline, all four at once). Calling it again
    /// returns the same report.
    pub async fn shutdown(&self) -> TelemetryReport {
        self.token.cancel();
        self.join().await
    }

    /// Waits for the harvesters to end without stopping them (for when the
    /// token given to the builder is cancelled elsewhere).
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
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The data center.
    pub fn region(mut self, region: Region) -> Self {
        self.region = Some(region);
        self
    }

    /// The Metric API's URL.
    pub fn metric_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints[METRIC] = Some(url.into());
        self
    }

    /// The Event API's URL.
    pub fn event_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints[EVENT] = Some(url.into());
        self
    }

    /// The Log API's URL.
    pub fn log_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints[LOG] = Some(url.into());
        self
    }

    /// The Trace API's URL.
    pub fn trace_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints[TRACE] = Some(url.into());
        self
    }

    /// How often each harvester harvests.
    pub fn harvest_interval(mut self, interval: Duration) -> Self {
        self.harvest_interval = Some(interval);
        self
    }

    /// How long each harvester's shutdown may take (default 10 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Stops everything when `token` is cancelled (one token for the service).
    pub fn cancellation_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Attributes shared by every metric, event, log and span.
    pub fn common_attributes(mut self, attributes: Attributes) -> Self {
        self.common_attributes
            .extend(attributes.iter().map(|(k, v)| (k, v.clone())));
        self
    }

    /// Sets the common attribute `service.name`.
    pub fn service_name(mut self, name: impl Into<Value>) -> Self {
        self.common_attributes.insert("service.name", name);
        self
    }

    /// A proxy for the shared HTTP client (ignored when a client is given
    /// with [`http_client`](Self::http_client)).
    pub fn proxy(mut self, proxy: reqwest::Proxy) -> Self {
        self.client = self.client.proxy(proxy);
        self
    }

    /// Uses the caller's `reqwest::Client` for all four APIs. Configure it not
    /// to follow redirects (`reqwest::redirect::Policy::none()`), as the SDK's
    /// own client does: reqwest would carry the key header to another host.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = self.client.http_client(client);
        self
    }

    /// The request timeout of every client.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.timeout(timeout);
        self
    }

    /// The retry policy of every client.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.client = self.client.retry_policy(policy);
        self
    }

    /// Sends the key in `X-License-Key` instead of `Api-Key`.
    pub fn license_key_header(mut self) -> Self {
        self.client = self.client.license_key_header();
        self
    }

    /// Appends ` product/version` to every client's `User-Agent`.
    pub fn add_version_info(
        mut self,
        product: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        self.client = self.client.add_version_info(product, version);
        self
    }

    /// Logs every payload at DEBUG under `newrelic_telemetry::audit`.
    pub fn audit_logging(mut self, enabled: bool) -> Self {
        self.client = self.client.audit_logging(enabled);
        self
    }

    /// Calls `callback` with every dropped payload's report, for all four APIs.
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

        let common = (!self.common_attributes.is_empty()).then_some(self.common_attributes);
        let metrics = Arc::new(match &common {
            Some(a) => MetricBatch::builder().common_attributes(a.clone()).build(),
            None => MetricBatch::new(),
        });
        let events = Arc::new(item_batch(&common));
        let logs = Arc::new(item_batch(&common));
        let spans = Arc::new(item_batch(&common));

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

fn item_batch<T: crate::batch::BatchItem>(
    common: &Option<Attributes>,
) -> crate::batch::ItemBatch<T> {
    match common {
        Some(a) => crate::batch::ItemBatch::builder()
            .common_attributes(a.clone())
            .build(),
        None => crate::batch::ItemBatch::new(),
    }
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
