//! The attribute keys (and level values) the layer writes on every span and
//! log, allocated once per layer.

use std::cell::RefCell;
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

/// The most `'static` strings a thread keeps shared copies of; past it, a
/// string is allocated each time, as it would be without the cache.
const MAX_SHARED_STATICS: usize = 4096;

thread_local! {
    /// This thread's shared copies of the `'static` strings the layer puts
    /// in attributes (field names, span targets), by address and length: a
    /// callsite's strings are allocated once per thread, then only their
    /// count goes up with each span or event.
    static SHARED_STATICS: RefCell<hashbrown::HashMap<(usize, usize), Arc<str>, foldhash::fast::RandomState>> =
        RefCell::new(hashbrown::HashMap::default());
}

/// `text`, which lives as long as the program (a field's name, a callsite's
/// target), as a shared string: allocated the first time this thread asks.
pub(super) fn shared_static(text: &'static str) -> Arc<str> {
    let cached = SHARED_STATICS.try_with(|statics| {
        let mut statics = statics.try_borrow_mut().ok()?;
        let key = (text.as_ptr() as usize, text.len());
        if let Some(found) = statics.get(&key) {
            return Some(found.clone());
        }
        if statics.len() >= MAX_SHARED_STATICS {
            return None;
        }
        let made: Arc<str> = Arc::from(text);
        statics.insert(key, made.clone());
        Some(made)
    });
    cached.ok().flatten().unwrap_or_else(|| Arc::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_string_is_allocated_once_per_thread() {
        let first = shared_static("order.id");
        let again = shared_static("order.id");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&*first, "order.id");
        // Another string with the same text at another address is its own.
        let other: &'static str = Box::leak(String::from("order.id").into_boxed_str());
        assert!(!Arc::ptr_eq(&shared_static(other), &first));
        // Another thread makes its own copy.
        let there = std::thread::spawn(|| shared_static("order.id"))
            .join()
            .unwrap();
        assert!(!Arc::ptr_eq(&there, &first));
        assert_eq!(there, first);
    }
}
