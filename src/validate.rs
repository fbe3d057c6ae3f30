//! Every limit the ingest APIs set, and every check that keeps what reaches
//! the wire within them: one place, used by the batches when an item is
//! recorded and by the clients when items are handed to them directly.
//!
//! Each field has a documented bound and a treatment: a value that carries
//! meaning only whole (a metric name, an id, a timestamp, an attribute key) is
//! refused with a [`RecordError`]; free text (attribute values, log messages,
//! span and span event names, a span's service name) is cut on a character
//! boundary and counted in [`RecordStats::values_truncated`](crate::batch::RecordStats).

use std::sync::Arc;

use crate::attributes::{AsAttributes, Attributes, Value, ValueRef};
use crate::distribution::DistributionPoint;
use crate::error::{RecordError, prefix};
use crate::event::Event;
use crate::log::Log;
use crate::metric::Metric;
use crate::span::Span;
use crate::time::now_ms;

const HOUR_MS: u64 = 3600 * 1000;

/// The latest timestamp any API takes: the largest signed 64-bit number
/// (the APIs read numbers as Java `long`s).
const MAX_TIMESTAMP_MS: u64 = i64::MAX as u64;

/// Limits of one ingest API.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_attributes: usize,
    pub(crate) max_key_chars: usize,
    pub(crate) max_value_chars: usize,
    /// Keys the API reserves for itself.
    pub(crate) reserved: &'static [&'static str],
    /// How far back and ahead of now an item's timestamp may be, if the API
    /// drops items outside a window.
    pub(crate) max_age_ms: Option<u64>,
    pub(crate) max_ahead_ms: Option<u64>,
}

pub(crate) const METRIC_LIMITS: Limits = Limits {
    max_attributes: 100,
    max_key_chars: 255,
    max_value_chars: 4096,
    reserved: &RESERVED_METRIC_KEYS,
    max_age_ms: Some(48 * HOUR_MS),
    max_ahead_ms: Some(24 * HOUR_MS),
};
pub(crate) const EVENT_LIMITS: Limits = Limits {
    max_attributes: 255,
    max_key_chars: 255,
    max_value_chars: 4096,
    reserved: &[],
    max_age_ms: None,
    max_ahead_ms: None,
};
pub(crate) const LOG_LIMITS: Limits = Limits {
    max_attributes: 255,
    max_key_chars: 255,
    max_value_chars: 4094,
    reserved: &[],
    max_age_ms: Some(48 * HOUR_MS),
    max_ahead_ms: None,
};
pub(crate) const SPAN_LIMITS: Limits = Limits {
    max_attributes: 200,
    max_key_chars: 255,
    max_value_chars: 4000,
    reserved: &[],
    // The Trace API adjusts spans outside 20 minutes rather than dropping
    // them, so only the number range is checked.
    max_age_ms: None,
    max_ahead_ms: None,
};

/// Longest metric name taken (the API states none; a name is a series'
/// identity, so a longer one is refused rather than cut).
pub(crate) const MAX_METRIC_NAME_CHARS: usize = 255;
/// Longest log message sent; a longer one is cut (the Log API keeps 4,094
/// characters of an attribute inline and states no bound for the message).
pub(crate) const MAX_LOG_MESSAGE_CHARS: usize = 32_768;
/// Longest span or span event name, and span service name: they travel as
/// Trace API attributes, so its value limit applies. Longer ones are cut.
pub(crate) const MAX_SPAN_TEXT_CHARS: usize = 4000;
/// Longest span id, trace id or parent id taken (W3C ids are 16 and 32 hex
/// characters; a longer one is refused, since a cut id links nothing).
pub(crate) const MAX_ID_CHARS: usize = 128;

/// The attribute that marks a metric name's overflow series (its only one,
/// besides the batch's common attributes), as OpenTelemetry's specification
/// names it; reserved in recordings.
///
/// ```
/// assert_eq!(newrelic_telemetry::batch::OVERFLOW_ATTRIBUTE, "otel.metric.overflow");
/// ```
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

/// Metric attribute keys the Metric API reserves (besides the metric's
/// name), and the overflow series' mark.
const RESERVED_METRIC_KEYS: [&str; 10] = [
    OVERFLOW_ATTRIBUTE,
    "interval.ms",
    "timestamp",
    "value",
    "common",
    "min",
    "max",
    "count",
    "sum",
    "metrics",
];

/// Longest event type the Event API takes.
const MAX_EVENT_TYPE_CHARS: usize = 255;

/// The number of characters in `s` when it is over `limit`, else `None`.
/// Byte length bounds character length, so short strings are never scanned.
fn chars_over(s: &str, limit: usize) -> Option<usize> {
    if s.len() <= limit {
        return None;
    }
    let chars = s.chars().count();
    (chars > limit).then_some(chars)
}

/// `s` cut to at most `limit` characters, on a character boundary.
fn truncated(s: &str, limit: usize) -> &str {
    match s.char_indices().nth(limit) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Checks one key and, for floats, the value's finiteness.
fn check_pair(key: &str, value: ValueRef<'_>, limits: &Limits) -> Result<(), RecordError> {
    if key.is_empty() {
        return Err(RecordError::EmptyAttributeKey);
    }
    if let Some(chars) = chars_over(key, limits.max_key_chars) {
        return Err(RecordError::AttributeKeyTooLong {
            key: prefix(key, 64),
            chars,
            limit: limits.max_key_chars,
        });
    }
    if let ValueRef::Float(f) = value {
        if !f.is_finite() {
            return Err(RecordError::NonFiniteAttribute {
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}

/// Validates `attrs` against `limits` and truncates over-long string values in
/// place. Returns how many values were truncated.
pub(crate) fn check_attributes(
    attrs: &mut Attributes,
    limits: &Limits,
) -> Result<u64, RecordError> {
    if attrs.len() > limits.max_attributes {
        return Err(RecordError::TooManyAttributes {
            count: attrs.len(),
            limit: limits.max_attributes,
        });
    }
    let mut truncations = 0;
    for (key, value) in attrs.pairs_mut().iter_mut() {
        check_pair(key, value.as_value_ref(), limits)?;
        if let Value::String(s) = value {
            if chars_over(s, limits.max_value_chars).is_some() {
                *value = Value::from(truncated(s, limits.max_value_chars));
                truncations += 1;
            }
        }
    }
    Ok(truncations)
}

/// Builds the canonical attribute set of a metric series from borrowed pairs:
/// validated, reserved keys refused, over-long values truncated.
pub(crate) fn metric_attributes(
    name: &str,
    source: &(impl AsAttributes + ?Sized),
) -> Result<(Attributes, u64), RecordError> {
    let mut attrs = Attributes::from_source(source);
    let truncations = check_attributes(&mut attrs, &METRIC_LIMITS)?;
    for (key, _) in attrs.iter() {
        if key == name || METRIC_LIMITS.reserved.contains(&key) {
            return Err(RecordError::ReservedAttribute {
                key: key.to_owned(),
            });
        }
    }
    Ok((attrs, truncations))
}

/// Checks that an event still fits the attribute limit once the common
/// attributes it will be sent with are merged into it.
///
/// The client's identity attributes (`instrumentation.provider`,
/// `collector.name`, `collector.version`) are not counted: they are merged
/// in only as room under the limit allows (see
/// [`ClientBuilder::identity_attributes`](crate::client::ClientBuilder::identity_attributes)),
/// so an event valid without them is never refused because of them.
pub(crate) fn check_merged_count(
    own: &Attributes,
    common: Option<&Attributes>,
    limits: &Limits,
) -> Result<(), RecordError> {
    let Some(common) = common else {
        return Ok(());
    };
    let count = own.len() + common.iter().filter(|(k, _)| !own.contains_key(k)).count();
    if count > limits.max_attributes {
        return Err(RecordError::TooManyAttributes {
            count,
            limit: limits.max_attributes,
        });
    }
    Ok(())
}

/// Checks an event type: 1 to 255 ASCII letters, digits, `_` or `:`.
pub(crate) fn check_event_type(event_type: &str) -> Result<(), RecordError> {
    let valid = !event_type.is_empty()
        && event_type.len() <= MAX_EVENT_TYPE_CHARS
        && event_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    if valid {
        Ok(())
    } else {
        Err(RecordError::InvalidEventType {
            event_type: prefix(event_type, 64),
        })
    }
}

/// Common attributes given to a batch: invalid pairs are removed (with a
/// warning) and long values truncated, since there is no call to refuse.
pub(crate) fn sanitize_common(mut attrs: Attributes, limits: &Limits) -> Attributes {
    attrs.pairs_mut().retain(|(key, value)| {
        let ok = check_pair(key, value.as_value_ref(), limits).and_then(|()| {
            if limits.reserved.contains(&&**key) {
                Err(RecordError::ReservedAttribute {
                    key: key.to_string(),
                })
            } else {
                Ok(())
            }
        });
        if let Err(e) = &ok {
            tracing::warn!(error = %e, "common attribute removed");
        }
        ok.is_ok()
    });
    if attrs.len() > limits.max_attributes {
        tracing::warn!(
            count = attrs.len(),
            limit = limits.max_attributes,
            "too many common attributes; the last ones (by key) were removed"
        );
        attrs.pairs_mut().truncate(limits.max_attributes);
    }
    let _ = check_attributes(&mut attrs, limits);
    attrs
}

/// Cuts `s` to at most `limit` characters on a character boundary; says
/// whether it cut anything.
pub(crate) fn truncate_chars(s: &mut String, limit: usize) -> bool {
    if chars_over(s, limit).is_none() {
        return false;
    }
    let keep = truncated(s, limit).len();
    s.truncate(keep);
    true
}

/// Checks a metric name: 1 to [`MAX_METRIC_NAME_CHARS`] characters.
pub(crate) fn check_metric_name(name: &str) -> Result<(), RecordError> {
    if name.is_empty() {
        return Err(RecordError::EmptyName);
    }
    match chars_over(name, MAX_METRIC_NAME_CHARS) {
        Some(chars) => Err(RecordError::NameTooLong {
            name: prefix(name, 64),
            chars,
            limit: MAX_METRIC_NAME_CHARS,
        }),
        None => Ok(()),
    }
}

/// Checks a timestamp against the number range every API takes and the
/// window of the API whose `limits` are given.
pub(crate) fn check_timestamp(timestamp_ms: u64, limits: &Limits) -> Result<(), RecordError> {
    let out = || RecordError::TimestampOutOfRange { timestamp_ms };
    if timestamp_ms > MAX_TIMESTAMP_MS {
        return Err(out());
    }
    if limits.max_age_ms.is_none() && limits.max_ahead_ms.is_none() {
        return Ok(());
    }
    let now = now_ms();
    let too_old = limits
        .max_age_ms
        .is_some_and(|age| timestamp_ms < now.saturating_sub(age));
    let too_new = limits
        .max_ahead_ms
        .is_some_and(|ahead| timestamp_ms > now.saturating_add(ahead));
    if too_old || too_new {
        Err(out())
    } else {
        Ok(())
    }
}

/// Checks a span id, trace id or parent id: not empty, at most
/// [`MAX_ID_CHARS`].
fn check_id(id: &str) -> Result<(), RecordError> {
    if id.is_empty() {
        return Err(RecordError::EmptySpanId);
    }
    match chars_over(id, MAX_ID_CHARS) {
        Some(chars) => Err(RecordError::SpanIdTooLong {
            chars,
            limit: MAX_ID_CHARS,
        }),
        None => Ok(()),
    }
}

pub(crate) mod sealed {
    use crate::attributes::Attributes;
    use crate::error::RecordError;

    /// An item type one of the ingest APIs takes, and the checks that keep it
    /// within that API's limits.
    pub trait Validate {
        /// Common attributes cleaned to this API's limits.
        fn sanitize_common(attributes: Attributes) -> Attributes;
        /// Validates the item (with the common attributes it will be sent
        /// with) and cuts over-long text; returns how many values were cut.
        fn validate(&mut self, common: Option<&Attributes>) -> Result<u64, RecordError>;
    }
}

pub(crate) use sealed::Validate;

impl Validate for Event {
    fn sanitize_common(attributes: Attributes) -> Attributes {
        sanitize_common(attributes, &EVENT_LIMITS)
    }
    fn validate(&mut self, common: Option<&Attributes>) -> Result<u64, RecordError> {
        check_event_type(self.event_type())?;
        check_timestamp(self.timestamp_ms(), &EVENT_LIMITS)?;
        // Events carry the common attributes themselves (there is no common
        // block), so the limit applies to the merged set.
        check_merged_count(self.attributes(), common, &EVENT_LIMITS)?;
        check_attributes(self.attributes_mut(), &EVENT_LIMITS)
    }
}

impl Validate for Log {
    fn sanitize_common(attributes: Attributes) -> Attributes {
        sanitize_common(attributes, &LOG_LIMITS)
    }
    fn validate(&mut self, _common: Option<&Attributes>) -> Result<u64, RecordError> {
        check_timestamp(self.timestamp_ms(), &LOG_LIMITS)?;
        let mut cut = check_attributes(self.attributes_mut(), &LOG_LIMITS)?;
        cut += u64::from(truncate_chars(self.message_mut(), MAX_LOG_MESSAGE_CHARS));
        Ok(cut)
    }
}

impl Validate for Span {
    fn sanitize_common(attributes: Attributes) -> Attributes {
        sanitize_common(attributes, &SPAN_LIMITS)
    }
    fn validate(&mut self, _common: Option<&Attributes>) -> Result<u64, RecordError> {
        if self.name().is_empty() {
            return Err(RecordError::EmptyName);
        }
        check_id(self.id())?;
        check_id(self.trace_id())?;
        if let Some(parent) = self.parent_id() {
            check_id(parent)?;
        }
        check_timestamp(self.timestamp_ms(), &SPAN_LIMITS)?;
        // The name, duration, parent id and service name travel as
        // attributes too, and count against the same limit.
        let count = self.wire_attributes();
        if count > SPAN_LIMITS.max_attributes {
            return Err(RecordError::TooManyAttributes {
                count,
                limit: SPAN_LIMITS.max_attributes,
            });
        }
        let mut cut = check_attributes(self.attributes_mut(), &SPAN_LIMITS)?;
        cut += u64::from(truncate_chars(self.name_mut(), MAX_SPAN_TEXT_CHARS));
        if let Some(service) = self.service_name_mut() {
            if chars_over(service, MAX_SPAN_TEXT_CHARS).is_some() {
                *service = Arc::from(truncated(service, MAX_SPAN_TEXT_CHARS));
                cut += 1;
            }
        }
        for event in self.events_mut() {
            if event.name().is_empty() {
                return Err(RecordError::EmptyName);
            }
            check_timestamp(event.timestamp_ms(), &SPAN_LIMITS)?;
            cut += check_attributes(event.attributes_mut(), &SPAN_LIMITS)?;
            cut += u64::from(truncate_chars(event.name_mut(), MAX_SPAN_TEXT_CHARS));
        }
        Ok(cut)
    }
}

impl Validate for DistributionPoint {
    fn sanitize_common(attributes: Attributes) -> Attributes {
        sanitize_common(attributes, &METRIC_LIMITS)
    }
    fn validate(&mut self, _common: Option<&Attributes>) -> Result<u64, RecordError> {
        check_metric_name(self.name())?;
        if self.distribution().count() == 0 {
            return Err(RecordError::EmptyDistribution);
        }
        check_timestamp(self.end_ms(), &METRIC_LIMITS)?;
        let (attrs, cut) = metric_attributes(self.name(), self.attributes())?;
        if cut > 0 {
            *self.attributes_mut() = attrs;
        }
        Ok(cut)
    }
}

impl Validate for Metric {
    fn sanitize_common(attributes: Attributes) -> Attributes {
        sanitize_common(attributes, &METRIC_LIMITS)
    }
    fn validate(&mut self, _common: Option<&Attributes>) -> Result<u64, RecordError> {
        check_metric(self)?;
        let (attrs, cut) = metric_attributes(self.name(), self.attributes())?;
        if cut > 0 {
            self.replace_attributes(attrs);
        }
        Ok(cut)
    }
}

/// The checks of a metric that do not touch its attributes: name, value,
/// timestamp. A batch runs them before it aggregates the metric.
pub(crate) fn check_metric(metric: &Metric) -> Result<(), RecordError> {
    check_metric_name(metric.name())?;
    let valid = match metric {
        Metric::Count(m) => m.value().is_finite(),
        Metric::Gauge(m) => m.value().is_finite(),
        Metric::Summary(m) => m.summary().is_valid(),
    };
    if !valid {
        return Err(match metric {
            Metric::Summary(_) => RecordError::InvalidSummary,
            _ => RecordError::NonFiniteValue {
                name: metric.name().to_owned(),
            },
        });
    }
    if let Some(timestamp_ms) = metric.timestamp_ms() {
        check_timestamp(timestamp_ms, &METRIC_LIMITS)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundary() {
        let mut attrs = Attributes::from([("k", "é".repeat(5000))]);
        let n = check_attributes(&mut attrs, &METRIC_LIMITS).unwrap();
        assert_eq!(n, 1);
        match attrs.get("k").unwrap() {
            Value::String(s) => assert_eq!(s.chars().count(), 4096),
            v => panic!("unexpected {v:?}"),
        }
    }

    #[test]
    fn refuses_reserved_and_own_name() {
        assert!(matches!(
            metric_attributes("m", &[("count", 1)]),
            Err(RecordError::ReservedAttribute { .. })
        ));
        assert!(matches!(
            metric_attributes("m", &[("m", 1)]),
            Err(RecordError::ReservedAttribute { .. })
        ));
        assert!(metric_attributes("m", &[("host", 1)]).is_ok());
    }

    #[test]
    fn refuses_long_keys_empty_keys_nan_and_too_many() {
        let long = "k".repeat(256);
        assert!(matches!(
            metric_attributes("m", &[(long.as_str(), 1)]),
            Err(RecordError::AttributeKeyTooLong { chars: 256, .. })
        ));
        assert_eq!(
            metric_attributes("m", &[("", 1)]).unwrap_err(),
            RecordError::EmptyAttributeKey
        );
        assert!(matches!(
            metric_attributes("m", &[("x", f64::NAN)]),
            Err(RecordError::NonFiniteAttribute { .. })
        ));
        let many: Vec<(String, i64)> = (0..101).map(|i| (format!("k{i}"), i)).collect();
        assert!(matches!(
            metric_attributes("m", &many),
            Err(RecordError::TooManyAttributes {
                count: 101,
                limit: 100
            })
        ));
    }

    #[test]
    fn event_types() {
        assert!(check_event_type("Purchase").is_ok());
        assert!(check_event_type("my:Event_2").is_ok());
        assert!(check_event_type("").is_err());
        assert!(check_event_type("has space").is_err());
        assert!(check_event_type("dash-ed").is_err());
        assert!(check_event_type(&"a".repeat(256)).is_err());
    }
}
