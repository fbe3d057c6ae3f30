//! The running pipelines: [`Telemetry`], the handle to the four batches (and
//! the metric batch's distributions) and
//! their harvesters, where they send ([`Endpoints`]) and how they ended
//! ([`TelemetryReport`]).

use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::distributions::DistributionPipeline;
use super::lifecycle::Lifecycle;
use super::per_api::PerApi;
use crate::api::Api;
use crate::batch::{EventBatch, LogBatch, MetricBatch, RecordStats, SpanBatch};
use crate::client::DeliveryStats;
use crate::harvester::{HarvestReport, Harvester, PipelineStats};
#[cfg(feature = "metrics")]
use crate::metrics_recorder::{InstallError, NewRelicRecorder};
#[cfg(feature = "tracing-layer")]
use crate::tracing_layer::{LayerStats, NewRelicLayer, NewRelicLayerBuilder};

/// The four pipelines of a service, set up and shut down together.
///
/// A cheap handle: clones share the same pipelines (hand one to each request
/// handler or task; no `Arc` needed). The pipelines stop when
/// [`shutdown`](Self::shutdown) is called on any clone, when the token given
/// to the builder is cancelled, or, without anyone waiting for the last
/// send, when the last clone is dropped.
///
/// ```no_run
/// use newrelic_telemetry::{Event, Telemetry, attrs};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Key, region, endpoints and harvest interval from NEW_RELIC_* variables.
/// let telemetry = Telemetry::builder().service_name("checkout").build()?;
///
/// let handler = telemetry.clone(); // for a request handler
/// tokio::spawn(async move {
///     let status: u16 = 200;
///     handler.metrics().record_count("orders", 1, attrs!["plan" => "pro", "status" => status]).await;
/// });
/// telemetry.events().record(Event::new("Order").with_attribute("total", 42.0)).await;
///
/// // On SIGTERM: drain the tracing layer, stop the four harvesters, send
/// // what is buffered, report.
/// newrelic_telemetry::shutdown_signal().await;
/// let report = telemetry.shutdown().await;
/// println!("sent {} items, dropped {}", report.items_sent(), report.items_dropped());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

/// What `pipelines::start` assembles.
pub(super) struct Parts {
    pub(super) enabled: bool,
    pub(super) endpoints: Endpoints,
    pub(super) metrics: Arc<MetricBatch>,
    pub(super) events: Arc<EventBatch>,
    pub(super) logs: Arc<LogBatch>,
    pub(super) spans: Arc<SpanBatch>,
    pub(super) harvesters: PerApi<Harvester>,
    /// The fifth pipeline, of the metric batch's distributions.
    pub(super) distributions: Arc<DistributionPipeline>,
    /// The public stop token (a child of the builder's): cancelling it runs
    /// the ordered stop, through the watcher task.
    pub(super) stop: CancellationToken,
    pub(super) lifecycle: Arc<Lifecycle>,
    /// Where the tracing layers' workers run (the runtime `build()` ran on),
    /// and the `metrics` recorder binds a series whose shard was busy.
    #[cfg_attr(
        not(any(feature = "tracing-layer", feature = "metrics")),
        allow(dead_code)
    )]
    pub(super) runtime: tokio::runtime::Handle,
    /// The `metrics` recorder, made on first use.
    #[cfg(feature = "metrics")]
    pub(super) recorder: std::sync::OnceLock<NewRelicRecorder>,
    /// The layers' sample ratio, unless a layer's own settings change it.
    #[cfg_attr(not(feature = "tracing-layer"), allow(dead_code))]
    pub(super) trace_sample_ratio: f64,
}

/// Shared by the clones of a `Telemetry`.
struct Inner(Parts);

impl Drop for Inner {
    fn drop(&mut self) {
        // Never block here: the harvesters flush in the background.
        self.0.lifecycle.abandon();
    }
}

impl Telemetry {
    pub(super) fn from_parts(parts: Parts) -> Telemetry {
        Telemetry {
            inner: Arc::new(Inner(parts)),
        }
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.inner.0;
        f.debug_struct("Telemetry")
            .field("enabled", &p.enabled)
            .field("endpoints", &p.endpoints)
            .field("stopped", &p.lifecycle.harvesters.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Where a [`Telemetry`] sends each kind of data.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().build()?;
/// let endpoints = telemetry.endpoints();
/// assert_eq!(endpoints.metrics, server.metric_url());
/// assert_eq!(endpoints.spans, server.span_url());
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoints {
    /// The Metric API's URL.
    pub metrics: String,
    /// The Event API's URL.
    pub events: String,
    /// The Log API's URL.
    pub logs: String,
    /// The Trace API's URL.
    pub spans: String,
    /// The OTLP endpoint's URL, where distributions go.
    pub otlp: String,
}

/// How the harvesters of a [`Telemetry`] ended: the four, and the
/// distributions' if it ran.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().build()?;
/// telemetry.metrics().record_count("signups", 1.0, ()).await;
/// telemetry.metrics().record_gauge("queue.depth", 3.0, ()).await;
///
/// let report = telemetry.shutdown().await;
/// assert_eq!(report.metrics.delivery.items_sent, 2);
/// assert_eq!((report.items_sent(), report.items_dropped()), (2, 0));
/// assert!(!report.deadline_exceeded());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TelemetryReport {
    /// The metric harvester's report.
    pub metrics: HarvestReport,
    /// The event harvester's report.
    pub events: HarvestReport,
    /// The log harvester's report.
    pub logs: HarvestReport,
    /// The span harvester's report.
    pub spans: HarvestReport,
    /// The distributions' harvester's report (OTLP); `None` if nothing
    /// recorded a distribution, so that the pipeline never started.
    pub distributions: Option<HarvestReport>,
    /// What the tracing layers made by
    /// [`Telemetry::tracing_layer`] counted (all zeros without one): spans
    /// and logs dropped before they reached a batch are in
    /// [`items_refused`](Self::items_refused).
    #[cfg(feature = "tracing-layer")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing-layer")))]
    pub layer: LayerStats,
}

/// A live snapshot of the pipelines of a [`Telemetry`]: the four, and the
/// distributions' once it started.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Event, Log};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().build()?;
/// telemetry.events().record(Event::new("Order")).await;
/// telemetry.logs().record(Log::new("placed")).await;
///
/// let stats = telemetry.stats();
/// assert_eq!(stats.held_items(), 2); // waiting for the next harvest
/// assert!(stats.held_bytes() > 0);
/// telemetry.shutdown().await;
/// let stats = telemetry.stats();
/// assert_eq!((stats.held_items(), stats.items_sent()), (0, 2));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TelemetryStats {
    /// The metric pipeline.
    pub metrics: PipelineStats,
    /// The event pipeline.
    pub events: PipelineStats,
    /// The log pipeline.
    pub logs: PipelineStats,
    /// The span pipeline.
    pub spans: PipelineStats,
    /// The distributions' pipeline (OTLP); `None` until something records
    /// a distribution.
    pub distributions: Option<PipelineStats>,
    /// What the tracing layers made by [`Telemetry::tracing_layer`] counted.
    #[cfg(feature = "tracing-layer")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing-layer")))]
    pub layer: LayerStats,
}

/// The sums a live snapshot and a final report both give, from the four
/// pipelines' counters and the tracing layers'.
struct Totals {
    sent: u64,
    dropped: u64,
    discarded: u64,
    refused: u64,
}

impl Totals {
    fn of<'a>(
        pipelines: impl IntoIterator<Item = (&'a DeliveryStats, &'a RecordStats)>,
        #[cfg(feature = "tracing-layer")] layer: &LayerStats,
    ) -> Totals {
        let mut totals = Totals {
            sent: 0,
            dropped: 0,
            discarded: 0,
            refused: 0,
        };
        for (delivery, record) in pipelines {
            totals.sent += delivery.items_sent;
            totals.dropped += delivery.items_dropped();
            totals.discarded += delivery.items_discarded;
            totals.refused += record.items_dropped();
        }
        // Spans and logs the layers dropped before they reached a batch (a
        // batch's refusals are counted by the batch).
        #[cfg(feature = "tracing-layer")]
        {
            totals.refused += layer.items_dropped_channel_full + layer.items_dropped_worker_gone;
        }
        totals
    }
}

impl TelemetryStats {
    fn all(&self) -> impl Iterator<Item = &PipelineStats> {
        [&self.metrics, &self.events, &self.logs, &self.spans]
            .into_iter()
            .chain(&self.distributions)
    }

    fn totals(&self) -> Totals {
        Totals::of(
            self.all().map(|p| (&p.delivery, &p.record)),
            #[cfg(feature = "tracing-layer")]
            &self.layer,
        )
    }

    /// Bytes the pipelines hold in memory now.
    pub fn held_bytes(&self) -> usize {
        self.all().map(|p| p.memory.held_bytes).sum()
    }

    /// Items the pipelines hold now (recorded, not yet sent or dropped).
    pub fn held_items(&self) -> usize {
        self.all().map(|p| p.memory.held_items).sum()
    }

    /// Items sent so far by the pipelines.
    pub fn items_sent(&self) -> u64 {
        self.totals().sent
    }

    /// Items dropped so far by the pipelines' clients, for any reason.
    pub fn items_dropped(&self) -> u64 {
        self.totals().dropped
    }

    /// Items let go unsent so far because telemetry is disabled.
    pub fn items_discarded(&self) -> u64 {
        self.totals().discarded
    }

    /// Items the batches took so far: held now, sent, dropped or discarded.
    /// For metrics an item is a series in one harvest interval (recordings
    /// into a series already held add to it and are not counted one by one:
    /// that would put a shared write on the recording path).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// for _ in 0..3 {
    ///     telemetry.metrics().record_count("orders", 1, ()).await; // one series
    /// }
    /// telemetry.logs().record(newrelic_telemetry::Log::new("placed")).await;
    /// assert_eq!(telemetry.stats().items_accepted(), 2);
    /// telemetry.shutdown().await;
    /// assert_eq!(telemetry.stats().items_accepted(), 2); // now sent rather than held
    /// # Ok(()) }
    /// ```
    pub fn items_accepted(&self) -> u64 {
        let totals = self.totals();
        self.held_items() as u64 + totals.sent + totals.dropped + totals.discarded
    }

    /// Items refused so far before they reached a batch's buffer: by the
    /// batches (invalid, full, over budget, closed) and, with the
    /// `tracing-layer` feature, by the tracing layers (channel full, worker
    /// ended).
    pub fn items_refused(&self) -> u64 {
        self.totals().refused
    }
}

/// One line: what was sent, per API, and what was lost and why, for a
/// service to log at exit.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().build()?;
/// telemetry.metrics().record_count("orders", 1.0, ()).await;
/// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await;
/// let report = telemetry.shutdown().await;
/// assert_eq!(
///     report.to_string(),
///     "sent 2 (metrics 1, events 0, logs 1, spans 0), dropped 0, refused 0, discarded 0, \
///      within the shutdown deadline"
/// );
/// # Ok(()) }
/// ```
impl std::fmt::Display for TelemetryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sent = |r: &HarvestReport| r.delivery.items_sent;
        write!(
            f,
            "sent {} (metrics {}, events {}, logs {}, spans {}",
            self.items_sent(),
            sent(&self.metrics),
            sent(&self.events),
            sent(&self.logs),
            sent(&self.spans),
        )?;
        if let Some(distributions) = &self.distributions {
            write!(f, ", distributions {}", sent(distributions))?;
        }
        write!(
            f,
            "), dropped {}, refused {}, discarded {}, ",
            self.items_dropped(),
            self.items_refused(),
            self.items_discarded(),
        )?;
        let late: Vec<&str> = self
            .all()
            .filter(|r| r.deadline_exceeded)
            .map(|r| match r.api {
                Api::Metric => "metrics",
                Api::Event => "events",
                Api::Log => "logs",
                Api::Span => "spans",
                Api::Otlp => "distributions",
            })
            .collect();
        if late.is_empty() {
            f.write_str("within the shutdown deadline")
        } else {
            write!(f, "shutdown deadline exceeded ({})", late.join(", "))
        }
    }
}

impl TelemetryReport {
    fn all(&self) -> impl Iterator<Item = &HarvestReport> {
        [&self.metrics, &self.events, &self.logs, &self.spans]
            .into_iter()
            .chain(&self.distributions)
    }

    fn totals(&self) -> Totals {
        Totals::of(
            self.all().map(|r| (&r.delivery, &r.record)),
            #[cfg(feature = "tracing-layer")]
            &self.layer,
        )
    }

    /// Items sent by all the harvesters.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.items_sent(), 2); // one metric, one log
    /// # Ok(()) }
    /// ```
    pub fn items_sent(&self) -> u64 {
        self.totals().sent
    }

    /// Items dropped by all the harvesters, for any reason.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.items_dropped(), 0);
    /// # Ok(()) }
    /// ```
    pub fn items_dropped(&self) -> u64 {
        self.totals().dropped
    }

    /// Whether any harvester hit its shutdown deadline.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await;
    /// let report = telemetry.shutdown().await;
    /// assert!(!report.deadline_exceeded());
    /// # Ok(()) }
    /// ```
    pub fn deadline_exceeded(&self) -> bool {
        self.all().any(|r| r.deadline_exceeded)
    }

    /// Items refused before they reached a batch's buffer: by the batches
    /// (invalid, full, over budget, or recorded after the batch closed at
    /// shutdown) and by the tracing layers of [`Telemetry::tracing_layer`]
    /// (channel full, or exported after their worker ended). Counted when
    /// the report is taken: a later call to
    /// [`shutdown`](Telemetry::shutdown) includes refusals since.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::Log;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.logs().record(Log::new("sent")).await;
    /// telemetry.shutdown().await;
    ///
    /// assert!(telemetry.logs().try_record(Log::new("too late")).await.is_err());
    /// let report = telemetry.shutdown().await; // harmless, and up to date
    /// assert_eq!((report.items_sent(), report.items_refused()), (1, 1));
    /// assert_eq!(report.logs.record.items_dropped_closed, 1);
    /// # Ok(()) }
    /// ```
    pub fn items_refused(&self) -> u64 {
        self.totals().refused
    }

    /// Items let go unsent because telemetry is disabled
    /// ([`TelemetryBuilder::enabled`](crate::TelemetryBuilder::enabled)):
    /// what bound handles aggregated (recording by name and items keep
    /// nothing when disabled, so they are not counted).
    ///
    /// ```
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let no_env: [(&str, &str); 0] = [];
    /// let telemetry = Telemetry::builder().environment(no_env).enabled(false).build()?;
    /// let jobs = telemetry.metrics().counter("jobs.done", ()).await?;
    /// jobs.add(3.0);
    /// telemetry.logs().record(newrelic_telemetry::Log::new("not kept")).await;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!((report.items_discarded(), report.items_sent(), report.items_dropped()), (1, 0, 0));
    /// # Ok(()) }
    /// ```
    pub fn items_discarded(&self) -> u64 {
        self.totals().discarded
    }
}

impl Telemetry {
    /// The URLs the pipelines send to (worth logging at startup).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// assert_eq!(telemetry.endpoints().events, server.event_url());
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.0.endpoints
    }

    /// The metric batch.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.metrics()[0]["name"], "orders");
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> &Arc<MetricBatch> {
        &self.inner.0.metrics
    }

    /// The event batch.
    ///
    /// ```
    /// use newrelic_telemetry::Event;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.events().record(Event::new("Order")).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.events()[0]["eventType"], "Order");
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> &Arc<EventBatch> {
        &self.inner.0.events
    }

    /// The log batch.
    ///
    /// ```
    /// use newrelic_telemetry::Log;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.logs().record(Log::new("ready")).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.logs()[0]["message"], "ready");
    /// # Ok(()) }
    /// ```
    pub fn logs(&self) -> &Arc<LogBatch> {
        &self.inner.0.logs
    }

    /// The span batch.
    ///
    /// ```
    /// use newrelic_telemetry::Span;
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.spans().record(Span::new("checkout").finish()).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.spans()[0]["attributes"]["name"], "checkout");
    /// # Ok(()) }
    /// ```
    pub fn spans(&self) -> &Arc<SpanBatch> {
        &self.inner.0.spans
    }

    /// The token that stops the telemetry (a child of the one given to the
    /// builder, if any): cancelling it drains the tracing layers, then stops
    /// the four harvesters, as [`shutdown`](Self::shutdown) does; await
    /// [`join`](Self::join) for the report.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.cancellation_token().cancel(); // stops all four harvesters
    /// let report = telemetry.join().await;
    /// assert!(report.metrics.completed && report.spans.completed);
    /// # Ok(()) }
    /// ```
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.inner.0.stop
    }

    /// What each pipeline refused, sent, dropped and holds in memory, now.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await;
    /// assert_eq!(telemetry.stats().metrics.memory.held_items, 1);
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> TelemetryStats {
        let h = &self.inner.0.harvesters;
        TelemetryStats {
            metrics: h.metrics.pipeline_stats(),
            events: h.events.pipeline_stats(),
            logs: h.logs.pipeline_stats(),
            spans: h.spans.pipeline_stats(),
            distributions: self
                .inner
                .0
                .distributions
                .harvester()
                .map(Harvester::pipeline_stats),
            #[cfg(feature = "tracing-layer")]
            layer: self.inner.0.lifecycle.layers.stats(),
        }
    }

    /// Asks every harvester for a harvest now.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await;
    /// telemetry.harvest_now(); // no need to wait for the next tick
    /// assert!(server.wait_for_requests(1, std::time::Duration::from_secs(10)).await);
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn harvest_now(&self) {
        let parts = &self.inner.0;
        for harvester in parts.harvesters.iter() {
            harvester.harvest_now();
        }
        // Its harvest takes what the metric harvest hands it: the metric
        // batch asks for it at each flush that does.
        if let Some(harvester) = parts.distributions.harvester() {
            harvester.harvest_now();
        }
    }

    /// Stops everything in order and waits for the last send: first the
    /// tracing layers made by [`tracing_layer`](Self::tracing_layer) record
    /// what their channels hold, then the four harvesters close their
    /// batches, flush them and send (each within its shutdown deadline, all
    /// four at once). The distributions' harvester, if it started, stops
    /// once the metric harvester's last flush has handed it its last points
    /// (at once, unless that flush is slow) and then has its own deadline:
    /// a stop with distributions takes at most the deadline plus the metric
    /// flush.
    ///
    /// Any clone may call it, several at once or again later: each call
    /// waits for the same stop and returns the same report, brought up to
    /// date with what was refused since (a recording after shutdown is
    /// refused with [`RecordError::Closed`](crate::RecordError::Closed) and
    /// counted in [`TelemetryReport::items_refused`], never lost silently).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.events().record(newrelic_telemetry::Event::new("Order")).await;
    /// let clone = telemetry.clone();
    /// let (report, again) = tokio::join!(telemetry.shutdown(), clone.shutdown());
    /// assert_eq!(report.events.delivery.items_sent, 1);
    /// assert_eq!(again, report); // calling it again, from any clone, is harmless
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> TelemetryReport {
        let parts = &self.inner.0;
        parts.stop.cancel();
        parts.lifecycle.stop().await;
        self.join().await
    }

    /// Waits for the telemetry to stop without stopping it (for when the
    /// token given to the builder is cancelled elsewhere), and reports.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let service = CancellationToken::new();
    /// let telemetry = server.telemetry_builder().cancellation_token(service.clone()).build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("bye")).await;
    ///
    /// service.cancel(); // elsewhere, on SIGTERM
    /// assert_eq!(telemetry.join().await.logs.delivery.items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub async fn join(&self) -> TelemetryReport {
        let parts = &self.inner.0;
        let h = &parts.harvesters;
        let distributions = async {
            parts.distributions.settled().await;
            match parts.distributions.harvester() {
                Some(harvester) => Some(harvester.join().await),
                None => None,
            }
        };
        let (mut metrics, mut events, mut logs, mut spans, mut distributions) = tokio::join!(
            h.metrics.join(),
            h.events.join(),
            h.logs.join(),
            h.spans.join(),
            distributions
        );
        // Refusals go on after the end (a recording into a closed batch):
        // count them up to now.
        metrics.record = parts.metrics.record_stats();
        events.record = parts.events.record_stats();
        logs.record = parts.logs.record_stats();
        spans.record = parts.spans.record_stats();
        if let Some(report) = &mut distributions {
            report.record = parts.metrics.distributions().record_stats();
        }
        TelemetryReport {
            metrics,
            events,
            logs,
            spans,
            distributions,
            #[cfg(feature = "tracing-layer")]
            layer: parts.lifecycle.layers.stats(),
        }
    }

    /// Whether anything is sent: `false` when the builder or
    /// `NEW_RELIC_ENABLED` turned telemetry off. A disabled telemetry's
    /// tracing layer returns at once from each callback; adding the layer
    /// only when enabled spares even those calls.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// assert!(telemetry.is_enabled());
    /// let off = server.telemetry_builder().enabled(false).build()?;
    /// assert!(!off.is_enabled());
    ///
    /// // No layer at all while disabled (an `Option` of a layer is a layer).
    /// let layer = off.is_enabled().then(|| off.tracing_layer());
    /// assert!(layer.is_none());
    /// let subscriber = tracing_subscriber::registry().with(layer);
    /// tracing::subscriber::with_default(subscriber, || tracing::info!("not exported"));
    /// # telemetry.shutdown().await;
    /// # off.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.inner.0.enabled
    }
}

#[cfg(feature = "tracing-layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-layer")))]
impl Telemetry {
    /// A `tracing` layer that exports closed spans into this telemetry's
    /// span batch and events into its log batch, with its service name (see
    /// [`tracing_layer`](crate::tracing_layer) for what it exports and how).
    /// Its worker runs on the runtime the telemetry was built on and belongs
    /// to the telemetry: [`shutdown`](Self::shutdown) drains it before the
    /// batches are closed, so a log emitted just before shutdown is sent, and
    /// one emitted after is counted in [`TelemetryReport::items_refused`].
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use tracing_subscriber::filter::LevelFilter;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().service_name("checkout").build()?;
    /// let subscriber = tracing_subscriber::registry()
    ///     .with(telemetry.tracing_layer().with_filter(LevelFilter::INFO));
    /// // In a service: `.init()`, once, in `main`.
    /// let _guard = tracing::subscriber::set_default(subscriber);
    ///
    /// tracing::info_span!("charge", order.id = 1234).in_scope(|| tracing::info!("card charged"));
    ///
    /// let report = telemetry.shutdown().await; // the layer first, then the batches
    /// assert_eq!((report.layer.spans_recorded, report.layer.logs_recorded), (1, 1));
    /// assert_eq!(server.logs()[0]["message"], "card charged");
    /// // From the payload's common block (the test server fills it in).
    /// assert_eq!(server.spans()[0]["attributes"]["service.name"], "checkout");
    /// # Ok(()) }
    /// ```
    pub fn tracing_layer(&self) -> NewRelicLayer {
        self.tracing_layer_with(|layer| layer)
    }

    /// [`tracing_layer`](Self::tracing_layer), with changes to the layer's
    /// settings (channel capacity, span events, excluded targets). Its span
    /// and log batches are this telemetry's, whose common block names the
    /// service (a `service_name` set here is written on each item, and wins).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// let layer = telemetry.tracing_layer_with(|layer| layer.span_events(true).exclude_target("noisy"));
    /// let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    ///
    /// tracing::info_span!("job").in_scope(|| {
    ///     tracing::info!("step done");
    ///     tracing::info!(target: "noisy", "not exported");
    /// });
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.layer.logs_recorded, 1);
    /// assert_eq!(server.spans()[0]["events"][0]["name"], "step done");
    /// # Ok(()) }
    /// ```
    pub fn tracing_layer_with(
        &self,
        configure: impl FnOnce(NewRelicLayerBuilder) -> NewRelicLayerBuilder,
    ) -> NewRelicLayer {
        let parts = &self.inner.0;
        let mut builder =
            configure(NewRelicLayer::builder().sample_ratio(parts.trace_sample_ratio));
        // Always this telemetry's batches; disabled, none (not even one the
        // closure gave): the layer exports nothing, and returns from each
        // callback before looking at the span or event. The service's name is
        // not written on each span and log: the batches' common block carries
        // it (a name the closure gave is still written, and wins).
        builder = builder.without_batches();
        if parts.enabled {
            builder = builder.spans(parts.spans.clone()).logs(parts.logs.clone());
        }
        let layers = &parts.lifecycle.layers;
        let (layer, worker) = builder.build_counting_into(layers.counters.clone());
        layers.push(parts.runtime.spawn(worker.run(layers.token.clone())));
        layer
    }
}

#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
impl Telemetry {
    /// This telemetry's [`metrics`] recorder: `metrics::counter!`, `gauge!`
    /// and `histogram!` recorded into its metric batch (see
    /// [`metrics_recorder`](crate::metrics_recorder)). Every call returns
    /// the same recorder (clones share its series). Use it for a scope with
    /// [`metrics::with_local_recorder`] (tests), or for a thread with
    /// [`metrics::set_default_local_recorder`] (several telemetries in one
    /// process); or install it once for the process with
    /// [`install_metrics_recorder`](Self::install_metrics_recorder).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// let recorder = telemetry.metrics_recorder();
    /// metrics::with_local_recorder(&recorder, || {
    ///     metrics::counter!("logins", "method" => "sso").increment(1);
    /// });
    /// assert_eq!(telemetry.metrics().series_count(), 1);
    /// telemetry.shutdown().await;
    /// assert_eq!(server.metrics()[0]["attributes"]["method"], "sso");
    /// # Ok(()) }
    /// ```
    pub fn metrics_recorder(&self) -> NewRelicRecorder {
        let parts = &self.inner.0;
        parts
            .recorder
            .get_or_init(|| NewRelicRecorder::new(parts.metrics.clone(), parts.runtime.clone()))
            .clone()
    }

    /// Installs [`metrics_recorder`](Self::metrics_recorder) as the
    /// process's global `metrics` recorder, so that `metrics::counter!` and
    /// the like anywhere (in dependencies too) record into this telemetry.
    /// A process has one global recorder, set once: a second call (or one
    /// after another library installed its own) returns an [`InstallError`].
    /// The recorder outlives the telemetry; after
    /// [`shutdown`](Self::shutdown) its recordings are ignored and counted
    /// as refused.
    ///
    /// ```no_run
    /// use newrelic_telemetry::Telemetry;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let telemetry = Telemetry::builder().service_name("checkout").build()?;
    /// telemetry.install_metrics_recorder()?;
    /// metrics::counter!("orders", "plan" => "pro").increment(1);
    /// metrics::histogram!("order.total").record(42.0);
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn install_metrics_recorder(&self) -> Result<(), InstallError> {
        metrics::set_global_recorder(self.metrics_recorder()).map_err(|_| InstallError::new())
    }
}
