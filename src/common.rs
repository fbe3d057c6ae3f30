//! The common block that Metric, Log and Trace payloads share among their items.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::attributes::Attributes;
use crate::time::{interval_millis, millis_since_epoch};

/// What every item of a payload shares: a timestamp, an interval and attributes.
///
/// Items without their own `timestamp` or `interval.ms` take the common block's.
/// Batches build it on [`flush`](crate::MetricBatch::flush); the Event API has no
/// common block, so its attributes are merged into each event instead.
///
/// ```
/// use newrelic_telemetry::{attrs, Common};
/// use std::time::Duration;
///
/// let common = Common::new()
///     .with_attributes(attrs!["host" => "web-1"])
///     .with_interval(Duration::from_secs(5));
/// assert_eq!(common.interval_ms(), Some(5000));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Common {
    timestamp_ms: Option<u64>,
    interval_ms: Option<u64>,
    attributes: Option<Arc<Attributes>>,
    /// The SDK's identity attributes, set by a client as it encodes (never
    /// by a user): defaults under the attributes above.
    identity: Option<Identity>,
}

impl Common {
    /// An empty common block.
    ///
    /// ```
    /// use newrelic_telemetry::Common;
    ///
    /// assert!(Common::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Common::default()
    }

    /// Sets the attributes every item shares.
    ///
    /// ```
    /// use newrelic_telemetry::{Attributes, Common, attrs};
    ///
    /// let common = Common::new().with_attributes(attrs!["host" => "web-1"]);
    /// assert_eq!(common.attributes().unwrap().len(), 1);
    /// // An empty set leaves the block without attributes.
    /// assert!(Common::new().with_attributes(Attributes::new()).is_empty());
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_attributes(mut self, attributes: impl Into<Attributes>) -> Self {
        let attributes = attributes.into();
        self.attributes = (!attributes.is_empty()).then(|| Arc::new(attributes));
        self
    }

    pub(crate) fn with_shared_attributes(mut self, attributes: Option<Arc<Attributes>>) -> Self {
        self.attributes = attributes;
        self
    }

    /// Sets the timestamp items default to (for metrics, the interval's start).
    ///
    /// ```
    /// use newrelic_telemetry::Common;
    /// use std::time::{Duration, SystemTime};
    ///
    /// let common = Common::new().with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(5));
    /// assert_eq!(common.timestamp_ms(), Some(5_000));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp_ms = Some(millis_since_epoch(timestamp));
        self
    }

    /// The same block carrying the SDK's identity attributes (or none), as a
    /// client encodes it.
    pub(crate) fn with_identity(mut self, identity: Option<Identity>) -> Self {
        self.identity = identity;
        self
    }

    /// The identity attributes the block carries, if any.
    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub(crate) fn with_timestamp_ms(mut self, timestamp_ms: u64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Sets the interval count and summary metrics default to, in whole
    /// milliseconds and at least 1 (the APIs take only positive intervals).
    ///
    /// ```
    /// use newrelic_telemetry::Common;
    /// use std::time::Duration;
    ///
    /// assert_eq!(Common::new().with_interval(Duration::from_secs(10)).interval_ms(), Some(10_000));
    /// assert_eq!(Common::new().with_interval(Duration::ZERO).interval_ms(), Some(1));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval_ms = Some(interval_millis(interval));
        self
    }

    pub(crate) fn with_interval_ms(mut self, interval_ms: u64) -> Self {
        self.interval_ms = Some(interval_ms);
        self
    }

    /// The shared timestamp, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// use newrelic_telemetry::Common;
    ///
    /// assert_eq!(Common::new().timestamp_ms(), None);
    /// ```
    pub fn timestamp_ms(&self) -> Option<u64> {
        self.timestamp_ms
    }

    /// The shared interval in milliseconds (`interval.ms` on the wire).
    ///
    /// ```
    /// use newrelic_telemetry::Common;
    ///
    /// assert_eq!(Common::new().interval_ms(), None);
    /// ```
    pub fn interval_ms(&self) -> Option<u64> {
        self.interval_ms
    }

    /// The shared attributes, if any.
    ///
    /// ```
    /// use newrelic_telemetry::{Common, Value, attrs};
    ///
    /// let common = Common::new().with_attributes(attrs!["env" => "prod"]);
    /// assert_eq!(common.attributes().unwrap().get("env"), Some(&Value::from("prod")));
    /// ```
    pub fn attributes(&self) -> Option<&Attributes> {
        self.attributes.as_deref()
    }

    /// Whether the block has nothing to send.
    ///
    /// ```
    /// use newrelic_telemetry::Common;
    /// use std::time::Duration;
    ///
    /// assert!(Common::new().is_empty());
    /// assert!(!Common::new().with_interval(Duration::from_secs(1)).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.timestamp_ms.is_none()
            && self.interval_ms.is_none()
            && self.attributes.is_none()
            && self.identity.is_none()
    }
}

impl Serialize for Common {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireCommon {
            common: self,
            max_attributes: usize::MAX,
        }
        .serialize(serializer)
    }
}

/// A common block as a client writes it: the user's attributes, then the
/// identity attributes whose keys they leave free, as room under
/// `max_attributes` (the API's attribute limit) allows.
pub(crate) struct WireCommon<'a> {
    pub(crate) common: &'a Common,
    pub(crate) max_attributes: usize,
}

impl Serialize for WireCommon<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let common = self.common;
        let mut map = serializer.serialize_map(None)?;
        if let Some(ts) = common.timestamp_ms {
            map.serialize_entry("timestamp", &ts)?;
        }
        if let Some(iv) = common.interval_ms {
            map.serialize_entry("interval.ms", &iv)?;
        }
        let own = common.attributes.as_deref();
        match (own, &common.identity) {
            (None, None) => {}
            (Some(attrs), None) => map.serialize_entry("attributes", attrs)?,
            (own, Some(identity)) => map.serialize_entry(
                "attributes",
                &WithIdentity {
                    own,
                    identity,
                    max_attributes: self.max_attributes,
                },
            )?,
        }
        map.end()
    }
}

/// Attributes followed by the identity attributes they leave room for.
struct WithIdentity<'a> {
    own: Option<&'a Attributes>,
    identity: &'a Identity,
    max_attributes: usize,
}

impl Serialize for WithIdentity<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let mut written = 0;
        if let Some(own) = self.own {
            for (k, v) in own.iter() {
                map.serialize_entry(k, v)?;
            }
            written = own.len();
        }
        self.identity.serialize_defaults(
            &mut map,
            |key| self.own.is_some_and(|own| own.contains_key(key)),
            written,
            self.max_attributes,
        )?;
        map.end()
    }
}

/// The `instrumentation.provider` a client sends unless told otherwise:
/// `newRelic`.
///
/// New Relic's exporter specification (`Common.md` of
/// `newrelic/newrelic-exporter-specs`) says every exported measurement MUST
/// carry an `instrumentation.provider` naming who provides the
/// instrumentation, and lists `newRelic`, `prometheus`, `dropwizard`,
/// `opencensus` and `opentelemetry` as its values. Items recorded through
/// this SDK are instrumented with New Relic's own API, so the provider is
/// `newRelic`; a bridge that forwards another system's telemetry (say
/// OpenTelemetry or Prometheus data) should name that system instead, with
/// [`ClientBuilder::instrumentation_provider`](crate::client::ClientBuilder::instrumentation_provider).
///
/// ```
/// use newrelic_telemetry::client::DEFAULT_INSTRUMENTATION_PROVIDER;
///
/// assert_eq!(DEFAULT_INSTRUMENTATION_PROVIDER, "newRelic");
/// ```
pub const DEFAULT_INSTRUMENTATION_PROVIDER: &str = "newRelic";

/// The `collector.name` every item carries: this crate's name,
/// `newrelic-telemetry` (the specification asks an exporter that transmits
/// to New Relic directly to name itself).
///
/// ```
/// use newrelic_telemetry::client::COLLECTOR_NAME;
///
/// assert_eq!(COLLECTOR_NAME, "newrelic-telemetry");
/// ```
pub const COLLECTOR_NAME: &str = "newrelic-telemetry";

/// The `collector.version` every item carries: this crate's version.
///
/// ```
/// use newrelic_telemetry::client::COLLECTOR_VERSION;
///
/// assert_eq!(COLLECTOR_VERSION, env!("CARGO_PKG_VERSION"));
/// ```
pub const COLLECTOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The keys of the identity attributes, in the order they claim room under
/// an attribute limit: `instrumentation.provider` (which the specification
/// makes a MUST), `collector.name`, `collector.version`.
///
/// ```
/// use newrelic_telemetry::client::IDENTITY_KEYS;
///
/// assert_eq!(IDENTITY_KEYS, ["instrumentation.provider", "collector.name", "collector.version"]);
/// ```
pub const IDENTITY_KEYS: [&str; 3] = [
    "instrumentation.provider",
    "collector.name",
    "collector.version",
];

/// The attributes that say what sent an item: `instrumentation.provider`,
/// `collector.name` and `collector.version`.
///
/// They are defaults: a user's attribute of the same key (a common one, or
/// an event's own) wins, and they take only the room left under the limit
/// this crate checks: an event's own and common attributes together, or a
/// common block's own count (see `ClientBuilder::identity_attributes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    provider: Arc<str>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity::new(Arc::from(DEFAULT_INSTRUMENTATION_PROVIDER))
    }
}

impl Identity {
    pub(crate) fn new(provider: Arc<str>) -> Self {
        Identity { provider }
    }

    /// The pairs, in the order they claim room.
    pub(crate) fn pairs(&self) -> [(&'static str, &str); 3] {
        let [provider, name, version] = IDENTITY_KEYS;
        [
            (provider, &*self.provider),
            (name, COLLECTOR_NAME),
            (version, COLLECTOR_VERSION),
        ]
    }

    /// Writes into `map` each pair whose key `taken` does not claim, while
    /// fewer than `max_attributes` entries are written (`written` so far).
    pub(crate) fn serialize_defaults<M: SerializeMap>(
        &self,
        map: &mut M,
        taken: impl Fn(&str) -> bool,
        mut written: usize,
        max_attributes: usize,
    ) -> Result<(), M::Error> {
        for (key, value) in self.pairs() {
            if written >= max_attributes {
                break;
            }
            if !taken(key) {
                map.serialize_entry(key, value)?;
                written += 1;
            }
        }
        Ok(())
    }
}
