//! The four ingest APIs and the regions that serve them: one spelling for
//! "which API" that batches, clients, harvesters, reports and the test server
//! share. This module imports nothing else of the crate.

use std::fmt;

/// One of the four New Relic ingest APIs.
///
/// ```
/// use newrelic_telemetry::{Api, Region};
///
/// assert_eq!(Api::Log.endpoint(Region::EU), "https://log-api.eu.newrelic.com/log/v1");
/// assert_eq!(Api::Event.path(), "/v1/accounts/events");
/// assert_eq!(Api::Trace.to_string(), "trace");
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
    Trace,
}

impl Api {
    /// The four APIs, in this order.
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    ///
    /// let names: Vec<_> = Api::ALL.iter().map(|api| api.name()).collect();
    /// assert_eq!(names, ["metric", "event", "log", "trace"]);
    /// ```
    pub const ALL: [Api; 4] = [Api::Metric, Api::Event, Api::Log, Api::Trace];

    /// A short name for logs and reports: `metric`, `event`, `log`, `trace`.
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
            Api::Trace => "trace",
        }
    }

    /// The path the API is served on.
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    ///
    /// assert_eq!(Api::Metric.path(), "/metric/v1");
    /// assert!(Api::Trace.endpoint(Default::default()).ends_with(Api::Trace.path()));
    /// ```
    pub const fn path(self) -> &'static str {
        match self {
            Api::Metric => "/metric/v1",
            Api::Event => "/v1/accounts/events",
            Api::Log => "/log/v1",
            Api::Trace => "/trace/v1",
        }
    }

    /// The API's URL in `region`.
    ///
    /// ```
    /// use newrelic_telemetry::{Api, Region};
    ///
    /// assert_eq!(Api::Metric.endpoint(Region::US), "https://metric-api.newrelic.com/metric/v1");
    /// assert_eq!(
    ///     Api::Event.endpoint(Region::EU),
    ///     "https://insights-collector.eu01.nr-data.net/v1/accounts/events"
    /// );
    /// ```
    pub const fn endpoint(self, region: Region) -> &'static str {
        match (region, self) {
            (Region::US, Api::Metric) => "https://metric-api.newrelic.com/metric/v1",
            (Region::US, Api::Event) => {
                "https://insights-collector.newrelic.com/v1/accounts/events"
            }
            (Region::US, Api::Log) => "https://log-api.newrelic.com/log/v1",
            (Region::US, Api::Trace) => "https://trace-api.newrelic.com/trace/v1",
            (Region::EU, Api::Metric) => "https://metric-api.eu.newrelic.com/metric/v1",
            (Region::EU, Api::Event) => {
                "https://insights-collector.eu01.nr-data.net/v1/accounts/events"
            }
            (Region::EU, Api::Log) => "https://log-api.eu.newrelic.com/log/v1",
            (Region::EU, Api::Trace) => "https://trace-api.eu.newrelic.com/trace/v1",
            (Region::FedRamp, Api::Metric) => "https://gov-metric-api.newrelic.com/metric/v1",
            (Region::FedRamp, Api::Event) => {
                "https://gov-insights-collector.newrelic.com/v1/accounts/events"
            }
            (Region::FedRamp, Api::Log) => "https://gov-log-api.newrelic.com/log/v1",
            (Region::FedRamp, Api::Trace) => "https://gov-trace-api.newrelic.com/trace/v1",
        }
    }

    /// The key of the items' array in a payload block (`metrics`, `logs`,
    /// `spans`), or `None` for the Event API, whose payload is a flat array.
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    ///
    /// assert_eq!(Api::Trace.payload_key(), Some("spans"));
    /// assert_eq!(Api::Event.payload_key(), None);
    /// ```
    pub const fn payload_key(self) -> Option<&'static str> {
        match self {
            Api::Metric => Some("metrics"),
            Api::Event => None,
            Api::Log => Some("logs"),
            Api::Trace => Some("spans"),
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
        Api::ALL.into_iter().find(|api| api.path() == path)
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
/// assert_eq!(Region::default(), Region::US);
/// let client = EventClient::builder("key").region(Region::EU).build().unwrap();
/// assert_eq!(client.endpoint(), "https://insights-collector.eu01.nr-data.net/v1/accounts/events");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Region {
    /// The US data center (the default).
    #[default]
    US,
    /// The EU data center.
    EU,
    /// New Relic's FedRAMP endpoints, for accounts authorised to use them:
    /// the `gov-` hosts (`gov-metric-api.newrelic.com`,
    /// `gov-insights-collector.newrelic.com`, `gov-log-api.newrelic.com`, and
    /// `gov-trace-api.newrelic.com` for the Trace API, which the ingest
    /// contract does not list: override it with
    /// [`TRACE_API_URL`](crate::env::TRACE_API_URL) if your account uses
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

impl Region {
    /// The region a key belongs to: EU keys start with `eu01xx`.
    ///
    /// ```
    /// use newrelic_telemetry::Region;
    /// assert_eq!(Region::from_api_key("eu01xxabc"), Region::EU);
    /// assert_eq!(Region::from_api_key("NRAK-abc"), Region::US);
    /// ```
    pub fn from_api_key(key: &str) -> Region {
        if key.starts_with("eu01xx") {
            Region::EU
        } else {
            Region::US
        }
    }
}
