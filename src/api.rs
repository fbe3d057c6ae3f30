//! The ingest APIs (the four JSON APIs, and New Relic's OTLP endpoint for
//! distributions) and the regions that serve them: one spelling for
//! "which API" that batches, clients, harvesters, reports and the test server
//! share. This module imports nothing else of the crate.

use std::fmt;

/// One of New Relic's ingest APIs: the four JSON APIs, and the OTLP
/// endpoint that takes distributions.
///
/// ```
/// use newrelic_telemetry::{Api, Region};
///
/// assert_eq!(Api::Log.endpoint(Region::Eu), "https://log-api.eu.newrelic.com/log/v1");
/// assert_eq!(Api::Event.path(), "/v1/accounts/events");
/// assert_eq!(Api::Span.to_string(), "span");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Api {
    /// The Metric API: `metrics` blocks, `POST /metric/v1`.
    Metric,
    /// The Event API: a flat array of events, `POST /v1/accounts/events`.
    Event,
    /// The Log API: `logs` blocks, `POST /log/v1`.
    Log,
    /// The Trace API: `spans` blocks, `POST /trace/v1`.
    Span,
    /// New Relic's OTLP endpoint: OTLP/HTTP binary protobuf,
    /// `POST /v1/metrics`, for distributions (exponential histograms). Not
    /// one of [`Api::ALL`], the JSON APIs.
    ///
    /// ```
    /// use newrelic_telemetry::{Api, Region};
    ///
    /// assert_eq!(Api::Otlp.endpoint(Region::Eu), "https://otlp.eu01.nr-data.net/v1/metrics");
    /// assert_eq!(Api::from_path("/v1/metrics"), Some(Api::Otlp));
    /// ```
    Otlp,
}

impl Api {
    /// The four JSON APIs, in this order ([`Api::Otlp`] is apart).
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    ///
    /// let names: Vec<_> = Api::ALL.iter().map(|api| api.name()).collect();
    /// assert_eq!(names, ["metric", "event", "log", "span"]);
    /// ```
    pub const ALL: [Api; 4] = [Api::Metric, Api::Event, Api::Log, Api::Span];

    /// A short name for logs and reports: `metric`, `event`, `log`, `span`,
    /// `otlp`.
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    ///
    /// assert_eq!(Api::Metric.name(), "metric");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Api::Metric => "metric",
            Api::Event => "event",
            Api::Log => "log",
            Api::Span => "span",
            Api::Otlp => "otlp",
        }
    }

    /// The path the API is served on.
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    ///
    /// assert_eq!(Api::Metric.path(), "/metric/v1");
    /// assert!(Api::Span.endpoint(Default::default()).ends_with(Api::Span.path()));
    /// ```
    pub const fn path(self) -> &'static str {
        match self {
            Api::Metric => "/metric/v1",
            Api::Event => "/v1/accounts/events",
            Api::Log => "/log/v1",
            Api::Span => "/trace/v1",
            Api::Otlp => "/v1/metrics",
        }
    }

    /// The API's URL in `region`.
    ///
    /// ```
    /// use newrelic_telemetry::{Api, Region};
    ///
    /// assert_eq!(Api::Metric.endpoint(Region::Us), "https://metric-api.newrelic.com/metric/v1");
    /// assert_eq!(
    ///     Api::Event.endpoint(Region::Eu),
    ///     "https://insights-collector.eu01.nr-data.net/v1/accounts/events"
    /// );
    /// ```
    pub const fn endpoint(self, region: Region) -> &'static str {
        match (region, self) {
            (Region::Us, Api::Metric) => "https://metric-api.newrelic.com/metric/v1",
            (Region::Us, Api::Event) => {
                "https://insights-collector.newrelic.com/v1/accounts/events"
            }
            (Region::Us, Api::Log) => "https://log-api.newrelic.com/log/v1",
            (Region::Us, Api::Span) => "https://trace-api.newrelic.com/trace/v1",
            (Region::Eu, Api::Metric) => "https://metric-api.eu.newrelic.com/metric/v1",
            (Region::Eu, Api::Event) => {
                "https://insights-collector.eu01.nr-data.net/v1/accounts/events"
            }
            (Region::Eu, Api::Log) => "https://log-api.eu.newrelic.com/log/v1",
            (Region::Eu, Api::Span) => "https://trace-api.eu.newrelic.com/trace/v1",
            (Region::FedRamp, Api::Metric) => "https://gov-metric-api.newrelic.com/metric/v1",
            (Region::FedRamp, Api::Event) => {
                "https://gov-insights-collector.newrelic.com/v1/accounts/events"
            }
            (Region::FedRamp, Api::Log) => "https://gov-log-api.newrelic.com/log/v1",
            (Region::FedRamp, Api::Span) => "https://gov-trace-api.newrelic.com/trace/v1",
            (Region::Us, Api::Otlp) => "https://otlp.nr-data.net/v1/metrics",
            (Region::Eu, Api::Otlp) => "https://otlp.eu01.nr-data.net/v1/metrics",
            (Region::FedRamp, Api::Otlp) => "https://gov-otlp.nr-data.net/v1/metrics",
        }
    }

    /// The key of the items' array in a payload block (`metrics`, `logs`,
    /// `spans`), or `None` for the Event API, whose payload is a flat array,
    /// and for OTLP (protobuf).
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    ///
    /// assert_eq!(Api::Span.payload_key(), Some("spans"));
    /// assert_eq!(Api::Event.payload_key(), None);
    /// ```
    pub const fn payload_key(self) -> Option<&'static str> {
        match self {
            Api::Metric => Some("metrics"),
            Api::Event => None,
            Api::Log => Some("logs"),
            Api::Span => Some("spans"),
            Api::Otlp => None,
        }
    }

    /// The API served on `path`, if any.
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    ///
    /// assert_eq!(Api::from_path("/log/v1"), Some(Api::Log));
    /// assert_eq!(Api::from_path("/"), None);
    /// ```
    pub fn from_path(path: &str) -> Option<Api> {
        Api::ALL
            .into_iter()
            .chain([Api::Otlp])
            .find(|api| api.path() == path)
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which New Relic data center to send to.
///
/// ```
/// use newrelic_telemetry::{EventClient, Region};
///
/// assert_eq!(Region::default(), Region::Us);
/// let client = EventClient::builder("key").region(Region::Eu).build().unwrap();
/// assert_eq!(client.endpoint(), "https://insights-collector.eu01.nr-data.net/v1/accounts/events");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Region {
    /// The US data center (the default).
    #[default]
    Us,
    /// The EU data center.
    Eu,
    /// New Relic's FedRAMP endpoints, for accounts authorised to use them:
    /// the `gov-` hosts (`gov-metric-api.newrelic.com`,
    /// `gov-insights-collector.newrelic.com`, `gov-log-api.newrelic.com`, and
    /// `gov-trace-api.newrelic.com` for the Trace API, which the ingest
    /// contract does not list: override it with
    /// [`SPAN_API_URL`](crate::env::SPAN_API_URL) if your account uses
    /// another). Never picked from the key: set it in code or with
    /// `NEW_RELIC_REGION=FEDRAMP`.
    ///
    /// ```
    /// use newrelic_telemetry::{Api, Region};
    ///
    /// let urls: Vec<_> = Api::ALL.iter().map(|api| api.endpoint(Region::FedRamp)).collect();
    /// assert_eq!(urls, [
    ///     "https://gov-metric-api.newrelic.com/metric/v1",
    ///     "https://gov-insights-collector.newrelic.com/v1/accounts/events",
    ///     "https://gov-log-api.newrelic.com/log/v1",
    ///     "https://gov-trace-api.newrelic.com/trace/v1",
    /// ]);
    /// ```
    FedRamp,
}

impl std::fmt::Display for Region {
    /// The region's name as [`REGION`](crate::env::REGION) takes it: `US`,
    /// `EU` or `FEDRAMP`.
    ///
    /// ```
    /// use newrelic_telemetry::Region;
    ///
    /// assert_eq!(Region::Eu.to_string(), "EU");
    /// assert_eq!(Region::FedRamp.to_string().parse::<Region>(), Ok(Region::FedRamp));
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Region::Us => "US",
            Region::Eu => "EU",
            Region::FedRamp => "FEDRAMP",
        })
    }
}

/// The error of parsing a [`Region`] from text that names none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseRegionError {
    text: String,
}

impl std::fmt::Display for ParseRegionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown region {:?}: expected US, EU or FEDRAMP",
            self.text
        )
    }
}

impl std::error::Error for ParseRegionError {}

impl std::str::FromStr for Region {
    type Err = ParseRegionError;

    /// `US`, `EU`, or `FEDRAMP` (also `GOV`), in any case, surrounding
    /// blanks ignored.
    ///
    /// ```
    /// use newrelic_telemetry::Region;
    ///
    /// assert_eq!("eu".parse::<Region>(), Ok(Region::Eu));
    /// assert_eq!(" FedRAMP ".parse::<Region>(), Ok(Region::FedRamp));
    /// let err = "Mars".parse::<Region>().unwrap_err();
    /// assert_eq!(err.to_string(), r#"unknown region "Mars": expected US, EU or FEDRAMP"#);
    /// ```
    fn from_str(text: &str) -> Result<Region, ParseRegionError> {
        match text.trim().to_ascii_uppercase().as_str() {
            "US" => Ok(Region::Us),
            "EU" => Ok(Region::Eu),
            "FEDRAMP" | "GOV" => Ok(Region::FedRamp),
            _ => Err(ParseRegionError {
                text: text.to_owned(),
            }),
        }
    }
}

impl Region {
    /// The region a key belongs to: EU keys start with `eu01xx`.
    ///
    /// ```
    /// use newrelic_telemetry::Region;
    /// assert_eq!(Region::from_api_key("eu01xxabc"), Region::Eu);
    /// assert_eq!(Region::from_api_key("NRAK-abc"), Region::Us);
    /// ```
    pub fn from_api_key(key: &str) -> Region {
        if key.starts_with("eu01xx") {
            Region::Eu
        } else {
            Region::Us
        }
    }
}
