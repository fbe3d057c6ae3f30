//! Log records for the Log API.

use std::time::SystemTime;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::attributes::{Attributes, Value};
use crate::time::{millis_since_epoch, now_ms};

/// A log record: a message, a timestamp and attributes.
///
/// ```
/// use newrelic_telemetry::Log;
///
/// let log = Log::new("payment declined")
///     .with_level("ERROR")
///     .with_attribute("order.id", 1234);
/// assert_eq!(log.attributes().get("level"), Some(&"ERROR".into()));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Log {
    message: String,
    timestamp_ms: u64,
    attributes: Attributes,
}

impl Log {
    /// A log record of `message`, timestamped now.
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    ///
    /// let log = Log::new("server started");
    /// assert_eq!(log.message(), "server started");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Log {
            message: message.into(),
            timestamp_ms: now_ms(),
            attributes: Attributes::new(),
        }
    }

    /// Sets the `level` attribute (`"INFO"`, `"ERROR"`, ...).
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    ///
    /// let log = Log::new("disk almost full").with_level("WARN");
    /// assert_eq!(log.attributes().get("level"), Some(&"WARN".into()));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_level(self, level: impl Into<Value>) -> Self {
        self.with_attribute("level", level)
    }

    /// Sets `error.message`, `error.class` and, if given, `error.stack`.
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    /// let log = Log::new("failed").with_error("disk full", "IoError", None);
    /// assert_eq!(log.attributes().get("error.class"), Some(&"IoError".into()));
    /// ```
    pub fn with_error(
        mut self,
        message: impl Into<Value>,
        class: impl Into<Value>,
        stack: Option<&str>,
    ) -> Self {
        set_error_fields(&mut self.attributes, message.into(), class.into(), stack);
        self
    }

    /// Adds one attribute.
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    ///
    /// let log = Log::new("request").with_attribute("status", 200);
    /// assert_eq!(log.attributes().get("status"), Some(&200.into()));
    /// ```
    pub fn with_attribute(
        mut self,
        key: impl Into<std::sync::Arc<str>>,
        value: impl Into<Value>,
    ) -> Self {
        self.attributes.insert(key, value);
        self
    }

    /// Adds every pair of `attributes` (replacing keys already present).
    ///
    /// ```
    /// use newrelic_telemetry::{Log, attrs};
    ///
    /// let log = Log::new("request").with_attributes(attrs!["route" => "/pay", "ms" => 12]);
    /// assert_eq!(log.attributes().len(), 2);
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_attributes(mut self, attributes: impl Into<Attributes>) -> Self {
        self.attributes.absorb(attributes.into());
        self
    }

    /// Sets when the record was written.
    ///
    /// A time before 1970 reads as `u64::MAX` and, like any timestamp the
    /// APIs would not take, is refused when the item is recorded or sent
    /// ([`RecordError::TimestampOutOfRange`](crate::RecordError::TimestampOutOfRange)).
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    ///
    /// use std::time::{Duration, SystemTime};
    ///
    /// let log = Log::new("boot").with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1500));
    /// assert_eq!(log.timestamp_ms(), 1_500);
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp_ms = millis_since_epoch(timestamp);
        self
    }

    /// The message.
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    ///
    /// assert_eq!(Log::new("hello").message(), "hello");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// When the record was written, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    ///
    /// assert!(Log::new("hello").timestamp_ms() > 0); // now
    /// ```
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The record's attributes.
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    ///
    /// assert!(Log::new("hello").attributes().is_empty());
    /// ```
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// The record's attributes, to change in place.
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    ///
    /// let mut log = Log::new("hello");
    /// log.attributes_mut().insert("user", "alice");
    /// assert_eq!(log.attributes().len(), 1);
    /// ```
    pub fn attributes_mut(&mut self) -> &mut Attributes {
        &mut self.attributes
    }

    pub(crate) fn message_mut(&mut self) -> &mut String {
        &mut self.message
    }
}

/// Sets the error attributes New Relic's UIs read on logs and spans.
pub(crate) fn set_error_fields(
    attrs: &mut Attributes,
    message: Value,
    class: Value,
    stack: Option<&str>,
) {
    attrs.insert("error.message", message);
    attrs.insert("error.class", class);
    if let Some(stack) = stack {
        attrs.insert("error.stack", stack);
    }
}

impl Serialize for Log {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("timestamp", &self.timestamp_ms)?;
        map.serialize_entry("message", &self.message)?;
        if !self.attributes.is_empty() {
            map.serialize_entry("attributes", &self.attributes)?;
        }
        map.end()
    }
}

impl crate::budget::HeapSize for Log {
    fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>() - std::mem::size_of::<Attributes>()
            + self.message.capacity()
            + self.attributes.held_bytes()
    }
}
