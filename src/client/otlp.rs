//! OTLP/HTTP binary protobuf for distributions: the
//! `opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest`
//! that carries exponential histograms to New Relic's OTLP endpoint, and the
//! `ExportMetricsServiceResponse` it answers with.
//!
//! The client writes each point as a whole `resource_metrics` entry
//! ([`write_point_entry`]): concatenated, they make one request, which it
//! streams into gzip and cuts between any two points like the JSON APIs'
//! payloads.
//!
//! The protobuf is written by hand, straight from the points (no message
//! structs are built, no code generator, no runtime dependency): only the
//! few messages and fields below are ever written, each in field-number
//! order and in proto3's canonical form (scalars at their default are left
//! out, repeated scalars are packed), so the bytes are what a generated
//! encoder writes for the same message. The tests decode every byte with
//! `prost` (a dev-dependency only) and compare with its own encoding.
//!
//! | message | fields written (number, wire type) |
//! |---|---|
//! | `ExportMetricsServiceRequest` | `resource_metrics` 1 (len), one |
//! | `ResourceMetrics` | `resource` 1 (len), `scope_metrics` 2 (len), one |
//! | `Resource` | `attributes` 1 (len): the batch's common attributes, `service.name` |
//! | `ScopeMetrics` | `scope` 1 (len), `metrics` 2 (len) |
//! | `InstrumentationScope` | `name` 1 `"newrelic-telemetry"`, `version` 2 (len) |
//! | `Metric` | `name` 1, `description` 2, `unit` 3 (len), `exponential_histogram` 10 (len) |
//! | `ExponentialHistogram` | `data_points` 1 (len), `aggregation_temporality` 2 (varint, DELTA = 1) |
//! | `ExponentialHistogramDataPoint` | `attributes` 1 (len), `start_time_unix_nano` 2, `time_unix_nano` 3, `count` 4 (fixed64), `sum` 5 (double), `scale` 6 (sint32), `zero_count` 7 (fixed64), `positive` 8, `negative` 9 (len), `min` 12, `max` 13, `zero_threshold` 14 (double) |
//! | `Buckets` | `offset` 1 (sint32), `bucket_counts` 2 (packed uint64) |
//! | `KeyValue` / `AnyValue` | `key` 1, `value` 2 / `string_value` 1, `bool_value` 2, `int_value` 3 (int64), `double_value` 4 |
//!
//! The response is read by a small wire-format reader that skips every field
//! it does not know (any wire type, groups included) and refuses truncated or
//! malformed input with a [`DecodeError`], never a panic.
//!
//! The receiving side (the test server and the local endpoint) reads
//! requests with the same reader: [`decode_request`] gives every resource,
//! scope and exponential-histogram point, skips other metric data types
//! and unknown fields, and refuses malformed input with the place and the
//! reason; [`DecodedPoint::to_distribution`] rebuilds the point's
//! [`Distribution`]; [`encode_response`] and [`encode_status`] write the
//! answers.

// The request decoder and the answers serve the test server and the local
// endpoint: dead code without `local-endpoint`.
#![cfg_attr(not(any(test, feature = "local-endpoint")), allow(dead_code))]

use std::fmt;
use std::sync::Arc;

use crate::attributes::{Attributes, Value};
use crate::common::{COLLECTOR_NAME, COLLECTOR_VERSION};
use crate::distribution::{
    Buckets as DistributionBuckets, Distribution, DistributionError, DistributionParts,
    DistributionPoint,
};

/// The `Content-Type` of an OTLP/HTTP binary protobuf request.
pub(crate) const CONTENT_TYPE: &str = "application/x-protobuf";

/// The header New Relic's OTLP endpoint reads the license key from.
pub(crate) const API_KEY_HEADER: &str = "api-key";

/// The path of the metrics export on an OTLP/HTTP endpoint.
pub(crate) const METRICS_PATH: &str = "/v1/metrics";

/// `AGGREGATION_TEMPORALITY_DELTA`: each point covers its own interval,
/// from `start_time_unix_nano` to `time_unix_nano`.
pub(crate) const AGGREGATION_TEMPORALITY_DELTA: u64 = 1;

/// The scope every metric is sent under.
pub(crate) const SCOPE_NAME: &str = COLLECTOR_NAME;

/// The resource attribute naming the service.
pub(crate) const SERVICE_NAME_KEY: &str = "service.name";

/// The most of a partial success's `error_message` kept, in bytes (cut at
/// a character boundary): it is logged, and a server decides its length.
pub(crate) const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

// ---------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------

/// Who sent the metrics: the OTLP `Resource`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OtlpResource<'a> {
    /// The batch's common attributes, sent as resource attributes.
    pub(crate) attributes: Option<&'a Attributes>,
    /// `service.name`, sent when `attributes` has none of its own (a user's
    /// `service.name` common attribute wins).
    pub(crate) service_name: Option<&'a str>,
}

/// One bucket range of an exponential histogram point: `counts[i]` values
/// fell in bucket `offset + i`, which at scale `s` holds the magnitudes in
/// `(base^(offset+i), base^(offset+i+1)]`, `base = 2^(2^-s)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Buckets {
    /// Index of the first bucket in `counts` (may be negative).
    pub(crate) offset: i32,
    /// The count of each bucket from `offset` on. Empty: none is sent.
    pub(crate) counts: Vec<u64>,
}

/// One series' exponential histogram over one interval (delta temporality).
///
/// `count` should equal `zero_count` plus every bucket count, as OTLP
/// requires; the encoder writes what it is given. `sum`, `min` and `max`
/// are left out when they are not finite (`sum` overflowing to infinity),
/// and `min` and `max` when `count` is 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ExponentialPoint {
    /// The series' attributes.
    pub(crate) attributes: Arc<Attributes>,
    /// Start of the interval, nanoseconds since the epoch.
    pub(crate) start_time_unix_nano: u64,
    /// End of the interval, nanoseconds since the epoch.
    pub(crate) time_unix_nano: u64,
    /// Values recorded.
    pub(crate) count: u64,
    /// Their sum.
    pub(crate) sum: f64,
    /// The smallest.
    pub(crate) min: f64,
    /// The largest.
    pub(crate) max: f64,
    /// The resolution: at scale `s` the bucket base is `2^(2^-s)`.
    pub(crate) scale: i32,
    /// Values in the zero bucket.
    pub(crate) zero_count: u64,
    /// The zero bucket's bound (`[-t, t]`); 0 for exact zeros.
    pub(crate) zero_threshold: f64,
    /// Buckets of the positive values.
    pub(crate) positive: Buckets,
    /// Buckets of the negative values, by magnitude.
    pub(crate) negative: Buckets,
}

impl ExponentialPoint {
    /// The scalars of the point that carries `distribution` over one
    /// interval (count, sum, min, max, scale, zero bucket), with no
    /// buckets: the encoder writes those from the distribution's own.
    fn scalars(
        distribution: &Distribution,
        attributes: Arc<Attributes>,
        start_time_unix_nano: u64,
        time_unix_nano: u64,
    ) -> Self {
        ExponentialPoint {
            attributes,
            start_time_unix_nano,
            time_unix_nano,
            count: distribution.count(),
            sum: distribution.sum(),
            // Left out of the encoding when empty.
            min: distribution.min().unwrap_or(0.0),
            max: distribution.max().unwrap_or(0.0),
            scale: i32::from(distribution.scale()),
            zero_count: distribution.zero_count(),
            zero_threshold: distribution.zero_threshold(),
            positive: Buckets::default(),
            negative: Buckets::default(),
        }
    }

    /// The point that carries `distribution` over one interval, its
    /// buckets copied.
    #[cfg(test)]
    pub(crate) fn from_distribution(
        distribution: &Distribution,
        attributes: Arc<Attributes>,
        start_time_unix_nano: u64,
        time_unix_nano: u64,
    ) -> Self {
        let side = |b: &DistributionBuckets| Buckets {
            offset: b.offset(),
            counts: b.counts().to_vec(),
        };
        ExponentialPoint {
            positive: side(distribution.positive()),
            negative: side(distribution.negative()),
            ..Self::scalars(
                distribution,
                attributes,
                start_time_unix_nano,
                time_unix_nano,
            )
        }
    }
}

/// The points of one metric name (a request grouped as other SDKs send
/// them, which the tests write to exercise the decoder).
#[cfg(test)]
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ExponentialMetric {
    /// The metric's name.
    pub(crate) name: Arc<str>,
    /// Its description, if any.
    pub(crate) description: Option<Arc<str>>,
    /// Its unit (UCUM, e.g. `ms`), if any.
    pub(crate) unit: Option<Arc<str>>,
    /// One point per series.
    pub(crate) points: Vec<ExponentialPoint>,
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_START_GROUP: u8 = 3;
const WIRE_END_GROUP: u8 = 4;
const WIRE_I32: u8 = 5;

/// Encodes one `ExportMetricsServiceRequest` holding every metric under one
/// resource and one scope (the tests' grouped requests; the client writes
/// [`write_point_entry`]'s).
#[cfg(test)]
pub(crate) fn encode_request(
    resource: &OtlpResource<'_>,
    metrics: &[ExponentialMetric],
) -> Vec<u8> {
    let mut encoder = RequestEncoder::new(resource);
    for metric in metrics {
        encoder.push_metric(
            &metric.name,
            metric.description.as_deref().unwrap_or(""),
            metric.unit.as_deref().unwrap_or(""),
            &metric.points,
        );
    }
    encoder.finish()
}

/// Builds an `ExportMetricsServiceRequest` a metric at a time, so a caller
/// can watch its size and cut a payload between metrics (or between the
/// points of one: a name may be pushed again with the rest of its points).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct RequestEncoder {
    buf: Vec<u8>,
    /// Where the length of the one `ResourceMetrics` goes.
    resource_metrics_at: usize,
    /// Where the length of the one `ScopeMetrics` goes.
    scope_metrics_at: usize,
    points: usize,
}

#[cfg(test)]
impl RequestEncoder {
    /// Starts a request: its resource and scope.
    pub(crate) fn new(resource: &OtlpResource<'_>) -> Self {
        let mut buf = Vec::with_capacity(256);
        // ExportMetricsServiceRequest.resource_metrics = 1
        let resource_metrics_at = open_message(&mut buf, 1);
        // ResourceMetrics.resource = 1
        put_message(&mut buf, 1, |buf| encode_resource(buf, resource));
        // ResourceMetrics.scope_metrics = 2
        let scope_metrics_at = open_message(&mut buf, 2);
        // ScopeMetrics.scope = 1
        put_message(&mut buf, 1, |buf| {
            put_string(buf, 1, SCOPE_NAME);
            put_string(buf, 2, COLLECTOR_VERSION);
        });
        RequestEncoder {
            buf,
            resource_metrics_at,
            scope_metrics_at,
            points: 0,
        }
    }

    /// Adds a `Metric` holding these points (an exponential histogram, delta
    /// temporality). An empty description or unit is left out.
    pub(crate) fn push_metric(
        &mut self,
        name: &str,
        description: &str,
        unit: &str,
        points: &[ExponentialPoint],
    ) {
        // ScopeMetrics.metrics = 2
        put_message(&mut self.buf, 2, |buf| {
            put_string(buf, 1, name);
            put_string(buf, 2, description);
            put_string(buf, 3, unit);
            // Metric.exponential_histogram = 10
            put_message(buf, 10, |buf| {
                for point in points {
                    put_message(buf, 1, |buf| encode_point(buf, point));
                }
                put_varint_field(buf, 2, AGGREGATION_TEMPORALITY_DELTA);
            });
        });
        self.points += points.len();
    }

    /// Points pushed so far.
    pub(crate) fn points(&self) -> usize {
        self.points
    }

    /// The size in bytes [`finish`](Self::finish) will return.
    pub(crate) fn encoded_len(&self) -> usize {
        let end = self.buf.len();
        let scope_body = end - self.scope_metrics_at - 1;
        let scope_extra = varint_len(scope_body as u64) - 1;
        let resource_body = end - self.resource_metrics_at - 1 + scope_extra;
        let resource_extra = varint_len(resource_body as u64) - 1;
        end + scope_extra + resource_extra
    }

    /// The encoded request.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        // The inner length first: patching it moves only what follows it.
        close_message(&mut self.buf, self.scope_metrics_at);
        close_message(&mut self.buf, self.resource_metrics_at);
        self.buf
    }
}

/// Appends one point as a whole `resource_metrics` entry of an
/// `ExportMetricsServiceRequest`: its resource, the scope, and a metric of
/// one exponential-histogram point. Protobuf appends a repeated field's
/// entries from concatenated messages, so a request is any run of these
/// (each complete, its length known as it is written), which lets the
/// client stream points into gzip and cut a payload between any two, as it
/// does items of the JSON APIs. The repeated resource and scope cost a few
/// bytes each once compressed.
pub(crate) fn write_point_entry(
    buf: &mut Vec<u8>,
    resource: &OtlpResource<'_>,
    point: &DistributionPoint,
) {
    let d = point.distribution();
    // The point's scalars; its buckets are written from the distribution's
    // own, with no copy.
    let scalars = ExponentialPoint::scalars(
        d,
        point.shared_attributes().clone(),
        point.start_ms().saturating_mul(1_000_000),
        point.end_ms().saturating_mul(1_000_000),
    );
    // ExportMetricsServiceRequest.resource_metrics = 1
    put_message(buf, 1, |buf| {
        // ResourceMetrics.resource = 1
        put_message(buf, 1, |buf| encode_resource(buf, resource));
        // ResourceMetrics.scope_metrics = 2
        put_message(buf, 2, |buf| {
            // ScopeMetrics.scope = 1
            put_message(buf, 1, |buf| {
                put_string(buf, 1, SCOPE_NAME);
                put_string(buf, 2, COLLECTOR_VERSION);
            });
            // ScopeMetrics.metrics = 2
            put_message(buf, 2, |buf| {
                put_string(buf, 1, point.name());
                // Metric.exponential_histogram = 10
                put_message(buf, 10, |buf| {
                    put_message(buf, 1, |buf| {
                        let (positive, negative) = (d.positive(), d.negative());
                        encode_point_with(
                            buf,
                            &scalars,
                            (positive.offset(), positive.counts()),
                            (negative.offset(), negative.counts()),
                        );
                    });
                    put_varint_field(buf, 2, AGGREGATION_TEMPORALITY_DELTA);
                });
            });
        });
    });
}

fn encode_resource(buf: &mut Vec<u8>, resource: &OtlpResource<'_>) {
    let has_own_name = resource
        .attributes
        .is_some_and(|attributes| attributes.position(SERVICE_NAME_KEY).is_some());
    if let (Some(name), false) = (resource.service_name, has_own_name) {
        put_message(buf, 1, |buf| {
            put_string(buf, 1, SERVICE_NAME_KEY);
            put_message(buf, 2, |buf| put_bytes(buf, 1, name.as_bytes()));
        });
    }
    if let Some(attributes) = resource.attributes {
        put_attributes(buf, 1, attributes);
    }
}

#[cfg(test)]
fn encode_point(buf: &mut Vec<u8>, point: &ExponentialPoint) {
    encode_point_with(
        buf,
        point,
        (point.positive.offset, &point.positive.counts),
        (point.negative.offset, &point.negative.counts),
    );
}

/// `point`'s fields, with these buckets (offset, counts) for its own.
fn encode_point_with(
    buf: &mut Vec<u8>,
    point: &ExponentialPoint,
    positive: (i32, &[u64]),
    negative: (i32, &[u64]),
) {
    put_attributes(buf, 1, &point.attributes);
    put_fixed64_field(buf, 2, point.start_time_unix_nano);
    put_fixed64_field(buf, 3, point.time_unix_nano);
    put_fixed64_field(buf, 4, point.count);
    // `optional double`: present whenever known, even at 0.
    if point.sum.is_finite() {
        put_double(buf, 5, point.sum);
    }
    put_varint_field(buf, 6, u64::from(zigzag32(point.scale)));
    put_fixed64_field(buf, 7, point.zero_count);
    put_buckets(buf, 8, positive);
    put_buckets(buf, 9, negative);
    // flags (10) stay 0: every point has recorded values.
    if point.count > 0 && point.min.is_finite() {
        put_double(buf, 12, point.min);
    }
    if point.count > 0 && point.max.is_finite() {
        put_double(buf, 13, point.max);
    }
    if point.zero_threshold != 0.0 && point.zero_threshold.is_finite() {
        put_double(buf, 14, point.zero_threshold);
    }
}

fn put_buckets(buf: &mut Vec<u8>, field: u32, (offset, counts): (i32, &[u64])) {
    if counts.is_empty() {
        return;
    }
    put_message(buf, field, |buf| {
        put_varint_field(buf, 1, u64::from(zigzag32(offset)));
        // Packed: one length, then the varints.
        let len: usize = counts.iter().map(|&c| varint_len(c)).sum();
        put_key(buf, 2, WIRE_LEN);
        put_varint(buf, len as u64);
        buf.reserve(len);
        for &count in counts {
            put_varint(buf, count);
        }
    });
}

/// Each pair as a `KeyValue` in field `field`.
fn put_attributes(buf: &mut Vec<u8>, field: u32, attributes: &Attributes) {
    for (key, value) in attributes.iter() {
        put_message(buf, field, |buf| {
            put_string(buf, 1, key);
            // KeyValue.value = 2, an AnyValue: a oneof member is written
            // even at its default ("", false, 0).
            put_message(buf, 2, |buf| match value {
                Value::String(s) => put_bytes(buf, 1, s.as_bytes()),
                Value::Bool(b) => {
                    put_key(buf, 2, WIRE_VARINT);
                    put_varint(buf, u64::from(*b));
                }
                Value::Int(i) => {
                    put_key(buf, 3, WIRE_VARINT);
                    // int64: two's complement, ten bytes when negative.
                    put_varint(buf, *i as u64);
                }
                Value::Float(f) => put_double(buf, 4, *f),
            });
        });
    }
}

fn zigzag32(n: i32) -> u32 {
    ((n << 1) ^ (n >> 31)) as u32
}

fn unzigzag32(n: u32) -> i32 {
    ((n >> 1) as i32) ^ -((n & 1) as i32)
}

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire_type));
}

/// A varint scalar, left out at its default (0).
fn put_varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_key(buf, field, WIRE_VARINT);
        put_varint(buf, v);
    }
}

/// A `fixed64` scalar, left out at its default (0).
fn put_fixed64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_key(buf, field, WIRE_I64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A double, written whatever its value.
fn put_double(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_key(buf, field, WIRE_I64);
    buf.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// A string scalar, left out when empty.
fn put_string(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(buf, field, s.as_bytes());
    }
}

/// A length-delimited field, written even when empty.
fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, WIRE_LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Writes the key of an embedded message and a one-byte length to patch;
/// returns where that length is.
fn open_message(buf: &mut Vec<u8>, field: u32) -> usize {
    put_key(buf, field, WIRE_LEN);
    buf.push(0);
    buf.len() - 1
}

/// Patches the length at `at` to cover everything after it, moving the body
/// when the length needs more than its one byte.
fn close_message(buf: &mut Vec<u8>, at: usize) {
    let body_start = at + 1;
    let end = buf.len();
    let len = end - body_start;
    let width = varint_len(len as u64);
    if width > 1 {
        buf.resize(end + width - 1, 0);
        buf.copy_within(body_start..end, at + width);
    }
    let mut v = len as u64;
    for (i, byte) in buf[at..at + width].iter_mut().enumerate() {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        *byte = if i + 1 < width { low | 0x80 } else { low };
    }
}

/// An embedded message in field `field`, written by `body`.
fn put_message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let at = open_message(buf, field);
    body(buf);
    close_message(buf, at);
}

// ---------------------------------------------------------------------------
// Decoding the response
// ---------------------------------------------------------------------------

/// `ExportMetricsPartialSuccess`: the server accepted the request but not all
/// of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PartialSuccess {
    /// Points the server refused: the client counts them as dropped. 0 with
    /// a message is a warning: everything was accepted.
    pub(crate) rejected_data_points: u64,
    /// Why, as the server tells it (invalid UTF-8 replaced, at most
    /// [`MAX_ERROR_MESSAGE_BYTES`]).
    pub(crate) error_message: String,
}

impl PartialSuccess {
    /// Whether points were refused (else it is only a warning).
    pub(crate) fn has_rejections(&self) -> bool {
        self.rejected_data_points > 0
    }
}

/// Decodes an `ExportMetricsServiceResponse`. `None` is full success: an
/// empty body, or a `partial_success` that is empty (as the specification
/// asks servers not to send, but some may). Unknown fields are skipped.
pub(crate) fn decode_response(body: &[u8]) -> Result<Option<PartialSuccess>, DecodeError> {
    let mut partial: Option<PartialSuccess> = None;
    let mut reader = WireReader::new(body);
    while let Some(field) = reader.next_field()? {
        if field.number == 1 {
            // partial_success = 1; a message seen twice is merged.
            let bytes = field.bytes()?;
            let merged = partial.get_or_insert_with(PartialSuccess::default);
            merge_partial_success(merged, bytes, field.value_offset)?;
        }
    }
    Ok(partial.filter(|p| p.rejected_data_points > 0 || !p.error_message.is_empty()))
}

/// The `rejected_data_points` of an answer cut short (the client reads at
/// most a few KiB of it, and a long `error_message` may pass that): read
/// from the first `partial_success` message as far as it goes, where
/// servers write that field first. `None` if the prefix does not hold it.
pub(crate) fn rejected_in_prefix(body: &[u8]) -> Option<u64> {
    fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *buf.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut at = 0;
    // partial_success = 1, length-delimited; its length may pass the end.
    if varint(body, &mut at)? != (1 << 3) | u64::from(WIRE_LEN) {
        return None;
    }
    let len = usize::try_from(varint(body, &mut at)?).ok()?;
    let end = at.saturating_add(len).min(body.len());
    let inner = &body[at..end];
    let mut at = 0;
    // rejected_data_points = 1, a varint (int64).
    if varint(inner, &mut at)? != u64::from(WIRE_VARINT) | (1 << 3) {
        return None;
    }
    varint(inner, &mut at)
}

fn merge_partial_success(
    into: &mut PartialSuccess,
    bytes: &[u8],
    base: usize,
) -> Result<(), DecodeError> {
    let mut reader = WireReader::nested(bytes, base);
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => {
                // int64 rejected_data_points
                let raw = field.varint()? as i64;
                into.rejected_data_points = u64::try_from(raw).map_err(|_| DecodeError {
                    offset: field.offset,
                    reason: DecodeErrorReason::NegativeCount(raw),
                })?;
            }
            2 => {
                let bytes = field.bytes()?;
                let text = String::from_utf8_lossy(bytes);
                let mut cut = text.len().min(MAX_ERROR_MESSAGE_BYTES);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                into.error_message = text[..cut].to_owned();
            }
            _ => {}
        }
    }
    Ok(())
}

/// A response body that is not a valid `ExportMetricsServiceResponse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// Byte offset in the body where the fault was found.
    pub(crate) offset: usize,
    /// What was wrong.
    pub(crate) reason: DecodeErrorReason,
}

/// What made a body undecodable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeErrorReason {
    /// The body ends inside a field.
    Truncated,
    /// A varint longer than 10 bytes or past 64 bits.
    VarintOverflow,
    /// Wire type 6 or 7.
    InvalidWireType(u8),
    /// Field number 0 or past 2^29 - 1.
    InvalidFieldNumber(u64),
    /// A known field with a wire type its type cannot have.
    WrongWireType { field: u32, wire_type: u8 },
    /// An end-group marker with no group open, or closing another field's.
    UnmatchedEndGroup,
    /// Groups nested deeper than [`MAX_GROUP_DEPTH`].
    TooDeep,
    /// A negative `rejected_data_points`.
    NegativeCount(i64),
    /// A `string` field whose bytes are not UTF-8.
    InvalidUtf8 { field: u32 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed OTLP export response at byte {}: {}",
            self.offset, self.reason
        )
    }
}

impl fmt::Display for DecodeErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorReason::Truncated => f.write_str("the body ends inside a field"),
            DecodeErrorReason::VarintOverflow => f.write_str("a varint runs past 64 bits"),
            DecodeErrorReason::InvalidWireType(t) => write!(f, "invalid wire type {t}"),
            DecodeErrorReason::InvalidFieldNumber(n) => write!(f, "invalid field number {n}"),
            DecodeErrorReason::WrongWireType { field, wire_type } => {
                write!(
                    f,
                    "field {field} has wire type {wire_type}, which its type cannot have"
                )
            }
            DecodeErrorReason::UnmatchedEndGroup => {
                f.write_str("an end-group marker matches no group")
            }
            DecodeErrorReason::TooDeep => {
                write!(f, "groups nested deeper than {MAX_GROUP_DEPTH}")
            }
            DecodeErrorReason::NegativeCount(n) => {
                write!(f, "rejected_data_points is negative ({n})")
            }
            DecodeErrorReason::InvalidUtf8 { field } => {
                write!(f, "field {field} is a string that is not UTF-8")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Deepest nesting of unknown groups skipped (as protobuf's own decoders).
pub(crate) const MAX_GROUP_DEPTH: u32 = 100;

/// A field's value as the wire carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// One field read by a [`WireReader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WireField<'a> {
    pub(crate) number: u32,
    pub(crate) value: WireValue<'a>,
    /// Offset of the field's key in the outermost body.
    pub(crate) offset: usize,
    /// Offset of its value's first byte (for length-delimited fields, past
    /// the length): where an embedded message read from it starts.
    pub(crate) value_offset: usize,
}

impl<'a> WireField<'a> {
    fn wrong_type(&self) -> DecodeError {
        let wire_type = match self.value {
            WireValue::Varint(_) => WIRE_VARINT,
            WireValue::Fixed64(_) => WIRE_I64,
            WireValue::Bytes(_) => WIRE_LEN,
            WireValue::Fixed32(_) => WIRE_I32,
        };
        DecodeError {
            offset: self.offset,
            reason: DecodeErrorReason::WrongWireType {
                field: self.number,
                wire_type,
            },
        }
    }

    /// The value of a varint field (int32/64, uint32/64, bool, enum).
    pub(crate) fn varint(&self) -> Result<u64, DecodeError> {
        match self.value {
            WireValue::Varint(v) => Ok(v),
            _ => Err(self.wrong_type()),
        }
    }

    /// The bytes of a length-delimited field (string, bytes, message).
    pub(crate) fn bytes(&self) -> Result<&'a [u8], DecodeError> {
        match self.value {
            WireValue::Bytes(b) => Ok(b),
            _ => Err(self.wrong_type()),
        }
    }

    /// The value of a 64-bit field (fixed64, sfixed64, double).
    pub(crate) fn fixed64(&self) -> Result<u64, DecodeError> {
        match self.value {
            WireValue::Fixed64(v) => Ok(v),
            _ => Err(self.wrong_type()),
        }
    }

    /// The value of a `double` field.
    pub(crate) fn double(&self) -> Result<f64, DecodeError> {
        self.fixed64().map(f64::from_bits)
    }

    /// The value of a `sint32` field: zigzag, truncated to 32 bits as
    /// protobuf's decoders do.
    pub(crate) fn sint32(&self) -> Result<i32, DecodeError> {
        self.varint().map(|v| unzigzag32(v as u32))
    }

    /// The text of a `string` field, refused unless UTF-8.
    pub(crate) fn string(&self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError {
            offset: self.offset,
            reason: DecodeErrorReason::InvalidUtf8 { field: self.number },
        })
    }

    /// A reader of the embedded message this field holds.
    pub(crate) fn message(&self) -> Result<WireReader<'a>, DecodeError> {
        Ok(WireReader::nested(self.bytes()?, self.value_offset))
    }
}

/// Reads the fields of one protobuf message, in order, skipping groups.
#[derive(Clone, Debug)]
pub(crate) struct WireReader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the outermost body, for errors.
    base: usize,
}

impl<'a> WireReader<'a> {
    /// A reader of a whole body.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        WireReader::nested(buf, 0)
    }

    /// A reader of an embedded message found at `base` in the body.
    pub(crate) fn nested(buf: &'a [u8], base: usize) -> Self {
        WireReader { buf, pos: 0, base }
    }

    fn error(&self, at: usize, reason: DecodeErrorReason) -> DecodeError {
        DecodeError {
            offset: self.base + at,
            reason,
        }
    }

    fn read_varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(self.error(start, DecodeErrorReason::Truncated));
            };
            self.pos += 1;
            // The tenth byte holds bit 63 only.
            if i == 9 && byte > 1 {
                return Err(self.error(start, DecodeErrorReason::VarintOverflow));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.error(start, DecodeErrorReason::VarintOverflow))
    }

    fn take(&mut self, n: usize, start: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.error(start, DecodeErrorReason::Truncated))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next key: field number and wire type.
    fn read_key(&mut self) -> Result<(u32, u8), DecodeError> {
        let start = self.pos;
        let key = self.read_varint()?;
        let wire_type = (key & 7) as u8;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(self.error(start, DecodeErrorReason::InvalidFieldNumber(number)));
        }
        Ok((number as u32, wire_type))
    }

    /// Reads the value of a field of a non-group wire type.
    fn read_value(&mut self, wire_type: u8, start: usize) -> Result<WireValue<'a>, DecodeError> {
        Ok(match wire_type {
            WIRE_VARINT => WireValue::Varint(self.read_varint()?),
            WIRE_I64 => {
                let bytes = self.take(8, start)?;
                let mut le = [0u8; 8];
                le.copy_from_slice(bytes);
                WireValue::Fixed64(u64::from_le_bytes(le))
            }
            WIRE_LEN => {
                let len_at = self.pos;
                let len = self.read_varint()?;
                let len = usize::try_from(len)
                    .map_err(|_| self.error(len_at, DecodeErrorReason::Truncated))?;
                WireValue::Bytes(self.take(len, start)?)
            }
            WIRE_I32 => {
                let bytes = self.take(4, start)?;
                let mut le = [0u8; 4];
                le.copy_from_slice(bytes);
                WireValue::Fixed32(u32::from_le_bytes(le))
            }
            WIRE_END_GROUP => {
                return Err(self.error(start, DecodeErrorReason::UnmatchedEndGroup));
            }
            other => return Err(self.error(start, DecodeErrorReason::InvalidWireType(other))),
        })
    }

    /// Skips a group whose start-group key for `number` was just read, up to
    /// and including its end-group key.
    fn skip_group(&mut self, number: u32, depth: u32) -> Result<(), DecodeError> {
        if depth > MAX_GROUP_DEPTH {
            return Err(self.error(self.pos, DecodeErrorReason::TooDeep));
        }
        loop {
            let start = self.pos;
            let (inner, wire_type) = self.read_key()?;
            match wire_type {
                WIRE_END_GROUP if inner == number => return Ok(()),
                WIRE_END_GROUP => {
                    return Err(self.error(start, DecodeErrorReason::UnmatchedEndGroup));
                }
                WIRE_START_GROUP => self.skip_group(inner, depth + 1)?,
                _ => {
                    self.read_value(wire_type, start)?;
                }
            }
        }
    }

    /// The next field, `None` at the end; groups (a deprecated encoding no
    /// message here uses) are skipped whole.
    pub(crate) fn next_field(&mut self) -> Result<Option<WireField<'a>>, DecodeError> {
        loop {
            if self.pos >= self.buf.len() {
                return Ok(None);
            }
            let start = self.pos;
            let (number, wire_type) = self.read_key()?;
            if wire_type == WIRE_START_GROUP {
                self.skip_group(number, 1)?;
                continue;
            }
            let value_start = self.pos;
            let value = self.read_value(wire_type, start)?;
            let value_offset = match value {
                WireValue::Bytes(bytes) => self.pos - bytes.len(),
                _ => value_start,
            };
            return Ok(Some(WireField {
                number,
                value,
                offset: self.base + start,
                value_offset: self.base + value_offset,
            }));
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding the response, decoding the request: the receiving side (the test
// server and the local endpoint)
// ---------------------------------------------------------------------------

/// Encodes an `ExportMetricsServiceResponse`: empty (zero bytes) for full
/// success, else a `partial_success`, as [`decode_response`] reads it.
pub(crate) fn encode_response(partial: Option<&PartialSuccess>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(partial) = partial {
        // ExportMetricsServiceResponse.partial_success = 1
        put_message(&mut buf, 1, |buf| {
            // int64 rejected_data_points = 1 (never negative here)
            put_varint_field(buf, 1, partial.rejected_data_points);
            put_string(buf, 2, &partial.error_message);
        });
    }
    buf
}

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of a malformed request.
pub(crate) const STATUS_INVALID_ARGUMENT: u64 = 3;

/// Encodes a `google.rpc.Status` (`code` 1, `message` 2), the body OTLP/HTTP
/// servers answer a refused request with.
pub(crate) fn encode_status(code: u64, message: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    put_varint_field(&mut buf, 1, code);
    put_string(&mut buf, 2, message);
    buf
}

/// A request body that is not a valid `ExportMetricsServiceRequest`: where
/// and why, as [`DecodeError`] says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestDecodeError(pub(crate) DecodeError);

impl fmt::Display for RequestDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed OTLP ExportMetricsServiceRequest at byte {}: {}",
            self.0.offset, self.0.reason
        )
    }
}

impl std::error::Error for RequestDecodeError {}

impl From<DecodeError> for RequestDecodeError {
    fn from(e: DecodeError) -> Self {
        RequestDecodeError(e)
    }
}

/// An `ExportMetricsServiceRequest` as [`decode_request`] reads it: every
/// resource and scope, and the metrics that are exponential histograms.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct DecodedRequest {
    /// `resource_metrics`, in order.
    pub(crate) resource_metrics: Vec<DecodedResourceMetrics>,
    /// Metrics of another data type (gauge, sum, histogram, summary) or of
    /// none, skipped.
    pub(crate) skipped_metrics: usize,
}

/// One `ResourceMetrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct DecodedResourceMetrics {
    /// The resource's attributes (a key given twice: the last wins).
    pub(crate) resource: Attributes,
    /// `scope_metrics`, in order.
    pub(crate) scope_metrics: Vec<DecodedScopeMetrics>,
}

/// One `ScopeMetrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct DecodedScopeMetrics {
    /// The instrumentation scope's name ("" when absent).
    pub(crate) scope_name: String,
    /// Its version ("" when absent).
    pub(crate) scope_version: String,
    /// Its exponential-histogram metrics, in order (a name sent twice is
    /// two entries).
    pub(crate) metrics: Vec<DecodedMetric>,
}

/// One `Metric` holding an exponential histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct DecodedMetric {
    pub(crate) name: String,
    /// "" when absent.
    pub(crate) description: String,
    /// "" when absent.
    pub(crate) unit: String,
    /// `AggregationTemporality`: 1 delta, 2 cumulative, 0 unspecified.
    pub(crate) aggregation_temporality: i32,
    /// `data_points`, in order.
    pub(crate) points: Vec<DecodedPoint>,
}

/// One `ExponentialHistogramDataPoint`, every field as sent (`optional`
/// ones `None` when absent).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct DecodedPoint {
    /// The series' attributes: string, bool, int and double values (others,
    /// arrays, maps and bytes, are left out; a key given twice: the last
    /// wins).
    pub(crate) attributes: Attributes,
    pub(crate) start_time_unix_nano: u64,
    pub(crate) time_unix_nano: u64,
    pub(crate) count: u64,
    pub(crate) sum: Option<f64>,
    pub(crate) scale: i32,
    pub(crate) zero_count: u64,
    /// Bucket ranges as sent (no zero trimmed).
    pub(crate) positive: Buckets,
    pub(crate) negative: Buckets,
    pub(crate) flags: u32,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) zero_threshold: f64,
}

impl DecodedPoint {
    /// The distribution the point describes, checked by
    /// [`Distribution::from_parts`]; a point with no sum is refused as a
    /// sum of NaN.
    pub(crate) fn to_distribution(&self) -> Result<Distribution, DistributionError> {
        let side = |b: &Buckets| DistributionBuckets::new(b.offset, b.counts.clone());
        Distribution::from_parts(DistributionParts {
            scale: self.scale,
            zero_count: self.zero_count,
            positive: side(&self.positive)?,
            negative: side(&self.negative)?,
            count: self.count,
            sum: self.sum.unwrap_or(f64::NAN),
            min: self.min,
            max: self.max,
        })
    }
}

/// Decodes an `ExportMetricsServiceRequest` (the inverse of
/// [`encode_request`], for any sender's request): unknown fields, groups
/// and metrics of other data types are skipped; truncated or malformed
/// input, a known field of the wrong wire type and a string that is not
/// UTF-8 are refused with the place and the reason. A field sent twice is
/// read as protobuf merges it: the last scalar wins, repeated fields and
/// embedded messages accumulate.
pub(crate) fn decode_request(body: &[u8]) -> Result<DecodedRequest, RequestDecodeError> {
    let mut request = DecodedRequest::default();
    let mut reader = WireReader::new(body);
    while let Some(field) = reader.next_field()? {
        if field.number == 1 {
            let resource_metrics = decode_resource_metrics(field, &mut request.skipped_metrics)?;
            request.resource_metrics.push(resource_metrics);
        }
    }
    Ok(request)
}

fn decode_resource_metrics(
    field: WireField<'_>,
    skipped: &mut usize,
) -> Result<DecodedResourceMetrics, DecodeError> {
    let mut out = DecodedResourceMetrics::default();
    let mut reader = field.message()?;
    while let Some(field) = reader.next_field()? {
        match field.number {
            // Resource resource = 1: attributes = 1.
            1 => {
                let mut resource = field.message()?;
                while let Some(field) = resource.next_field()? {
                    if field.number == 1 {
                        decode_key_value(field, &mut out.resource)?;
                    }
                }
            }
            2 => {
                let scope_metrics = decode_scope_metrics(field, skipped)?;
                out.scope_metrics.push(scope_metrics);
            }
            _ => {}
        }
    }
    Ok(out)
}

fn decode_scope_metrics(
    field: WireField<'_>,
    skipped: &mut usize,
) -> Result<DecodedScopeMetrics, DecodeError> {
    let mut out = DecodedScopeMetrics::default();
    let mut reader = field.message()?;
    while let Some(field) = reader.next_field()? {
        match field.number {
            // InstrumentationScope scope = 1: name = 1, version = 2.
            1 => {
                let mut scope = field.message()?;
                while let Some(field) = scope.next_field()? {
                    match field.number {
                        1 => field.string()?.clone_into(&mut out.scope_name),
                        2 => field.string()?.clone_into(&mut out.scope_version),
                        _ => {}
                    }
                }
            }
            2 => match decode_metric(field)? {
                Some(metric) => out.metrics.push(metric),
                None => *skipped += 1,
            },
            _ => {}
        }
    }
    Ok(out)
}

/// A `Metric`, or `None` when its data is not an exponential histogram.
fn decode_metric(field: WireField<'_>) -> Result<Option<DecodedMetric>, DecodeError> {
    let mut out = DecodedMetric::default();
    // The `data` oneof: the last member sent is the one it holds.
    let mut exponential = false;
    let mut reader = field.message()?;
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => field.string()?.clone_into(&mut out.name),
            2 => field.string()?.clone_into(&mut out.description),
            3 => field.string()?.clone_into(&mut out.unit),
            // gauge, sum, histogram, summary
            5 | 7 | 9 | 11 => {
                field.bytes()?;
                exponential = false;
                out.points.clear();
                out.aggregation_temporality = 0;
            }
            // ExponentialHistogram exponential_histogram = 10, merged
            // into the one before it.
            10 => {
                exponential = true;
                let mut histogram = field.message()?;
                while let Some(field) = histogram.next_field()? {
                    match field.number {
                        1 => out.points.push(decode_point(field)?),
                        2 => out.aggregation_temporality = field.varint()? as i32,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(exponential.then_some(out))
}

fn decode_point(field: WireField<'_>) -> Result<DecodedPoint, DecodeError> {
    let mut out = DecodedPoint::default();
    let mut reader = field.message()?;
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => decode_key_value(field, &mut out.attributes)?,
            2 => out.start_time_unix_nano = field.fixed64()?,
            3 => out.time_unix_nano = field.fixed64()?,
            4 => out.count = field.fixed64()?,
            5 => out.sum = Some(field.double()?),
            6 => out.scale = field.sint32()?,
            7 => out.zero_count = field.fixed64()?,
            8 => decode_buckets(field, &mut out.positive)?,
            9 => decode_buckets(field, &mut out.negative)?,
            10 => out.flags = field.varint()? as u32,
            12 => out.min = Some(field.double()?),
            13 => out.max = Some(field.double()?),
            14 => out.zero_threshold = field.double()?,
            _ => {}
        }
    }
    Ok(out)
}

/// A `Buckets` message, merged into `into`: the last offset wins and the
/// counts accumulate, packed or not.
fn decode_buckets(field: WireField<'_>, into: &mut Buckets) -> Result<(), DecodeError> {
    let mut reader = field.message()?;
    while let Some(field) = reader.next_field()? {
        match (field.number, field.value) {
            (1, _) => into.offset = field.sint32()?,
            (2, WireValue::Varint(count)) => into.counts.push(count),
            (2, WireValue::Bytes(packed)) => {
                let mut varints = WireReader::nested(packed, field.value_offset);
                while varints.pos < packed.len() {
                    into.counts.push(varints.read_varint()?);
                }
            }
            (2, _) => return Err(field.wrong_type()),
            _ => {}
        }
    }
    Ok(())
}

/// A `KeyValue`, inserted into `into` when its value is a string, bool,
/// int or double.
fn decode_key_value(field: WireField<'_>, into: &mut Attributes) -> Result<(), DecodeError> {
    let mut key = "";
    let mut value = None;
    let mut reader = field.message()?;
    while let Some(field) = reader.next_field()? {
        match field.number {
            1 => key = field.string()?,
            // AnyValue value = 2: a oneof, merged (the last member wins).
            2 => {
                let mut any = field.message()?;
                while let Some(field) = any.next_field()? {
                    match field.number {
                        1 => value = Some(Value::from(field.string()?)),
                        2 => value = Some(Value::Bool(field.varint()? != 0)),
                        3 => value = Some(Value::Int(field.varint()? as i64)),
                        4 => value = Some(Value::Float(field.double()?)),
                        // array_value, kvlist_value, bytes_value: kept
                        // out.
                        5..=7 => {
                            field.bytes()?;
                            value = None;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(value) = value {
        into.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
