//! The harvester: a background task that flushes a batch every harvest period
//! and sends what it flushed through a client.
//!
//! One loop, driven by `tokio::time::interval`, does everything: it flushes the
//! batch on every tick (or early, when the batch fills up), encodes the flush
//! into payloads and queues them, and keeps one payload in flight at a time.
//! Encoding goes a payload at a time between the loop's other work. A slow
//! or failing endpoint therefore never delays a harvest, and what the
//! pipeline holds stays within its memory budget: the queue of payloads
//! waiting to be sent may fill half of the record limit, past which its
//! oldest payload is dropped. Cancelling the harvester's token stops the timer; from that moment
//! one deadline covers the last flush, its encoding and every send, and what
//! is not sent by then is counted as dropped.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::batch::{Batch, RecordStats, Taken};
use crate::budget::{MemoryBudget, MemoryStats};
use crate::client::DeliveryStats;
use crate::client::{
    Client, DropReason, Encoded, Kind, Payload, PayloadEncoder, PayloadReport, Sender,
};

/// The longest harvest interval or shutdown timeout taken; longer ones are
/// cut to it, so that no deadline overflows.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// How often a harvester flushes its batch unless told otherwise: 5 s, the
/// ingest contract's default. See [`HarvesterBuilder::harvest_interval`].
pub const DEFAULT_HARVEST_INTERVAL: Duration = Duration::from_secs(5);
/// How long a shutdown may take unless told otherwise: 10 s, from the stop
/// to the last send. See [`HarvesterBuilder::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Items that may wait in a harvester's send queue unless told otherwise:
/// 200,000. See [`HarvesterBuilder::max_queued_items`].
pub const DEFAULT_MAX_QUEUED_ITEMS: usize = 200_000;

/// How long shutdown may run past its deadline: the time to notice the
/// deadline at the next yield and count what is left (an encoding slice, a
/// dropped request). Measured by the `outage` benchmark.
pub const SHUTDOWN_SLACK: Duration = Duration::from_millis(100);

/// How a harvester ended (or how it stands, if it was still running when the
/// report was taken).
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Harvester, LogBatch, Log, LogClient};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let logs = Arc::new(LogBatch::new());
/// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
/// let harvester = Harvester::spawn(logs.clone(), client);
/// logs.record(Log::new("started")).await;
///
/// let report = harvester.shutdown().await;
/// assert_eq!(report.api, newrelic_telemetry::Api::Log);
/// assert_eq!(report.delivery.items_sent, 1);
/// assert!(report.completed && !report.deadline_exceeded);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HarvestReport {
    /// The API the harvester sent to.
    pub api: Api,
    /// How many times the batch was flushed.
    pub harvests: u64,
    /// The client's delivery counters at the end.
    pub delivery: DeliveryStats,
    /// The batch's recording counters at the end.
    pub record: RecordStats,
    /// Whether shutdown hit its deadline with data still unsent (the items are
    /// counted in `delivery.items_dropped_shutdown`).
    pub deadline_exceeded: bool,
    /// Whether the task ran its shutdown to the end; `false` if it panicked or
    /// its runtime was shut down under it.
    pub completed: bool,
    /// What the pipeline held in memory at the end, and its peak.
    pub memory: MemoryStats,
}

/// A live snapshot of one pipeline (a batch and its harvester).
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Harvester, Log, LogBatch, LogClient};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let logs = Arc::new(LogBatch::new());
/// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
/// let harvester = Harvester::spawn(logs.clone(), client);
/// logs.record(Log::new("one")).await;
/// logs.record(Log::new("")).await;
///
/// let now = harvester.pipeline_stats();
/// assert_eq!((now.memory.held_items, now.delivery.items_sent), (2, 0));
/// harvester.shutdown().await;
/// let after = harvester.pipeline_stats();
/// assert_eq!((after.memory.held_items, after.delivery.items_sent), (0, 2));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineStats {
    /// What the batch refused or changed.
    pub record: RecordStats,
    /// What the client sent, retried and dropped.
    pub delivery: DeliveryStats,
    /// What the pipeline holds in memory now, against its budget.
    pub memory: MemoryStats,
}

/// A running harvester: a handle to the background task.
///
/// Dropping the handle cancels the harvester, which then flushes and sends
/// what it holds in the background without anyone waiting; call
/// [`shutdown`](Self::shutdown) to wait for that and learn how it went.
///
/// ```
/// use newrelic_telemetry::{Harvester, MetricBatch, MetricClient};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let batch = Arc::new(MetricBatch::new());
/// let client = MetricClient::builder("key").endpoint("http://127.0.0.1:9/metric/v1").build()?;
/// let harvester = Harvester::builder(batch.clone(), client)
///     .harvest_interval(Duration::from_secs(5))
///     .shutdown_timeout(Duration::from_millis(100))
///     .spawn();
///
/// batch.record_count("requests", 1.0, [("route", "/")]).await;
/// let report = harvester.shutdown().await; // flushes and sends what is left
/// assert_eq!(report.harvests, 1);
/// # Ok(()) }
/// ```
#[must_use = "dropping the handle stops the harvester (it flushes in the background)"]
pub struct Harvester {
    api: Api,
    token: CancellationToken,
    harvest_now: Arc<Notify>,
    state: Mutex<State>,
    stats: Box<dyn Fn() -> PipelineStats + Send + Sync>,
}

enum State {
    Running(JoinHandle<HarvestReport>),
    Done(Box<HarvestReport>),
}

impl std::fmt::Debug for Harvester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harvester")
            .field("api", &self.api)
            .field("cancelled", &self.token.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Harvester {
    /// A builder for a harvester that drains `batch` through `client`.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Harvester, LogBatch, Log, LogClient};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let harvester = Harvester::builder(logs.clone(), client).spawn();
    /// logs.record(Log::new("started")).await;
    /// assert_eq!(harvester.shutdown().await.delivery.items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub fn builder<K, B>(batch: Arc<B>, client: Client<K>) -> HarvesterBuilder<K, B>
    where
        K: Kind,
        B: Batch<Item = K::Item>,
    {
        HarvesterBuilder {
            batch,
            client,
            interval: DEFAULT_HARVEST_INTERVAL,
            token: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_queued_items: DEFAULT_MAX_QUEUED_ITEMS,
        }
    }

    /// Spawns a harvester with the default settings.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Harvester, LogBatch, Log, LogClient};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let harvester = Harvester::spawn(logs.clone(), client);
    /// logs.record(Log::new("started")).await;
    /// assert_eq!(harvester.shutdown().await.delivery.items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub fn spawn<K, B>(batch: Arc<B>, client: Client<K>) -> Harvester
    where
        K: Kind,
        B: Batch<Item = K::Item>,
    {
        Harvester::builder(batch, client).spawn()
    }

    /// Stops the harvester and waits for it: it flushes the batch one last
    /// time and sends everything it holds, until the shutdown deadline.
    /// Calling it again (or after [`join`](Self::join)) returns the same report.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Harvester, LogBatch, Log, LogClient};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let harvester = Harvester::spawn(logs.clone(), client);
    /// logs.record(Log::new("started")).await;
    /// let report = harvester.shutdown().await;
    /// assert_eq!(report.delivery.items_sent, 1);
    /// assert_eq!(harvester.shutdown().await, report); // the same report again
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self) -> HarvestReport {
        self.token.cancel();
        self.join().await
    }

    /// Waits for the harvester to end, without stopping it: for when its
    /// token is cancelled elsewhere (a service-wide token on SIGTERM).
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Harvester, LogBatch, Log, LogClient};
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let service = CancellationToken::new();
    /// let harvester = Harvester::builder(logs.clone(), client)
    ///     .cancellation_token(service.clone())
    ///     .spawn();
    /// logs.record(Log::new("started")).await;
    ///
    /// service.cancel(); // e.g. on SIGTERM, elsewhere in the service
    /// assert_eq!(harvester.join().await.delivery.items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub async fn join(&self) -> HarvestReport {
        let mut state = self.state.lock().await;
        if let State::Running(handle) = &mut *state {
            let report = match handle.await {
                Ok(report) => report,
                Err(e) => {
                    tracing::error!(api = self.api.name(), error = %e, "harvester task ended abnormally");
                    let PipelineStats {
                        delivery,
                        record,
                        memory,
                    } = (self.stats)();
                    HarvestReport {
                        api: self.api,
                        harvests: 0,
                        delivery,
                        record,
                        deadline_exceeded: false,
                        completed: false,
                        memory,
                    }
                }
            };
            *state = State::Done(Box::new(report));
        }
        match &*state {
            State::Done(report) => (**report).clone(),
            State::Running(_) => unreachable!("the state was just set to done"),
        }
    }

    /// Asks for a harvest now, without waiting for the next tick.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Harvester, LogBatch, Log, LogClient};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let harvester = Harvester::builder(logs.clone(), client)
    ///     .harvest_interval(Duration::from_secs(3600))
    ///     .spawn();
    /// logs.record(Log::new("started")).await;
    ///
    /// harvester.harvest_now(); // no need to wait an hour
    /// assert!(server.wait_for_requests(1, Duration::from_secs(10)).await);
    /// assert_eq!(server.logs()[0]["message"], "started");
    /// # harvester.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn harvest_now(&self) {
        self.harvest_now.notify_one();
    }

    /// The delivery counters so far.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Harvester, LogBatch, Log, LogClient};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let harvester = Harvester::spawn(logs.clone(), client);
    /// assert_eq!(harvester.stats().items_sent, 0);
    /// logs.record(Log::new("started")).await;
    /// harvester.shutdown().await;
    /// assert_eq!(harvester.stats().items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> DeliveryStats {
        (self.stats)().delivery
    }

    /// What the batch refused, what the client sent and dropped, and what the
    /// pipeline holds in memory, now.
    ///
    /// ```
    /// use newrelic_telemetry::{Harvester, Log, LogBatch, LogClient};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("key").endpoint("http://127.0.0.1:9/log/v1").build()?;
    /// let harvester = Harvester::spawn(logs.clone(), client);
    /// logs.record(Log::new("kept")).await;
    /// logs.try_record(Log::new("bad").with_attribute("", 1)).await.unwrap_err();
    /// let stats = harvester.pipeline_stats();
    /// assert_eq!((stats.memory.held_items, stats.record.items_dropped_invalid), (1, 1));
    /// # Ok(()) }
    /// ```
    pub fn pipeline_stats(&self) -> PipelineStats {
        (self.stats)()
    }

    /// What the pipeline holds in memory now (the batch, the payloads being
    /// encoded, queued and sent), against its budget.
    ///
    /// ```
    /// use newrelic_telemetry::{Harvester, Log, LogBatch, LogClient};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("key").endpoint("http://127.0.0.1:9/log/v1").build()?;
    /// let harvester = Harvester::builder(logs.clone(), client)
    ///     .shutdown_timeout(Duration::from_millis(100))
    ///     .spawn();
    /// logs.record(Log::new("waiting")).await;
    /// assert_eq!(harvester.memory().held_items, 1);
    ///
    /// let report = harvester.shutdown().await; // nothing listens on port 9
    /// assert_eq!(report.memory.held_items, 0); // dropped and counted, not held
    /// assert_eq!(report.delivery.items_dropped(), 1);
    /// # Ok(()) }
    /// ```
    pub fn memory(&self) -> MemoryStats {
        (self.stats)().memory
    }

    /// The harvester's own token: cancelling it stops the harvester. It is a
    /// child of the token given to the builder, if any.
    ///
    /// ```
    /// use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Harvester, LogBatch, Log, LogClient};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TestIngestServer::start().await?;
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let harvester = Harvester::spawn(logs.clone(), client);
    /// harvester.cancellation_token().cancel(); // stops it, like shutdown()
    /// assert!(harvester.join().await.completed);
    /// # Ok(()) }
    /// ```
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Harvester {
    fn drop(&mut self) {
        // Never block here: the task flushes and sends in the background.
        self.token.cancel();
    }
}

/// Configures and spawns a [`Harvester`].
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
/// use newrelic_telemetry::{Harvester, MetricBatch, MetricClient};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let batch = Arc::new(MetricBatch::new());
/// let client = MetricClient::builder("test-key").endpoint(server.metric_url()).build()?;
/// let service = CancellationToken::new();
/// let harvester = Harvester::builder(batch.clone(), client)
///     .harvest_interval(Duration::from_secs(10))
///     .shutdown_timeout(Duration::from_secs(2))
///     .max_queued_items(10_000)
///     .cancellation_token(service.clone())
///     .spawn();
///
/// batch.record_count("requests", 1.0, [("route", "/")]).await;
/// service.cancel();
/// let report = harvester.join().await;
/// assert_eq!(report.delivery.items_sent, 1);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until it is spawned"]
pub struct HarvesterBuilder<K: Kind, B> {
    batch: Arc<B>,
    client: Client<K>,
    interval: Duration,
    token: Option<CancellationToken>,
    shutdown_timeout: Duration,
    max_queued_items: usize,
}

impl<K: Kind, B> std::fmt::Debug for HarvesterBuilder<K, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarvesterBuilder")
            .field("client", &self.client)
            .field("interval", &self.interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_queued_items", &self.max_queued_items)
            .finish_non_exhaustive()
    }
}

impl<K: Kind, B: Batch<Item = K::Item>> HarvesterBuilder<K, B> {
    /// How often to harvest (default 5 s; from 1 ms to a year). A tick missed while
    /// a harvest runs is delayed, never made up in a burst.
    ///
    /// ```
    /// use newrelic_telemetry::{Harvester, MetricBatch, MetricClient};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = newrelic_telemetry::test_util::TestIngestServer::start().await?;
    /// let batch = Arc::new(MetricBatch::new());
    /// let client = MetricClient::builder("key").endpoint(server.metric_url()).build()?;
    /// let harvester = Harvester::builder(batch.clone(), client)
    ///     .harvest_interval(Duration::from_millis(100))
    ///     .spawn();
    /// batch.record_count("ticks", 1.0, ()).await;
    /// // Sent by the next harvest, with the harvester still running.
    /// assert!(server.wait_for_requests(1, Duration::from_secs(10)).await);
    /// assert_eq!(server.metrics()[0]["name"], "ticks");
    /// # harvester.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn harvest_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.clamp(Duration::from_millis(1), MAX_DURATION);
        self
    }

    /// Stops the harvester when `token` is cancelled, so that one token can
    /// stop a whole service. The harvester runs on a child of it.
    ///
    /// ```
    /// use newrelic_telemetry::{Harvester, MetricBatch, MetricClient};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let batch = Arc::new(MetricBatch::new());
    /// let client = MetricClient::builder("key").endpoint("http://127.0.0.1:9/metric/v1").build()?;
    /// use tokio_util::sync::CancellationToken;
    /// let service = CancellationToken::new();
    /// let harvester = Harvester::builder(batch, client).cancellation_token(service.clone()).spawn();
    /// service.cancel();
    /// assert!(harvester.cancellation_token().is_cancelled()); // it runs on a child token
    /// assert!(harvester.join().await.completed);
    /// # Ok(()) }
    /// ```
    pub fn cancellation_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// How long shutdown may take (default 10 s, at most a year), from the
    /// moment the harvester is stopped: the last flush, its encoding, and
    /// every send and retry, all within it (plus [`SHUTDOWN_SLACK`]). What is
    /// unsent by then is dropped and counted in
    /// [`DeliveryStats::items_dropped_shutdown`].
    ///
    /// ```
    /// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Harvester, Log, LogBatch, LogClient};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// tokio::time::pause(); // the server's 60 s delay passes instantly
    /// let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(202).with_delay(Duration::from_secs(60)));
    /// let logs = Arc::new(LogBatch::new());
    /// let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let harvester = Harvester::builder(logs.clone(), client)
    ///     .shutdown_timeout(Duration::from_secs(1))
    ///     .spawn();
    /// logs.record(Log::new("slow")).await;
    ///
    /// let report = harvester.shutdown().await;
    /// assert!(report.deadline_exceeded);
    /// assert_eq!(report.delivery.items_dropped_shutdown, 1);
    /// # Ok(()) }
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout.min(MAX_DURATION);
        self
    }

    /// The most items that may wait in the send queue (default 200,000).
    /// Past it, or past half the pipeline's record limit (see
    /// [`LogBatch::builder`](crate::batch::ItemBatchBuilder::memory_budget)), the
    /// oldest waiting payload is dropped and counted in
    /// [`DeliveryStats::items_dropped_queue_full`].
    ///
    /// ```
    /// use newrelic_telemetry::{Harvester, MetricBatch, MetricClient};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let batch = Arc::new(MetricBatch::new());
    /// let client = MetricClient::builder("key").endpoint("http://127.0.0.1:9/metric/v1").build()?;
    /// let harvester = Harvester::builder(batch, client).max_queued_items(50_000).spawn();
    /// # harvester.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn max_queued_items(mut self, items: usize) -> Self {
        self.max_queued_items = items;
        self
    }

    /// Spawns the harvester on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    ///
    /// ```
    /// use newrelic_telemetry::{Harvester, MetricBatch, MetricClient};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let batch = Arc::new(MetricBatch::new());
    /// let client = MetricClient::builder("key").endpoint("http://127.0.0.1:9/metric/v1").build()?;
    /// let harvester = Harvester::builder(batch, client).spawn();
    /// assert!(!harvester.cancellation_token().is_cancelled());
    /// # harvester.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn spawn(self) -> Harvester {
        let token = self
            .token
            .as_ref()
            .map_or_else(CancellationToken::new, CancellationToken::child_token);
        let harvest_now = Arc::new(Notify::new());
        let stats = {
            let client = self.client.clone();
            let batch = self.batch.clone();
            Box::new(move || PipelineStats {
                record: batch.record_stats(),
                delivery: client.stats(),
                memory: batch.memory(),
            })
        };
        let budget = self.batch.memory_budget().clone();
        let task = Task {
            batch: self.batch,
            client: self.client,
            interval: self.interval,
            shutdown_timeout: self.shutdown_timeout,
            token: token.clone(),
            harvest_now: harvest_now.clone(),
            queue: Queue {
                payloads: VecDeque::new(),
                items: 0,
                bytes: 0,
                max_items: self.max_queued_items,
                max_bytes: budget.snapshot().record_limit_bytes / 2,
            },
            budget,
            harvests: 0,
            encoding: None,
            harvest_pending: false,
        };
        Harvester {
            api: K::API,
            token,
            harvest_now,
            state: Mutex::new(State::Running(tokio::spawn(task.run()))),
            stats,
        }
    }
}

/// Payloads waiting to be sent, capped in items and in bytes (half the
/// pipeline's memory budget); past a cap the oldest payload is dropped (new
/// data is worth more, and old data is the likeliest to fall outside the
/// APIs' timestamp windows).
struct Queue {
    payloads: VecDeque<Payload>,
    items: usize,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl Queue {
    fn push<K: Kind>(&mut self, payload: Payload, sender: &Sender<K>, budget: &MemoryBudget) {
        while !self.payloads.is_empty()
            && (self.items + payload.len() > self.max_items
                || self.bytes + payload.held_bytes() > self.max_bytes)
        {
            if let Some(oldest) = self.pop() {
                sender.report_drop(&dropped_report::<K>(&oldest, DropReason::QueueFull));
                budget.resolve_items(oldest.len());
            }
        }
        self.items += payload.len();
        self.bytes += payload.held_bytes();
        self.payloads.push_back(payload);
    }

    fn pop(&mut self) -> Option<Payload> {
        let payload = self.payloads.pop_front()?;
        self.items -= payload.len();
        self.bytes -= payload.held_bytes();
        Some(payload)
    }
}

fn dropped_report<K: Kind>(payload: &Payload, reason: DropReason) -> PayloadReport {
    PayloadReport::dropped(
        K::API,
        Some(payload.request_id),
        payload.len(),
        payload.body.len(),
        0,
        reason,
    )
}

/// Items the reports account for (accepted or dropped).
fn items_in(reports: &[PayloadReport]) -> usize {
    reports.iter().map(PayloadReport::items).sum()
}

type Delivery<'a> = Pin<Box<dyn Future<Output = Vec<PayloadReport>> + Send + 'a>>;

/// The payload being delivered: its size, request id, and the delivery.
struct InFlight<'a> {
    items: usize,
    bytes: usize,
    request_id: uuid::Uuid,
    delivery: Delivery<'a>,
}

struct Task<K: Kind, B> {
    batch: Arc<B>,
    client: Client<K>,
    interval: Duration,
    shutdown_timeout: Duration,
    token: CancellationToken,
    harvest_now: Arc<Notify>,
    queue: Queue,
    budget: Arc<MemoryBudget>,
    harvests: u64,
    /// The harvest being encoded, a payload at a time, between the loop's
    /// other work; a harvest asked for meanwhile waits for it to end.
    encoding: Option<Encoder<K>>,
    harvest_pending: bool,
}

/// Encodes a harvest's items into payloads.
type Encoder<K> = PayloadEncoder<K, std::vec::IntoIter<<K as Kind>::Item>>;

/// The next payload of the harvest being encoded; never ready if there is none.
async fn next_encoded<K: Kind>(encoding: &mut Option<Encoder<K>>) -> Option<Encoded> {
    match encoding {
        Some(encoder) => encoder.next().await,
        None => std::future::pending().await,
    }
}

impl<K: Kind, B: Batch<Item = K::Item>> Task<K, B> {
    async fn run(mut self) -> HarvestReport {
        let client = self.client.clone();
        let sender = client.sender();
        let resolved = AtomicUsize::new(0);
        let mut in_flight: Option<InFlight<'_>> = None;
        let mut ticker = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            if in_flight.is_none() {
                in_flight = self
                    .queue
                    .pop()
                    .map(|payload| start(payload, sender, &resolved));
            }
            tokio::select! {
                biased;
                () = self.token.cancelled() => break,
                reports = async {
                    match in_flight.as_mut() {
                        Some(f) => f.delivery.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if in_flight.is_some() => {
                    self.budget.resolve_items(items_in(&reports));
                    in_flight = None;
                }
                encoded = next_encoded(&mut self.encoding), if self.encoding.is_some() => {
                    self.encoded(encoded, sender).await;
                }
                _ = ticker.tick() => self.harvest(sender).await,
                () = self.batch.harvest_requested() => self.harvest(sender).await,
                () = self.harvest_now.notified() => self.harvest(sender).await,
            }
        }

        // Stopped: from here one deadline covers everything. Close the batch
        // (later recordings are refused and counted), then flush it, encode
        // and send what it held and everything queued, oldest first.
        let deadline = Instant::now() + self.shutdown_timeout;
        self.batch.close().await;
        // The payload being sent: its size, request id, and (in `resolved`)
        // how many of its items are accounted for.
        let mut current = in_flight.as_ref().map(|f| (f.items, f.bytes, f.request_id));
        let drained = tokio::time::timeout_at(deadline, async {
            // The harvest being encoded, then the last one.
            self.finish_encoding(sender).await;
            self.harvest(sender).await;
            self.finish_encoding(sender).await;
            if let Some(f) = in_flight.as_mut() {
                let reports = f.delivery.as_mut().await;
                self.budget.resolve_items(items_in(&reports));
            }
            while let Some(payload) = self.queue.pop() {
                resolved.store(0, Ordering::Relaxed);
                current = Some((payload.len(), payload.body.len(), payload.request_id));
                let reports = sender.deliver(payload, &resolved).await;
                self.budget.resolve_items(items_in(&reports));
            }
            current = None;
        })
        .await
        .is_ok();
        drop(in_flight);

        if !drained {
            self.count_abandoned(sender, current, resolved.load(Ordering::Relaxed));
        }
        // What was left unencoded is counted: in the encoder, and in the batch
        // (items a harvest asked for while another was encoded had not been
        // taken yet). Its memory goes now, before the report says what is held.
        self.encoding = None;
        if !drained {
            self.batch.abandon().await;
        }

        HarvestReport {
            api: K::API,
            harvests: self.harvests,
            delivery: client.stats(),
            record: self.batch.record_stats(),
            deadline_exceeded: !drained,
            completed: true,
            memory: self.budget.snapshot(),
        }
    }

    /// Counts everything the pipeline still holds at the shutdown deadline
    /// as dropped: what is left of the payload being sent (`current`, of which
    /// `resolved` items were accounted for), the queued payloads, and the
    /// items never encoded.
    fn count_abandoned(
        &mut self,
        sender: &Sender<K>,
        current: Option<(usize, usize, uuid::Uuid)>,
        resolved: usize,
    ) {
        let mut unresolved = self.budget.held_items();
        if current.is_some() {
            unresolved = unresolved.saturating_sub(resolved);
        }
        let mut lost = 0;
        if let Some((items, bytes, request_id)) = current {
            let left = items.saturating_sub(resolved);
            if left > 0 {
                lost += left;
                sender.report_drop(&PayloadReport::dropped(
                    K::API,
                    Some(request_id),
                    left,
                    bytes,
                    0,
                    DropReason::ShutdownDeadline,
                ));
            }
        }
        while let Some(payload) = self.queue.pop() {
            lost += payload.len();
            sender.report_drop(&dropped_report::<K>(&payload, DropReason::ShutdownDeadline));
        }
        let never_encoded = unresolved.saturating_sub(lost);
        if never_encoded > 0 {
            sender.drop_unencoded(never_encoded, DropReason::ShutdownDeadline);
        }
        self.budget.resolve_items(self.budget.held_items());
        tracing::error!(
            api = K::API.name(),
            items = unresolved,
            timeout_ms = self.shutdown_timeout.as_millis() as u64,
            "shutdown deadline reached; unsent telemetry dropped"
        );
    }

    /// Takes what the batch holds and starts encoding it (the loop encodes
    /// it a payload at a time). An empty flush sends nothing; a harvest asked
    /// for while one is being encoded follows it.
    async fn harvest(&mut self, sender: &Sender<K>) {
        if self.encoding.is_some() {
            self.harvest_pending = true;
            return;
        }
        self.harvests += 1;
        let Taken {
            items,
            common,
            held,
        } = self.batch.take().await;
        if items.is_empty() {
            return;
        }
        tracing::trace!(api = K::API.name(), items = items.len(), "harvested");
        let n = items.len();
        if sender.disabled {
            // Telemetry is off: let the items go, counted, with no request.
            sender.discard(n);
            drop((items, held));
            self.budget.resolve_items(n);
            return;
        }
        match sender.encoder(items.into_iter(), common, held) {
            Ok(encoder) => self.encoding = Some(encoder),
            Err(e) => {
                let reason = DropReason::Encoding {
                    message: e.to_string(),
                };
                sender.drop_unencoded(n, reason);
                self.budget.resolve_items(n);
            }
        }
    }

    /// Queues a payload of the harvest being encoded, or counts what could
    /// not become one; at the harvest's end, starts one asked for meanwhile.
    async fn encoded(&mut self, encoded: Option<Encoded>, sender: &Sender<K>) {
        match encoded.map(|encoded| sender.payload_or_drop(encoded)) {
            Some(Ok(payload)) => self.queue.push(payload, sender, &self.budget),
            Some(Err(report)) => self.budget.resolve_items(report.items()),
            None => {
                self.encoding = None;
                if std::mem::take(&mut self.harvest_pending) {
                    self.harvest(sender).await;
                }
            }
        }
    }

    /// Encodes the rest of the harvest being encoded, if any.
    async fn finish_encoding(&mut self, sender: &Sender<K>) {
        while self.encoding.is_some() {
            let encoded = next_encoded(&mut self.encoding).await;
            if encoded.is_none() {
                self.encoding = None;
                return;
            }
            self.encoded(encoded, sender).await;
        }
    }
}

fn start<'a, K: Kind>(
    payload: Payload,
    sender: &'a Sender<K>,
    resolved: &'a AtomicUsize,
) -> InFlight<'a> {
    resolved.store(0, Ordering::Relaxed);
    InFlight {
        items: payload.len(),
        bytes: payload.body.len(),
        request_id: payload.request_id,
        delivery: Box::pin(sender.deliver(payload, resolved)),
    }
}
