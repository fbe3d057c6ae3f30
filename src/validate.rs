//! The ingest APIs' limits on attributes and names, checked when an item is
//! recorded so that nothing the back end would drop reaches the wire.

use crate::attributes::{AsAttributes, Attributes, Value, ValueRef};
use crate::error::{RecordError, prefix};

/// Limits of one ingest API.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_attributes: usize,
    pub(crate) max_key_chars: usize,
    pub(crate) max_value_chars: usize,
    /// Keys the API reserves for itself.
    pub(crate) reserved: &'static [&'static str],
}

pub(crate) const METRIC_LIMITS: Limits = Limits {
    max_attributes: 100,
    max_key_chars: 255,
    max_value_chars: 4096,
    reserved: &RESERVED_METRIC_KEYS,
};
pub(crate) const EVENT_LIMITS: Limits = Limits {
    max_attributes: 255,
    max_key_chars: 255,
    max_value_chars: 4096,
    reserved: &[],
};
pub(crate) const LOG_LIMITS: Limits = Limits {
    max_attributes: 255,
    max_key_chars: 255,
    max_value_chars: 4094,
    reserved: &[],
};
pub(crate) const SPAN_LIMITS: Limits = Limits {
    max_attributes: 200,
    max_key_chars: 255,
    max_value_chars: 4000,
    reserved: &[],
};

/// Metric attribute keys the Metric API reserves (besides the metric's name).
const RESERVED_METRIC_KEYS: [&str; 9] = [
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
