//! The running pipelines: [`Telemetry`], the handle to the four batches and
//! their harvesters, where they send ([`Endpoints`]) and how they ended
//! ([`TelemetryReport`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::per_api::PerApi;
use crate::batch::{EventBatch, LogBatch, MetricBatch, SpanBatch};
use crate::harvester::{HarvestReport, Harvester, PipelineStats};

/// The four pipelines of a service, set up and shut down together.
///
/// ```no_run
/// use newrelic_telemetry::{Event, Telemetry};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Key, region, endpoints and harvest interval from NEW_RELIC_* variables.
/// let telemetry = Telemetry::builder().service_name("checkout").build()?;
///
/// telemetry.metrics().record_count("orders", 1.0, [("plan", "pro")]).await?;
/// telemetry.events().record(Event::new("Order").with_attribute("total", 42.0)).await?;
///
/// // On SIGTERM: stop all four harvesters, send what is buffered, report.
/// let report = telemetry.shutdown().await;
/// println!("sent {} items, dropped {}", report.items_sent(), report.items_dropped());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Telemetry {
    // Assembled by `pipelines::start`.
    pub(super) endpoints: Endpoints,
    pub(super) metrics: Arc<MetricBatch>,
    pub(super) events: Arc<EventBatch>,
    pub(super) logs: Arc<LogBatch>,
    pub(super) spans: Arc<SpanBatch>,
    pub(super) harvesters: PerApi<Harvester>,
    /// Stops the harvesters; a child of the token given to the builder.
    pub(super) token: CancellationToken,
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
/// assert_eq!(endpoints.metric, server.metric_url());
/// assert_eq!(endpoints.trace, server.trace_url());
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoints {
    /// The Metric API's URL.
    pub metric: String,
    /// The Event API's URL.
    pub event: String,
    /// The Log API's URL.
    pub log: String,
    /// The Trace API's URL.
    pub trace: String,
}

/// How the four harvesters of a [`Telemetry`] ended.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().build()?;
/// telemetry.metrics().record_count("signups", 1.0, ()).await?;
/// telemetry.metrics().record_gauge("queue.depth", 3.0, ()).await?;
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
}

/// A live snapshot of the four pipelines of a [`Telemetry`].
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Event, Log};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().build()?;
/// telemetry.events().record(Event::new("Order")).await?;
/// telemetry.logs().record(Log::new("placed")).await?;
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
}

impl TelemetryStats {
    fn all(&self) -> [&PipelineStats; 4] {
        [&self.metrics, &self.events, &self.logs, &self.spans]
    }

    /// Bytes the four pipelines hold in memory now.
    pub fn held_bytes(&self) -> usize {
        self.all().iter().map(|p| p.memory.held_bytes).sum()
    }

    /// Items the four pipelines hold now (recorded, not yet sent or dropped).
    pub fn held_items(&self) -> usize {
        self.all().iter().map(|p| p.memory.held_items).sum()
    }

    /// Items sent so far by the four pipelines.
    pub fn items_sent(&self) -> u64 {
        self.all().iter().map(|p| p.delivery.items_sent).sum()
    }

    /// Items dropped so far by the four pipelines' clients, for any reason.
    pub fn items_dropped(&self) -> u64 {
        self.all().iter().map(|p| p.delivery.items_dropped()).sum()
    }
}

impl TelemetryReport {
    fn all(&self) -> [&HarvestReport; 4] {
        [&self.metrics, &self.events, &self.logs, &self.spans]
    }

    /// Items sent by all four harvesters.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.items_sent(), 2); // one metric, one log
    /// # Ok(()) }
    /// ```
    pub fn items_sent(&self) -> u64 {
        self.all().iter().map(|r| r.delivery.items_sent).sum()
    }

    /// Items dropped by all four harvesters, for any reason.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.items_dropped(), 0);
    /// # Ok(()) }
    /// ```
    pub fn items_dropped(&self) -> u64 {
        self.all().iter().map(|r| r.delivery.items_dropped()).sum()
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
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert!(!report.deadline_exceeded());
    /// # Ok(()) }
    /// ```
    pub fn deadline_exceeded(&self) -> bool {
        self.all().iter().any(|r| r.deadline_exceeded)
    }
}

impl Telemetry {
    /// The URLs the four pipelines send to (worth logging at startup).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// assert_eq!(telemetry.endpoints().event, server.event_url());
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
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
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.metrics()[0]["name"], "orders");
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> &Arc<MetricBatch> {
        &self.metrics
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
    /// telemetry.events().record(Event::new("Order")).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.events()[0]["eventType"], "Order");
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> &Arc<EventBatch> {
        &self.events
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
    /// telemetry.logs().record(Log::new("ready")).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.logs()[0]["message"], "ready");
    /// # Ok(()) }
    /// ```
    pub fn logs(&self) -> &Arc<LogBatch> {
        &self.logs
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
    /// telemetry.spans().record(Span::new("checkout").finish()).await?;
    /// telemetry.shutdown().await;
    /// assert_eq!(server.spans()[0]["attributes"]["name"], "checkout");
    /// # Ok(()) }
    /// ```
    pub fn spans(&self) -> &Arc<SpanBatch> {
        &self.spans
    }

    /// The token that stops all four harvesters (a child of the one given to
    /// the builder, if any).
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
        &self.token
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
    /// telemetry.metrics().record_count("orders", 1.0, ()).await?;
    /// assert_eq!(telemetry.stats().metrics.memory.held_items, 1);
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> TelemetryStats {
        let h = &self.harvesters;
        TelemetryStats {
            metrics: h.metric.pipeline_stats(),
            events: h.event.pipeline_stats(),
            logs: h.log.pipeline_stats(),
            spans: h.trace.pipeline_stats(),
        }
    }

    /// Asks all four harvesters for a harvest now.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.logs().record(newrelic_telemetry::Log::new("ready")).await?;
    /// telemetry.harvest_now(); // no need to wait for the next tick
    /// assert!(server.wait_for_requests(1, std::time::Duration::from_secs(10)).await);
    /// # telemetry.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn harvest_now(&self) {
        for harvester in self.harvesters.iter() {
            harvester.harvest_now();
        }
    }

    /// Stops the harvesters and waits for them to send what is buffered (each
    /// within its shutdown deadline, all four at once). Calling it again
    /// returns the same report.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let telemetry = server.telemetry_builder().build()?;
    /// telemetry.events().record(newrelic_telemetry::Event::new("Order")).await?;
    /// let report = telemetry.shutdown().await;
    /// assert_eq!(report.events.delivery.items_sent, 1);
    /// assert_eq!(telemetry.shutdown().await, report); // calling it again is harmless
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> TelemetryReport {
        self.token.cancel();
        self.join().await
    }

    /// Waits for the harvesters to end without stopping them (for when the
    /// token given to the builder is cancelled elsewhere).
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
    /// telemetry.logs().record(newrelic_telemetry::Log::new("bye")).await?;
    ///
    /// service.cancel(); // elsewhere, on SIGTERM
    /// assert_eq!(telemetry.join().await.logs.delivery.items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub async fn join(&self) -> TelemetryReport {
        let h = &self.harvesters;
        let (metrics, events, logs, spans) = tokio::join!(
            h.metric.join(),
            h.event.join(),
            h.log.join(),
            h.trace.join()
        );
        TelemetryReport {
            metrics,
            events,
            logs,
            spans,
        }
    }
}
