//! Properties of what reaches the wire, for any input:
//!
//! - attribute sets do not depend on the order of their pairs, a later pair
//!   of a key replaces an earlier one, and a metric series is its set in any
//!   order;
//! - string values over each API's documented limit are cut on a character
//!   boundary to exactly that many characters (not bytes), and counted;
//!   items with more attributes than the API allows are refused and counted;
//! - every item kind goes through encoding, gzip, HTTP and the test server's
//!   decoding and comes out field for field as it was recorded (after the
//!   documented cuts), whatever its names and values hold (unicode, quotes,
//!   backslashes, control characters);
//! - the test server and the local endpoint answer any body, gzipped or not,
//!   with a status (or close a connection whose body never comes), never
//!   hang, and go on serving.
//!
//! Every case runs on one shared runtime, bounded by [`CASE_TIMEOUT`] (and
//! each request by [`REQUEST_TIMEOUT`]); the properties that do HTTP run few
//! cases.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use newrelic_telemetry::client::{Spans, encode_payload};
use newrelic_telemetry::local::LocalEndpoint;
use newrelic_telemetry::test_util::{ReceivedRequest, TestIngestServer};
use newrelic_telemetry::{
    Api, Attributes, Event, EventBatch, EventClient, Log, LogBatch, LogClient, Metric, MetricBatch,
    MetricClient, RecordError, RetryPolicy, Span, SpanBatch, SpanClient, SpanEvent, Value,
};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value as Json, json};
use support::fail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

// The documented limits (README, "Limits on what reaches the wire").

/// Attribute string values, in characters.
const METRIC_VALUE_CHARS: usize = 4096;
const EVENT_VALUE_CHARS: usize = 4096;
const LOG_VALUE_CHARS: usize = 4094;
const SPAN_VALUE_CHARS: usize = 4000;
/// A log's message, in characters.
const LOG_MESSAGE_CHARS: usize = 32_768;
/// A span's name and service name, a span event's name, in characters.
const SPAN_TEXT_CHARS: usize = 4000;
/// Attribute keys, in characters.
const KEY_CHARS: usize = 255;
/// Attributes per item.
const METRIC_ATTRIBUTES: usize = 100;
const EVENT_ATTRIBUTES: usize = 255;
const LOG_ATTRIBUTES: usize = 255;
const SPAN_ATTRIBUTES: usize = 200;

/// How long one case that does HTTP may take, all requests included.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Characters of 1 to 4 bytes in UTF-8, with those JSON must escape (quotes,
/// backslashes, control characters) and some it need not (`/`, U+2028, a
/// byte order mark, the last code point).
const CHARS: &str = "aZ7_. \"\\/\n\r\t\0\u{1}\u{1f}\u{7f}é€𝄞\u{2028}\u{feff}\u{fffd}\u{10ffff}";

fn chars() -> Vec<char> {
    CHARS.chars().collect()
}

/// The characters of an event type.
const EVENT_TYPE_CHARS: &[char] = &['a', 'z', 'A', 'Z', '0', '9', '_', ':'];

const PATHS: &[&str] = &[
    "/metric/v1",
    "/v1/accounts/events",
    "/log/v1",
    "/trace/v1",
    "/not/an/api",
];

fn config(cases: u32) -> ProptestConfig {
    support::proptest_config(cases)
}

/// The binary's one runtime (see `support::shared_runtime`).
fn runtime() -> &'static tokio::runtime::Runtime {
    support::shared_runtime()
}

/// The HTTP client of every request, the SDK's clients' included.
fn http() -> reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        newrelic_telemetry::client::http_client_builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client")
    })
    .clone()
}

/// Runs one case, bounded by [`CASE_TIMEOUT`].
fn run(case: impl Future<Output = Result<(), TestCaseError>>) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        tokio::time::timeout(CASE_TIMEOUT, case)
            .await
            .unwrap_or_else(|_| Err(fail("the case did not finish in time")))
    })
}

// ---------------------------------------------------------------------------
// Strategies

fn text(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(select(chars()), len).prop_map(|c| c.into_iter().collect())
}

/// A string of about `limit` characters (two under to three over): a
/// pattern of one to four characters of 1 to 4 bytes each, repeated, so that
/// a cut by bytes would land inside a character.
fn around(limit: usize) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(select(chars()), 1..=4),
        limit - 2..=limit + 3,
    )
        .prop_map(|(pattern, n)| pattern.iter().cycle().take(n).collect())
}

/// A short string, or now and then one about `limit` characters long.
fn string_value(limit: usize) -> impl Strategy<Value = String> {
    prop_oneof![6 => text(0..=16), 1 => around(limit)]
}

fn finite() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

fn value(limit: usize) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => string_value(limit).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => finite().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
    ]
}

/// An attribute key. None spells a reserved metric key, an intrinsic
/// (`eventType`, `name`, ...) or a metric name made by [`metric_name`].
fn key() -> impl Strategy<Value = String> {
    text(1..=12)
}

type Pairs = Vec<(String, Value)>;

/// Up to `most` pairs with distinct keys, in a random order.
fn pairs(limit: usize, most: usize) -> impl Strategy<Value = Pairs> {
    prop::collection::btree_map(key(), value(limit), 0..=most)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

/// Pairs and the same pairs in another order.
fn pairs_twice(limit: usize, most: usize) -> impl Strategy<Value = (Pairs, Pairs)> {
    pairs(limit, most).prop_flat_map(|p| (Just(p.clone()), Just(p).prop_shuffle()))
}

/// Pairs whose values are never cut (common attributes, whose cuts are not
/// counted by any batch).
fn short_pairs(most: usize) -> impl Strategy<Value = Pairs> {
    prop::collection::btree_map(key(), value(64), 1..=most)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>())
}

// ---------------------------------------------------------------------------
// What the wire should carry

/// `s` cut to `limit` characters.
fn cut(s: &str, limit: usize) -> String {
    s.chars().take(limit).collect()
}

fn cut_value(v: &Value, limit: usize) -> Value {
    match v {
        Value::String(s) => Value::from(cut(s, limit)),
        other => other.clone(),
    }
}

fn is_long(s: &str, limit: usize) -> bool {
    s.chars().count() > limit
}

fn long_values(pairs: &[(String, Value)], limit: usize) -> u64 {
    pairs
        .iter()
        .filter(|(_, v)| matches!(v, Value::String(s) if is_long(s, limit)))
        .count() as u64
}

fn json_value(v: &Value) -> Json {
    match v {
        Value::String(s) => Json::from(&**s),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => Json::from(*f),
        Value::Bool(b) => Json::from(*b),
        other => panic!("a value kind the model does not know: {other:?}"),
    }
}

/// `pairs`, cut at `limit`, written over `map` (so that they win).
fn with_pairs(
    mut map: Map<String, Json>,
    pairs: &[(String, Value)],
    limit: usize,
) -> Map<String, Json> {
    for (k, v) in pairs {
        map.insert(k.clone(), json_value(&cut_value(v, limit)));
    }
    map
}

/// The identity attributes every client adds under the common attributes
/// (the common block's on the Metric, Log and Trace APIs, each event's on
/// the Event API); the user's attributes of the same keys win over them.
fn identity() -> Map<String, Json> {
    let mut map = Map::new();
    map.insert("instrumentation.provider".into(), json!("newRelic"));
    map.insert("collector.name".into(), json!("newrelic-telemetry"));
    map.insert("collector.version".into(), json!(env!("CARGO_PKG_VERSION")));
    map
}

/// `value` as the server reads it: written and parsed again, so that floats
/// compare as serde_json reads them back.
fn as_read(value: Json) -> Json {
    serde_json::from_str(&value.to_string()).expect("valid JSON")
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}

// ---------------------------------------------------------------------------
// 1. Attribute sets, series, cuts and counts

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn attribute_sets_do_not_depend_on_the_order_of_their_pairs(
        (pairs, shuffled) in pairs_twice(64, 12),
    ) {
        let a = Attributes::from(pairs.clone());
        let b: Attributes = shuffled.iter().cloned().collect();
        prop_assert_eq!(&a, &b);
        let mut c = Attributes::new();
        for (k, v) in shuffled.iter().rev() {
            prop_assert_eq!(c.insert(k.as_str(), v.clone()), None);
        }
        prop_assert_eq!(&a, &c);
        let d = Attributes::from(pairs.iter().cloned().collect::<HashMap<_, _>>());
        prop_assert_eq!(&a, &d);

        prop_assert_eq!(a.len(), pairs.len());
        let keys: Vec<&str> = a.iter().map(|(k, _)| k).collect();
        prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted and unique: {:?}", keys);
        for (k, v) in &pairs {
            prop_assert_eq!(a.get(k), Some(v));
        }
    }

    #[test]
    fn a_later_pair_of_a_key_replaces_an_earlier_one(
        ops in prop::collection::vec(
            (select(&["a", "b", "é", "𝄞", "a.b", "\"\\"][..]), value(64)),
            0..24,
        ),
    ) {
        let mut model: BTreeMap<String, Value> = BTreeMap::new();
        let mut attrs = Attributes::new();
        for (k, v) in &ops {
            let replaced = model.insert((*k).to_owned(), v.clone());
            prop_assert_eq!(attrs.insert(*k, v.clone()), replaced);
        }
        let expected: Vec<(&str, &Value)> = model.iter().map(|(k, v)| (k.as_str(), v)).collect();
        prop_assert_eq!(attrs.iter().collect::<Vec<_>>(), expected);
        // Built at once, the later pair wins as well.
        prop_assert_eq!(&Attributes::from(ops.clone()), &attrs);
        prop_assert_eq!(&ops.iter().cloned().collect::<Attributes>(), &attrs);
    }

    #[test]
    fn a_metric_series_is_its_attribute_set_in_any_order(
        (pairs, shuffled) in pairs_twice(METRIC_VALUE_CHARS, 8),
        name in text(1..=12),
        replaced in value(64),
    ) {
        prop_assume!(pairs.iter().all(|(k, _)| *k != name), "a key may not be the name");
        run(async move {
            let batch = MetricBatch::new();
            let as_set = Attributes::from(pairs.clone());
            let as_map: BTreeMap<&str, &Value> = pairs.iter().map(|(k, v)| (k.as_str(), v)).collect();
            batch.try_record_count(&name, 1, &pairs).await.map_err(fail)?;
            batch.try_record_count(&name, 2, &shuffled).await.map_err(fail)?;
            batch.try_record_count(&name, 4, &as_set).await.map_err(fail)?;
            batch.try_record_count(&name, 8, &as_map).await.map_err(fail)?;
            let mut recordings = 4;
            let mut total = 15.0;
            // A key given twice keeps its last value.
            if let Some((first, _)) = shuffled.first() {
                let mut twice = vec![(first.clone(), replaced)];
                twice.extend(shuffled.iter().cloned());
                batch.try_record_count(&name, 16, &twice).await.map_err(fail)?;
                recordings += 1;
                total += 16.0;
            }
            prop_assert_eq!(batch.series_count(), 1);
            // Each recording cut its long values.
            prop_assert_eq!(
                batch.record_stats().values_truncated,
                recordings * long_values(&pairs, METRIC_VALUE_CHARS)
            );
            let (metrics, _) = batch.flush().await;
            prop_assert_eq!(metrics.len(), 1);
            let Metric::Count(count) = &metrics[0] else {
                return Err(fail(format!("not a count: {:?}", metrics[0])));
            };
            prop_assert_eq!(count.name(), name.as_str());
            prop_assert_eq!(count.value(), total);
            let expected: Attributes = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), cut_value(v, METRIC_VALUE_CHARS)))
                .collect();
            prop_assert_eq!(count.attributes(), &expected);
            Ok(())
        })?;
    }
}

/// Checks that `got` is `original` cut to `limit` characters.
fn check_cut(got: &str, original: &str, limit: usize) -> Result<(), TestCaseError> {
    let n = original.chars().count();
    prop_assert_eq!(got.chars().count(), n.min(limit));
    prop_assert!(original.starts_with(got), "a prefix of the original");
    let expected = cut(original, limit);
    prop_assert_eq!(got, expected.as_str());
    Ok(())
}

fn string_of(v: Option<&Value>) -> Result<&str, TestCaseError> {
    match v {
        Some(Value::String(s)) => Ok(s),
        other => Err(fail(format!("not a string: {other:?}"))),
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn long_metric_values_are_cut_to_4096_characters(
        s in around(METRIC_VALUE_CHARS),
        kind in 0..3u8,
    ) {
        run(async move {
            let batch = MetricBatch::new();
            let attrs = [("k", s.as_str())];
            match kind {
                0 => batch.try_record_count("m", 1, attrs).await,
                1 => batch.try_record_gauge("m", 1, attrs).await,
                _ => batch.try_record_summary("m", 1, attrs).await,
            }
            .map_err(fail)?;
            prop_assert_eq!(
                batch.record_stats().values_truncated,
                u64::from(is_long(&s, METRIC_VALUE_CHARS))
            );
            let (metrics, _) = batch.flush().await;
            prop_assert_eq!(metrics.len(), 1);
            check_cut(string_of(metrics[0].attributes().get("k"))?, &s, METRIC_VALUE_CHARS)
        })?;
    }

    #[test]
    fn long_event_values_are_cut_to_4096_characters(s in around(EVENT_VALUE_CHARS)) {
        run(async move {
            let batch = EventBatch::new();
            batch.try_record(Event::new("E").with_attribute("k", s.as_str())).await.map_err(fail)?;
            prop_assert_eq!(
                batch.record_stats().values_truncated,
                u64::from(is_long(&s, EVENT_VALUE_CHARS))
            );
            let (events, _) = batch.flush().await;
            check_cut(string_of(events[0].attributes().get("k"))?, &s, EVENT_VALUE_CHARS)
        })?;
    }

    #[test]
    fn long_log_values_and_messages_are_cut_to_4094_and_32768_characters(
        s in around(LOG_VALUE_CHARS),
        message in around(LOG_MESSAGE_CHARS),
    ) {
        run(async move {
            let batch = LogBatch::new();
            let log = Log::new(message.as_str()).with_attribute("k", s.as_str());
            batch.try_record(log).await.map_err(fail)?;
            prop_assert_eq!(
                batch.record_stats().values_truncated,
                u64::from(is_long(&s, LOG_VALUE_CHARS)) + u64::from(is_long(&message, LOG_MESSAGE_CHARS))
            );
            let (logs, _) = batch.flush().await;
            check_cut(string_of(logs[0].attributes().get("k"))?, &s, LOG_VALUE_CHARS)?;
            check_cut(logs[0].message(), &message, LOG_MESSAGE_CHARS)
        })?;
    }

    #[test]
    fn long_span_values_and_names_are_cut_to_4000_characters(
        s in around(SPAN_VALUE_CHARS),
        name in around(SPAN_TEXT_CHARS),
        service in around(SPAN_TEXT_CHARS),
        event_name in around(SPAN_TEXT_CHARS),
        event_value in around(SPAN_VALUE_CHARS),
    ) {
        run(async move {
            let batch = SpanBatch::new();
            let span = Span::new(name.as_str())
                .with_service_name(service.as_str())
                .with_attribute("k", s.as_str())
                .with_event(SpanEvent::new(event_name.as_str()).with_attribute("k", event_value.as_str()));
            batch.try_record(span).await.map_err(fail)?;
            let expected = [
                (&s, SPAN_VALUE_CHARS),
                (&name, SPAN_TEXT_CHARS),
                (&service, SPAN_TEXT_CHARS),
                (&event_name, SPAN_TEXT_CHARS),
                (&event_value, SPAN_VALUE_CHARS),
            ]
            .iter()
            .filter(|(s, limit)| is_long(s, *limit))
            .count() as u64;
            prop_assert_eq!(batch.record_stats().values_truncated, expected);
            let (spans, _) = batch.flush().await;
            let span = &spans[0];
            check_cut(string_of(span.attributes().get("k"))?, &s, SPAN_VALUE_CHARS)?;
            check_cut(span.name(), &name, SPAN_TEXT_CHARS)?;
            check_cut(span.service_name().unwrap_or_default(), &service, SPAN_TEXT_CHARS)?;
            let event = &span.events()[0];
            check_cut(event.name(), &event_name, SPAN_TEXT_CHARS)?;
            check_cut(string_of(event.attributes().get("k"))?, &event_value, SPAN_VALUE_CHARS)
        })?;
    }
}

/// `n` attributes `k0`, `k1`, ...
fn numbered(n: usize) -> Vec<(String, Value)> {
    (0..n)
        .map(|i| (format!("k{i}"), Value::from(i as i64)))
        .collect()
}

/// Checks one recording against the per-item limit: refused with
/// `TooManyAttributes` and counted as invalid past it, kept within it.
fn check_count_limit(
    outcome: Result<(), RecordError>,
    count: usize,
    limit: usize,
    invalid: u64,
    kept: usize,
) -> Result<(), TestCaseError> {
    if count > limit {
        prop_assert_eq!(
            outcome,
            Err(RecordError::TooManyAttributes { count, limit })
        );
        prop_assert_eq!((invalid, kept), (1, 0));
    } else {
        prop_assert_eq!(outcome, Ok(()));
        prop_assert_eq!((invalid, kept), (0, 1));
    }
    Ok(())
}

/// Checks one recording against the key length limit.
fn check_key_limit(
    outcome: Result<(), RecordError>,
    key: &str,
    invalid: u64,
) -> Result<(), TestCaseError> {
    let chars = key.chars().count();
    if chars > KEY_CHARS {
        prop_assert_eq!(
            outcome,
            Err(RecordError::AttributeKeyTooLong {
                key: key.chars().take(64).collect(),
                chars,
                limit: KEY_CHARS,
            })
        );
        prop_assert_eq!(invalid, 1);
    } else {
        prop_assert_eq!(outcome, Ok(()));
        prop_assert_eq!(invalid, 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn more_attributes_than_the_api_allows_are_refused_and_counted(
        over in 0..4usize, // from one under the limit to two over
    ) {
        run(async move {
            let n = METRIC_ATTRIBUTES - 1 + over;
            let metrics = MetricBatch::new();
            let outcome = metrics.try_record_count("m", 1, numbered(n)).await;
            let invalid = metrics.record_stats().items_dropped_invalid;
            check_count_limit(outcome, n, METRIC_ATTRIBUTES, invalid, metrics.flush().await.0.len())?;

            let n = EVENT_ATTRIBUTES - 1 + over;
            let events = EventBatch::new();
            let outcome = events.try_record(Event::new("E").with_attributes(numbered(n))).await;
            let invalid = events.record_stats().items_dropped_invalid;
            check_count_limit(outcome, n, EVENT_ATTRIBUTES, invalid, events.flush().await.0.len())?;

            let n = LOG_ATTRIBUTES - 1 + over;
            let logs = LogBatch::new();
            let outcome = logs.try_record(Log::new("m").with_attributes(numbered(n))).await;
            let invalid = logs.record_stats().items_dropped_invalid;
            check_count_limit(outcome, n, LOG_ATTRIBUTES, invalid, logs.flush().await.0.len())?;

            // A span's name travels as an attribute too, and counts.
            let n = SPAN_ATTRIBUTES - 2 + over;
            let spans = SpanBatch::new();
            let outcome = spans.try_record(Span::new("s").with_attributes(numbered(n))).await;
            let invalid = spans.record_stats().items_dropped_invalid;
            check_count_limit(outcome, n + 1, SPAN_ATTRIBUTES, invalid, spans.flush().await.0.len())?;
            Ok(())
        })?;
    }

    /// An event goes with its batch's common attributes merged in (there
    /// is no common block), so the limit applies to the merged set.
    #[test]
    fn an_events_limit_counts_the_common_attributes_it_goes_with(
        own in EVENT_ATTRIBUTES - 6..=EVENT_ATTRIBUTES + 1,
        common in 0..=6usize,
        shared in 0..=6usize,
    ) {
        let shared = shared.min(common);
        run(async move {
            // `shared` of the common keys are keys of the event too.
            let common_pairs: Vec<(String, Value)> = (0..common)
                .map(|i| {
                    let key = if i < shared { format!("k{i}") } else { format!("c{i}") };
                    (key, Value::from("common"))
                })
                .collect();
            let events = EventBatch::builder()
                .common_attributes(Attributes::from(common_pairs))
                .build();
            let merged = own + common - shared;
            let outcome = events.try_record(Event::new("E").with_attributes(numbered(own))).await;
            let invalid = events.record_stats().items_dropped_invalid;
            check_count_limit(outcome, merged, EVENT_ATTRIBUTES, invalid, events.flush().await.0.len())
        })?;
    }

    #[test]
    fn keys_longer_than_255_characters_are_refused_and_counted(
        key in around(KEY_CHARS),
    ) {
        run(async move {
            let metrics = MetricBatch::new();
            let outcome = metrics.try_record_count("m", 1, [(key.as_str(), 1)]).await;
            check_key_limit(outcome, &key, metrics.record_stats().items_dropped_invalid)?;

            let events = EventBatch::new();
            let outcome = events.try_record(Event::new("E").with_attribute(key.as_str(), 1)).await;
            check_key_limit(outcome, &key, events.record_stats().items_dropped_invalid)?;

            let logs = LogBatch::new();
            let outcome = logs.try_record(Log::new("m").with_attribute(key.as_str(), 1)).await;
            check_key_limit(outcome, &key, logs.record_stats().items_dropped_invalid)?;

            let spans = SpanBatch::new();
            let outcome = spans.try_record(Span::new("s").with_attribute(key.as_str(), 1)).await;
            check_key_limit(outcome, &key, spans.record_stats().items_dropped_invalid)
        })?;
    }
}

/// The Trace API takes 200 attributes per span, and a span's name,
/// `duration.ms`, `parent.id` and `service.name` travel as attributes (the
/// ingest contract): a span the batch accepts should never carry more than
/// 200 on the wire.
#[test]
fn an_accepted_span_carries_at_most_200_attributes_on_the_wire() {
    // It used to fail: a span of 200 attributes of its own was accepted
    // and sent with 201 (and up to 204 with a duration, a parent id and a
    // service name).
    proptest!(config(16), |(own in SPAN_ATTRIBUTES - 4..=SPAN_ATTRIBUTES, intrinsics in 0..8u8)| {
        run(async move {
            let mut span = Span::new("s").with_attributes(numbered(own));
            if intrinsics & 1 != 0 {
                span = span.with_duration(Duration::from_millis(1));
            }
            if intrinsics & 2 != 0 {
                span = span.with_parent_id("p");
            }
            if intrinsics & 4 != 0 {
                span = span.with_service_name("svc");
            }
            let batch = SpanBatch::new();
            if batch.try_record(span).await.is_err() {
                return Ok(());
            }
            let (spans, common) = batch.flush().await;
            let body = encode_payload::<Spans>(&spans, &common).await.map_err(fail)?;
            let mut json = String::new();
            GzDecoder::new(&body[..]).read_to_string(&mut json).map_err(fail)?;
            let wire: Json = serde_json::from_str(&json).map_err(fail)?;
            let attributes = wire[0]["spans"][0]["attributes"].as_object().map_or(0, Map::len);
            prop_assert!(
                attributes <= SPAN_ATTRIBUTES,
                "{} attributes on the wire ({} of its own)", attributes, own
            );
            Ok(())
        })?;
    });
}

// ---------------------------------------------------------------------------
// 2. Recorded, encoded, gzipped, posted, decoded: every field as recorded

#[derive(Clone, Copy, Debug)]
enum MetricType {
    Count,
    Gauge,
    Summary,
}

#[derive(Clone, Debug)]
struct MetricCase {
    kind: MetricType,
    name: String,
    pairs: Pairs,
    value: f64,
}

fn metric_case() -> impl Strategy<Value = MetricCase> {
    (
        select(vec![
            MetricType::Count,
            MetricType::Gauge,
            MetricType::Summary,
        ]),
        text(1..=12),
        pairs(METRIC_VALUE_CHARS, 6),
        finite(),
    )
        .prop_map(|(kind, name, pairs, value)| MetricCase {
            kind,
            name,
            pairs,
            value,
        })
}

/// A unique metric name: no key spells one (keys have no `#`).
fn metric_name(case: &MetricCase, i: usize) -> String {
    format!("{}#{i}", case.name)
}

fn metric_client(server: &TestIngestServer) -> Result<MetricClient, TestCaseError> {
    MetricClient::builder("test-key")
        .endpoint(server.metric_url())
        .http_client(http())
        .retry_policy(RetryPolicy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(fail)
}

async fn metrics_round_trip(cases: Vec<MetricCase>) -> Result<(), TestCaseError> {
    let server = TestIngestServer::start().await.map_err(fail)?;
    let client = metric_client(&server)?;
    let batch = MetricBatch::new();
    let mut long = 0;
    for (i, case) in cases.iter().enumerate() {
        let name = metric_name(case, i);
        let attrs = &case.pairs;
        match case.kind {
            MetricType::Count => batch.try_record_count(&name, case.value, attrs).await,
            MetricType::Gauge => batch.try_record_gauge(&name, case.value, attrs).await,
            MetricType::Summary => batch.try_record_summary(&name, case.value, attrs).await,
        }
        .map_err(fail)?;
        long += long_values(attrs, METRIC_VALUE_CHARS);
    }
    prop_assert_eq!(batch.record_stats().values_truncated, long);
    let (metrics, common) = batch.flush().await;
    prop_assert_eq!(metrics.len(), cases.len());
    let gauge_times: HashMap<String, Option<u64>> = metrics
        .iter()
        .filter(|m| matches!(m, Metric::Gauge(_)))
        .map(|m| (m.name().to_owned(), m.timestamp_ms()))
        .collect();
    let report = client
        .send_batch(metrics, common.clone())
        .await
        .map_err(fail)?;
    prop_assert_eq!(report.items_sent(), cases.len());
    prop_assert!(server.wait_for_requests(1, REQUEST_TIMEOUT).await);
    let requests = server.requests();
    prop_assert_eq!(requests.len(), 1);
    prop_assert_eq!(requests[0].header("content-encoding"), Some("gzip"));

    // The received metrics, with the common block's timestamp and interval
    // filled in, by name.
    let mut received: HashMap<String, Json> = HashMap::new();
    for metric in server.metrics() {
        let name = metric["name"].as_str().unwrap_or_default().to_owned();
        prop_assert!(received.insert(name, metric).is_none(), "one metric a name");
    }
    prop_assert_eq!(received.len(), cases.len());
    for (i, case) in cases.iter().enumerate() {
        let name = metric_name(case, i);
        let v = case.value;
        let mut expected = json!({"name": name});
        match case.kind {
            MetricType::Count => {
                expected["type"] = json!("count");
                expected["value"] = json!(v);
                expected["timestamp"] = json!(common.timestamp_ms());
                expected["interval.ms"] = json!(common.interval_ms());
            }
            MetricType::Summary => {
                expected["type"] = json!("summary");
                expected["value"] = json!({"count": 1, "sum": v, "min": v, "max": v});
                expected["timestamp"] = json!(common.timestamp_ms());
                expected["interval.ms"] = json!(common.interval_ms());
            }
            MetricType::Gauge => {
                expected["type"] = json!("gauge");
                expected["value"] = json!(v);
                expected["timestamp"] = json!(gauge_times.get(&name).copied().flatten());
            }
        }
        // The identity attributes come from the common block; the metric's
        // own win over them.
        let attrs = with_pairs(identity(), &case.pairs, METRIC_VALUE_CHARS);
        expected["attributes"] = Json::Object(attrs);
        let mut got = received.remove(&name).unwrap_or_default();
        if matches!(case.kind, MetricType::Gauge) {
            // A gauge has a time, not an interval: the common block's, filled
            // in by the server, means nothing to it.
            if let Some(obj) = got.as_object_mut() {
                obj.remove("interval.ms");
            }
        }
        prop_assert_eq!(got, as_read(expected));
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct EventCase {
    event_type: String,
    timestamp: u64,
    pairs: Pairs,
}

fn event_case() -> impl Strategy<Value = EventCase> {
    (
        prop::collection::vec(select(EVENT_TYPE_CHARS), 1..=24),
        0..=i64::MAX as u64,
        pairs(EVENT_VALUE_CHARS, 6),
    )
        .prop_map(|(t, timestamp, pairs)| EventCase {
            event_type: t.into_iter().collect(),
            timestamp,
            pairs,
        })
}

async fn events_round_trip(cases: Vec<EventCase>, common: Pairs) -> Result<(), TestCaseError> {
    let server = TestIngestServer::start().await.map_err(fail)?;
    let client = EventClient::builder("test-key")
        .endpoint(server.event_url())
        .http_client(http())
        .retry_policy(RetryPolicy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(fail)?;
    let batch = EventBatch::builder()
        .common_attributes(Attributes::from(common.clone()))
        .build();
    let mut long = 0;
    for case in &cases {
        let event = Event::new(case.event_type.as_str())
            .with_timestamp(at(case.timestamp))
            .with_attributes(case.pairs.clone());
        batch.try_record(event).await.map_err(fail)?;
        long += long_values(&case.pairs, EVENT_VALUE_CHARS);
    }
    prop_assert_eq!(batch.record_stats().values_truncated, long);
    let (events, common_block) = batch.flush().await;
    let report = client
        .send_batch(events, common_block)
        .await
        .map_err(fail)?;
    prop_assert_eq!(report.items_sent(), cases.len());
    prop_assert!(server.wait_for_requests(1, REQUEST_TIMEOUT).await);
    let expected: Vec<Json> = cases
        .iter()
        .map(|case| {
            // The identity attributes, the common ones over them, the
            // event's own over those, the intrinsics over all.
            let mut event = with_pairs(identity(), &common, EVENT_VALUE_CHARS);
            event = with_pairs(event, &case.pairs, EVENT_VALUE_CHARS);
            event.insert("eventType".into(), json!(case.event_type));
            event.insert("timestamp".into(), json!(case.timestamp));
            as_read(Json::Object(event))
        })
        .collect();
    prop_assert_eq!(server.events(), expected);
    Ok(())
}

#[derive(Clone, Debug)]
struct LogCase {
    message: String,
    age_ms: u64,
    pairs: Pairs,
}

fn log_case() -> impl Strategy<Value = LogCase> {
    (
        prop_oneof![4 => text(0..=40), 1 => around(LOG_MESSAGE_CHARS)],
        0..47 * 3600 * 1000u64,
        pairs(LOG_VALUE_CHARS, 6),
    )
        .prop_map(|(message, age_ms, pairs)| LogCase {
            message,
            age_ms,
            pairs,
        })
}

async fn logs_round_trip(cases: Vec<LogCase>, common: Pairs) -> Result<(), TestCaseError> {
    let server = TestIngestServer::start().await.map_err(fail)?;
    let client = LogClient::builder("test-key")
        .endpoint(server.log_url())
        .http_client(http())
        .retry_policy(RetryPolicy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(fail)?;
    let batch = LogBatch::builder()
        .common_attributes(Attributes::from(common.clone()))
        .build();
    let now = now_ms();
    let mut long = 0;
    for case in &cases {
        let log = Log::new(case.message.as_str())
            .with_timestamp(at(now - case.age_ms))
            .with_attributes(case.pairs.clone());
        batch.try_record(log).await.map_err(fail)?;
        long += long_values(&case.pairs, LOG_VALUE_CHARS)
            + u64::from(is_long(&case.message, LOG_MESSAGE_CHARS));
    }
    prop_assert_eq!(batch.record_stats().values_truncated, long);
    let (logs, common_block) = batch.flush().await;
    let report = client.send_batch(logs, common_block).await.map_err(fail)?;
    prop_assert_eq!(report.items_sent(), cases.len());
    prop_assert!(server.wait_for_requests(1, REQUEST_TIMEOUT).await);
    let expected: Vec<Json> = cases
        .iter()
        .map(|case| {
            let attributes = with_pairs(
                with_pairs(identity(), &common, LOG_VALUE_CHARS),
                &case.pairs,
                LOG_VALUE_CHARS,
            );
            as_read(json!({
                "timestamp": now - case.age_ms,
                "message": cut(&case.message, LOG_MESSAGE_CHARS),
                "attributes": attributes,
            }))
        })
        .collect();
    prop_assert_eq!(server.logs(), expected);
    Ok(())
}

#[derive(Clone, Debug)]
struct SpanEventCase {
    name: String,
    timestamp: u64,
    pairs: Pairs,
}

#[derive(Clone, Debug)]
struct SpanCase {
    name: String,
    id: String,
    trace_id: String,
    parent_id: Option<String>,
    service_name: Option<String>,
    duration_us: Option<u32>,
    timestamp: u64,
    pairs: Pairs,
    events: Vec<SpanEventCase>,
}

fn span_text() -> impl Strategy<Value = String> {
    prop_oneof![4 => text(1..=20), 1 => around(SPAN_TEXT_CHARS)]
}

fn span_case() -> impl Strategy<Value = SpanCase> {
    let event = (span_text(), 0..=i64::MAX as u64, pairs(SPAN_VALUE_CHARS, 3)).prop_map(
        |(name, timestamp, pairs)| SpanEventCase {
            name,
            timestamp,
            pairs,
        },
    );
    (
        (
            span_text(),
            text(1..=16),
            text(1..=32),
            proptest::option::of(text(1..=16)),
        ),
        (
            proptest::option::of(prop_oneof![text(0..=20), around(SPAN_TEXT_CHARS)]),
            proptest::option::of(any::<u32>()),
            0..=i64::MAX as u64,
        ),
        pairs(SPAN_VALUE_CHARS, 6),
        prop::collection::vec(event, 0..=2),
    )
        .prop_map(
            |(
                (name, id, trace_id, parent_id),
                (service_name, duration_us, timestamp),
                pairs,
                events,
            )| {
                SpanCase {
                    name,
                    id,
                    trace_id,
                    parent_id,
                    service_name,
                    duration_us,
                    timestamp,
                    pairs,
                    events,
                }
            },
        )
}

impl SpanCase {
    fn span(&self) -> Span {
        let mut span = Span::new(self.name.as_str())
            .with_id(self.id.as_str())
            .with_trace_id(self.trace_id.as_str())
            .with_timestamp(at(self.timestamp))
            .with_attributes(self.pairs.clone());
        if let Some(parent) = &self.parent_id {
            span = span.with_parent_id(parent.as_str());
        }
        if let Some(service) = &self.service_name {
            span = span.with_service_name(service.as_str());
        }
        if let Some(us) = self.duration_us {
            span = span.with_duration(Duration::from_micros(u64::from(us)));
        }
        for case in &self.events {
            let mut event = SpanEvent::new(case.name.as_str()).with_timestamp(at(case.timestamp));
            for (k, v) in &case.pairs {
                event = event.with_attribute(k.as_str(), v.clone());
            }
            span = span.with_event(event);
        }
        span
    }

    fn long_values(&self) -> u64 {
        let texts = [Some(&self.name), self.service_name.as_ref()]
            .into_iter()
            .chain(self.events.iter().map(|e| Some(&e.name)))
            .flatten()
            .filter(|s| is_long(s, SPAN_TEXT_CHARS))
            .count() as u64;
        texts
            + long_values(&self.pairs, SPAN_VALUE_CHARS)
            + self
                .events
                .iter()
                .map(|e| long_values(&e.pairs, SPAN_VALUE_CHARS))
                .sum::<u64>()
    }

    /// The span as the server reads it, with `common` filled in.
    fn expected(&self, common: &[(String, Value)]) -> Json {
        let mut attributes = with_pairs(
            with_pairs(identity(), common, SPAN_VALUE_CHARS),
            &self.pairs,
            SPAN_VALUE_CHARS,
        );
        attributes.insert("name".into(), json!(cut(&self.name, SPAN_TEXT_CHARS)));
        if let Some(us) = self.duration_us {
            let ms = Duration::from_micros(u64::from(us)).as_nanos() as f64 / 1e6;
            attributes.insert("duration.ms".into(), json!(ms));
        }
        if let Some(parent) = &self.parent_id {
            attributes.insert("parent.id".into(), json!(parent));
        }
        if let Some(service) = &self.service_name {
            attributes.insert("service.name".into(), json!(cut(service, SPAN_TEXT_CHARS)));
        }
        let mut span = json!({
            "id": self.id,
            "trace.id": self.trace_id,
            "timestamp": self.timestamp,
            "attributes": attributes,
        });
        if !self.events.is_empty() {
            let events: Vec<Json> = self
                .events
                .iter()
                .map(|e| {
                    let mut event = json!({
                        "name": cut(&e.name, SPAN_TEXT_CHARS),
                        "timestamp": e.timestamp,
                    });
                    if !e.pairs.is_empty() {
                        let attrs = with_pairs(Map::new(), &e.pairs, SPAN_VALUE_CHARS);
                        event["attributes"] = Json::Object(attrs);
                    }
                    event
                })
                .collect();
            span["events"] = Json::Array(events);
        }
        as_read(span)
    }
}

async fn spans_round_trip(cases: Vec<SpanCase>, common: Pairs) -> Result<(), TestCaseError> {
    let server = TestIngestServer::start().await.map_err(fail)?;
    let client = SpanClient::builder("test-key")
        .endpoint(server.span_url())
        .http_client(http())
        .retry_policy(RetryPolicy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(fail)?;
    let batch = SpanBatch::builder()
        .common_attributes(Attributes::from(common.clone()))
        .build();
    for case in &cases {
        batch.try_record(case.span()).await.map_err(fail)?;
    }
    let long: u64 = cases.iter().map(SpanCase::long_values).sum();
    prop_assert_eq!(batch.record_stats().values_truncated, long);
    let (spans, common_block) = batch.flush().await;
    let report = client.send_batch(spans, common_block).await.map_err(fail)?;
    prop_assert_eq!(report.items_sent(), cases.len());
    prop_assert!(server.wait_for_requests(1, REQUEST_TIMEOUT).await);
    let expected: Vec<Json> = cases.iter().map(|c| c.expected(&common)).collect();
    prop_assert_eq!(server.spans(), expected);
    Ok(())
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn metrics_arrive_as_recorded(cases in prop::collection::vec(metric_case(), 1..=6)) {
        run(metrics_round_trip(cases))?;
    }

    #[test]
    fn events_arrive_as_recorded(
        cases in prop::collection::vec(event_case(), 1..=4),
        common in short_pairs(3),
    ) {
        run(events_round_trip(cases, common))?;
    }

    #[test]
    fn logs_arrive_as_recorded(
        cases in prop::collection::vec(log_case(), 1..=4),
        common in short_pairs(3),
    ) {
        run(logs_round_trip(cases, common))?;
    }

    #[test]
    fn spans_arrive_as_recorded(
        cases in prop::collection::vec(span_case(), 1..=3),
        common in short_pairs(3),
    ) {
        run(spans_round_trip(cases, common))?;
    }
}

// ---------------------------------------------------------------------------
// 3. Arbitrary bodies at the test server and the local endpoint

/// A body the servers can parse: a log payload.
fn valid_json() -> impl Strategy<Value = String> {
    text(0..=20).prop_map(|message| json!([{"logs": [{"message": message}]}]).to_string())
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Random bytes.
        prop::collection::vec(any::<u8>(), 0..=512),
        // Valid gzip of random bytes, and of text: (mostly) not JSON.
        prop::collection::vec(any::<u8>(), 0..=512).prop_map(|b| gzip(&b)),
        text(0..=40).prop_map(|t| gzip(t.as_bytes())),
        // Gzip cut short.
        (valid_json(), any::<Index>()).prop_map(|(json, at)| {
            let gz = gzip(json.as_bytes());
            gz[..at.index(gz.len())].to_vec()
        }),
        // Gzip declaring a huge size in its trailer.
        (valid_json(), 1u32 << 31..=u32::MAX).prop_map(|(json, size)| {
            let mut gz = gzip(json.as_bytes());
            let n = gz.len();
            gz[n - 4..].copy_from_slice(&size.to_le_bytes());
            gz
        }),
        // Gzip with one byte changed.
        (valid_json(), any::<Index>(), 1..=255u8).prop_map(|(json, at, x)| {
            let mut gz = gzip(json.as_bytes());
            let i = at.index(gz.len());
            gz[i] ^= x;
            gz
        }),
        // Nested deeper than any parser should recurse.
        (1usize..=20_000).prop_map(|n| "[".repeat(n).into_bytes()),
        // Valid, gzipped or not.
        valid_json().prop_map(|json| gzip(json.as_bytes())),
        valid_json().prop_map(String::into_bytes),
    ]
}

#[derive(Clone, Debug)]
struct BodyCase {
    body: Vec<u8>,
    gzip_header: bool,
    path: &'static str,
    method: &'static str,
}

fn body_case() -> impl Strategy<Value = BodyCase> {
    (
        body(),
        any::<bool>(),
        select(PATHS),
        select(&["POST", "POST", "POST", "PUT"][..]),
    )
        .prop_map(|(body, gzip_header, path, method)| BodyCase {
            body,
            gzip_header,
            path,
            method,
        })
}

/// What the servers should make of a body: gunzipped if it says so, then
/// parsed.
fn reference_decode(body: &[u8], gzip_header: bool) -> Option<Json> {
    if gzip_header {
        let mut json = Vec::new();
        GzDecoder::new(body).read_to_end(&mut json).ok()?;
        serde_json::from_slice(&json).ok()
    } else {
        serde_json::from_slice(body).ok()
    }
}

async fn post(
    http: &reqwest::Client,
    url: String,
    method: &str,
    body: Vec<u8>,
    gzip_header: bool,
) -> Result<u16, TestCaseError> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(fail)?;
    let mut request = http
        .request(method, url)
        .header("content-type", "application/json")
        .header("api-key", "test-key")
        .body(body);
    if gzip_header {
        request = request.header("content-encoding", "gzip");
    }
    let response = request.send().await.map_err(fail)?;
    let status = response.status().as_u16();
    response.bytes().await.map_err(fail)?;
    Ok(status)
}

/// Posts a valid log payload; checks that it is accepted and decoded.
async fn check_still_serving(
    http: &reqwest::Client,
    addr: SocketAddr,
    requests: &dyn Fn() -> Vec<ReceivedRequest>,
) -> Result<(), TestCaseError> {
    let body = gzip(br#"[{"logs":[{"message":"still serving"}]}]"#);
    let status = post(http, format!("http://{addr}/log/v1"), "POST", body, true).await?;
    prop_assert_eq!(status, 202);
    let last = requests()
        .pop()
        .ok_or_else(|| fail("no request recorded"))?;
    prop_assert_eq!(&last.body[0]["logs"][0]["message"], "still serving");
    Ok(())
}

/// Posts `case` to the server at `addr`; checks the status it answered and
/// what it recorded against [`reference_decode`], then that it still serves.
async fn check_body(
    http: &reqwest::Client,
    addr: SocketAddr,
    requests: &dyn Fn() -> Vec<ReceivedRequest>,
    case: &BodyCase,
) -> Result<(), TestCaseError> {
    let before = requests().len();
    let url = format!("http://{addr}{}", case.path);
    let status = post(http, url, case.method, case.body.clone(), case.gzip_header).await?;
    let decoded = reference_decode(&case.body, case.gzip_header);
    let expected = match Api::from_path(case.path) {
        None => 404,
        Some(_) if decoded.is_none() || case.method != "POST" => 400,
        Some(Api::Event) => 200,
        Some(_) => 202,
    };
    prop_assert_eq!(status, expected);
    let seen = requests();
    prop_assert_eq!(seen.len(), before + 1);
    let request = &seen[before];
    prop_assert_eq!(request.status, status);
    prop_assert_eq!(request.path.as_str(), case.path);
    prop_assert_eq!(request.method.as_str(), case.method);
    prop_assert_eq!(request.wire_bytes, case.body.len());
    prop_assert_eq!(&request.body, &decoded.unwrap_or(Json::Null));
    check_still_serving(http, addr, requests).await
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn the_servers_answer_any_body_and_go_on_serving(case in body_case()) {
        run(async move {
            let http = http();
            let server = TestIngestServer::start().await.map_err(fail)?;
            check_body(&http, server.addr(), &|| server.requests(), &case).await?;
            let local = LocalEndpoint::start().await.map_err(fail)?;
            check_body(&http, local.addr(), &|| local.requests(), &case).await
        })?;
    }

    /// Bytes that are not HTTP at all, then the end of the stream: the
    /// server answers (an HTTP status line) or closes, in time.
    #[test]
    fn the_servers_answer_or_close_on_bytes_that_are_not_http(
        bytes in prop::collection::vec(any::<u8>(), 0..=256),
    ) {
        run(async move {
            let http = http();
            let server = TestIngestServer::start().await.map_err(fail)?;
            raw_then_close(server.addr(), &bytes).await?;
            check_still_serving(&http, server.addr(), &|| server.requests()).await?;
            let local = LocalEndpoint::start().await.map_err(fail)?;
            raw_then_close(local.addr(), &bytes).await?;
            check_still_serving(&http, local.addr(), &|| local.requests()).await
        })?;
    }
}

/// Writes `bytes` on a new connection, closes its writing half, and reads
/// until the server closes: its answer, if any, must be HTTP.
async fn raw_then_close(addr: SocketAddr, bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
    stream.write_all(bytes).await.map_err(fail)?;
    stream.shutdown().await.map_err(fail)?;
    let mut answer = Vec::new();
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.read_to_end(&mut answer)).await {
        Err(_) => return Err(fail("the server neither answered nor closed")),
        // A reset is a way of closing.
        Ok(Err(_)) => {}
        Ok(Ok(_)) => prop_assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1."),
            "an HTTP answer or none: {:?}",
            String::from_utf8_lossy(&answer)
        ),
    }
    Ok(())
}

/// A request declaring a terabyte of gzip: one connection sends a little and
/// closes its writing half (the server must answer or close, in time),
/// another sends a little and stays silent (the server must go on serving
/// others meanwhile).
#[test]
fn a_body_shorter_than_declared_neither_hangs_nor_stops_the_servers() {
    let head = b"POST /log/v1 HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                 content-encoding: gzip\r\ncontent-length: 1099511627776\r\n\r\n\x1f\x8b\x08\x00";
    let result = run(async {
        let http = http();
        let server = TestIngestServer::start().await.map_err(fail)?;
        let local = LocalEndpoint::start().await.map_err(fail)?;
        for (addr, requests) in [
            (
                server.addr(),
                &(|| server.requests()) as &dyn Fn() -> Vec<ReceivedRequest>,
            ),
            (local.addr(), &|| local.requests()),
        ] {
            let mut silent = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
            silent.write_all(head).await.map_err(fail)?;
            raw_then_close(addr, head).await?;
            check_still_serving(&http, addr, requests).await?;
            drop(silent);
        }
        Ok(())
    });
    result.unwrap();
}

/// A MiB of zeros in a KiB of gzip: answered 400 (not JSON), in time, and
/// the servers go on serving. (Larger bombs take seconds to inflate in a
/// debug build.)
#[test]
fn a_gzip_bomb_is_answered_and_the_servers_go_on_serving() {
    let bomb = gzip(&vec![0; 1 << 20]);
    let result = run(async {
        let http = http();
        let server = TestIngestServer::start().await.map_err(fail)?;
        let local = LocalEndpoint::start().await.map_err(fail)?;
        for (addr, requests) in [
            (
                server.addr(),
                &(|| server.requests()) as &dyn Fn() -> Vec<ReceivedRequest>,
            ),
            (local.addr(), &|| local.requests()),
        ] {
            let url = format!("http://{addr}/log/v1");
            let status = post(&http, url, "POST", bomb.clone(), true).await?;
            prop_assert_eq!(status, 400);
            check_still_serving(&http, addr, requests).await?;
        }
        Ok(())
    });
    result.unwrap();
}
