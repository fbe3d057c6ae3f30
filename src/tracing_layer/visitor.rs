//! How a `tracing` field set becomes attributes: [`FieldVisitor`] keeps value
//! types, captures an event's `message`, and turns a span's `error` field into
//! New Relic's error attributes.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};

use super::keys::Keys;
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
    /// Whether a field named `error` flags the span (spans only).
    error_field: bool,
}

impl<'a> FieldVisitor<'a> {
    pub(super) fn for_span(attributes: &'a mut Attributes, keys: &'a Keys) -> Self {
        FieldVisitor {
            attributes,
            keys,
            message: None,
            capture_message: false,
            error_field: true,
        }
    }

    pub(super) fn for_event(attributes: &'a mut Attributes, keys: &'a Keys) -> Self {
        FieldVisitor {
            attributes,
            keys,
            message: None,
            capture_message: true,
            error_field: false,
        }
    }

    /// The event's `message` field, if it had one.
    pub(super) fn into_message(self) -> Option<String> {
        self.message
    }

    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if self.capture_message && name == "message" {
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
            self.attributes.insert(name, value);
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
