//! Spans for the Trace API, with span events.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::attributes::{Attributes, Value};
use crate::id::{random_hex_id, random_trace_id, trace_id_hex};
use crate::log::set_error_fields;
use crate::time::{millis_since_epoch, now_ms};

/// Attribute keys that a span's own fields fill; they win over attributes of
/// the same name.
const INTRINSICS: [&str; 4] = ["name", "duration.ms", "parent.id", "service.name"];

/// One unit of work in a distributed trace.
///
/// A new span gets a random 16-hex-character id and a random
/// 32-hex-character trace id (the W3C Trace Context forms, so a trace can
/// cross services that speak it), starts now, and [`finish`](Span::finish)
/// sets its duration from that start. To continue a trace started by
/// another service, see [`TraceContext::child_span`](crate::trace_context::TraceContext::child_span).
///
/// ```
/// use newrelic_telemetry::Span;
///
/// let root = Span::new("checkout").with_service_name("shop");
/// let child = root.child("charge card").with_attribute("amount", 12.5).finish();
/// assert_eq!(child.trace_id(), root.trace_id());
/// assert_eq!(child.parent_id(), Some(root.id()));
/// assert!(child.duration().is_some());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    id: Arc<str>,
    trace_id: Arc<str>,
    timestamp_ms: u64,
    name: String,
    duration: Option<Duration>,
    parent_id: Option<Arc<str>>,
    service_name: Option<Arc<str>>,
    attributes: Attributes,
    events: Vec<SpanEvent>,
    started: tokio::time::Instant,
}

impl Span {
    /// A span named `name` in a new trace, starting now.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// let span = Span::new("GET /orders");
    /// assert_eq!(span.name(), "GET /orders");
    /// assert_eq!(span.parent_id(), None);
    /// assert_eq!((span.id().len(), span.trace_id().len()), (16, 32)); // W3C sizes
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Span::in_trace(name, trace_id_hex(random_trace_id()), None)
    }

    /// A span in this span's trace, with this span as its parent and the same
    /// service name, starting now.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// let root = Span::new("checkout").with_service_name("shop");
    /// let child = root.child("charge card");
    /// assert_eq!(child.trace_id(), root.trace_id());
    /// assert_eq!(child.parent_id(), Some(root.id()));
    /// assert_eq!(child.service_name(), Some("shop"));
    /// ```
    pub fn child(&self, name: impl Into<String>) -> Span {
        let mut child = Span::in_trace(name, self.trace_id.clone(), Some(self.id.clone()));
        child.service_name = self.service_name.clone();
        child
    }

    /// A span with a new id in trace `trace_id`, under `parent_id`, starting
    /// now: the ids are shared, not copied.
    pub(crate) fn in_trace(
        name: impl Into<String>,
        trace_id: Arc<str>,
        parent_id: Option<Arc<str>>,
    ) -> Span {
        Span {
            id: random_hex_id(),
            trace_id,
            timestamp_ms: now_ms(),
            name: name.into(),
            duration: None,
            parent_id,
            service_name: None,
            attributes: Attributes::new(),
            events: Vec::new(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Sets the span id.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// assert_eq!(Span::new("db").with_id("00f067aa0ba902b7").id(), "00f067aa0ba902b7");
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the trace id.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// // Continue a trace started elsewhere (for example, from an incoming header).
    /// let span = Span::new("handle").with_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert_eq!(span.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_trace_id(mut self, trace_id: impl Into<Arc<str>>) -> Self {
        self.trace_id = trace_id.into();
        self
    }

    /// Sets the parent span's id.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// assert_eq!(Span::new("db").with_parent_id("abc").parent_id(), Some("abc"));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_parent_id(mut self, parent_id: impl Into<Arc<str>>) -> Self {
        self.parent_id = Some(parent_id.into());
        self
    }

    /// Sets the name of the service the span belongs to.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// assert_eq!(Span::new("db").with_service_name("orders").service_name(), Some("orders"));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_service_name(mut self, service_name: impl Into<Arc<str>>) -> Self {
        self.service_name = Some(service_name.into());
        self
    }

    /// Sets the start time.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// use std::time::{Duration, SystemTime};
    ///
    /// let span = Span::new("db").with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(3));
    /// assert_eq!(span.timestamp_ms(), 3_000);
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp_ms = millis_since_epoch(timestamp);
        self
    }

    /// Sets the duration.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// use std::time::Duration;
    ///
    /// let span = Span::new("db").with_duration(Duration::from_millis(40)).finish();
    /// assert_eq!(span.duration(), Some(Duration::from_millis(40))); // finish keeps it
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// Adds one attribute.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// let span = Span::new("db").with_attribute("db.system", "postgres");
    /// assert_eq!(span.attributes().get("db.system"), Some(&"postgres".into()));
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_attribute(mut self, key: impl Into<Arc<str>>, value: impl Into<Value>) -> Self {
        self.attributes.insert(key, value);
        self
    }

    /// Adds every pair of `attributes` (replacing keys already present).
    ///
    /// ```
    /// use newrelic_telemetry::{Span, attrs};
    ///
    /// let span = Span::new("db").with_attributes(attrs!["db.system" => "postgres", "rows" => 3]);
    /// assert_eq!(span.attributes().len(), 2);
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_attributes(mut self, attributes: impl Into<Attributes>) -> Self {
        self.attributes.absorb(attributes.into());
        self
    }

    /// Flags the span as failed: sets `error` to `true`, and `error.message`,
    /// `error.class` and, if given, `error.stack`.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// let span = Span::new("charge").with_error("card declined", "PaymentError", None);
    /// assert_eq!(span.attributes().get("error"), Some(&true.into()));
    /// assert_eq!(span.attributes().get("error.class"), Some(&"PaymentError".into()));
    /// ```
    pub fn with_error(
        mut self,
        message: impl Into<Value>,
        class: impl Into<Value>,
        stack: Option<&str>,
    ) -> Self {
        self.attributes.insert("error", true);
        set_error_fields(&mut self.attributes, message.into(), class.into(), stack);
        self
    }

    /// Adds a span event (the `events` array on the wire).
    ///
    /// ```
    /// use newrelic_telemetry::{Span, SpanEvent};
    ///
    /// let span = Span::new("fetch").with_event(SpanEvent::new("cache miss"));
    /// assert_eq!(span.events()[0].name(), "cache miss");
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_event(mut self, event: SpanEvent) -> Self {
        self.events.push(event);
        self
    }

    /// Adds a span event in place.
    ///
    /// ```
    /// use newrelic_telemetry::{Span, SpanEvent};
    ///
    /// let mut span = Span::new("fetch");
    /// for attempt in 1..=2 {
    ///     span.add_event(SpanEvent::new("retry").with_attribute("attempt", attempt));
    /// }
    /// assert_eq!(span.events().len(), 2);
    /// ```
    pub fn add_event(&mut self, event: SpanEvent) {
        self.events.push(event);
    }

    /// Ends the span: sets its duration to the time since it started, unless a
    /// duration was set already.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// let span = Span::new("work");
    /// assert_eq!(span.duration(), None);
    /// assert!(span.finish().duration().is_some());
    /// ```
    pub fn finish(mut self) -> Self {
        if self.duration.is_none() {
            self.duration = Some(self.started.elapsed());
        }
        self
    }

    /// The span id.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// assert_eq!(Span::new("work").id().len(), 16); // 16 hex digits
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The trace id.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// let root = Span::new("work");
    /// assert_eq!(root.child("step").trace_id(), root.trace_id());
    /// ```
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The parent span's id, if any.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// let root = Span::new("work");
    /// assert_eq!(root.parent_id(), None);
    /// assert_eq!(root.child("step").parent_id(), Some(root.id()));
    /// ```
    pub fn parent_id(&self) -> Option<&str> {
        self.parent_id.as_deref()
    }

    /// The span's name.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// assert_eq!(Span::new("work").name(), "work");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service name, if set.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// assert_eq!(Span::new("work").service_name(), None);
    /// ```
    pub fn service_name(&self) -> Option<&str> {
        self.service_name.as_deref()
    }

    /// The start time in milliseconds since the Unix epoch.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// assert!(Span::new("work").timestamp_ms() > 0); // its start
    /// ```
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The duration, once set or finished.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// use std::time::Duration;
    ///
    /// assert_eq!(Span::new("work").with_duration(Duration::from_secs(1)).duration(), Some(Duration::from_secs(1)));
    /// ```
    pub fn duration(&self) -> Option<Duration> {
        self.duration
    }

    /// The span's attributes.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// assert!(Span::new("work").attributes().is_empty());
    /// ```
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// The span's attributes, to change in place.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// let mut span = Span::new("work");
    /// span.attributes_mut().insert("rows", 3);
    /// assert_eq!(span.attributes().len(), 1);
    /// ```
    pub fn attributes_mut(&mut self) -> &mut Attributes {
        &mut self.attributes
    }

    /// The span's events.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    ///
    /// assert!(Span::new("work").events().is_empty());
    /// ```
    pub fn events(&self) -> &[SpanEvent] {
        &self.events
    }

    pub(crate) fn events_mut(&mut self) -> &mut Vec<SpanEvent> {
        &mut self.events
    }

    pub(crate) fn name_mut(&mut self) -> &mut String {
        &mut self.name
    }

    /// The trace id and span id, shared.
    #[cfg(feature = "tracing-layer")]
    pub(crate) fn shared_ids(&self) -> (Arc<str>, Arc<str>) {
        (self.trace_id.clone(), self.id.clone())
    }

    pub(crate) fn service_name_mut(&mut self) -> &mut Option<Arc<str>> {
        &mut self.service_name
    }
}

/// A span's attributes object: intrinsics first, then the span's own pairs
/// except those an intrinsic fills.
struct SpanAttributes<'a>(&'a Span);

impl Span {
    /// Which of the [`INTRINSICS`] the span fills, in that order.
    fn filled(&self) -> [bool; 4] {
        [
            true,
            self.duration.is_some(),
            self.parent_id.is_some(),
            self.service_name.is_some(),
        ]
    }

    /// The span's own pairs that travel: those no filled intrinsic shadows.
    fn own_attributes(&self) -> impl Iterator<Item = (&str, &Value)> {
        let filled = self.filled();
        self.attributes
            .iter()
            .filter(move |(k, _)| !INTRINSICS.iter().zip(filled).any(|(i, f)| f && i == k))
    }

    /// How many attributes the span's attributes object holds on the wire:
    /// its intrinsics and its own pairs (the Trace API's limit counts both).
    pub(crate) fn wire_attributes(&self) -> usize {
        self.filled().iter().filter(|f| **f).count() + self.own_attributes().count()
    }
}

impl Serialize for SpanAttributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &span.name)?;
        if let Some(d) = span.duration {
            // Nanoseconds over a million: one rounding, so the shortest
            // form is the plain one (0.379973, not 0.37997299999999995).
            map.serialize_entry("duration.ms", &(d.as_nanos() as f64 / 1e6))?;
        }
        if let Some(p) = &span.parent_id {
            map.serialize_entry("parent.id", &**p)?;
        }
        if let Some(s) = &span.service_name {
            map.serialize_entry("service.name", &**s)?;
        }
        for (k, v) in span.own_attributes() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &*self.id)?;
        map.serialize_entry("trace.id", &*self.trace_id)?;
        map.serialize_entry("timestamp", &self.timestamp_ms)?;
        map.serialize_entry("attributes", &SpanAttributes(self))?;
        if !self.events.is_empty() {
            map.serialize_entry("events", &self.events)?;
        }
        map.end()
    }
}

/// Something that happened during a span, at a point in time (an exception, a
/// retry, a cache miss).
///
/// ```
/// use newrelic_telemetry::{Span, SpanEvent};
///
/// let span = Span::new("fetch")
///     .with_event(SpanEvent::new("retry").with_attribute("attempt", 2));
/// let json = serde_json::to_value(&span).unwrap();
/// assert_eq!(json["events"][0]["name"], "retry");
/// assert_eq!(json["events"][0]["attributes"]["attempt"], 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    name: String,
    timestamp_ms: u64,
    attributes: Attributes,
}

impl SpanEvent {
    /// An event named `name`, timestamped now.
    ///
    /// ```
    /// use newrelic_telemetry::SpanEvent;
    ///
    /// assert_eq!(SpanEvent::new("cache miss").name(), "cache miss");
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        SpanEvent {
            name: name.into(),
            timestamp_ms: now_ms(),
            attributes: Attributes::new(),
        }
    }

    /// Adds one attribute.
    ///
    /// ```
    /// use newrelic_telemetry::SpanEvent;
    ///
    /// assert_eq!(SpanEvent::new("retry").with_attribute("attempt", 2).attributes().len(), 1);
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_attribute(mut self, key: impl Into<Arc<str>>, value: impl Into<Value>) -> Self {
        self.attributes.insert(key, value);
        self
    }

    /// Sets when the event happened.
    ///
    /// A time before 1970 reads as `u64::MAX` and, like any timestamp the
    /// APIs would not take, is refused when the item is recorded or sent
    /// ([`RecordError::TimestampOutOfRange`](crate::RecordError::TimestampOutOfRange)).
    ///
    /// ```
    /// use newrelic_telemetry::SpanEvent;
    ///
    /// use std::time::{Duration, SystemTime};
    ///
    /// let event = SpanEvent::new("retry").with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    /// assert_eq!(event.timestamp_ms(), 1_000);
    /// ```
    #[must_use = "returns the changed value; the original is consumed"]
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp_ms = millis_since_epoch(timestamp);
        self
    }

    /// The event's name.
    ///
    /// ```
    /// use newrelic_telemetry::SpanEvent;
    ///
    /// assert_eq!(SpanEvent::new("retry").name(), "retry");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it happened, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// use newrelic_telemetry::SpanEvent;
    ///
    /// assert!(SpanEvent::new("retry").timestamp_ms() > 0); // now
    /// ```
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The event's attributes.
    ///
    /// ```
    /// use newrelic_telemetry::SpanEvent;
    ///
    /// assert!(SpanEvent::new("retry").attributes().is_empty());
    /// ```
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    pub(crate) fn attributes_mut(&mut self) -> &mut Attributes {
        &mut self.attributes
    }

    pub(crate) fn name_mut(&mut self) -> &mut String {
        &mut self.name
    }
}

impl Serialize for SpanEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("timestamp", &self.timestamp_ms)?;
        if !self.attributes.is_empty() {
            map.serialize_entry("attributes", &self.attributes)?;
        }
        map.end()
    }
}

impl crate::budget::HeapSize for Span {
    fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>() - std::mem::size_of::<Attributes>()
            + crate::budget::arc_str_bytes(self.id.len())
            + crate::budget::arc_str_bytes(self.trace_id.len())
            + self.name.capacity()
            + self
                .parent_id
                .as_ref()
                .map_or(0, |p| crate::budget::arc_str_bytes(p.len()))
            + self
                .service_name
                .as_ref()
                .map_or(0, |s| crate::budget::arc_str_bytes(s.len()))
            + self.attributes.held_bytes()
            + self.events.capacity() * std::mem::size_of::<SpanEvent>()
            + self
                .events
                .iter()
                .map(|e| {
                    e.name.capacity() + e.attributes.held_bytes()
                        - std::mem::size_of::<Attributes>()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_is_written_in_milliseconds_in_its_plain_form() {
        let span = Span::new("a").with_duration(Duration::from_nanos(379_973));
        let json = serde_json::to_string(&span).unwrap();
        // Seconds times a thousand would write 0.37997299999999995.
        assert!(json.contains(r#""duration.ms":0.379973}"#), "{json}");
        let span = Span::new("b").with_duration(Duration::from_nanos(1_500));
        let json = serde_json::to_string(&span).unwrap();
        assert!(json.contains(r#""duration.ms":0.0015"#), "{json}");
    }
}
