//! The attribute keys (and level values) the layer writes on every span and
//! log, allocated once per layer.

use std::sync::Arc;

use tracing::Level;

use crate::attributes::Value;

/// Keys and values the layer inserts on every item, allocated once.
#[derive(Debug)]
pub(super) struct Keys {
    pub(super) level: Arc<str>,
    pub(super) target: Arc<str>,
    pub(super) trace_id: Arc<str>,
    pub(super) span_id: Arc<str>,
    pub(super) service_name: Arc<str>,
    pub(super) code_namespace: Arc<str>,
    pub(super) span_kind: Arc<str>,
    pub(super) error: Arc<str>,
    pub(super) error_message: Arc<str>,
    /// `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`.
    pub(super) levels: [Value; 5],
}

impl Keys {
    pub(super) fn new() -> Self {
        Keys {
            level: Arc::from("level"),
            target: Arc::from("target"),
            trace_id: Arc::from("trace.id"),
            span_id: Arc::from("span.id"),
            service_name: Arc::from("service.name"),
            code_namespace: Arc::from("code.namespace"),
            span_kind: Arc::from("span.kind"),
            error: Arc::from("error"),
            error_message: Arc::from("error.message"),
            levels: [
                Value::from("TRACE"),
                Value::from("DEBUG"),
                Value::from("INFO"),
                Value::from("WARN"),
                Value::from("ERROR"),
            ],
        }
    }

    pub(super) fn level(&self, level: &Level) -> Value {
        let i = match *level {
            Level::TRACE => 0,
            Level::DEBUG => 1,
            Level::INFO => 2,
            Level::WARN => 3,
            Level::ERROR => 4,
        };
        self.levels[i].clone()
    }
}
