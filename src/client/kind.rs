//! The ingest APIs as types (the four JSON APIs, and OTLP for
//! distributions): what each one carries and how its payload
//! looks on the wire.

use super::otlp;
use crate::api::Api;
use crate::common::{Common, WireCommon};
use crate::distribution::DistributionPoint;
use crate::error::RecordError;
use crate::event::{Event, EventWithCommon};
use crate::log::Log;
use crate::metric::Metric;
use crate::span::Span;
use crate::validate::{
    EVENT_LIMITS, LOG_LIMITS, METRIC_LIMITS, SPAN_LIMITS, Validate, check_timestamp,
};

/// The Metric API (`metrics` blocks).
///
/// ```
/// use newrelic_telemetry::client::{Client, Metrics};
///
/// let client = Client::<Metrics>::builder("key").build().unwrap();
/// assert_eq!(client.endpoint(), "https://metric-api.newrelic.com/metric/v1");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics;
/// The Event API (a flat array of events).
///
/// ```
/// use newrelic_telemetry::client::{Client, Events};
///
/// let client = Client::<Events>::builder("key").build().unwrap();
/// assert_eq!(client.endpoint(), "https://insights-collector.newrelic.com/v1/accounts/events");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Events;
/// The Log API (`logs` blocks).
///
/// ```
/// use newrelic_telemetry::client::{Client, Logs};
///
/// let client = Client::<Logs>::builder("key").build().unwrap();
/// assert_eq!(client.endpoint(), "https://log-api.newrelic.com/log/v1");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Logs;
/// The Trace API (`spans` blocks).
///
/// ```
/// use newrelic_telemetry::client::{Client, Spans};
///
/// let client = Client::<Spans>::builder("key").build().unwrap();
/// assert_eq!(client.endpoint(), "https://trace-api.newrelic.com/trace/v1");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Spans;

/// New Relic's OTLP endpoint, for distributions: each
/// [`DistributionPoint`] goes as an OTLP exponential histogram point (delta
/// temporality) in binary protobuf, gzipped, with the key in `api-key`
/// (whatever [`KeyHeader`](super::KeyHeader) is set: the endpoint reads no
/// other). The batch's common attributes are the points' resource
/// attributes. An answer whose `partial_success` rejects points counts
/// them as dropped ([`DropReason::PartiallyRejected`](super::DropReason::PartiallyRejected)).
///
/// ```
/// use newrelic_telemetry::client::{Client, Otlp};
/// use newrelic_telemetry::Region;
///
/// let client = Client::<Otlp>::builder("key").build().unwrap();
/// assert_eq!(client.endpoint(), "https://otlp.nr-data.net/v1/metrics");
/// let eu = Client::<Otlp>::builder("key").region(Region::Eu).build().unwrap();
/// assert_eq!(eu.endpoint(), "https://otlp.eu01.nr-data.net/v1/metrics");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Otlp;

/// The kind of [`ClientSettings`](super::ClientSettings): no API of its own,
/// the settings shared by the five clients a
/// [`Telemetry`](crate::Telemetry) builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllApis {}

/// The gzip level of events, logs and spans, which grow with a service's
/// traffic: the level that costs least CPU for its size. On this crate's
/// payloads (`benches/encode.rs`) level 2 compresses about 1.6 times as
/// fast as the usual level 6 for a fifth more bytes (level 1 is no faster,
/// for half as many bytes more again).
pub(crate) const GZIP_LEVEL_PER_REQUEST: u32 = 2;

/// The gzip level of metrics and distributions, which grow with the series
/// a service keeps, not with its traffic: the usual level, smaller
/// payloads for CPU that does not grow with requests.
pub(crate) const GZIP_LEVEL_PER_SERIES: u32 = 6;

/// One of the ingest APIs: [`Metrics`], [`Events`], [`Logs`], [`Spans`]
/// or [`Otlp`]. Sealed; it ties a client to the items of its API.
///
/// ```
/// use newrelic_telemetry::client::{Client, Kind, Logs, Spans};
///
/// fn describe<K: Kind>(client: &Client<K>) -> String {
///     format!("posting to {}", client.endpoint())
/// }
/// let logs = Client::<Logs>::builder("key").build().unwrap();
/// let spans = Client::<Spans>::builder("key").build().unwrap();
/// assert_eq!(describe(&logs), "posting to https://log-api.newrelic.com/log/v1");
/// assert!(describe(&spans).ends_with("/trace/v1"));
/// ```
pub trait Kind: private::Sealed + Send + Sync + 'static {
    /// The items this API takes.
    type Item: Validate + Send + Sync + 'static;

    /// The API this kind posts to.
    const API: Api;
    #[doc(hidden)]
    const DATA_FORMAT_HEADERS: bool = false;
    /// The payload's `Content-Type`.
    #[doc(hidden)]
    const CONTENT_TYPE: &'static str = "application/json";
    /// The header the key must travel in, whatever the client's
    /// `KeyHeader`; `None`: the one it names.
    #[doc(hidden)]
    const KEY_HEADER: Option<&'static str> = None;
    /// What goes between two items.
    #[doc(hidden)]
    const SEPARATOR: &'static [u8] = b",";
    /// The gzip level of its payloads: [`GZIP_LEVEL_PER_REQUEST`] for the
    /// items a service makes with every request, [`GZIP_LEVEL_PER_SERIES`]
    /// for those a harvest makes once per series.
    #[doc(hidden)]
    const GZIP_LEVEL: u32 = GZIP_LEVEL_PER_REQUEST;
    /// Writes what comes before the first item: `[{"common":...,"<key>":[`,
    /// or `[` for the Event API.
    #[doc(hidden)]
    fn write_open(common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()>;
    /// Writes one item (for events, merged with the common attributes).
    #[doc(hidden)]
    fn write_item(item: &Self::Item, common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()>;
    /// What comes after the last item.
    #[doc(hidden)]
    const CLOSE: &'static [u8] = b"]}]";
    /// The fast path of [`Client::send_batch`](super::Client::send_batch):
    /// an item a batch validated when it was recorded (and that nothing
    /// changed since) needs only its timestamp checked again, since time has
    /// passed. `None`: validate it in full.
    #[doc(hidden)]
    fn prevalidated(_item: &Self::Item) -> Option<Result<u64, RecordError>> {
        None
    }
    /// Of an accepted payload of `items`, how many the answer's body says
    /// were refused, and why (OTLP's partial success); `None`: all taken.
    #[doc(hidden)]
    fn refused_in_answer(_body: &[u8], _items: usize) -> Option<(usize, String)> {
        None
    }
}

pub(crate) mod private {
    pub trait Sealed {}
}

/// Opens `[{"common": {...}, "<key>": [` (the common block only if it has
/// anything to say). The common block carries the client's identity
/// attributes under the user's, within the API's attribute limit
/// `max_attributes`: every item of the payload carries them, written once.
fn write_block_open(
    key: &str,
    common: &Common,
    max_attributes: usize,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    out.extend_from_slice(b"[{");
    if !common.is_empty() {
        out.extend_from_slice(b"\"common\":");
        let wire = WireCommon {
            common,
            max_attributes,
        };
        serde_json::to_writer(&mut *out, &wire)?;
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, key)?;
    out.extend_from_slice(b":[");
    Ok(())
}

impl private::Sealed for Metrics {}

impl Kind for Metrics {
    type Item = Metric;
    const API: Api = Api::Metric;
    const GZIP_LEVEL: u32 = GZIP_LEVEL_PER_SERIES;
    fn write_open(common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        write_block_open("metrics", common, METRIC_LIMITS.max_attributes, out)
    }
    fn write_item(item: &Metric, _common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, item)
    }
    fn prevalidated(metric: &Metric) -> Option<Result<u64, RecordError>> {
        metric
            .checked_by_batch()
            .then(|| match metric.timestamp_ms() {
                Some(timestamp_ms) => check_timestamp(timestamp_ms, &METRIC_LIMITS).map(|()| 0),
                None => Ok(0),
            })
    }
}

impl private::Sealed for Events {}

impl Kind for Events {
    type Item = Event;
    const API: Api = Api::Event;
    const CLOSE: &'static [u8] = b"]";
    fn write_open(_common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.push(b'[');
        Ok(())
    }
    fn write_item(event: &Event, common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        // No common block: each event carries the common attributes and the
        // identity attributes itself.
        let merged = EventWithCommon {
            event,
            common: common.attributes(),
            identity: common.identity(),
            max_attributes: EVENT_LIMITS.max_attributes,
        };
        serde_json::to_writer(out, &merged)
    }
}

impl private::Sealed for Logs {}

impl Kind for Logs {
    type Item = Log;
    const API: Api = Api::Log;
    fn write_open(common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        write_block_open("logs", common, LOG_LIMITS.max_attributes, out)
    }
    fn write_item(item: &Log, _common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, item)
    }
}

impl private::Sealed for Otlp {}

impl Kind for Otlp {
    type Item = DistributionPoint;
    const API: Api = Api::Otlp;
    const GZIP_LEVEL: u32 = GZIP_LEVEL_PER_SERIES;
    const CONTENT_TYPE: &'static str = otlp::CONTENT_TYPE;
    const KEY_HEADER: Option<&'static str> = Some(otlp::API_KEY_HEADER);
    // Concatenated `resource_metrics` entries make one request.
    const SEPARATOR: &'static [u8] = b"";
    const CLOSE: &'static [u8] = b"";
    fn write_open(_common: &Common, _out: &mut Vec<u8>) -> serde_json::Result<()> {
        Ok(())
    }
    fn write_item(
        point: &DistributionPoint,
        common: &Common,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        let resource = otlp::OtlpResource {
            attributes: common.attributes(),
            service_name: None,
        };
        otlp::write_point_entry(out, &resource, point);
        Ok(())
    }
    fn refused_in_answer(body: &[u8], items: usize) -> Option<(usize, String)> {
        match otlp::decode_response(body) {
            Ok(Some(partial)) if partial.has_rejections() => Some((
                usize::try_from(partial.rejected_data_points)
                    .unwrap_or(usize::MAX)
                    .min(items),
                partial.error_message,
            )),
            Ok(Some(partial)) if !partial.error_message.is_empty() => {
                tracing::warn!(api = Api::Otlp.name(), message = %partial.error_message, "the OTLP endpoint accepted every point, with a warning");
                None
            }
            Ok(_) => None,
            // Cut short (a long message): the count comes first.
            Err(e) => match otlp::rejected_in_prefix(body).filter(|&n| n > 0) {
                Some(rejected) => Some((
                    usize::try_from(rejected).unwrap_or(usize::MAX).min(items),
                    format!("(the answer's message was cut short: {e})"),
                )),
                None => {
                    // A 2xx is final: the points were taken.
                    tracing::debug!(api = Api::Otlp.name(), error = %e, "could not read the OTLP answer's body");
                    None
                }
            },
        }
    }
}

impl private::Sealed for Spans {}

impl Kind for Spans {
    type Item = Span;
    const API: Api = Api::Span;
    const DATA_FORMAT_HEADERS: bool = true;
    fn write_open(common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        write_block_open("spans", common, SPAN_LIMITS.max_attributes, out)
    }
    fn write_item(item: &Span, _common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, item)
    }
}
