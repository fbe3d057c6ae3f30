//! W3C Trace Context: the `traceparent` and `tracestate` headers that carry
//! a trace from one service to the next.
//!
//! [`TraceContext`] is what a request carries: the trace id (32 lowercase
//! hex characters), the id of the caller's span (16 lowercase hex
//! characters, the parent of the spans that continue the trace here), the
//! caller's sampling decision, and the vendors' `tracestate` entries,
//! passed on unchanged. [`TraceContext::extract`] reads it from an
//! [`http::HeaderMap`]; [`TraceContext::inject`] and
//! [`TraceContext::inject_into`] write it into an outgoing request's headers
//! or a [`reqwest::RequestBuilder`].
//!
//! Any other header map, or a message's metadata, is a carrier: implement
//! [`Extractor`] (read a header's values by name) and [`Injector`] (write
//! one), as OpenTelemetry's propagators have them, and use
//! [`TraceContext::extract_from`] and [`TraceContext::inject_to`]. They are
//! implemented for [`http::HeaderMap`], for a `HashMap<String, String>`
//! (message metadata) and, with the `actix-web` feature, for actix-web's
//! `HeaderMap`.
//!
//! Headers are user input, and a bad one is never an error: a malformed or
//! unsupported `traceparent` (version `ff`, ids of the wrong length, all-zero
//! ids, uppercase hex, several `traceparent` headers) reads as no context at
//! all, so the request starts a new trace, as the W3C rules ask. A header of
//! a higher version than `00` is read by its first four fields. A malformed
//! `tracestate`, or one of more than [`MAX_TRACESTATE_ENTRIES`] entries, is
//! dropped, and the `traceparent` kept.
//!
//! With the `tracing-layer` feature, the layer continues a context received
//! this way
//! ([`with_remote_parent`](crate::tracing_layer::with_remote_parent),
//! [`SpanExt::set_parent`](crate::tracing_layer::SpanExt::set_parent)) and
//! reads the context of the current span for outgoing requests
//! ([`SpanExt::trace_context`](crate::tracing_layer::SpanExt::trace_context)).
//!
//! ```
//! use http::HeaderMap;
//! use newrelic_telemetry::trace_context::TraceContext;
//!
//! let mut incoming = HeaderMap::new();
//! incoming.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
//! incoming.insert("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".parse().unwrap());
//!
//! let context = TraceContext::extract(&incoming).expect("a valid traceparent");
//! assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(context.span_id(), "00f067aa0ba902b7");
//! assert!(context.is_sampled());
//!
//! // The work done here, as a span of that trace, under the caller's span.
//! let span = context.child_span("GET /orders").finish();
//! assert_eq!(span.trace_id(), context.trace_id());
//! assert_eq!(span.parent_id(), Some("00f067aa0ba902b7"));
//!
//! // A call to the next service carries this span as its parent.
//! let outgoing = TraceContext::of_span(&span, context.is_sampled())
//!     .expect("W3C ids")
//!     .with_trace_state(context.trace_state());
//! let mut headers = HeaderMap::new();
//! outgoing.inject(&mut headers);
//! assert_eq!(
//!     headers["traceparent"],
//!     format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", span.id()).as_str()
//! );
//! assert_eq!(headers["tracestate"], "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
//!
//! // A malformed header starts a new trace: no context, no error.
//! let mut bad = HeaderMap::new();
//! bad.insert("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".parse().unwrap());
//! assert!(TraceContext::extract(&bad).is_none());
//! ```
//!
//! # Across a channel or a spawned task
//!
//! A trace is not only carried by HTTP headers. Work handed to a spawned
//! task or sent over a channel (a job queue in the same process) continues
//! the trace when the [`TraceContext`] goes with it: it is a small `Send`
//! value (two ids, a flag and the `tracestate`). Take it from the current
//! span where the work is handed off
//! ([`current_trace_context`](crate::tracing_layer::current_trace_context)),
//! and on the other side open the span of the work inside
//! [`with_remote_parent`](crate::tracing_layer::with_remote_parent): it is a
//! child of the sender's span, in the same trace, with the sender's
//! sampling decision. (Within one task, `tracing::Instrument` with the span
//! itself does the same; the context is what crosses a boundary where the
//! span handle does not go, and it can be written into a message's
//! metadata with [`TraceContext::inject_to`].)
//!
//! ```
//! use newrelic_telemetry::SpanBatch;
//! use newrelic_telemetry::trace_context::TraceContext;
//! use newrelic_telemetry::tracing_layer::{NewRelicLayer, current_trace_context, with_remote_parent};
//! use std::sync::Arc;
//! use tracing_subscriber::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (layer, _worker) = NewRelicLayer::builder().spans(Arc::new(SpanBatch::new())).build();
//! // In a service: the subscriber installed once with `.init()`.
//! let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
//!
//! // The consumer: a task that receives jobs with the context of whoever sent them.
//! let (jobs, mut queue) = tokio::sync::mpsc::channel::<(u64, TraceContext)>(16);
//! let consumer = tokio::spawn(async move {
//!     let (order, sent_from) = queue.recv().await?;
//!     let span = with_remote_parent(Some(&sent_from), || tracing::info_span!("ship order", order.id = order));
//!     // What the job does runs in `span`; its context is the one to send on.
//!     span.in_scope(current_trace_context)
//! });
//!
//! // The producer: a request span hands the job over with its context.
//! let request = tracing::info_span!("POST /orders");
//! let context = request.in_scope(current_trace_context).expect("a span the layer tracks");
//! jobs.send((7, context.clone())).await?;
//!
//! let shipped = consumer.await?.expect("the job's span");
//! assert_eq!(shipped.trace_id(), context.trace_id()); // one trace
//! assert_ne!(shipped.span_id(), context.span_id()); // a span of its own, under the request's
//! assert_eq!(shipped.is_sampled(), context.is_sampled());
//!
//! // Without a tracing subscriber, the same with the SDK's own spans.
//! let job = context.child_span("ship order").finish();
//! assert_eq!((job.trace_id(), job.parent_id()), (context.trace_id(), Some(context.span_id())));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::span::Span;

/// The name of the header that carries the trace id, the caller's span id
/// and the sampled flag.
pub const TRACEPARENT: &str = "traceparent";

/// The name of the header that carries vendors' entries along a trace.
pub const TRACESTATE: &str = "tracestate";

/// The most `tracestate` entries a context carries, as the W3C
/// specification allows: a header with more is dropped (the `traceparent`
/// still counts).
///
/// ```
/// use newrelic_telemetry::trace_context::{MAX_TRACESTATE_ENTRIES, TraceContext};
///
/// let context = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// let entries = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
/// assert!(context.clone().with_trace_state(Some(&entries(MAX_TRACESTATE_ENTRIES))).trace_state().is_some());
/// assert_eq!(context.with_trace_state(Some(&entries(MAX_TRACESTATE_ENTRIES + 1))).trace_state(), None);
/// ```
pub const MAX_TRACESTATE_ENTRIES: usize = 32;

/// The longest `tracestate` kept, in bytes (32 entries of the longest keys
/// and values the specification allows would be longer, but no vendor
/// writes that much; a header past it is dropped, bounding what a caller can
/// make this service hold and forward).
const MAX_TRACESTATE_BYTES: usize = 8192;

/// A position in a distributed trace, as the W3C `traceparent` and
/// `tracestate` headers carry it between services. See the
/// [module documentation](crate::trace_context) for the rules applied to
/// headers.
///
/// ```
/// use newrelic_telemetry::trace_context::TraceContext;
///
/// let context = TraceContext::new("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", false).unwrap();
/// assert_eq!(context.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
/// assert!(TraceContext::new("0".repeat(32).as_str(), "00f067aa0ba902b7", true).is_none()); // all zeros
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    trace_id: [u8; 32],
    /// 16 lowercase hex digits, not all zero.
    span_id: [u8; 16],
    sampled: bool,
    /// Validated entries, joined with `,`.
    trace_state: Option<Arc<str>>,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("trace_id", &self.trace_id())
            .field("span_id", &self.span_id())
            .field("sampled", &self.sampled)
            .field("trace_state", &self.trace_state)
            .finish()
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` header's value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{}",
            self.trace_id(),
            self.span_id(),
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// Whether `bytes` are all lowercase hex digits and not all zeros.
fn is_w3c_id(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) && bytes.iter().any(|b| *b != b'0')
}

/// Two lowercase hex digits as a byte.
fn hex_byte(bytes: &[u8]) -> Option<u8> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    match bytes {
        [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
        _ => None,
    }
}

/// A `tracestate` member's key: `[a-z0-9][a-z0-9_\-*/]*`, optionally
/// `tenant@system`, at most 256 characters.
fn is_trace_state_key(key: &str) -> bool {
    let ok = |part: &str, max: usize| {
        let bytes = part.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= max
            && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
            && bytes
                .iter()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    match key.split_once('@') {
        None => ok(key, 256),
        Some((tenant, system)) => ok(tenant, 241) && ok(system, 14),
    }
}

/// A `tracestate` member's value: 1 to 256 printable ASCII characters
/// other than `,` and `=`, not ending in a space.
fn is_trace_state_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 256
        && bytes.last() != Some(&b' ')
        && bytes
            .iter()
            .all(|b| (0x20..=0x7e).contains(b) && *b != b',' && *b != b'=')
}

/// The members of `value` (a `tracestate` header, or several joined with
/// `,`), validated and joined with `,`; `None` when any member is malformed,
/// a key repeats, or there are more than [`MAX_TRACESTATE_ENTRIES`].
fn parse_trace_state(value: &str) -> Option<Arc<str>> {
    if value.len() > MAX_TRACESTATE_BYTES {
        return None;
    }
    let mut members: Vec<(&str, &str)> = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue; // empty list members are allowed, and skipped
        }
        let (key, val) = member.split_once('=')?;
        if !is_trace_state_key(key)
            || !is_trace_state_value(val)
            || members.iter().any(|(k, _)| *k == key)
        {
            return None;
        }
        members.push((key, val));
        if members.len() > MAX_TRACESTATE_ENTRIES {
            return None;
        }
    }
    if members.is_empty() {
        return None;
    }
    let mut joined = String::with_capacity(value.len());
    for (i, (key, val)) in members.iter().enumerate() {
        if i > 0 {
            joined.push(',');
        }
        joined.push_str(key);
        joined.push('=');
        joined.push_str(val);
    }
    Some(Arc::from(joined))
}

impl TraceContext {
    /// A context from a trace id (32 lowercase hex digits) and a span id (16
    /// lowercase hex digits), neither all zeros; `None` otherwise.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// assert!(TraceContext::new("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true).is_some());
    /// assert!(TraceContext::new("4bf92f3577b34da6", "00f067aa0ba902b7", true).is_none()); // 16 digits
    /// ```
    pub fn new(trace_id: &str, span_id: &str, sampled: bool) -> Option<TraceContext> {
        let (trace, span) = (trace_id.as_bytes(), span_id.as_bytes());
        if trace.len() != 32 || span.len() != 16 || !is_w3c_id(trace) || !is_w3c_id(span) {
            return None;
        }
        let mut context = TraceContext {
            trace_id: [0; 32],
            span_id: [0; 16],
            sampled,
            trace_state: None,
        };
        context.trace_id.copy_from_slice(trace);
        context.span_id.copy_from_slice(span);
        Some(context)
    }

    /// The context of `span`, to send with a request made on its behalf:
    /// its trace id and its id as the parent of what the request does.
    /// A 16-digit trace id (from an older SDK) is widened to 32 digits with
    /// leading zeros, as the W3C specification asks; `None` when the span's
    /// ids are not hex ids.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let span = Span::new("checkout");
    /// let context = TraceContext::of_span(&span, true).unwrap();
    /// assert_eq!((context.trace_id(), context.span_id()), (span.trace_id(), span.id()));
    ///
    /// let old = Span::new("legacy").with_trace_id("a3ce929d0e0e4736");
    /// assert_eq!(TraceContext::of_span(&old, true).unwrap().trace_id(), "0000000000000000a3ce929d0e0e4736");
    /// ```
    pub fn of_span(span: &Span, sampled: bool) -> Option<TraceContext> {
        let trace_id = span.trace_id();
        if trace_id.len() == 16 {
            let wide = format!("0000000000000000{trace_id}");
            return TraceContext::new(&wide, span.id(), sampled);
        }
        TraceContext::new(trace_id, span.id(), sampled)
    }

    /// Reads `traceparent` (and `tracestate`) from request headers; `None`
    /// when there is no `traceparent`, more than one, or it is malformed or
    /// of an unsupported version (the request then starts a new trace).
    ///
    /// ```
    /// use http::HeaderMap;
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let mut headers = HeaderMap::new();
    /// assert!(TraceContext::extract(&headers).is_none()); // missing
    /// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".parse().unwrap());
    /// let context = TraceContext::extract(&headers).unwrap();
    /// assert!(!context.is_sampled());
    /// assert_eq!(context.trace_state(), None);
    /// ```
    pub fn extract(headers: &HeaderMap) -> Option<TraceContext> {
        TraceContext::extract_from(headers)
    }

    /// Reads `traceparent` (and `tracestate`) from any carrier: the
    /// headers of another HTTP library, a message's metadata. The rules
    /// are [`extract`](Self::extract)'s: `None` when there is no
    /// `traceparent`, more than one, one that is not text, or a malformed
    /// or unsupported one; several `tracestate` values are joined with `,`
    /// (as one list), and dropped when any of them is not text or the list
    /// is malformed.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    /// use std::collections::HashMap;
    ///
    /// // A message's metadata, as a queue delivers it.
    /// let metadata = HashMap::from([
    ///     ("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
    ///     ("tracestate".to_owned(), "congo=t61rcWkgMzE".to_owned()),
    /// ]);
    /// let context = TraceContext::extract_from(&metadata).expect("a valid traceparent");
    /// assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert_eq!(context.trace_state(), Some("congo=t61rcWkgMzE"));
    /// assert!(TraceContext::extract_from(&HashMap::<String, String>::new()).is_none());
    /// ```
    pub fn extract_from(carrier: &impl Extractor) -> Option<TraceContext> {
        let mut values = carrier.get_all(TRACEPARENT);
        let (value, None) = (values.next()?, values.next()) else {
            return None; // several traceparent headers: none can be trusted
        };
        let context = TraceContext::parse_traceparent(value?)?;
        let mut state = carrier.get_all(TRACESTATE);
        let Some(Some(first)) = state.next() else {
            return Some(context); // none, or not text
        };
        let mut joined = std::borrow::Cow::Borrowed(first);
        for more in state {
            let Some(more) = more else {
                return Some(context);
            };
            let joined = joined.to_mut();
            joined.push(',');
            joined.push_str(more);
        }
        Some(context.with_trace_state(Some(&joined)))
    }

    /// Parses a `traceparent` value: `version-traceid-spanid-flags`, where a
    /// version above `00` (and below `ff`) is read by these four fields and
    /// may carry more after a `-`; `None` when malformed.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// assert!(TraceContext::parse_traceparent(ok).unwrap().is_sampled());
    /// // A future version, with a field this version does not know.
    /// let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
    /// assert_eq!(TraceContext::parse_traceparent(future).unwrap().span_id(), "00f067aa0ba902b7");
    /// for bad in [
    ///     "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
    ///     "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // all-zero trace id
    ///     "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // all-zero span id
    ///     "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // 31 digits
    ///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", // uppercase
    ///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", // version 00 has 4 fields
    ///     "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", // no `-` after the flags
    ///     "",
    /// ] {
    ///     assert!(TraceContext::parse_traceparent(bad).is_none(), "{bad}");
    /// }
    /// ```
    pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
        let bytes = value.trim_matches([' ', '\t']).as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let version = hex_byte(&bytes[0..2])?;
        if version == 0xff
            || bytes[2] != b'-'
            || bytes[35] != b'-'
            || bytes[52] != b'-'
            || (version == 0 && bytes.len() != 55)
            || (bytes.len() > 55 && bytes[55] != b'-')
        {
            return None;
        }
        let flags = hex_byte(&bytes[53..55])?;
        let (trace, span) = (&bytes[3..35], &bytes[36..52]);
        if !is_w3c_id(trace) || !is_w3c_id(span) {
            return None;
        }
        let mut context = TraceContext {
            trace_id: [0; 32],
            span_id: [0; 16],
            sampled: flags & 1 == 1,
            trace_state: None,
        };
        context.trace_id.copy_from_slice(trace);
        context.span_id.copy_from_slice(span);
        Some(context)
    }

    /// The same context carrying `trace_state` (a `tracestate` value), or
    /// none when it is `None`, malformed, or holds more than
    /// [`MAX_TRACESTATE_ENTRIES`] entries.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let context = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// let with = context.clone().with_trace_state(Some("1234@nr=0-0-1-2, rojo=00f067aa0ba902b7"));
    /// assert_eq!(with.trace_state(), Some("1234@nr=0-0-1-2,rojo=00f067aa0ba902b7"));
    /// assert_eq!(context.with_trace_state(Some("no equals sign")).trace_state(), None);
    /// ```
    #[must_use = "returns the changed context"]
    pub fn with_trace_state(mut self, trace_state: Option<&str>) -> Self {
        self.trace_state = trace_state.and_then(parse_trace_state);
        self
    }

    /// The same context with the sampled flag set to `sampled`.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let context = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert!(context.with_sampled(false).traceparent().ends_with("-00"));
    /// ```
    #[must_use = "returns the changed context"]
    pub fn with_sampled(mut self, sampled: bool) -> Self {
        self.sampled = sampled;
        self
    }

    /// The trace id: 32 lowercase hex digits.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let context = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// ```
    pub fn trace_id(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.trace_id).unwrap_or_default()
    }

    /// The id of the span the context was taken from (16 lowercase hex
    /// digits): for a received header, the caller's span, which is the
    /// parent of the spans that continue the trace here.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let context = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert_eq!(context.span_id(), "00f067aa0ba902b7");
    /// ```
    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or_default()
    }

    /// Whether the trace is sampled: bit 0 of the `traceparent` flags. The
    /// spans of an unsampled trace are not exported, and the decision goes
    /// on to the next service.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let unsampled = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    /// assert!(!unsampled.is_sampled());
    /// ```
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The `tracestate` entries carried along, joined with `,`, if any.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let context = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert_eq!(context.with_trace_state(Some("congo=t61rcWkgMzE")).trace_state(), Some("congo=t61rcWkgMzE"));
    /// ```
    pub fn trace_state(&self) -> Option<&str> {
        self.trace_state.as_deref()
    }

    /// The `traceparent` value to send: version `00`, and of the flags only
    /// the sampled bit (the only one version `00` defines).
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-more";
    /// let context = TraceContext::parse_traceparent(future).unwrap();
    /// assert_eq!(context.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// ```
    pub fn traceparent(&self) -> String {
        self.to_string()
    }

    /// A span continuing this context: in its trace, with the context's span
    /// as its parent (`parent.id`), starting now.
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let context = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// let span = context.child_span("GET /orders");
    /// assert_eq!(span.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert_eq!(span.parent_id(), Some("00f067aa0ba902b7"));
    /// ```
    pub fn child_span(&self, name: impl Into<String>) -> Span {
        Span::new(name)
            .with_trace_id(self.trace_id())
            .with_parent_id(self.span_id())
    }

    /// The headers' values, infallibly: only ASCII hex digits and `-`, and
    /// a trace state that was validated as printable ASCII.
    fn header_values(&self) -> (HeaderValue, Option<HeaderValue>) {
        let mut traceparent = [0u8; 55];
        traceparent[..3].copy_from_slice(b"00-");
        traceparent[3..35].copy_from_slice(&self.trace_id);
        traceparent[35] = b'-';
        traceparent[36..52].copy_from_slice(&self.span_id);
        traceparent[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        let parent = HeaderValue::from_bytes(&traceparent)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let state = self
            .trace_state
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok());
        (parent, state)
    }

    /// Writes `traceparent` (and `tracestate`, when the context carries
    /// entries) into `headers`, replacing any there; a `tracestate` already
    /// there is removed when the context carries none.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use newrelic_telemetry::trace_context::TraceContext;
    ///
    /// let context = TraceContext::new("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true).unwrap();
    /// let mut headers = HeaderMap::new();
    /// context.inject(&mut headers);
    /// assert_eq!(headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// assert!(headers.get("tracestate").is_none());
    /// assert_eq!(TraceContext::extract(&headers), Some(context));
    /// ```
    pub fn inject(&self, headers: &mut HeaderMap) {
        self.inject_to(headers);
    }

    /// Writes `traceparent` (and `tracestate`, when the context carries
    /// entries) into any carrier, replacing what is there; asks the carrier
    /// to [remove](Injector::remove) a `tracestate` when the context
    /// carries none. (Not to be confused with
    /// [`inject_into`](Self::inject_into), which adds the headers to a
    /// `reqwest` request.)
    ///
    /// ```
    /// use newrelic_telemetry::trace_context::TraceContext;
    /// use std::collections::HashMap;
    ///
    /// let context = TraceContext::new("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true)
    ///     .unwrap()
    ///     .with_trace_state(Some("congo=t61rcWkgMzE"));
    /// let mut metadata = HashMap::new();
    /// context.inject_to(&mut metadata);
    /// assert_eq!(metadata["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// assert_eq!(metadata["tracestate"], "congo=t61rcWkgMzE");
    /// assert_eq!(TraceContext::extract_from(&metadata), Some(context));
    /// ```
    pub fn inject_to(&self, carrier: &mut impl Injector) {
        carrier.set(TRACEPARENT, self.traceparent());
        match self.trace_state() {
            Some(state) => carrier.set(TRACESTATE, state.to_owned()),
            None => carrier.remove(TRACESTATE),
        }
    }

    /// Adds `traceparent` (and `tracestate`, when the context carries
    /// entries) to an outgoing `reqwest` request.
    ///
    /// The builder is **reqwest 0.13**'s, the version this crate depends on:
    /// a `RequestBuilder` of another major version (0.12, say) is another
    /// type and does not compile here. The version-independent ways are to
    /// [`inject`](Self::inject) into an [`http::HeaderMap`] and hand it to
    /// the request (`.headers(map)`: reqwest 0.12 and 0.13 both take
    /// `http` 1's map), or to set the header values yourself from
    /// [`traceparent`](Self::traceparent) and
    /// [`trace_state`](Self::trace_state), which works with any client.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use newrelic_telemetry::trace_context::{TRACEPARENT, TRACESTATE, TraceContext};
    ///
    /// let http = newrelic_telemetry::client::http_client_builder().build().unwrap();
    /// let context = TraceContext::new("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", false).unwrap();
    /// let request = context
    ///     .inject_into(http.get("http://127.0.0.1:9/orders"))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(request.headers()["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    ///
    /// // With any reqwest whose headers are `http` 1's: through a HeaderMap.
    /// let mut headers = HeaderMap::new();
    /// context.inject(&mut headers);
    /// let request = http.get("http://127.0.0.1:9/orders").headers(headers).build().unwrap();
    /// assert_eq!(request.headers()["traceparent"], context.traceparent().as_str());
    ///
    /// // With any client at all: the values as strings.
    /// let context = context.with_trace_state(Some("congo=t61rcWkgMzE"));
    /// let mut request = http.get("http://127.0.0.1:9/orders").header(TRACEPARENT, context.traceparent());
    /// if let Some(state) = context.trace_state() {
    ///     request = request.header(TRACESTATE, state);
    /// }
    /// let request = request.build().unwrap();
    /// assert_eq!(TraceContext::extract(request.headers()), Some(context));
    /// ```
    pub fn inject_into(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let (parent, state) = self.header_values();
        let request = request.header(TRACEPARENT, parent);
        match state {
            Some(state) => request.header(TRACESTATE, state),
            None => request,
        }
    }
}

/// A carrier a [`TraceContext`] is read from: request headers, or a
/// message's metadata. Names are the lowercase header names
/// ([`TRACEPARENT`], [`TRACESTATE`]); a carrier whose names are case
/// insensitive (HTTP headers) matches them so.
///
/// Implement [`get`](Self::get), and [`get_all`](Self::get_all) when a
/// name can have several values (HTTP headers can): the rules of
/// [`TraceContext::extract_from`] need every value, since several
/// `traceparent` headers make none trustworthy and several `tracestate`
/// headers are one list.
///
/// ```
/// use newrelic_telemetry::trace_context::{Extractor, TraceContext};
///
/// /// A header list as some HTTP library keeps it: (name, value) pairs.
/// struct Pairs(Vec<(String, String)>);
///
/// impl Extractor for Pairs {
///     fn get(&self, name: &str) -> Option<&str> {
///         self.get_all(name).next().flatten()
///     }
///
///     fn get_all(&self, name: &str) -> impl Iterator<Item = Option<&str>> {
///         let name = name.to_owned();
///         self.0.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(&name)).map(|(_, v)| Some(v.as_str()))
///     }
/// }
///
/// let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let one = Pairs(vec![("Traceparent".into(), parent.into())]);
/// assert_eq!(TraceContext::extract_from(&one).unwrap().span_id(), "00f067aa0ba902b7");
/// // Two traceparent headers: neither is trusted, and a new trace starts.
/// let two = Pairs(vec![("traceparent".into(), parent.into()), ("traceparent".into(), parent.into())]);
/// assert!(TraceContext::extract_from(&two).is_none());
/// ```
pub trait Extractor {
    /// The first value of the header `name`, if there is one and it is
    /// text.
    fn get(&self, name: &str) -> Option<&str>;

    /// Every value of the header `name`, in order: `None` for a value
    /// that is not text (an HTTP header value of bytes outside visible
    /// ASCII). By default, [`get`](Self::get)'s value alone: right for a
    /// carrier that holds one value per name.
    fn get_all(&self, name: &str) -> impl Iterator<Item = Option<&str>> {
        self.get(name).map(Some).into_iter()
    }
}

/// A carrier a [`TraceContext`] is written into: outgoing request
/// headers, or a message's metadata.
///
/// ```
/// use newrelic_telemetry::trace_context::{Injector, TraceContext};
///
/// /// Headers for some HTTP library: (name, value) pairs.
/// #[derive(Default)]
/// struct Pairs(Vec<(String, String)>);
///
/// impl Injector for Pairs {
///     fn set(&mut self, name: &str, value: String) {
///         self.remove(name);
///         self.0.push((name.to_owned(), value));
///     }
///
///     fn remove(&mut self, name: &str) {
///         self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
///     }
/// }
///
/// let context = TraceContext::new("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true).unwrap();
/// let mut headers = Pairs::default();
/// context.inject_to(&mut headers);
/// assert_eq!(headers.0, [("traceparent".to_owned(), context.traceparent())]);
/// ```
pub trait Injector {
    /// Sets the header `name` to `value`, replacing any value it had.
    fn set(&mut self, name: &str, value: String);

    /// Removes the header `name`: [`TraceContext::inject_to`] removes a
    /// `tracestate` when the context carries none, so that a carrier used
    /// again (a reused header map) does not pass on another trace's
    /// entries. By default it does nothing, which is right for a carrier
    /// that starts empty every time.
    fn remove(&mut self, name: &str) {
        let _ = name;
    }
}

/// Case-insensitive, as HTTP header names are; a value that is not
/// visible ASCII reads as not text.
impl Extractor for HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        HeaderMap::get(self, name)?.to_str().ok()
    }

    fn get_all(&self, name: &str) -> impl Iterator<Item = Option<&str>> {
        HeaderMap::get_all(self, name)
            .iter()
            .map(|v| v.to_str().ok())
    }
}

/// A name that is not a valid header name, or a value that is not a valid
/// header value, is not written (and the value the header had is removed,
/// so that no stale one goes on).
impl Injector for HeaderMap {
    fn set(&mut self, name: &str, value: String) {
        let name = match name {
            // The two names of this module, without parsing or allocating.
            TRACEPARENT => HeaderName::from_static(TRACEPARENT),
            TRACESTATE => HeaderName::from_static(TRACESTATE),
            other => match HeaderName::from_bytes(other.as_bytes()) {
                Ok(name) => name,
                Err(_) => return,
            },
        };
        match HeaderValue::try_from(value) {
            Ok(value) => {
                self.insert(name, value);
            }
            Err(_) => {
                HeaderMap::remove(self, name);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        HeaderMap::remove(self, name);
    }
}

/// A message's metadata: one value per name, names as written (the
/// lowercase [`TRACEPARENT`] and [`TRACESTATE`]).
impl<S: BuildHasher> Extractor for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

/// A message's metadata: one value per name.
impl<S: BuildHasher> Injector for HashMap<String, String, S> {
    fn set(&mut self, name: &str, value: String) {
        self.insert(name.to_owned(), value);
    }

    fn remove(&mut self, name: &str) {
        HashMap::remove(self, name);
    }
}

/// actix-web's header map (feature `actix-web`): the same rules as
/// [`http::HeaderMap`]'s (it keeps every value of a name, in order).
///
/// ```
/// use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
/// use newrelic_telemetry::trace_context::TraceContext;
///
/// let mut headers = HeaderMap::new();
/// let context = TraceContext::new("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true).unwrap();
/// context.inject_to(&mut headers);
/// assert_eq!(TraceContext::extract_from(&headers), Some(context.clone()));
/// // A second traceparent: none is trusted.
/// headers.append(HeaderName::from_static("traceparent"), HeaderValue::from_static("garbage"));
/// assert_eq!(TraceContext::extract_from(&headers), None);
/// ```
#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
impl Extractor for actix_web::http::header::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        match actix_name(name) {
            Some(name) => actix_web::http::header::HeaderMap::get(self, &name)?
                .to_str()
                .ok(),
            None => None,
        }
    }

    fn get_all(&self, name: &str) -> impl Iterator<Item = Option<&str>> {
        let values = match actix_name(name) {
            Some(name) => actix_web::http::header::HeaderMap::get_all(self, &name),
            None => [].iter(),
        };
        values.map(|v| v.to_str().ok())
    }
}

/// actix-web's header map (feature `actix-web`): the same rules as
/// [`http::HeaderMap`]'s.
#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
impl Injector for actix_web::http::header::HeaderMap {
    fn set(&mut self, name: &str, value: String) {
        let Some(name) = actix_name(name) else {
            return;
        };
        match actix_web::http::header::HeaderValue::try_from(value) {
            Ok(value) => {
                self.insert(name, value);
            }
            Err(_) => {
                actix_web::http::header::HeaderMap::remove(self, &name);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(name) = actix_name(name) {
            actix_web::http::header::HeaderMap::remove(self, &name);
        }
    }
}

/// `name` as actix-web's (`http` 0.2's) header name: this module's two
/// without parsing or allocating (actix-web's map would parse a `&str` on
/// every look-up); `None` when it is not a valid name.
#[cfg(feature = "actix-web")]
fn actix_name(name: &str) -> Option<actix_web::http::header::HeaderName> {
    use actix_web::http::header::HeaderName;
    match name {
        TRACEPARENT => Some(HeaderName::from_static(TRACEPARENT)),
        TRACESTATE => Some(HeaderName::from_static(TRACESTATE)),
        other => HeaderName::from_bytes(other.as_bytes()).ok(),
    }
}

/// The sampling rule for a trace that starts here: sampled when the trace
/// id's rightmost 56 bits (the random part, per W3C Trace Context level 2)
/// are at least `(1 - ratio) * 2^56`, as OpenTelemetry's consistent
/// probability sampling decides. Every service that sees the trace id with
/// the same ratio decides the same way.
#[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
pub(crate) fn sampled_by_ratio(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    const SPAN: f64 = (1u64 << 56) as f64;
    let randomness = (trace_id as u64) & ((1u64 << 56) - 1);
    let threshold = ((1.0 - ratio) * SPAN) as u64;
    randomness >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_rule_is_deterministic_and_proportional() {
        // Its rightmost 56 bits are 0xce929d0e0e4736: above half of 2^56
        // (sampled at 0.5), below 0.9 of it (not sampled at 0.1).
        let id = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128;
        assert!(sampled_by_ratio(id, 0.5));
        assert!(!sampled_by_ratio(id, 0.1));
        assert!(sampled_by_ratio(id, 1.0));
        assert!(!sampled_by_ratio(id, 0.0));
        assert!(!sampled_by_ratio(id, f64::NAN));
        // The boundary: randomness at the threshold is sampled, one below
        // is not; the bits left of the 56 play no part.
        let half = 1u128 << 55;
        assert!(sampled_by_ratio(half, 0.5));
        assert!(!sampled_by_ratio(half - 1, 0.5));
        assert!(!sampled_by_ratio((u128::MAX << 56) | (half - 1), 0.5));
        let n = 100_000;
        let kept = (0..n)
            .filter(|_| sampled_by_ratio(crate::id::random_trace_id(), 0.25))
            .count();
        // 0.25 ± 1% (about 17 standard deviations).
        assert!((24_000..26_000).contains(&kept), "{kept}");
    }

    #[test]
    fn higher_ratio_keeps_a_superset() {
        for _ in 0..10_000 {
            let id = crate::id::random_trace_id();
            if sampled_by_ratio(id, 0.1) {
                assert!(sampled_by_ratio(id, 0.2));
            }
        }
    }

    /// The header lists every carrier must read alike: one, none or two
    /// `traceparent`s, values that are not text, several `tracestate`s.
    fn header_lists() -> Vec<Vec<(&'static str, &'static [u8])>> {
        const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        vec![
            vec![],
            vec![("traceparent", VALID)],
            vec![("Traceparent", VALID), ("tracestate", b"a=1")],
            vec![("traceparent", VALID), ("traceparent", VALID)],
            vec![(
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\xe9",
            )],
            vec![
                ("traceparent", VALID),
                ("tracestate", b"a=1"),
                ("tracestate", b"b=2"),
            ],
            vec![
                ("traceparent", VALID),
                ("tracestate", b"a=1"),
                ("tracestate", b"b=\xe9"),
            ],
            vec![
                ("traceparent", VALID),
                ("tracestate", b"\xe9"),
                ("tracestate", b"b=2"),
            ],
            vec![
                ("traceparent", VALID),
                ("tracestate", b"a=1"),
                ("tracestate", b"a=2"),
            ],
            vec![("tracestate", b"a=1")],
        ]
    }

    fn http_map(headers: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn extract_reads_the_http_header_map_as_before() {
        let read = |headers: &[(&str, &[u8])]| TraceContext::extract(&http_map(headers));
        let state =
            |headers: &[(&str, &[u8])]| read(headers).map(|c| c.trace_state().map(str::to_owned));
        let lists = header_lists();
        assert_eq!(read(&lists[0]), None);
        assert!(read(&lists[1]).is_some());
        assert_eq!(state(&lists[2]), Some(Some("a=1".to_owned())));
        assert_eq!(read(&lists[3]), None, "two traceparents");
        assert_eq!(read(&lists[4]), None, "not text");
        assert_eq!(state(&lists[5]), Some(Some("a=1,b=2".to_owned())));
        assert_eq!(
            state(&lists[6]),
            Some(None),
            "a tracestate that is not text"
        );
        assert_eq!(state(&lists[7]), Some(None));
        assert_eq!(
            state(&lists[8]),
            Some(None),
            "a repeated key across headers"
        );
        assert_eq!(read(&lists[9]), None);
    }

    #[test]
    fn inject_replaces_and_removes() {
        let context = TraceContext::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        let mut headers = http_map(&[
            ("traceparent", b"stale"),
            ("traceparent", b"stale"),
            ("tracestate", b"x=1"),
        ]);
        context.inject(&mut headers);
        assert_eq!(headers.get_all(TRACEPARENT).iter().count(), 1);
        assert_eq!(headers[TRACEPARENT], context.traceparent().as_str());
        assert!(headers.get(TRACESTATE).is_none(), "no stale tracestate");
        let with_state = context.with_trace_state(Some("y=2"));
        with_state.inject(&mut headers);
        assert_eq!(headers[TRACESTATE], "y=2");
    }

    #[cfg(feature = "actix-web")]
    #[test]
    fn actix_header_maps_read_and_write_as_http_ones() {
        use actix_web::http::header as actix;
        for headers in header_lists() {
            let mut map = actix::HeaderMap::new();
            for (name, value) in &headers {
                let name = actix::HeaderName::from_bytes(name.as_bytes()).unwrap();
                map.append(name, actix::HeaderValue::from_bytes(value).unwrap());
            }
            let expected = TraceContext::extract(&http_map(&headers));
            assert_eq!(TraceContext::extract_from(&map), expected, "{headers:?}");
            if let Some(context) = expected {
                let mut out = actix::HeaderMap::new();
                out.insert(
                    actix::HeaderName::from_static(TRACESTATE),
                    actix::HeaderValue::from_static("stale=1"),
                );
                context.inject_to(&mut out);
                let mut http_out = HeaderMap::new();
                context.inject(&mut http_out);
                assert_eq!(
                    out.get(TRACEPARENT).map(|v| v.as_bytes()),
                    http_out.get(TRACEPARENT).map(|v| v.as_bytes())
                );
                assert_eq!(
                    out.get(TRACESTATE).map(|v| v.as_bytes()),
                    http_out.get(TRACESTATE).map(|v| v.as_bytes())
                );
                assert_eq!(TraceContext::extract_from(&out), Some(context));
            }
        }
    }

    #[test]
    fn trace_state_rules() {
        assert_eq!(
            parse_trace_state(" , a=1 ,,b=2").as_deref(),
            Some("a=1,b=2")
        );
        assert_eq!(parse_trace_state("a=1,a=2"), None); // a repeated key
        assert_eq!(parse_trace_state("A=1"), None); // uppercase key
        assert_eq!(parse_trace_state("a="), None);
        assert_eq!(parse_trace_state(""), None);
        assert_eq!(parse_trace_state("t@sys=v").as_deref(), Some("t@sys=v"));
        let long = format!("a={}", "x".repeat(257));
        assert_eq!(parse_trace_state(&long), None);
    }
}
