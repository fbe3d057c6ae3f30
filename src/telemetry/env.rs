//! The environment variables [`TelemetryBuilder::build`](crate::TelemetryBuilder::build)
//! reads for every setting that code did not make. Values are trimmed; an
//! empty value counts as unset; a malformed one is a
//! [`ConfigError::InvalidVariable`] naming the variable.
//!
//! ```
//! use newrelic_telemetry::{ConfigError, Telemetry, env};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ConfigError> {
//! let telemetry = Telemetry::builder()
//!     .environment([
//!         (env::API_KEY, "eu01xx-key"), // an EU key: EU endpoints unless a region is set
//!         (env::LOG_API_URL, "http://127.0.0.1:9/log/v1"),
//!     ])
//!     .build()?;
//! let endpoints = telemetry.endpoints();
//! assert_eq!(endpoints.logs, "http://127.0.0.1:9/log/v1");
//! assert_eq!(endpoints.metrics, "https://metric-api.eu.newrelic.com/metric/v1");
//! # telemetry.cancellation_token().cancel();
//!
//! let err = Telemetry::builder()
//!     .environment([(env::API_KEY, "key"), (env::HARVEST_INTERVAL, "soon")])
//!     .build()
//!     .unwrap_err();
//! assert!(matches!(err, ConfigError::InvalidVariable { name: env::HARVEST_INTERVAL, .. }));
//! # Ok(()) }
//! ```

// Besides the names, this module turns what code set and what the
// environment holds into one typed `Config`, variable by variable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::per_api::PerApi;
use crate::api::{Api, Region};
use crate::attributes::Attributes;
use crate::client::parse_endpoint;
use crate::error::ConfigError;
use crate::harvester::DEFAULT_HARVEST_INTERVAL;

/// `NEW_RELIC_API_KEY`: the API key (an ingest license key or an insert key).
/// A key set in code wins; without either, [`LICENSE_KEY`] is read, and with
/// no key at all building fails with
/// [`ConfigError::MissingApiKey`](crate::ConfigError::MissingApiKey), unless
/// telemetry is disabled ([`ENABLED`]). The value is never shown in errors or
/// `Debug` output.
pub const API_KEY: &str = "NEW_RELIC_API_KEY";

/// `NEW_RELIC_LICENSE_KEY`: read when [`API_KEY`] is not set.
///
/// ```
/// use newrelic_telemetry::{Telemetry, env};
/// # use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = TestIngestServer::start().await?;
/// let telemetry = Telemetry::builder()
///     .environment([(env::LICENSE_KEY, "license-key"), (env::EVENT_API_URL, &server.event_url())])
///     .build()?;
/// telemetry.events().record(newrelic_telemetry::Event::new("Order")).await;
/// telemetry.shutdown().await;
/// assert_eq!(server.requests()[0].header("api-key"), Some("license-key"));
/// # Ok(()) }
/// ```
pub const LICENSE_KEY: &str = "NEW_RELIC_LICENSE_KEY";

/// `NEW_RELIC_REGION`: `US`, `EU` or `FEDRAMP` (also `GOV`; case-insensitive),
/// the data center whose endpoints the four APIs use. Unset, keys starting
/// `eu01xx` pick EU and others US; a region set in code wins.
///
/// ```
/// use newrelic_telemetry::{Telemetry, env};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::ConfigError> {
/// let telemetry = Telemetry::builder()
///     .environment([(env::API_KEY, "key"), (env::REGION, "eu")])
///     .build()?;
/// assert_eq!(telemetry.endpoints().spans, "https://trace-api.eu.newrelic.com/trace/v1");
/// # telemetry.cancellation_token().cancel();
/// # Ok(()) }
/// ```
pub const REGION: &str = "NEW_RELIC_REGION";

/// `NEW_RELIC_METRIC_API_URL`: an `http://` or `https://` URL the Metric
/// API's payloads go to instead of the region's endpoint. A URL with no path
/// (`http://127.0.0.1:4318`) means "this host": the API's path
/// (`/metric/v1`) is appended; a URL with a path is used as it is. The same
/// holds for the other three variables, and for URLs set in code.
///
/// ```
/// use newrelic_telemetry::{Telemetry, env};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), newrelic_telemetry::ConfigError> {
/// let telemetry = Telemetry::builder()
///     .environment([
///         (env::API_KEY, "key"),
///         (env::METRIC_API_URL, "http://127.0.0.1:4318"),
///         (env::LOG_API_URL, "http://127.0.0.1:4318/custom/logs"),
///     ])
///     .build()?;
/// assert_eq!(telemetry.endpoints().metrics, "http://127.0.0.1:4318/metric/v1");
/// assert_eq!(telemetry.endpoints().logs, "http://127.0.0.1:4318/custom/logs");
/// # telemetry.cancellation_token().cancel();
/// # Ok(()) }
/// ```
pub const METRIC_API_URL: &str = "NEW_RELIC_METRIC_API_URL";

/// `NEW_RELIC_EVENT_API_URL`: a URL for the Event API, as
/// [`METRIC_API_URL`] is for the Metric API.
pub const EVENT_API_URL: &str = "NEW_RELIC_EVENT_API_URL";

/// `NEW_RELIC_LOG_API_URL`: a URL for the Log API, as [`METRIC_API_URL`]
/// is for the Metric API.
pub const LOG_API_URL: &str = "NEW_RELIC_LOG_API_URL";

/// `NEW_RELIC_SPAN_API_URL`: a URL for the Trace API, as
/// [`METRIC_API_URL`] is for the Metric API.
pub const SPAN_API_URL: &str = "NEW_RELIC_SPAN_API_URL";

/// `NEW_RELIC_HARVEST_INTERVAL`: how often each harvester harvests, in
/// seconds: a number above 0 and at most a day, fractions allowed (default 5).
///
/// ```
/// use newrelic_telemetry::{Telemetry, env};
/// # use newrelic_telemetry::test_util::TestIngestServer;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// tokio::time::pause(); // the clock below moves only when told to
/// # let server = TestIngestServer::start().await?;
/// let telemetry = Telemetry::builder()
///     .environment([(env::API_KEY, "key"), (env::HARVEST_INTERVAL, "0.5")])
///     .metric_endpoint(server.metric_url())
///     .build()?;
/// telemetry.metrics().record_count("jobs", 1.0, ()).await;
/// // Harvested after half a second of tokio's clock, with no harvest_now()
/// // (with the default of 5 s, nothing would arrive within this second).
/// assert!(server.wait_for_requests(1, Duration::from_secs(1)).await);
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
pub const HARVEST_INTERVAL: &str = "NEW_RELIC_HARVEST_INTERVAL";

/// `NEW_RELIC_ENABLED`: `false` (or `0`, `no`, `off`; case-insensitive)
/// turns telemetry off: recording returns at once and keeps nothing, no
/// request is made, and no key is needed (see
/// [`TelemetryBuilder::enabled`](crate::TelemetryBuilder::enabled)). `true`, `1`, `yes`, `on` or unset:
/// on. A value set in code with
/// [`TelemetryBuilder::enabled`](crate::TelemetryBuilder::enabled) wins.
///
/// ```
/// use newrelic_telemetry::{Telemetry, env};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // No key anywhere: fine, since nothing will be sent.
/// let telemetry = Telemetry::builder().environment([(env::ENABLED, "false")]).build()?;
/// assert!(!telemetry.is_enabled());
/// telemetry.metrics().record_count("requests", 1, ()).await;
/// assert_eq!(telemetry.metrics().series_count(), 0); // nothing kept
/// let report = telemetry.shutdown().await;
/// assert_eq!(report.items_sent(), 0);
/// # Ok(()) }
/// ```
pub const ENABLED: &str = "NEW_RELIC_ENABLED";

/// `NEW_RELIC_SERVICE_NAME`: the service's name, sent as the common
/// attribute `service.name` on every item and given to the tracing layers.
/// A name set in code with
/// [`TelemetryBuilder::service_name`](crate::TelemetryBuilder::service_name)
/// wins; without either, [`OTEL_SERVICE_NAME`] is read.
///
/// ```
/// use newrelic_telemetry::{Event, env};
/// # use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = TestIngestServer::start().await?;
/// let telemetry = server
///     .telemetry_builder()
///     .environment([(env::SERVICE_NAME, "checkout"), (env::OTEL_SERVICE_NAME, "ignored")])
///     .build()?;
/// telemetry.events().record(Event::new("Order")).await;
/// telemetry.shutdown().await;
/// assert_eq!(server.events()[0]["service.name"], "checkout");
/// # Ok(()) }
/// ```
pub const SERVICE_NAME: &str = "NEW_RELIC_SERVICE_NAME";

/// `OTEL_SERVICE_NAME`: OpenTelemetry's variable for the service's name,
/// read when [`SERVICE_NAME`] is not set, so that a service moving from
/// OpenTelemetry keeps its name.
///
/// ```
/// use newrelic_telemetry::{Log, env};
/// # use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().environment([(env::OTEL_SERVICE_NAME, "billing")]).build()?;
/// telemetry.logs().record(Log::new("ready")).await;
/// telemetry.shutdown().await;
/// assert_eq!(server.logs()[0]["attributes"]["service.name"], "billing");
/// # Ok(()) }
/// ```
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// `NEW_RELIC_COMMON_ATTRIBUTES`: attributes every item carries, as
/// `key=value` pairs separated by commas (`env=prod,team=payments`); keys
/// and values are trimmed and sent as strings, and a value cannot hold a
/// comma. Attributes set in code with
/// [`TelemetryBuilder::common_attributes`](crate::TelemetryBuilder::common_attributes)
/// win key by key. A pair with no `=` or an empty key is an error naming
/// the variable.
///
/// ```
/// use newrelic_telemetry::{ConfigError, Event, attrs, env};
/// # use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = TestIngestServer::start().await?;
/// let telemetry = server
///     .telemetry_builder()
///     .environment([(env::COMMON_ATTRIBUTES, "env=staging, team = payments")])
///     .common_attributes(attrs!["env" => "prod"])
///     .build()?;
/// telemetry.events().record(Event::new("Order")).await;
/// telemetry.shutdown().await;
/// let event = &server.events()[0];
/// assert_eq!((&event["env"], &event["team"]), (&"prod".into(), &"payments".into()));
///
/// let err = server.telemetry_builder().environment([(env::COMMON_ATTRIBUTES, "env")]).build().unwrap_err();
/// assert!(matches!(err, ConfigError::InvalidVariable { name: env::COMMON_ATTRIBUTES, .. }));
/// # Ok(()) }
/// ```
pub const COMMON_ATTRIBUTES: &str = "NEW_RELIC_COMMON_ATTRIBUTES";

/// `NEW_RELIC_TRACE_SAMPLE_RATIO`: the share of traces the tracing layers
/// of [`Telemetry::tracing_layer`](crate::Telemetry::tracing_layer) keep,
/// from 0 to 1 (default 1: every trace). A ratio set in code with
/// [`TelemetryBuilder::trace_sample_ratio`](crate::TelemetryBuilder::trace_sample_ratio)
/// wins, as does one set on the layer itself.
///
/// ```
/// use newrelic_telemetry::{ConfigError, Telemetry, env};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = Telemetry::builder()
///     .environment([(env::API_KEY, "key"), (env::TRACE_SAMPLE_RATIO, "1.5")])
///     .build()
///     .unwrap_err();
/// assert!(matches!(err, ConfigError::InvalidVariable { name: env::TRACE_SAMPLE_RATIO, .. }));
/// # }
/// ```
pub const TRACE_SAMPLE_RATIO: &str = "NEW_RELIC_TRACE_SAMPLE_RATIO";

/// `NEW_RELIC_OTLP_API_URL`: a URL for New Relic's OTLP endpoint, where
/// distributions go, as [`METRIC_API_URL`] is for the Metric API (no path:
/// that host's `/v1/metrics`).
///
/// ```
/// use newrelic_telemetry::{Telemetry, env};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let telemetry = Telemetry::builder()
///     .environment([(env::API_KEY, "key"), (env::OTLP_API_URL, "http://127.0.0.1:4318")])
///     .build()?;
/// assert_eq!(telemetry.endpoints().otlp, "http://127.0.0.1:4318/v1/metrics");
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
pub const OTLP_API_URL: &str = "NEW_RELIC_OTLP_API_URL";

/// A key that is never sent, for a disabled `Telemetry` given none.
const DISABLED_KEY: &str = "telemetry-disabled";

/// The variable naming each API's URL.
const URL_VARIABLES: PerApi<&str> = PerApi {
    metrics: METRIC_API_URL,
    events: EVENT_API_URL,
    logs: LOG_API_URL,
    spans: SPAN_API_URL,
};

/// Each API, in `PerApi` form.
const API: PerApi<Api> = PerApi {
    metrics: Api::Metric,
    events: Api::Event,
    logs: Api::Log,
    spans: Api::Span,
};

/// Where configuration values that code did not set come from.
#[derive(Clone)]
pub(super) enum Source {
    Process,
    Map(HashMap<String, String>),
}

impl Source {
    /// The trimmed value of `name`; unset when missing or empty.
    fn get(&self, name: &str) -> Option<String> {
        let value = match self {
            Source::Process => std::env::var(name).ok(),
            Source::Map(map) => map.get(name).cloned(),
        };
        value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// The names of the variables this source holds (for `Debug`: never values).
    pub(super) fn names(&self) -> Vec<String> {
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

/// The settings made in code; `None` means "read the environment". Its
/// `Debug` never shows the key.
#[derive(Clone, Default)]
pub(super) struct FromCode {
    pub(super) enabled: Option<bool>,
    pub(super) api_key: Option<String>,
    /// With no key anywhere: start disabled with a WARN instead of failing.
    pub(super) key_optional: bool,
    pub(super) region: Option<Region>,
    pub(super) harvest_interval: Option<Duration>,
    pub(super) endpoints: PerApi<Option<String>>,
    pub(super) otlp_endpoint: Option<String>,
    pub(super) service_name: Option<Arc<str>>,
    pub(super) trace_sample_ratio: Option<f64>,
}

impl std::fmt::Debug for FromCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromCode")
            .field("enabled", &self.enabled)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("key_optional", &self.key_optional)
            .field("region", &self.region)
            .field("harvest_interval", &self.harvest_interval)
            .field("endpoints", &self.endpoints)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("service_name", &self.service_name)
            .field("trace_sample_ratio", &self.trace_sample_ratio)
            .finish()
    }
}

/// The settings with code and environment merged, each value checked.
pub(super) struct Config {
    /// Whether anything is recorded and sent (a disabled `Telemetry` keeps
    /// nothing).
    pub(super) enabled: bool,
    pub(super) api_key: String,
    pub(super) region: Region,
    pub(super) harvest_interval: Duration,
    /// An endpoint for each API, or `None` for the region's.
    pub(super) endpoints: PerApi<Option<String>>,
    /// The OTLP endpoint, or `None` for the region's.
    pub(super) otlp_endpoint: Option<String>,
    pub(super) service_name: Option<Arc<str>>,
    /// From [`COMMON_ATTRIBUTES`]; code's attributes are laid over them.
    pub(super) common_attributes: Attributes,
    pub(super) trace_sample_ratio: f64,
}

impl Config {
    /// Each setting from `code` if set there, else from `source`, else its
    /// default. Fails on the first malformed value, in the order enabled,
    /// key, region, harvest interval, endpoints, common attributes, trace
    /// sample ratio. Disabled, a missing key is no error (one that is never
    /// sent stands in); with `key_optional`, it turns telemetry off, with one
    /// WARN once everything else has been checked.
    pub(super) fn resolve(code: &FromCode, source: &Source) -> Result<Config, ConfigError> {
        let mut enabled = enabled(code.enabled, source)?;
        let mut no_key = false;
        let api_key = match api_key(code.api_key.as_deref(), source) {
            Err(ConfigError::MissingApiKey) if !enabled => DISABLED_KEY.to_owned(),
            Err(ConfigError::MissingApiKey) if code.key_optional => {
                (enabled, no_key) = (false, true);
                DISABLED_KEY.to_owned()
            }
            other => other?,
        };
        let region = region(code.region, source, &api_key)?;
        let harvest_interval = harvest_interval(code.harvest_interval, source)?;
        let endpoints = endpoints(&code.endpoints, source)?;
        let otlp_endpoint = endpoint(code.otlp_endpoint.clone(), OTLP_API_URL, Api::Otlp, source)?;
        let service_name = code
            .service_name
            .clone()
            .or_else(|| source.get(SERVICE_NAME).map(Arc::from))
            .or_else(|| source.get(OTEL_SERVICE_NAME).map(Arc::from));
        let config = Config {
            enabled,
            api_key,
            region,
            harvest_interval,
            endpoints,
            otlp_endpoint,
            service_name,
            common_attributes: common_attributes(source)?,
            trace_sample_ratio: trace_sample_ratio(code.trace_sample_ratio, source)?,
        };
        if no_key {
            tracing::warn!(
                "no New Relic API key ({API_KEY} or {LICENSE_KEY}): telemetry is off, \
                 keeping and sending nothing"
            );
        }
        Ok(config)
    }
}

/// The switch from code, else [`ENABLED`], else on.
fn enabled(code: Option<bool>, source: &Source) -> Result<bool, ConfigError> {
    if let Some(enabled) = code {
        return Ok(enabled);
    }
    let Some(text) = source.get(ENABLED) else {
        return Ok(true);
    };
    parse_switch(&text).ok_or_else(|| invalid(ENABLED, &text, "true or false"))
}

/// [`ENABLED`]'s words: `true`, `1`, `yes`, `on`, or `false`, `0`, `no`,
/// `off`, in any case; `None` for anything else.
pub(crate) fn parse_switch(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The key from code, else [`API_KEY`], else [`LICENSE_KEY`]. A key from the
/// environment must fit in a header (one from code is checked when the
/// clients are built).
fn api_key(code: Option<&str>, source: &Source) -> Result<String, ConfigError> {
    if let Some(key) = code.filter(|k| !k.trim().is_empty()) {
        return Ok(key.to_owned());
    }
    let (key, name) = [API_KEY, LICENSE_KEY]
        .into_iter()
        .find_map(|name| source.get(name).map(|key| (key, name)))
        .ok_or(ConfigError::MissingApiKey)?;
    if reqwest::header::HeaderValue::from_str(&key).is_err() {
        return Err(ConfigError::InvalidVariable {
            name,
            value: "<redacted>".to_owned(),
            expected: "a key of visible ASCII characters",
        });
    }
    Ok(key)
}

/// The region from code, else [`REGION`], else the key's.
fn region(code: Option<Region>, source: &Source, api_key: &str) -> Result<Region, ConfigError> {
    if let Some(region) = code {
        return Ok(region);
    }
    let Some(text) = source.get(REGION) else {
        return Ok(Region::from_api_key(api_key));
    };
    text.parse()
        .map_err(|_| invalid(REGION, &text, "US, EU or FEDRAMP"))
}

/// The harvest intervals code or the environment may set: 1 ms (the
/// harvester's own floor) to a day.
const HARVEST_INTERVALS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(86_400);

/// The interval from code, else [`HARVEST_INTERVAL`] (seconds), else the
/// default; either way within [`HARVEST_INTERVALS`].
fn harvest_interval(code: Option<Duration>, source: &Source) -> Result<Duration, ConfigError> {
    const EXPECTED: &str = "from 1 ms to a day";
    if let Some(interval) = code {
        return HARVEST_INTERVALS
            .contains(&interval)
            .then_some(interval)
            .ok_or_else(|| ConfigError::InvalidSetting {
                name: "harvest_interval",
                value: format!("{interval:?}"),
                expected: EXPECTED,
            });
    }
    let Some(text) = source.get(HARVEST_INTERVAL) else {
        return Ok(DEFAULT_HARVEST_INTERVAL);
    };
    text.parse::<f64>()
        .ok()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .filter(|interval| HARVEST_INTERVALS.contains(interval))
        .ok_or_else(|| invalid(HARVEST_INTERVAL, &text, EXPECTED))
}

/// The pairs of [`COMMON_ATTRIBUTES`], or none.
fn common_attributes(source: &Source) -> Result<Attributes, ConfigError> {
    let Some(text) = source.get(COMMON_ATTRIBUTES) else {
        return Ok(Attributes::new());
    };
    let mut attributes = Attributes::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                attributes.insert(key.trim(), value.trim());
            }
            _ => {
                return Err(invalid(
                    COMMON_ATTRIBUTES,
                    &text,
                    "key=value pairs separated by commas",
                ));
            }
        }
    }
    Ok(attributes)
}

/// The ratio from code, else [`TRACE_SAMPLE_RATIO`], else 1; from 0 to 1.
fn trace_sample_ratio(code: Option<f64>, source: &Source) -> Result<f64, ConfigError> {
    const EXPECTED: &str = "a number from 0 to 1";
    if let Some(ratio) = code {
        return (0.0..=1.0)
            .contains(&ratio)
            .then_some(ratio)
            .ok_or_else(|| ConfigError::InvalidSetting {
                name: "trace_sample_ratio",
                value: format!("{ratio:?}"),
                expected: EXPECTED,
            });
    }
    let Some(text) = source.get(TRACE_SAMPLE_RATIO) else {
        return Ok(1.0);
    };
    text.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| invalid(TRACE_SAMPLE_RATIO, &text, EXPECTED))
}

/// Each API's URL from code, else from its variable (checked to be an
/// absolute `http(s)` URL), else `None`.
fn endpoints(
    code: &PerApi<Option<String>>,
    source: &Source,
) -> Result<PerApi<Option<String>>, ConfigError> {
    code.clone()
        .zip(URL_VARIABLES.zip(API))
        .try_map(|(code, (variable, api))| endpoint(code, variable, api, source))
}

/// An API's URL from code, else from `variable` (checked to be an absolute
/// `http(s)` URL), else `None`.
fn endpoint(
    code: Option<String>,
    variable: &'static str,
    api: Api,
    source: &Source,
) -> Result<Option<String>, ConfigError> {
    match (code, source.get(variable)) {
        (Some(url), _) => Ok(Some(url)),
        // The client parses it again, with the same function: a URL with no
        // path gets the API's path there, whether from code or here.
        (None, Some(url)) => match parse_endpoint(&url, api) {
            Ok(_) => Ok(Some(url)),
            Err(_) => Err(invalid(
                variable,
                &url,
                "an absolute http:// or https:// URL",
            )),
        },
        (None, None) => Ok(None),
    }
}

fn invalid(name: &'static str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::InvalidVariable {
        name,
        value: value.to_owned(),
        expected,
    }
}
