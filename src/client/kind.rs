//! The four ingest APIs as types: what each one carries and how its payload
//! looks on the wire.

use crate::api::Api;
use crate::common::{Common, WireCommon};
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

/// The kind of [`ClientSettings`](super::ClientSettings): no API of its own,
/// the settings shared by the four clients a
/// [`Telemetry`](crate::Telemetry) builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllApis {}

/// One of the four ingest APIs: [`Metrics`], [`Events`], [`Logs`] or
/// [`Spans`]. Sealed; it ties a client to the items of its API.
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
