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

    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if self.skip_log_fields && name.starts_with("log.") {
            return;
        }
        if self.error_field && name == "otel.name" {
            self.span_name = Some(match value {
                Value::String(s) => String::from(&*s),
                other => other.to_string(),
            });
        } else if self.error_field && name == "otel.kind" {
            let kind = match value {
                // OpenTelemetry's kinds, as they are usually written (lower
                // case): kept as they came, with no second string.
                Value::String(kind) if kind.bytes().all(|b| !b.is_ascii_uppercase()) => {
                    Value::String(kind)
                }
                other => Value::from(other.to_string().to_ascii_lowercase()),
            };
            self.attributes.insert(self.keys.span_kind.clone(), kind);
        } else if self.capture_message && name == "message" {
            self.message = Some(match value {
                Value::String(s) => String::from(&*s),
                other => other.to_string(),
            });
        } else if self.error_field && name == "error" {
            match value {
                Value::Bool(flag) => {
                    self.attributes.insert(self.keys.error.clone(), flag);
                }
                other => {
                    self.attributes.insert(self.keys.error.clone(), true);
                    let message = match other {
                        Value::String(s) => Value::String(s),
                        other => Value::from(other.to_string()),
                    };
                    self.attributes
                        .insert(self.keys.error_message.clone(), message);
                }
            }
        } else {
            self.attributes.insert(shared_static(name), value);
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
        self.put(field, float_value(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, Value::from(value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        // Writing to a String only fails if the Debug impl itself errors.
        let _ = write!(text, "{value:?}");
        self.put(field, Value::from(text));
    }
}
