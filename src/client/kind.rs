//! The four ingest APIs as types: what each one carries and how its payload
//! looks on the wire.

use crate::api::Api;
use crate::common::Common;
use crate::event::{Event, EventWithCommon};
use crate::log::Log;
use crate::metric::Metric;
use crate::span::Span;
use crate::validate::Validate;

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
}

pub(crate) mod private {
    pub trait Sealed {}
}

/// Opens `[{"common": {...}, "<key>": [` (the common block only if it has
/// anything to say).
fn write_block_open(key: &str, common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
    out.extend_from_slice(b"[{");
    if !common.is_empty() {
        out.extend_from_slice(b"\"common\":");
        serde_json::to_writer(&mut *out, common)?;
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
        write_block_open("metrics", common, out)
    }
    fn write_item(item: &Metric, _common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, item)
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
        let common = common.attributes();
        serde_json::to_writer(out, &EventWithCommon { event, common })
    }
}

impl private::Sealed for Logs {}

impl Kind for Logs {
    type Item = Log;
    const API: Api = Api::Log;
    fn write_open(common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        write_block_open("logs", common, out)
    }
    fn write_item(item: &Log, _common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, item)
    }
}

impl private::Sealed for Spans {}

impl Kind for Spans {
    type Item = Span;
    const API: Api = Api::Trace;
    const DATA_FORMAT_HEADERS: bool = true;
    fn write_open(common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        write_block_open("spans", common, out)
    }
    fn write_item(item: &Span, _common: &Common, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, item)
    }
}
