//! The encoding workloads (10,000 items of each kind) and their floors: the
//! same JSON from plain `#[derive(Serialize)]` structs built beforehand, then
//! gzip at the same level as the measured path (the kind's: 2 for events,
//! logs and spans, 6 for metrics) with flate2, in memory.

use std::io::Write;
use std::time::Duration;

use newrelic_telemetry::client::{Events, Kind, Logs, Metrics, Spans};
use newrelic_telemetry::{
    Common, Event, EventBatch, Log, LogBatch, Metric, MetricBatch, Span, SpanBatch,
};
use serde::Serialize;

use super::attrs;

/// Items per payload.
pub const ITEMS: usize = 10_000;

/// One kind of item: how to fill its batch with `ITEMS` items, how to flush it,
/// and the equivalent floor payload.
pub trait Case: Send + Sync + 'static {
    type K: Kind;
    const NAME: &'static str;
    /// Records `ITEMS` items (not timed).
    fn fill(&self) -> impl Future<Output = ()> + Send;
    /// Takes them out (timed, part of the measured path).
    fn flush(&self) -> impl Future<Output = (Vec<<Self::K as Kind>::Item>, Common)> + Send;
    /// The floor's JSON for the same items, from derive-built structs made
    /// before timing starts.
    fn floor(items: &[<Self::K as Kind>::Item], common: &Common) -> FloorPayload;
}

/// A pre-built payload: serializes to the same JSON as the measured path.
pub enum FloorPayload {
    Metrics(Vec<Block<FloorMetric>>),
    Events(Vec<FloorEvent>),
    Logs(Vec<Block<FloorLog>>),
    Spans(Vec<Block<FloorSpan>>),
}

impl FloorPayload {
    pub fn json(&self) -> Vec<u8> {
        match self {
            FloorPayload::Metrics(p) => serde_json::to_vec(p),
            FloorPayload::Events(p) => serde_json::to_vec(p),
            FloorPayload::Logs(p) => serde_json::to_vec(p),
            FloorPayload::Spans(p) => serde_json::to_vec(p),
        }
        .unwrap()
    }

    /// The gzip level the crate compresses this kind at.
    pub fn level(&self) -> u32 {
        match self {
            FloorPayload::Metrics(_) => Metrics::GZIP_LEVEL,
            FloorPayload::Events(_) => Events::GZIP_LEVEL,
            FloorPayload::Logs(_) => Logs::GZIP_LEVEL,
            FloorPayload::Spans(_) => Spans::GZIP_LEVEL,
        }
    }

    /// The floor: JSON, then gzip in memory at the kind's level.
    pub fn encode(&self) -> Vec<u8> {
        let json = self.json();
        gzip(&json, self.level())
    }
}

pub fn gzip(json: &[u8], level: u32) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 8 + 64),
        flate2::Compression::new(level),
    );
    gz.write_all(json).unwrap();
    gz.finish().unwrap()
}

pub fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).unwrap();
    out
}

#[derive(Serialize)]
pub struct Block<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    common: Option<FloorCommon>,
    #[serde(rename = "metrics", skip_serializing_if = "Option::is_none")]
    metrics: Option<Vec<T>>,
    #[serde(rename = "logs", skip_serializing_if = "Option::is_none")]
    logs: Option<Vec<T>>,
    #[serde(rename = "spans", skip_serializing_if = "Option::is_none")]
    spans: Option<Vec<T>>,
}

#[derive(Serialize)]
pub struct FloorCommon {
    timestamp: u64,
    #[serde(rename = "interval.ms")]
    interval_ms: u64,
}

#[derive(Serialize)]
pub struct FloorAttrs {
    env: String,
    host: String,
    region: String,
}

#[derive(Serialize)]
pub struct FloorMetric {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    value: f64,
    attributes: FloorAttrs,
}

fn text(v: Option<&newrelic_telemetry::Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// 100 names x 100 hosts = 10,000 count series.
pub struct MetricCase {
    pub batch: std::sync::Arc<MetricBatch>,
    pub workload: super::Workload,
}

impl Default for MetricCase {
    fn default() -> Self {
        MetricCase {
            batch: std::sync::Arc::new(MetricBatch::builder().max_series(1_000_000).build()),
            workload: super::Workload::new(100, ITEMS / 100),
        }
    }
}

impl Case for MetricCase {
    type K = Metrics;
    const NAME: &'static str = "metrics";

    async fn fill(&self) {
        for i in 0..ITEMS {
            let (name, host) = self.workload.series(i);
            self.batch.record_count(name, i as f64, attrs(host)).await;
        }
    }

    async fn flush(&self) -> (Vec<Metric>, Common) {
        self.batch.flush().await
    }

    fn floor(items: &[Metric], common: &Common) -> FloorPayload {
        let metrics = items
            .iter()
            .map(|m| {
                let Metric::Count(c) = m else { unreachable!() };
                FloorMetric {
                    name: m.name().to_owned(),
                    kind: "count",
                    value: c.value(),
                    attributes: FloorAttrs {
                        env: text(m.attributes().get("env")),
                        host: text(m.attributes().get("host")),
                        region: text(m.attributes().get("region")),
                    },
                }
            })
            .collect();
        FloorPayload::Metrics(vec![Block {
            common: Some(FloorCommon {
                timestamp: common.timestamp_ms().unwrap(),
                interval_ms: common.interval_ms().unwrap(),
            }),
            metrics: Some(metrics),
            logs: None,
            spans: None,
        }])
    }
}

#[derive(Serialize)]
pub struct FloorEvent {
    #[serde(rename = "eventType")]
    event_type: String,
    timestamp: u64,
    #[serde(rename = "duration.ms")]
    duration_ms: f64,
    env: String,
    host: String,
    region: String,
    status: i64,
}

pub struct EventCase {
    pub batch: EventBatch,
    pub hosts: Vec<String>,
}

impl Default for EventCase {
    fn default() -> Self {
        EventCase {
            batch: EventBatch::builder().capacity(4 * ITEMS).build(),
            hosts: (0..100).map(|j| format!("host-{j}")).collect(),
        }
    }
}

impl Case for EventCase {
    type K = Events;
    const NAME: &'static str = "events";

    async fn fill(&self) {
        for i in 0..ITEMS {
            let event = Event::new("BenchRequest")
                .with_attribute("host", self.hosts[i % 100].as_str())
                .with_attribute("env", "prod")
                .with_attribute("region", "us-east-1")
                .with_attribute("duration.ms", 0.5 + (i % 1000) as f64)
                .with_attribute("status", 200);
            self.batch.record(event).await;
        }
    }

    async fn flush(&self) -> (Vec<Event>, Common) {
        self.batch.flush().await
    }

    fn floor(items: &[Event], _common: &Common) -> FloorPayload {
        FloorPayload::Events(
            items
                .iter()
                .map(|e| {
                    let a = e.attributes();
                    let newrelic_telemetry::Value::Float(duration_ms) =
                        a.get("duration.ms").unwrap().clone()
                    else {
                        unreachable!()
                    };
                    FloorEvent {
                        event_type: e.event_type().to_owned(),
                        timestamp: e.timestamp_ms(),
                        duration_ms,
                        env: text(a.get("env")),
                        host: text(a.get("host")),
                        region: text(a.get("region")),
                        status: 200,
                    }
                })
                .collect(),
        )
    }
}

#[derive(Serialize)]
pub struct FloorLogAttrs {
    host: String,
    level: String,
    #[serde(rename = "service.name")]
    service_name: String,
}

#[derive(Serialize)]
pub struct FloorLog {
    timestamp: u64,
    message: String,
    attributes: FloorLogAttrs,
}

pub struct LogCase {
    pub batch: LogBatch,
    pub hosts: Vec<String>,
}

impl Default for LogCase {
    fn default() -> Self {
        LogCase {
            batch: LogBatch::builder().capacity(4 * ITEMS).build(),
            hosts: (0..100).map(|j| format!("host-{j}")).collect(),
        }
    }
}

impl Case for LogCase {
    type K = Logs;
    const NAME: &'static str = "logs";

    async fn fill(&self) {
        for i in 0..ITEMS {
            let log = Log::new(format!(
                "GET /checkout/{i} completed with 200 in {} ms",
                i % 97
            ))
            .with_level("INFO")
            .with_attribute("host", self.hosts[i % 100].as_str())
            .with_attribute("service.name", "checkout");
            self.batch.record(log).await;
        }
    }

    async fn flush(&self) -> (Vec<Log>, Common) {
        self.batch.flush().await
    }

    fn floor(items: &[Log], _common: &Common) -> FloorPayload {
        let logs = items
            .iter()
            .map(|l| {
                let a = l.attributes();
                FloorLog {
                    timestamp: l.timestamp_ms(),
                    message: l.message().to_owned(),
                    attributes: FloorLogAttrs {
                        host: text(a.get("host")),
                        level: text(a.get("level")),
                        service_name: text(a.get("service.name")),
                    },
                }
            })
            .collect();
        FloorPayload::Logs(vec![Block {
            common: None,
            metrics: None,
            logs: Some(logs),
            spans: None,
        }])
    }
}

#[derive(Serialize)]
pub struct FloorSpanAttrs {
    name: String,
    #[serde(rename = "duration.ms")]
    duration_ms: f64,
    #[serde(rename = "service.name")]
    service_name: String,
    host: String,
    #[serde(rename = "http.status_code")]
    status: i64,
}

#[derive(Serialize)]
pub struct FloorSpan {
    id: String,
    #[serde(rename = "trace.id")]
    trace_id: String,
    timestamp: u64,
    attributes: FloorSpanAttrs,
}

pub struct SpanCase {
    pub batch: SpanBatch,
    pub hosts: Vec<String>,
}

impl Default for SpanCase {
    fn default() -> Self {
        SpanCase {
            batch: SpanBatch::builder().capacity(4 * ITEMS).build(),
            hosts: (0..100).map(|j| format!("host-{j}")).collect(),
        }
    }
}

impl Case for SpanCase {
    type K = Spans;
    const NAME: &'static str = "spans";

    async fn fill(&self) {
        for i in 0..ITEMS {
            let span = Span::new("GET /checkout")
                .with_service_name("checkout")
                .with_duration(Duration::from_micros(250 + (i as u64 % 5000)))
                .with_attribute("host", self.hosts[i % 100].as_str())
                .with_attribute("http.status_code", 200);
            self.batch.record(span).await;
        }
    }

    async fn flush(&self) -> (Vec<Span>, Common) {
        self.batch.flush().await
    }

    fn floor(items: &[Span], _common: &Common) -> FloorPayload {
        let spans = items
            .iter()
            .map(|s| FloorSpan {
                id: s.id().to_owned(),
                trace_id: s.trace_id().to_owned(),
                timestamp: s.timestamp_ms(),
                attributes: FloorSpanAttrs {
                    name: s.name().to_owned(),
                    duration_ms: s.duration().unwrap().as_secs_f64() * 1000.0,
                    service_name: s.service_name().unwrap().to_owned(),
                    host: text(s.attributes().get("host")),
                    status: 200,
                },
            })
            .collect();
        FloorPayload::Spans(vec![Block {
            common: None,
            metrics: None,
            logs: None,
            spans: Some(spans),
        }])
    }
}
