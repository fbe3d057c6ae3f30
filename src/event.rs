//! Events: flat records of something that happened, for the Event API.

use std::sync::Arc;
use std::time::SystemTime;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::attributes::{Attributes, Value};
use crate::common::Identity;
use crate::time::{millis_since_epoch, now_ms};

/// The keys the Event API reserves for an event's own type and time; they win
/// over attributes of the same name.
const INTRINSICS: [&str; 2] = ["eventType", "timestamp"];

/// An event: an event type, a timestamp and attributes, flat on the wire.
///
/// ```
/// use newrelic_telemetry::Event;
///
/// let purchase = Event::new("Purchase")
///     .with_attribute("amount", 12.5)
///     .with_attribute("currency", "EUR");
/// assert_eq!(purchase.event_type(), "Purchase");
/// let json = serde_json::to_value(&purchase).unwrap();
/// assert_eq!(json["eventType"], "Purchase");
/// assert_eq!(json["amount"], 12.5);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    event_type: Arc<str>,
    timestamp_ms: u64,
    attributes: Attributes,
}

impl Event {
    /// An event of type `event_type` (letters, digits, `_` and `:`), timestamped now.
    ///
    /// ```
    /// use newrelic_telemetry::Event;
    ///
    /// let event = Event::new("Purchase");
    /// assert_eq!(event.event_type(), "Purchase");
    /// assert!(event.attributes().is_empty());
    /// ```
    pub fn new(event_type: impl Into<Arc<str>>) -> Self {
        Event {
            event_type: event_type.into(),
            timestamp_ms: now_ms(),
            attributes: Attributes::new(),
        }
    }

    /// Adds one attribute.
    ///
    /// ```
    /// use newrelic_telemetry::{Event, Value};
    ///
    /// let event = Event::new("Purchase").with_attribute("amount", 12.5).with_attribute("paid", true);
    /// assert_eq!(event.attributes().get("paid"), Some(&Value::from(true)));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_attribute(mut self, key: impl Into<Arc<str>>, value: impl Into<Value>) -> Self {
        self.attributes.insert(key, value);
        self
    }

    /// Adds every pair of `attributes` (replacing keys already present): an
    /// [`Attributes`] set, an array or vector of pairs, or a `HashMap` or
    /// `BTreeMap` with string keys.
    ///
    /// ```
    /// use newrelic_telemetry::{Event, Value, attrs};
    /// use std::collections::HashMap;
    ///
    /// let event = Event::new("Purchase")
    ///     .with_attribute("currency", "USD")
    ///     .with_attributes(attrs!["currency" => "EUR", "amount" => 10.0]);
    /// assert_eq!(event.attributes().len(), 2);
    /// assert_eq!(event.attributes().get("currency"), Some(&"EUR".into()));
    ///
    /// let fields: HashMap<String, Value> = HashMap::from([("items".into(), 3.into())]);
    /// let event = Event::new("Purchase").with_attributes(fields);
    /// assert_eq!(event.attributes().get("items"), Some(&Value::Int(3)));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_attributes(mut self, attributes: impl Into<Attributes>) -> Self {
        self.attributes.absorb(attributes.into());
        self
    }

    /// Sets when the event happened.
    ///
    /// A time before 1970 reads as `u64::MAX` and, like any timestamp the
    /// APIs would not take, is refused when the item is recorded or sent
    /// ([`RecordError::TimestampOutOfRange`](crate::RecordError::TimestampOutOfRange)).
    ///
    /// ```
    /// use newrelic_telemetry::Event;
    ///
    /// use std::time::{Duration, SystemTime};
    ///
    /// let event = Event::new("Deploy").with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(2));
    /// assert_eq!(event.timestamp_ms(), 2_000);
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp_ms = millis_since_epoch(timestamp);
        self
    }

    /// The event type.
    ///
    /// ```
    /// use newrelic_telemetry::Event;
    ///
    /// assert_eq!(Event::new("Signup").event_type(), "Signup");
    /// ```
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// When the event happened, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// use newrelic_telemetry::Event;
    ///
    /// assert!(Event::new("Signup").timestamp_ms() > 0); // now
    /// ```
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The event's attributes.
    ///
    /// ```
    /// use newrelic_telemetry::Event;
    ///
    /// assert_eq!(Event::new("Signup").with_attribute("plan", "free").attributes().len(), 1);
    /// ```
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// The event's attributes, to change in place.
    ///
    /// ```
    /// use newrelic_telemetry::Event;
    ///
    /// let mut event = Event::new("Signup").with_attribute("email", "a@example.com");
    /// event.attributes_mut().remove("email");
    /// assert!(event.attributes().is_empty());
    /// ```
    pub fn attributes_mut(&mut self) -> &mut Attributes {
        &mut self.attributes
    }
}

/// An event as the Event API receives it: its attributes merged with the
/// batch's common attributes and the client's identity attributes.
/// Precedence: intrinsics, then the event's own attributes, then the common
/// ones, then the identity ones; the identity attributes take only the room
/// left under `max_attributes` (the Event API's limit), so that they never
/// push an event that passed validation over it.
pub(crate) struct EventWithCommon<'a> {
    pub(crate) event: &'a Event,
    pub(crate) common: Option<&'a Attributes>,
    pub(crate) identity: Option<&'a Identity>,
    pub(crate) max_attributes: usize,
}

impl Serialize for EventWithCommon<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let own = &self.event.attributes;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("eventType", &*self.event.event_type)?;
        map.serialize_entry("timestamp", &self.event.timestamp_ms)?;
        // Attributes written, to know the room left for the identity ones.
        let mut written = 0;
        for (k, v) in own.iter() {
            if !INTRINSICS.contains(&k) {
                map.serialize_entry(k, v)?;
                written += 1;
            }
        }
        if let Some(common) = self.common {
            for (k, v) in common.iter() {
                if !INTRINSICS.contains(&k) && !own.contains_key(k) {
                    map.serialize_entry(k, v)?;
                    written += 1;
                }
            }
        }
        if let Some(identity) = self.identity {
            let common = self.common;
            identity.serialize_defaults(
                &mut map,
                |key| own.contains_key(key) || common.is_some_and(|c| c.contains_key(key)),
                written,
                self.max_attributes,
            )?;
        }
        map.end()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EventWithCommon {
            event: self,
            common: None,
            identity: None,
            max_attributes: usize::MAX,
        }
        .serialize(serializer)
    }
}

impl crate::budget::HeapSize for Event {
    fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>() - std::mem::size_of::<Attributes>()
            + crate::budget::arc_str_bytes(self.event_type.len())
            + self.attributes.held_bytes()
    }
}
