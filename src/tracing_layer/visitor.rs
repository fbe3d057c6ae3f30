//! How a `tracing` field set becomes attributes: [`FieldVisitor`] keeps value
//! types, captures an event's `message`, turns a span's `error` field into
//! New Relic's error attributes, and reads `otel.name` (the span's name) and
//! `otel.kind` (`span.kind`) as `tracing-opentelemetry` does.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};

use super::keys::{Keys, shared_static};
use crate::attributes::{Attributes, Value};

/// Records a tracing field set into attributes, keeping value types.
pub(super) struct FieldVisitor<'a> {
    attributes: &'a mut Attributes,
    keys: &'a Keys,
    /// The `message` field, when it is the log's message.
    message: Option<String>,
    /// Whether the `message` field is the log's message (events) or an
    /// ordinary attribute (spans).
    capture_message: bool,
    /// Whether a field named `error` flags the span, and `otel.name` and
    /// `otel.kind` are read (spans only).
    error_field: bool,
    /// The `otel.name` field: the span's name.
    span_name: Option<String>,
    /// Whether fields named `log.*` are skipped (the `log` crate's target,
    /// module, file and line on an event bridged from `log`, which the layer
    /// reads from its normalized metadata instead).
    skip_log_fields: bool,
}

impl<'a> FieldVisitor<'a> {
    pub(super) fn for_span(attributes: &'a mut Attributes, keys: &'a Keys) -> Self {
        FieldVisitor {
            attributes,
            keys,
            message: None,
            capture_message: false,
            error_field: true,
            span_name: None,
            skip_log_fields: false,
        }
    }

    pub(super) fn for_event(attributes: &'a mut Attributes, keys: &'a Keys) -> Self {
        FieldVisitor {
            attributes,
            keys,
            message: None,
            capture_message: true,
            error_field: false,
            span_name: None,
            skip_log_fields: false,
        }
    }

    /// Skips the `log.*` fields of an event bridged from the `log` crate.
    #[cfg_attr(not(feature = "log"), allow(dead_code))]
    pub(super) fn skipping_log_fields(mut self) -> Self {
        self.skip_log_fields = true;
        self
    }

    /// The span's `otel.name` field, if it had one.
    pub(super) fn into_span_name(self) -> Option<String> {
        self.span_name
    }

    /// The event's `message` field, if it had one.
    pub(super) fn into_message(self) -> Option<String> {
        self.message
    }

    fn put(&mut self, field: &Field, value: FieldValue<'_>) {
        let name = field.name();
        if self.skip_log_fields && name.starts_with("log.") {
            return;
        }
        // The service's name is the layer's, or its batches' common block's:
        // a field of that name would move the item to another entity.
        if name == "service.name" {
            return;
        }
        if self.error_field && name == "otel.name" {
            self.span_name = Some(value.into_string());
        } else if self.error_field && name == "otel.kind" {
            let is_lower = |kind: &str| kind.bytes().all(|b| !b.is_ascii_uppercase());
            let kind = match value {
                // OpenTelemetry's kinds, as they are usually written (lower
                // case): kept as they came, with no second string.
                FieldValue::Text(kind) if is_lower(kind) => Value::from(kind),
                FieldValue::Value(Value::String(kind)) if is_lower(&kind) => Value::String(kind),
                other => Value::from(other.into_string().to_ascii_lowercase()),
            };
            self.attributes.insert(self.keys.span_kind.clone(), kind);
        } else if self.capture_message && name == "message" {
            self.message = Some(value.into_string());
        } else if self.error_field && name == "error" {
            match value {
                FieldValue::Value(Value::Bool(flag)) => {
                    self.attributes.insert(self.keys.error.clone(), flag);
                }
                other => {
                    self.attributes.insert(self.keys.error.clone(), true);
                    let message = match other {
                        FieldValue::Value(Value::String(s)) => Value::String(s),
                        FieldValue::Value(v) => Value::from(v.to_string()),
                        text => text.into_value(),
                    };
                    self.attributes
                        .insert(self.keys.error_message.clone(), message);
                }
            }
        } else {
            self.attributes
                .insert(shared_static(name), value.into_value());
        }
    }
}

/// A field's value as `tracing` hands it over. Text stays text until the
/// field's name says what it becomes: the log's message or the span's name
/// (a `String`, made once, never through a shared string) or an attribute
/// (a shared string).
enum FieldValue<'v> {
    Value(Value),
    Text(&'v str),
    Formatted(String),
}

impl FieldValue<'_> {
    fn into_string(self) -> String {
        match self {
            FieldValue::Value(Value::String(s)) => String::from(&*s),
            FieldValue::Value(other) => other.to_string(),
            FieldValue::Text(s) => s.to_owned(),
            FieldValue::Formatted(mut s) => {
                // Kept in an item, whose held bytes count its capacity.
                s.shrink_to_fit();
                s
            }
        }
    }

    fn into_value(self) -> Value {
        match self {
            FieldValue::Value(value) => value,
            FieldValue::Text(s) => Value::from(s),
            FieldValue::Formatted(s) => Value::from(s),
        }
    }
}

/// A float as an attribute value; non-finite floats (which the ingest APIs
/// refuse) become their text.
fn float_value(value: f64) -> Value {
    if value.is_finite() {
        Value::Float(value)
    } else {
        Value::from(value.to_string())
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, FieldValue::Value(float_value(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, FieldValue::Value(Value::from(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, FieldValue::Value(Value::from(value)));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, FieldValue::Value(Value::from(value)));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, FieldValue::Value(Value::from(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, FieldValue::Value(Value::from(value)));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, FieldValue::Text(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, FieldValue::Formatted(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Room for a usual message, so that writing it seldom grows.
        let mut text = String::with_capacity(64);
        // Writing to a String only fails if the Debug impl itself errors.
        let _ = write!(text, "{value:?}");
        self.put(field, FieldValue::Formatted(text));
    }
}
