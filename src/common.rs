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
/// use newrelic_telemetry::{attributes, Common};
/// use std::time::Duration;
///
/// let common = Common::new()
///     .with_attributes(attributes! { "host" => "web-1" })
///     .with_interval(Duration::from_secs(5));
/// assert_eq!(common.interval_ms(), Some(5000));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Common {
    timestamp_ms: Option<u64>,
    interval_ms: Option<u64>,
    attributes: Option<Arc<Attributes>>,
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
    /// use newrelic_telemetry::{Attributes, Common, attributes};
    ///
    /// let common = Common::new().with_attributes(attributes! { "host" => "web-1" });
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
    /// use newrelic_telemetry::{Common, Value, attributes};
    ///
    /// let common = Common::new().with_attributes(attributes! { "env" => "prod" });
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
        self.timestamp_ms.is_none() && self.interval_ms.is_none() && self.attributes.is_none()
    }
}

impl Serialize for Common {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(ts) = self.timestamp_ms {
            map.serialize_entry("timestamp", &ts)?;
        }
        if let Some(iv) = self.interval_ms {
            map.serialize_entry("interval.ms", &iv)?;
        }
        if let Some(attrs) = &self.attributes {
            map.serialize_entry("attributes", attrs.as_ref())?;
        }
        map.end()
    }
}
