//! W3C Trace Context under hostile input.
//!
//! Property tests of `TraceContext`: every valid `traceparent` parses and
//! survives being written and read again; any string at all (random bytes,
//! or a valid header with a character replaced, cut, extended, uppercased,
//! re-versioned or given more fields) parses exactly as the W3C rules
//! (written out again below, from the specification's text) say, never
//! panics, and yields only lowercase, non-zero ids of the right length; a
//! `tracestate` of valid list-members comes out unchanged (up to optional
//! whitespace and empty members), at most 32 of them, and one bad member,
//! a repeated key or a 33rd member drops it while the `traceparent` stays.
//!
//! Then the vectors of the W3C Trace Context test suite
//! (github.com/w3c/trace-context, `test/test.py`), end to end: an axum
//! service on 127.0.0.1 behind `HttpServerLayer`, exporting to a
//! `TestIngestServer`, a reqwest client sending each vector; for each, the
//! request span either continues the incoming trace or starts a new one,
//! and the handler sees the `tracestate` the rules say.

use std::collections::HashSet;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{HeaderMap, HeaderValue};
use newrelic_telemetry::middleware::HttpServerLayer;
use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::trace_context::{MAX_TRACESTATE_ENTRIES, TraceContext};
use newrelic_telemetry::tracing_layer::current_trace_context;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value as Json;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// Few enough cases for a few seconds in a debug build; no regression
/// files written (a failure prints its minimal input).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------
// The W3C rules, written from the specification (Level 1, section 3.2,
// and its test suite), independently of the crate's parser.
// ---------------------------------------------------------------------

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn all_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

/// What a `traceparent` value means: (trace id, parent id, sampled), or
/// `None` when the trace must restart. Surrounding spaces and tabs are
/// optional whitespace (the test suite's `test_traceparent_ows_handling`);
/// version `00` has exactly four fields; a higher version (not `ff`) is
/// read by its first four, and what follows the flags must start with `-`.
fn w3c_traceparent(value: &str) -> Option<(String, String, bool)> {
    let value = value.trim_matches([' ', '\t']);
    let fields: Vec<&str> = value.split('-').collect();
    let [version, trace, parent, flags, rest @ ..] = fields.as_slice() else {
        return None;
    };
    if !is_lower_hex(version, 2) || *version == "ff" || (*version == "00" && !rest.is_empty()) {
        return None;
    }
    if !is_lower_hex(trace, 32) || !is_lower_hex(parent, 16) || !is_lower_hex(flags, 2) {
        return None;
    }
    if all_zero(trace) || all_zero(parent) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace.to_string(), parent.to_string(), flags & 1 == 1))
}

/// A `tracestate` key. The simple key and the system id may start with a
/// digit here, as the crate accepts and as the specification's prose
/// ("Identifiers MUST begin with a lowercase letter or a digit") and Level 2
/// allow; Level 1's ABNF asks a lowercase letter (see the report).
fn is_trace_state_key(key: &str) -> bool {
    let part = |s: &str, max: usize| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && matches!(b[0], b'a'..=b'z' | b'0'..=b'9')
            && b.iter()
                .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    match key.split_once('@') {
        None => part(key, 256),
        Some((tenant, system)) => part(tenant, 241) && part(system, 14),
    }
}

/// A `tracestate` value: 1 to 256 of 0x20-0x7e but `,` and `=`, not ending
/// in a space.
fn is_trace_state_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.last() != Some(&b' ')
        && b.iter()
            .all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
}

/// What any context must be: ids of the right length, lowercase hex, not
/// all zeros; a `traceparent` written as version 00 with only the sampled
/// bit; a `tracestate`, if any, of 1 to 32 valid members with distinct
/// keys, joined with `,` and nothing else.
fn check_invariants(context: &TraceContext) -> Result<(), TestCaseError> {
    let (trace, span) = (context.trace_id(), context.span_id());
    prop_assert!(is_lower_hex(trace, 32) && !all_zero(trace), "{context:?}");
    prop_assert!(is_lower_hex(span, 16) && !all_zero(span), "{context:?}");
    let flags = if context.is_sampled() { "01" } else { "00" };
    prop_assert_eq!(context.traceparent(), format!("00-{trace}-{span}-{flags}"));
    if let Some(state) = context.trace_state() {
        let members: Vec<&str> = state.split(',').collect();
        prop_assert!(members.len() <= MAX_TRACESTATE_ENTRIES, "{state}");
        let mut keys = HashSet::new();
        for member in members {
            let (key, value) = member.split_once('=').unwrap_or((member, ""));
            prop_assert!(is_trace_state_key(key), "key {key:?} in {state:?}");
            prop_assert!(is_trace_state_value(value), "value {value:?} in {state:?}");
            prop_assert!(keys.insert(key), "repeated key {key:?} in {state:?}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Strategies (no regex strategies: the dev-dependency has none enabled).
// ---------------------------------------------------------------------

const HEX: &[u8] = b"0123456789abcdef";
const LCALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const LCALPHA_DIGIT: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const KEY_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-*/";

/// Every character a `tracestate` value may hold.
fn value_chars() -> Vec<u8> {
    (0x20..=0x7e).filter(|c| *c != b',' && *c != b'=').collect()
}

fn from_set(
    set: impl Into<std::borrow::Cow<'static, [u8]>>,
    len: impl Into<proptest::collection::SizeRange>,
) -> impl Strategy<Value = String> {
    vec(select(set), len).prop_map(|bytes| bytes.into_iter().map(char::from).collect())
}

/// A valid id of `len` hex digits: random, or all zeros but one digit (the
/// edge of the all-zero rule).
fn w3c_id(len: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        from_set(HEX, len).prop_filter("not all zeros", |s| !all_zero(s)),
        (0..len, 1..16usize).prop_map(move |(at, digit)| {
            let mut id = vec![b'0'; len];
            id[at] = HEX[digit];
            id.into_iter().map(char::from).collect()
        }),
    ]
}

#[derive(Clone, Debug)]
struct Valid {
    trace: String,
    span: String,
    flags: u8,
}

impl Valid {
    fn header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace, self.span, self.flags)
    }
}

fn valid() -> impl Strategy<Value = Valid> {
    (w3c_id(32), w3c_id(16), any::<u8>()).prop_map(|(trace, span, flags)| Valid {
        trace,
        span,
        flags,
    })
}

/// Characters near the grammar's edges, and any at all.
fn edgy_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => select(HEX).prop_map(char::from),
        2 => select(b"ABCDEF".as_slice()).prop_map(char::from),
        2 => select(b"-. \tgxz@=,".as_slice()).prop_map(char::from),
        1 => Just('\u{0}'),
        1 => Just('\u{e9}'),
        2 => any::<char>(),
    ]
}

/// One change to a valid header.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(usize, char),
    Insert(usize, char),
    Remove(usize),
    Truncate(usize),
    Extend(String),
    Uppercase,
    UppercaseOne(usize),
    Version(u8),
    ExtraFields(Vec<String>),
    ZeroTrace,
    ZeroSpan,
    Surround(String, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let text = |len: std::ops::Range<usize>| vec(edgy_char(), len).prop_map(String::from_iter);
    let ows = || from_set(b" \t".as_slice(), 0..3);
    prop_oneof![
        3 => (0..60usize, edgy_char()).prop_map(|(at, c)| Mutation::Replace(at, c)),
        2 => (0..60usize, edgy_char()).prop_map(|(at, c)| Mutation::Insert(at, c)),
        2 => (0..60usize).prop_map(Mutation::Remove),
        2 => (0..60usize).prop_map(Mutation::Truncate),
        2 => text(1..8).prop_map(Mutation::Extend),
        1 => Just(Mutation::Uppercase),
        2 => (0..60usize).prop_map(Mutation::UppercaseOne),
        3 => any::<u8>().prop_map(Mutation::Version),
        2 => vec(text(0..6), 1..3).prop_map(Mutation::ExtraFields),
        1 => Just(Mutation::ZeroTrace),
        1 => Just(Mutation::ZeroSpan),
        1 => (ows(), ows()).prop_map(|(a, b)| Mutation::Surround(a, b)),
    ]
}

fn apply(header: &str, mutation: &Mutation) -> String {
    let mut chars: Vec<char> = header.chars().collect();
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match mutation {
        Mutation::Replace(i, c) if !chars.is_empty() => {
            let i = at(*i, chars.len());
            chars[i] = *c;
        }
        Mutation::Insert(i, c) => chars.insert(at(*i, chars.len() + 1), *c),
        Mutation::Remove(i) if !chars.is_empty() => {
            chars.remove(at(*i, chars.len()));
        }
        Mutation::Truncate(n) => chars.truncate(at(*n, chars.len() + 1)),
        Mutation::Extend(more) => chars.extend(more.chars()),
        Mutation::Uppercase => return header.to_uppercase(),
        Mutation::UppercaseOne(i) if !chars.is_empty() => {
            let i = at(*i, chars.len());
            chars[i] = chars[i].to_ascii_uppercase();
        }
        Mutation::Version(v) if chars.len() >= 2 => {
            let version: Vec<char> = format!("{v:02x}").chars().collect();
            chars.splice(0..2, version);
        }
        Mutation::ExtraFields(fields) => {
            for field in fields {
                chars.push('-');
                chars.extend(field.chars());
            }
        }
        Mutation::ZeroTrace if chars.len() >= 35 => chars[3..35].fill('0'),
        Mutation::ZeroSpan if chars.len() >= 52 => chars[36..52].fill('0'),
        Mutation::Surround(before, after) => {
            return format!("{before}{}{after}", String::from_iter(chars));
        }
        _ => {}
    }
    chars.into_iter().collect()
}

/// `parse_traceparent` agrees with the W3C rules on `value`, and what it
/// returns holds the invariants.
fn check_parse(value: &str) -> Result<Option<TraceContext>, TestCaseError> {
    let parsed = TraceContext::parse_traceparent(value);
    let got = parsed.as_ref().map(|c| {
        (
            c.trace_id().to_owned(),
            c.span_id().to_owned(),
            c.is_sampled(),
        )
    });
    prop_assert_eq!(got, w3c_traceparent(value), "traceparent {:?}", value);
    if let Some(context) = &parsed {
        check_invariants(context)?;
        prop_assert_eq!(context.trace_state(), None);
    }
    Ok(parsed)
}

/// `extract` on headers holding `value` as their only `traceparent` (when
/// it can be a header value at all) agrees with `parse_traceparent`; two of
/// them are no context.
fn check_extract(value: &[u8]) -> Result<(), TestCaseError> {
    let Ok(header) = HeaderValue::from_bytes(value) else {
        return Ok(());
    };
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", header.clone());
    let extracted = TraceContext::extract(&headers);
    let expected = header
        .to_str()
        .ok()
        .and_then(TraceContext::parse_traceparent);
    prop_assert_eq!(&extracted, &expected);
    if let Some(context) = &extracted {
        check_invariants(context)?;
    }
    headers.append("traceparent", header);
    prop_assert_eq!(TraceContext::extract(&headers), None);
    Ok(())
}

/// A valid list-member key: mostly short, sometimes near the limits.
fn key(long: bool) -> BoxedStrategy<String> {
    let rest = |short: std::ops::RangeInclusive<usize>, max: usize| {
        if long {
            from_set(KEY_CHARS, (max / 2)..=max).boxed()
        } else {
            prop_oneof![
                8 => from_set(KEY_CHARS, short),
                1 => from_set(KEY_CHARS, 0..=max),
            ]
            .boxed()
        }
    };
    let simple = (select(LCALPHA), rest(0..=10, 255))
        .prop_map(|(first, rest)| format!("{}{rest}", first as char));
    let tenant = (select(LCALPHA_DIGIT), rest(0..=6, 240))
        .prop_map(|(first, rest)| format!("{}{rest}", first as char));
    let system = (select(LCALPHA), from_set(KEY_CHARS, 0..=13))
        .prop_map(|(first, rest)| format!("{}{rest}", first as char));
    prop_oneof![
        3 => simple,
        1 => (tenant, system).prop_map(|(tenant, system)| format!("{tenant}@{system}")),
    ]
    .boxed()
}

/// A valid list-member value: leading spaces allowed, a non-space last.
fn value(long: bool) -> BoxedStrategy<String> {
    let body = if long {
        from_set(value_chars(), 100..=255).boxed()
    } else {
        prop_oneof![8 => from_set(value_chars(), 0..=12), 1 => from_set(value_chars(), 0..=255)]
            .boxed()
    };
    let last: Vec<u8> = value_chars().into_iter().filter(|c| *c != b' ').collect();
    (body, select(last))
        .prop_map(|(body, last)| format!("{body}{}", last as char))
        .boxed()
}

/// Valid members with distinct keys (later repeats dropped): short lists
/// of short members, or long members around the 8192-byte bound.
fn members() -> impl Strategy<Value = Vec<(String, String)>> {
    let list =
        |long: bool, count: std::ops::RangeInclusive<usize>| vec((key(long), value(long)), count);
    prop_oneof![
        4 => list(false, 0..=40),
        1 => list(true, 10..=34),
    ]
    .prop_map(|members| {
        let mut seen = HashSet::new();
        members
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect()
    })
}

/// How the members are written: optional whitespace around each, empty
/// members between, and the list split into up to three headers.
#[derive(Clone, Debug)]
struct Layout {
    around: Vec<(u8, u8, bool)>,
    cuts: (usize, usize),
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        vec((0..8u8, 0..8u8, proptest::bool::weighted(0.1)), 48),
        any::<(usize, usize)>(),
    )
        .prop_map(|(around, cuts)| Layout { around, cuts })
}

fn ows(n: u8) -> &'static str {
    ["", "", "", "", " ", "\t", " \t ", "  "][usize::from(n % 8)]
}

/// The `tracestate` header values carrying `items` (already written
/// members) as `layout` says.
fn header_values(items: &[String], layout: &Layout) -> Vec<String> {
    let mut written = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (before, after, empty) = layout.around[i % layout.around.len()];
        if empty {
            written.push(ows(before).to_owned());
        }
        written.push(format!("{}{item}{}", ows(before), ows(after)));
    }
    let n = written.len() + 1;
    let (a, b) = (layout.cuts.0 % n, layout.cuts.1 % n);
    let (a, b) = (a.min(b), a.max(b));
    let mut headers = vec![written[..a].join(",")];
    if b > a {
        headers.push(written[a..b].join(","));
    }
    headers.push(written[b..].join(","));
    headers
}

fn extract_with(traceparent: &str, trace_states: &[String]) -> Option<TraceContext> {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_str(traceparent).ok()?);
    for state in trace_states {
        headers.append("tracestate", HeaderValue::from_str(state).ok()?);
    }
    TraceContext::extract(&headers)
}

/// One member `tracestate` must refuse.
fn bad_member() -> impl Strategy<Value = String> {
    let short_key = || key(false);
    prop_oneof![
        // An uppercase letter in the key.
        (short_key(), any::<usize>(), select(b"ABCXYZ".as_slice())).prop_map(|(k, at, c)| {
            let mut k: Vec<char> = k.chars().collect();
            let at = at % (k.len() + 1);
            k.insert(at, char::from(c));
            format!("{}=1", String::from_iter(k))
        }),
        // A key starting with a character only allowed later.
        (select(b"_-*/".as_slice()), short_key())
            .prop_map(|(c, k)| format!("{}{k}=1", char::from(c))),
        // A character no key may hold.
        (short_key(), select(b". !#:;\t+".as_slice()))
            .prop_map(|(k, c)| format!("{k}{}x=1", char::from(c))),
        // Too long: a 257+ key, a 242+ tenant, a 15+ system.
        (257..300usize).prop_map(|n| format!("{}=1", "k".repeat(n))),
        (242..260usize).prop_map(|n| format!("{}@v=1", "t".repeat(n))),
        (15..20usize).prop_map(|n| format!("t@{}=1", "v".repeat(n))),
        // Misplaced `@`s.
        select(vec![
            "foo@=1",
            "@foo=1",
            "foo@@bar=1",
            "foo@bar@baz=1",
            "=1",
            "novalue",
            "k=",
            "k=a=b"
        ])
        .prop_map(str::to_owned),
        // Values: too long, a tab or a non-ASCII character inside.
        (257..300usize).prop_map(|n| format!("k={}", "v".repeat(n))),
        Just("k=a\tb".to_owned()),
        Just("k=caf\u{e9}".to_owned()),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// (a) Any valid version-00 header parses to its ids and sampled bit
    /// (flags & 1), and is written back as version 00 with only that bit,
    /// which parses to the same context; through headers too.
    #[test]
    fn valid_traceparents_parse_and_round_trip(v in valid()) {
        let header = v.header();
        let context = TraceContext::parse_traceparent(&header);
        prop_assert!(context.is_some(), "{header}");
        let context = context.expect("checked");
        prop_assert_eq!(context.trace_id(), v.trace.as_str());
        prop_assert_eq!(context.span_id(), v.span.as_str());
        prop_assert_eq!(context.is_sampled(), v.flags & 1 == 1);
        let written = context.traceparent();
        prop_assert_eq!(&written, &format!("00-{}-{}-{:02x}", v.trace, v.span, v.flags & 1));
        prop_assert_eq!(context.to_string(), written.clone());
        let again = TraceContext::parse_traceparent(&written);
        prop_assert_eq!(again.as_ref(), Some(&context));
        let mut headers = HeaderMap::new();
        context.inject(&mut headers);
        prop_assert_eq!(headers.get_all("traceparent").iter().count(), 1);
        prop_assert_eq!(headers["traceparent"].to_str().ok(), Some(written.as_str()));
        prop_assert!(headers.get("tracestate").is_none());
        prop_assert_eq!(TraceContext::extract(&headers), Some(context));
    }

    /// (a) A higher version (01 to fe), with or without more fields after
    /// a `-`, is read by its first four fields and written as version 00.
    #[test]
    fn higher_versions_are_read_by_their_first_four_fields(
        v in valid(),
        version in 1..=0xfeu8,
        more in proptest::option::of(vec(edgy_char(), 0..12).prop_map(String::from_iter)),
    ) {
        let more = more.map(|m| format!("-{m}")).unwrap_or_default();
        let header = format!("{version:02x}-{}-{}-{:02x}{more}", v.trace, v.span, v.flags);
        let context = check_parse(&header)?;
        prop_assert!(context.is_some(), "{header:?}");
        let context = context.expect("checked");
        prop_assert_eq!(
            context.traceparent(),
            format!("00-{}-{}-{:02x}", v.trace, v.span, v.flags & 1)
        );
    }

    /// (b) Any bytes at all: no panic, and parsing follows the W3C rules.
    #[test]
    fn any_bytes_follow_the_rules(bytes in vec(any::<u8>(), 0..120)) {
        let text = String::from_utf8_lossy(&bytes);
        check_parse(&text)?;
        check_extract(&bytes)?;
        check_extract(text.as_bytes())?;
    }

    /// (b) A valid header changed in one to three places (a character
    /// replaced, added or removed, cut short, extended, uppercased, another
    /// version, more fields, a zeroed id, whitespace around): no panic, and
    /// parsing follows the W3C rules exactly.
    #[test]
    fn near_valid_headers_follow_the_rules(v in valid(), mutations in vec(mutation(), 1..4)) {
        let mut header = v.header();
        for m in &mutations {
            header = apply(&header, m);
        }
        check_parse(&header)?;
        check_extract(header.as_bytes())?;
    }

    /// (c) Valid list-members, written with optional whitespace and empty
    /// members, over one to three `tracestate` headers: with a valid
    /// `traceparent` they are carried unchanged (joined with `,`, the
    /// optional whitespace and empty members left out) when there are 1 to
    /// 32 of them; 0 or more than 32 carry none. A combined header past
    /// the crate's 8192-byte bound may lose entries, but only whole ones
    /// (W3C 3.3.1.5: truncation "MUST truncate whole entries"). Injected into
    /// new headers, the state is written exactly so, and reads back the same.
    #[test]
    fn valid_trace_states_are_carried_unchanged(
        v in valid(),
        members in members(),
        layout in layout(),
    ) {
        let items: Vec<String> = members.iter().map(|(k, val)| format!("{k}={val}")).collect();
        let values = header_values(&items, &layout);
        let context = extract_with(&v.header(), &values);
        prop_assert!(context.is_some(), "{values:?}");
        let context = context.expect("checked");
        prop_assert_eq!(context.trace_id(), v.trace.as_str());
        prop_assert_eq!(context.span_id(), v.span.as_str());
        check_invariants(&context)?;

        let canonical = items.join(",");
        let combined_len = values.join(",").len();
        let got = context.trace_state();
        if items.is_empty() || items.len() > MAX_TRACESTATE_ENTRIES {
            prop_assert_eq!(got, None, "{} members", items.len());
        } else if combined_len <= 8192 {
            prop_assert_eq!(got, Some(canonical.as_str()));
        } else if let Some(kept) = got {
            // Whole entries, in their order.
            let mut rest = items.iter();
            for entry in kept.split(',') {
                prop_assert!(rest.any(|i| i == entry), "{entry:?} is not a whole entry in order");
            }
        }

        let mut out = HeaderMap::new();
        out.insert("tracestate", HeaderValue::from_static("stale=1"));
        context.inject(&mut out);
        let states: Vec<&str> = out.get_all("tracestate").iter().filter_map(|h| h.to_str().ok()).collect();
        match got {
            Some(state) => prop_assert_eq!(states, vec![state]),
            None => prop_assert!(states.is_empty(), "{states:?}"),
        }
        prop_assert_eq!(TraceContext::extract(&out), Some(context.clone()));
    }

    /// (c) One malformed member, or a key given twice, anywhere in an
    /// otherwise valid list (over several headers): the whole `tracestate`
    /// is dropped and the `traceparent` kept.
    #[test]
    fn one_bad_member_drops_the_trace_state(
        v in valid(),
        members in vec((key(false), value(false)), 0..10),
        bad in prop_oneof![
            3 => bad_member().prop_map(Some),
            1 => Just(None), // a key of the list, again
        ],
        at in any::<usize>(),
        layout in layout(),
    ) {
        let mut seen = HashSet::new();
        let mut items: Vec<String> = members
            .iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .map(|(k, val)| format!("{k}={val}"))
            .collect();
        let bad = match bad {
            Some(bad) => bad,
            None => match members.first() {
                Some((k, _)) => format!("{k}=again"),
                None => "k=1,k=2".to_owned(),
            },
        };
        let at = at % (items.len() + 1);
        items.insert(at, bad);
        let values = header_values(&items, &layout);
        let context = extract_with(&v.header(), &values);
        prop_assert!(context.is_some(), "{values:?}");
        let context = context.expect("checked");
        prop_assert_eq!(context.trace_id(), v.trace.as_str());
        prop_assert_eq!(context.span_id(), v.span.as_str());
        prop_assert_eq!(context.trace_state(), None, "{:?}", values);
    }

    /// (b, c) Any mix of `traceparent`, `tracestate` and other headers, with
    /// random, near-valid or valid values: `extract` never panics, finds a
    /// context only from exactly one `traceparent`, and what it finds holds
    /// the invariants.
    #[test]
    fn any_headers_extract_safely(
        entries in vec(
            (
                0..3u8,
                prop_oneof![
                    vec(any::<u8>(), 0..80),
                    (valid(), vec(mutation(), 0..2)).prop_map(|(v, ms)| {
                        ms.iter().fold(v.header(), |h, m| apply(&h, m)).into_bytes()
                    }),
                    members().prop_map(|m| {
                        m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",").into_bytes()
                    }),
                    vec(bad_member(), 1..3).prop_map(|m| m.join(",").into_bytes()),
                ],
            ),
            0..6,
        ),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in &entries {
            let name = ["traceparent", "tracestate", "x-other"][usize::from(*name)];
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(name, value);
            }
        }
        let context = TraceContext::extract(&headers);
        let parents: Vec<&HeaderValue> = headers.get_all("traceparent").iter().collect();
        if let Some(context) = &context {
            check_invariants(context)?;
            prop_assert_eq!(parents.len(), 1);
            let parsed = parents[0].to_str().ok().and_then(TraceContext::parse_traceparent);
            prop_assert_eq!(
                parsed.map(|p| (p.trace_id().to_owned(), p.span_id().to_owned(), p.is_sampled())),
                Some((context.trace_id().to_owned(), context.span_id().to_owned(), context.is_sampled()))
            );
        } else if let [only] = parents.as_slice() {
            prop_assert_eq!(only.to_str().ok().and_then(TraceContext::parse_traceparent), None);
        }
    }
}

// ---------------------------------------------------------------------
// The W3C test suite's vectors, end to end through the middleware.
// ---------------------------------------------------------------------

/// Every wait below is bounded by this.
const BOUND: Duration = Duration::from_secs(30);

/// The test suite's ids.
const T: &str = "12345678901234567890123456789012";
const P: &str = "1234567890123456";
/// The specification's example ids (with letters, to uppercase).
const T2: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const P2: &str = "00f067aa0ba902b7";

#[derive(Debug)]
enum Expect {
    /// The request span continues the trace: the same trace id, the
    /// caller's span as parent, the caller's sampled flag.
    Continue {
        trace: &'static str,
        parent: &'static str,
        sampled: bool,
    },
    /// A new trace: another trace id, no parent.
    NewTrace,
}

struct Vector {
    name: String,
    headers: Vec<(&'static str, String)>,
    expect: Expect,
    /// The `tracestate` the handler's context carries.
    trace_state: Option<String>,
}

fn continues(trace: &'static str, parent: &'static str) -> Expect {
    Expect::Continue {
        trace,
        parent,
        sampled: true,
    }
}

fn vector(name: &str, traceparent: &str, expect: Expect) -> Vector {
    Vector {
        name: name.to_owned(),
        headers: vec![("traceparent", traceparent.to_owned())],
        expect,
        trace_state: None,
    }
}

/// A valid sampled `traceparent` with `states` as `tracestate` headers.
fn with_state(name: &str, states: &[&str], trace_state: Option<&str>) -> Vector {
    let mut headers = vec![("traceparent", format!("00-{T}-{P}-01"))];
    headers.extend(states.iter().map(|s| ("tracestate", (*s).to_owned())));
    Vector {
        name: name.to_owned(),
        headers,
        expect: continues(T, P),
        trace_state: trace_state.map(str::to_owned),
    }
}

fn vectors() -> Vec<Vector> {
    let new = || Expect::NewTrace;
    let mut v = vec![
        vector("valid, sampled", &format!("00-{T}-{P}-01"), continues(T, P)),
        vector(
            "valid, spec example",
            &format!("00-{T2}-{P2}-01"),
            continues(T2, P2),
        ),
        vector(
            "flags 09: the sampled bit and an unknown one",
            &format!("00-{T}-{P}-09"),
            continues(T, P),
        ),
        vector(
            "flags fe: unknown bits only, not sampled",
            &format!("00-{T}-{P}-fe"),
            Expect::Continue {
                trace: T,
                parent: P,
                sampled: false,
            },
        ),
        // Versions.
        vector("version ff", &format!("ff-{T}-{P}-01"), new()),
        vector("version .0", &format!(".0-{T}-{P}-01"), new()),
        vector("version 0.", &format!("0.-{T}-{P}-01"), new()),
        vector("version 000 (too long)", &format!("000-{T}-{P}-01"), new()),
        vector(
            "version 0000 (too long)",
            &format!("0000-{T}-{P}-01"),
            new(),
        ),
        vector("version 0 (too short)", &format!("0-{T}-{P}-01"), new()),
        vector("version CC (uppercase)", &format!("CC-{T}-{P}-01"), new()),
        vector("version 00 ending in .", &format!("00-{T}-{P}-01."), new()),
        vector(
            "version 00 with a fifth field",
            &format!("00-{T}-{P}-01-what-the-future-will-be-like"),
            new(),
        ),
        vector("version cc", &format!("cc-{T}-{P}-01"), continues(T, P)),
        vector(
            "version cc with more fields",
            &format!("cc-{T}-{P}-01-what-the-future-will-be-like"),
            continues(T, P),
        ),
        vector(
            "version 01 with more fields",
            &format!("01-{T}-{P}-01-extra-fields"),
            continues(T, P),
        ),
        vector(
            "version fe, flags 03, an empty fifth field",
            &format!("fe-{T}-{P}-03-"),
            continues(T, P),
        ),
        vector(
            "version cc, no - after the flags",
            &format!("cc-{T}-{P}-01.what-the-future-will-be-like"),
            new(),
        ),
        // Ids.
        vector(
            "all-zero trace id",
            &format!("00-{}-{P}-01", "0".repeat(32)),
            new(),
        ),
        vector(
            "all-zero parent id",
            &format!("00-{T}-{}-01", "0".repeat(16)),
            new(),
        ),
        vector(
            "uppercase trace id",
            &format!("00-{}-{P2}-01", T2.to_uppercase()),
            new(),
        ),
        vector(
            "uppercase parent id",
            &format!("00-{T2}-{}-01", P2.to_uppercase()),
            new(),
        ),
        vector("uppercase flags", &format!("00-{T}-{P}-0B"), new()),
        vector(
            "whole header uppercase",
            &format!("00-{T2}-{P2}-01").to_uppercase(),
            new(),
        ),
        vector(
            "trace id .234...",
            &format!("00-.{}-{P}-01", &T[1..]),
            new(),
        ),
        vector(
            "trace id ...901.",
            &format!("00-{}.-{P}-01", &T[..31]),
            new(),
        ),
        vector(
            "trace id with a g",
            &format!("00-{}g-{P}-01", &T[..31]),
            new(),
        ),
        vector(
            "parent id .234...",
            &format!("00-{T}-.{}-01", &P[1..]),
            new(),
        ),
        vector(
            "parent id ...345.",
            &format!("00-{T}-{}.-01", &P[..15]),
            new(),
        ),
        vector("flags .0", &format!("00-{T}-{P}-.0"), new()),
        vector("flags 0.", &format!("00-{T}-{P}-0."), new()),
        // Lengths.
        vector("trace id of 33", &format!("00-{T}3-{P}-01"), new()),
        vector("trace id of 31", &format!("00-{}-{P}-01", &T[..31]), new()),
        vector("parent id of 17", &format!("00-{T}-{P}7-01"), new()),
        vector("parent id of 15", &format!("00-{T}-{}-01", &P[..15]), new()),
        vector("flags 001", &format!("00-{T}-{P}-001"), new()),
        vector("flags 1", &format!("00-{T}-{P}-1"), new()),
        vector("underscores", &format!("00_{T}_{P}_01"), new()),
        vector("garbage", "garbage", new()),
        vector("empty", "", new()),
        // Optional whitespace around the value.
        vector("leading space", &format!(" 00-{T}-{P}-01"), continues(T, P)),
        vector("leading tab", &format!("\t00-{T}-{P}-01"), continues(T, P)),
        vector(
            "trailing space",
            &format!("00-{T}-{P}-01 "),
            continues(T, P),
        ),
        vector("trailing tab", &format!("00-{T}-{P}-01\t"), continues(T, P)),
        vector("both", &format!("\t 00-{T}-{P}-01 \t"), continues(T, P)),
    ];

    // Header names in any case; two traceparents; tracestate without or
    // with a bad traceparent; an unsampled caller's tracestate.
    v.push(Vector {
        name: "header names in mixed case".into(),
        headers: vec![
            ("TraceParent", format!("00-{T}-{P}-01")),
            ("TrAcEsTaTe", "foo=1".into()),
        ],
        expect: continues(T, P),
        trace_state: Some("foo=1".into()),
    });
    v.push(Vector {
        name: "two different traceparents".into(),
        headers: vec![
            ("traceparent", format!("00-{}1-{P}-01", &T[..31])),
            ("traceparent", format!("00-{T}-{P}-01")),
        ],
        expect: new(),
        trace_state: None,
    });
    v.push(Vector {
        name: "the same traceparent twice".into(),
        headers: vec![
            ("traceparent", format!("00-{T}-{P}-01")),
            ("traceparent", format!("00-{T}-{P}-01")),
        ],
        expect: new(),
        trace_state: None,
    });
    v.push(Vector {
        name: "tracestate without traceparent".into(),
        headers: vec![("tracestate", "foo=1,bar=2".into())],
        expect: new(),
        trace_state: None,
    });
    v.push(Vector {
        name: "all-zero trace id with a valid tracestate".into(),
        headers: vec![
            ("traceparent", format!("00-{}-{P}-01", "0".repeat(32))),
            ("tracestate", "foo=1".into()),
        ],
        expect: new(),
        trace_state: None,
    });
    v.push(Vector {
        name: "uppercase traceparent with a valid tracestate".into(),
        headers: vec![
            ("traceparent", format!("00-{}-{P2}-01", T2.to_uppercase())),
            (
                "tracestate",
                "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into(),
            ),
        ],
        expect: new(),
        trace_state: None,
    });
    v.push(Vector {
        name: "not sampled, with a tracestate".into(),
        headers: vec![
            ("traceparent", format!("00-{T}-{P}-00")),
            ("tracestate", "foo=1,bar=2".into()),
        ],
        expect: Expect::Continue {
            trace: T,
            parent: P,
            sampled: false,
        },
        trace_state: Some("foo=1,bar=2".into()),
    });

    // tracestate.
    let all_key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let all_value: String = (0x20u8..=0x7e)
        .filter(|c| *c != b',' && *c != b'=')
        .map(char::from)
        .collect();
    let members = |range: std::ops::RangeInclusive<u32>| {
        range
            .map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
    };
    let in_headers =
        |members: &[String]| members.chunks(10).map(|c| c.join(",")).collect::<Vec<_>>();
    let m32 = members(1..=32);
    let m33 = members(1..=33);
    let h32 = in_headers(&m32);
    let h33 = in_headers(&m33);
    let h32: Vec<&str> = h32.iter().map(String::as_str).collect();
    let h33: Vec<&str> = h33.iter().map(String::as_str).collect();
    let long_key = format!("{}=1", "z".repeat(256));
    let too_long_key = format!("{}=1", "z".repeat(257));
    let long_tenant = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    let too_long_tenant = format!("{}@v=1", "t".repeat(242));
    let too_long_system = format!("t@{}=1", "v".repeat(15));
    let all_chars = format!("{all_key}={all_value}");
    let all_chars_vendor = format!("{all_key}@a-z0-9_-*/={all_value}");
    let tracestates: Vec<(&str, Vec<&str>, Option<String>)> = vec![
        (
            "tracestate foo=1,bar=2",
            vec!["foo=1,bar=2"],
            Some("foo=1,bar=2".into()),
        ),
        (
            "three tracestate headers, combined in order",
            vec!["foo=1,bar=2", "rojo=1,congo=2", "baz=3"],
            Some("foo=1,bar=2,rojo=1,congo=2,baz=3".into()),
        ),
        ("an empty tracestate", vec![""], None),
        (
            "foo=1, then an empty tracestate",
            vec!["foo=1", ""],
            Some("foo=1".into()),
        ),
        (
            "an empty tracestate, then foo=1",
            vec!["", "foo=1"],
            Some("foo=1".into()),
        ),
        ("duplicated key foo=1,foo=1", vec!["foo=1,foo=1"], None),
        ("duplicated key foo=1,foo=2", vec!["foo=1,foo=2"], None),
        (
            "duplicated key over two headers",
            vec!["foo=1", "foo=1"],
            None,
        ),
        (
            "duplicated key over two headers, other values",
            vec!["foo=1", "foo=2"],
            None,
        ),
        (
            "all allowed characters",
            vec![all_chars.as_str()],
            Some(all_chars.clone()),
        ),
        (
            "all allowed characters, multi-tenant key",
            vec![all_chars_vendor.as_str()],
            Some(all_chars_vendor.clone()),
        ),
        (
            "whitespace around members",
            vec!["foo=1 \t , \t bar=2, \t baz=3"],
            Some("foo=1,bar=2,baz=3".into()),
        ),
        (
            "tabs and spaces around members",
            vec!["foo=1\t \t,\t \tbar=2,\t \tbaz=3"],
            Some("foo=1,bar=2,baz=3".into()),
        ),
        ("leading space", vec![" foo=1"], Some("foo=1".into())),
        ("leading tab", vec!["\tfoo=1"], Some("foo=1".into())),
        ("trailing space", vec!["foo=1 "], Some("foo=1".into())),
        ("trailing tab", vec!["foo=1\t"], Some("foo=1".into())),
        ("both", vec!["\t foo=1 \t"], Some("foo=1".into())),
        ("key with a space", vec!["foo =1"], None),
        ("uppercase key", vec!["FOO=1"], None),
        ("key with a dot", vec!["foo.bar=1"], None),
        ("empty system id", vec!["foo@=1,bar=2"], None),
        ("empty tenant id", vec!["@foo=1,bar=2"], None),
        ("two @", vec!["foo@@bar=1,bar=2"], None),
        ("two @, apart", vec!["foo@bar@baz=1,bar=2"], None),
        ("32 members over 4 headers", h32, Some(m32.join(","))),
        ("33 members over 4 headers", h33, None),
        (
            "a key of 256",
            vec!["foo=1", long_key.as_str()],
            Some(format!("foo=1,{long_key}")),
        ),
        ("a key of 257", vec!["foo=1", too_long_key.as_str()], None),
        (
            "a tenant of 241 and a system of 14",
            vec!["foo=1", long_tenant.as_str()],
            Some(format!("foo=1,{long_tenant}")),
        ),
        (
            "a tenant of 242",
            vec!["foo=1", too_long_tenant.as_str()],
            None,
        ),
        (
            "a system of 15",
            vec!["foo=1", too_long_system.as_str()],
            None,
        ),
        ("value with =", vec!["foo=bar=baz"], None),
        ("empty value", vec!["foo=,bar=3"], None),
    ];
    for (name, states, expected) in &tracestates {
        v.push(with_state(
            &format!("tracestate: {name}"),
            states,
            expected.as_deref(),
        ));
    }
    v
}

/// The handler: its trace context, as it would send it onwards.
async fn handler() -> String {
    match current_trace_context() {
        Some(context) => format!(
            "{}\n{}",
            context.traceparent(),
            context.trace_state().unwrap_or("")
        ),
        None => "no context\n".to_owned(),
    }
}

/// What went wrong with one vector, if anything.
fn check_vector(n: usize, v: &Vector, body: &str, spans: &[Json]) -> Result<(), String> {
    let (traceparent, trace_state) = body.split_once('\n').ok_or("a two-line body")?;
    let out = TraceContext::parse_traceparent(traceparent)
        .ok_or_else(|| format!("the handler's context: {body:?}"))?;
    let path = format!("/v/{n}");
    let span = spans
        .iter()
        .find(|s| s["attributes"]["url.path"] == path.as_str());
    let expected_state = v.trace_state.as_deref().unwrap_or("");
    if trace_state != expected_state {
        return Err(format!(
            "tracestate {trace_state:?}, expected {expected_state:?}"
        ));
    }
    match v.expect {
        Expect::Continue {
            trace,
            parent,
            sampled,
        } => {
            if out.trace_id() != trace || out.span_id() == parent || out.is_sampled() != sampled {
                return Err(format!(
                    "continued as {traceparent}, expected {trace} under {parent}, sampled {sampled}"
                ));
            }
            match (span, sampled) {
                (Some(span), true) => {
                    if span["trace.id"] != trace
                        || span["attributes"]["parent.id"] != parent
                        || span["id"] != out.span_id()
                    {
                        return Err(format!("span {span}"));
                    }
                }
                (None, false) => {}
                (span, _) => return Err(format!("exported: {span:?}, sampled {sampled}")),
            }
        }
        Expect::NewTrace => {
            let incoming = v
                .headers
                .iter()
                .any(|(_, value)| value.to_ascii_lowercase().contains(out.trace_id()));
            if incoming || all_zero(out.trace_id()) {
                return Err(format!("did not start a new trace: {traceparent}"));
            }
            let span = span.ok_or("no exported span")?;
            if span["trace.id"] != out.trace_id()
                || span["id"] != out.span_id()
                || span["attributes"].get("parent.id").is_some()
            {
                return Err(format!("span {span}"));
            }
        }
    }
    Ok(())
}

/// (2) Each vector of the W3C test suite (and a few more edges), sent by
/// reqwest to an axum service behind `HttpServerLayer`: the request span
/// continues the trace or starts a new one as the rules say, and the
/// handler's context carries the `tracestate` they say. Every disagreement
/// is listed.
#[tokio::test]
async fn w3c_test_suite_vectors_through_the_middleware() {
    let server = tokio::time::timeout(BOUND, TestIngestServer::start())
        .await
        .expect("bounded")
        .expect("ingest server");
    let telemetry = server
        .telemetry_builder()
        .service_name("vectors")
        .harvest_interval(Duration::from_secs(3600))
        .build()
        .expect("telemetry");
    // This thread's subscriber: the runtime is single-threaded, so the
    // service's tasks run under it.
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(
            telemetry
                .tracing_layer_with(|l| l.sample_ratio(1.0))
                .with_filter(LevelFilter::INFO),
        ),
    );
    let app = Router::new()
        .route("/v/{n}", get(handler))
        .layer(HttpServerLayer::new(&telemetry));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let http = newrelic_telemetry::client::http_client_builder()
        .no_proxy()
        .build()
        .expect("client");

    let vectors = vectors();
    let names: HashSet<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names.len(), vectors.len(), "vector names are unique");
    let mut bodies = Vec::new();
    for (n, v) in vectors.iter().enumerate() {
        let mut request = http.get(format!("{base}/v/{n}"));
        for (name, value) in &v.headers {
            request = request.header(*name, value.as_str());
        }
        let response = tokio::time::timeout(BOUND, request.send())
            .await
            .expect("bounded")
            .expect("response");
        assert_eq!(response.status(), 200, "{}: never an error", v.name);
        let body = tokio::time::timeout(BOUND, response.text())
            .await
            .expect("bounded")
            .expect("body");
        bodies.push(body);
    }
    let _ = stop.send(());
    tokio::time::timeout(BOUND, serving)
        .await
        .expect("the service stops")
        .expect("the service task")
        .expect("serve");
    tokio::time::timeout(BOUND, telemetry.shutdown())
        .await
        .expect("telemetry shuts down");
    let spans = server.spans();

    let failures: Vec<String> = vectors
        .iter()
        .zip(&bodies)
        .enumerate()
        .filter_map(|(n, (v, body))| {
            check_vector(n, v, body, &spans)
                .err()
                .map(|e| format!("{}: {e}", v.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} vectors:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}
