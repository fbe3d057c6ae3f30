//! The harvester: a background task that flushes a batch every harvest period
//! and sends what it flushed through a client.
//!
//! One loop, driven by `tokio::time::interval`, does everything: it flushes the
//! batch on every tick (or early, when the batch fills up), encodes the flush
//! into payloads and queues them, and keeps one payload in flight at a time.
//! A slow or failing endpoint therefore never delays a harvest, and the queue
//! of payloads waiting to be sent is capped. Cancelling the harvester's token
//! stops the timer, flushes one last time and sends everything still queued,
//! bounded by a deadline.

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

use crate::batch::{Batch, RecordStats};
use crate::client::{Client, DropReason, Kind, Payload, PayloadReport, Prepared, Sender};
use crate::stats::DeliveryStats;

/// The longest harvest interval or shutdown timeout taken; longer ones are
/// cut to it, so that no deadline overflows.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The harvest period unless told otherwise (the contract's default).
///
/// ```
/// use newrelic_telemetry::DEFAULT_HARVEST_INTERVAL;
/// use std::time::Duration;
///
/// assert_eq!(DEFAULT_HARVEST_INTERVAL, Duration::from_secs(5));
/// ```
pub const DEFAULT_HARVEST_INTERVAL: Duration = Duration::from_secs(5);
/// How long shutdown may take unless told otherwise.
///
/// ```
/// use newrelic_telemetry::DEFAULT_SHUTDOWN_TIMEOUT;
/// use std::time::Duration;
///
/// assert_eq!(DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_secs(10));
/// ```
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Items that may wait in the send queue unless told otherwise.
///
/// ```
/// assert_eq!(newrelic_telemetry::DEFAULT_MAX_QUEUED_ITEMS, 200_000);
/// ```
pub const DEFAULT_MAX_QUEUED_ITEMS: usize = 200_000;
/// Compressed bytes that may wait in the send queue unless told otherwise.
///
/// ```
/// assert_eq!(newrelic_telemetry::DEFAULT_MAX_QUEUED_BYTES, 20_000_000);
/// ```
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 20_000_000;

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
/// logs.record(Log::new("started")).await?;
///
/// let report = harvester.shutdown().await;
/// assert_eq!(report.api, "log");
/// assert_eq!(report.delivery.items_sent, 1);
/// assert!(report.completed && !report.deadline_exceeded);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HarvestReport {
    /// The API the harvester sent to: `metric`, `event`, `log` or `trace`.
    pub api: &'static str,
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
/// batch.record_count("requests", 1.0, [("route", "/")]).await?;
/// let report = harvester.shutdown().await; // flushes and sends what is left
/// assert_eq!(report.harvests, 1);
/// # Ok(()) }
/// ```
#[must_use = "dropping the handle stops the harvester (it flushes in the background)"]
pub struct Harvester {
    api: &'static str,
    token: CancellationToken,
    harvest_now: Arc<Notify>,
    state: Mutex<State>,
    stats: Box<dyn Fn() -> (DeliveryStats, RecordStats) + Send + Sync>,
}

enum State {
    Running(JoinHandle<HarvestReport>),
    Done(HarvestReport),
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
    /// logs.record(Log::new("started")).await?;
    /// assert_eq!(harvester.shutdown().await.delivery.items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub fn builder<K: Kind>(batch: Arc<K::Batch>, client: Client<K>) -> HarvesterBuilder<K> {
        HarvesterBuilder {
            batch,
            client,
            interval: DEFAULT_HARVEST_INTERVAL,
            token: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_queued_items: DEFAULT_MAX_QUEUED_ITEMS,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
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
    /// logs.record(Log::new("started")).await?;
    /// assert_eq!(harvester.shutdown().await.delivery.items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub fn spawn<K: Kind>(batch: Arc<K::Batch>, client: Client<K>) -> Harvester {
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
    /// logs.record(Log::new("started")).await?;
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
    /// logs.record(Log::new("started")).await?;
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
                    tracing::error!(api = self.api, error = %e, "harvester task ended abnormally");
                    let (delivery, record) = (self.stats)();
                    HarvestReport {
                        api: self.api,
                        harvests: 0,
                        delivery,
                        record,
                        deadline_exceeded: false,
                        completed: false,
                    }
                }
            };
            *state = State::Done(report);
        }
        match &*state {
            State::Done(report) => report.clone(),
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
    /// logs.record(Log::new("started")).await?;
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
    /// logs.record(Log::new("started")).await?;
    /// harvester.shutdown().await;
    /// assert_eq!(harvester.stats().items_sent, 1);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> DeliveryStats {
        (self.stats)().0
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
///     .max_queued_bytes(1_000_000)
///     .cancellation_token(service.clone())
///     .spawn();
///
/// batch.record_count("requests", 1.0, [("route", "/")]).await?;
/// service.cancel();
/// let report = harvester.join().await;
/// assert_eq!(report.delivery.items_sent, 1);
/// # Ok(()) }
/// ```
pub struct HarvesterBuilder<K: Kind> {
    batch: Arc<K::Batch>,
    client: Client<K>,
    interval: Duration,
    token: Option<CancellationToken>,
    shutdown_timeout: Duration,
    max_queued_items: usize,
    max_queued_bytes: usize,
}

impl<K: Kind> std::fmt::Debug for HarvesterBuilder<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarvesterBuilder")
            .field("client", &self.client)
            .field("interval", &self.interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("max_queued_items", &self.max_queued_items)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .finish_non_exhaustive()
    }
}

impl<K: Kind> HarvesterBuilder<K> {
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
    /// let batch = Arc::new(MetricBatch::new());
    /// let client = MetricClient::builder("key").endpoint("http://127.0.0.1:9/metric/v1").build()?;
    /// let harvester = Harvester::builder(batch, client).harvest_interval(Duration::from_secs(30)).spawn();
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

    /// How long the final flush and send may take once the harvester is
    /// stopped (default 10 s, at most a year); what is unsent by then is
    /// dropped and reported.
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
    /// logs.record(Log::new("slow")).await?;
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
    /// Past it the oldest waiting payload is dropped and counted.
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

    /// The most compressed bytes that may wait in the send queue (default
    /// 20 MB). Past it the oldest waiting payload is dropped and counted.
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
    /// let harvester = Harvester::builder(batch, client).max_queued_bytes(5_000_000).spawn();
    /// # harvester.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
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
            Box::new(move || (client.stats(), batch.record_stats()))
        };
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
                max_bytes: self.max_queued_bytes,
            },
            harvests: 0,
        };
        Harvester {
            api: K::API.name,
            token,
            harvest_now,
            state: Mutex::new(State::Running(tokio::spawn(task.run()))),
            stats,
        }
    }
}

/// Payloads waiting to be sent, capped in items and bytes; past a cap the
/// oldest payload is dropped (new data is worth more, and old data is the
/// likeliest to fall outside the APIs' timestamp windows).
struct Queue<T> {
    payloads: VecDeque<Payload<T>>,
    items: usize,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl<T> Queue<T> {
    fn push<K: Kind<Item = T>>(&mut self, payload: Payload<T>, sender: &Sender<K>) {
        while !self.payloads.is_empty()
            && (self.items + payload.len() > self.max_items
                || self.bytes + payload.body.len() > self.max_bytes)
        {
            if let Some(oldest) = self.pop() {
                sender.report_drop(&dropped_report::<K>(&oldest, DropReason::QueueFull));
            }
        }
        self.items += payload.len();
        self.bytes += payload.body.len();
        self.payloads.push_back(payload);
    }

    fn pop(&mut self) -> Option<Payload<T>> {
        let payload = self.payloads.pop_front()?;
        self.items -= payload.len();
        self.bytes -= payload.body.len();
        Some(payload)
    }
}

fn dropped_report<K: Kind>(payload: &Payload<K::Item>, reason: DropReason) -> PayloadReport {
    PayloadReport::dropped(
        K::API.name,
        Some(payload.request_id),
        payload.len(),
        payload.body.len(),
        0,
        reason,
    )
}

type Delivery<'a> = Pin<Box<dyn Future<Output = Vec<PayloadReport>> + Send + 'a>>;

/// The payload being delivered: its size, request id, and the delivery.
struct InFlight<'a> {
    items: usize,
    bytes: usize,
    request_id: uuid::Uuid,
    delivery: Delivery<'a>,
}

struct Task<K: Kind> {
    batch: Arc<K::Batch>,
    client: Client<K>,
    interval: Duration,
    shutdown_timeout: Duration,
    token: CancellationToken,
    harvest_now: Arc<Notify>,
    queue: Queue<K::Item>,
    harvests: u64,
}

impl<K: Kind> Task<K> {
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
                _ = async {
                    match in_flight.as_mut() {
                        Some(f) => f.delivery.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if in_flight.is_some() => in_flight = None,
                _ = ticker.tick() => self.harvest(sender).await,
                () = self.batch.harvest_requested() => self.harvest(sender).await,
                () = self.harvest_now.notified() => self.harvest(sender).await,
            }
        }

        // Stopped: close the batch (later recordings are refused and counted),
        // flush it one last time (outside the deadline, so that no flushed
        // item can be lost uncounted), then send everything by the deadline.
        self.batch.close().await;
        self.harvest(sender).await;
        let deadline = Instant::now() + self.shutdown_timeout;
        let mut current: Option<(usize, usize, uuid::Uuid)> = None;
        let drained = tokio::time::timeout_at(deadline, async {
            if let Some(f) = in_flight.as_mut() {
                current = Some((f.items, f.bytes, f.request_id));
                f.delivery.as_mut().await;
            }
            while let Some(payload) = self.queue.pop() {
                resolved.store(0, Ordering::Relaxed);
                current = Some((payload.len(), payload.body.len(), payload.request_id));
                sender.deliver(payload, &resolved).await;
            }
            current = None;
        })
        .await
        .is_ok();
        drop(in_flight);

        if !drained {
            let mut lost = 0;
            if let Some((items, bytes, request_id)) = current {
                let unresolved = items.saturating_sub(resolved.load(Ordering::Relaxed));
                if unresolved > 0 {
                    lost += unresolved;
                    let report = PayloadReport::dropped(
                        K::API.name,
                        Some(request_id),
                        unresolved,
                        bytes,
                        0,
                        DropReason::ShutdownDeadline,
                    );
                    sender.report_drop(&report);
                }
            }
            while let Some(payload) = self.queue.pop() {
                lost += payload.len();
                sender.report_drop(&dropped_report::<K>(&payload, DropReason::ShutdownDeadline));
            }
            tracing::error!(
                api = K::API.name,
                items = lost,
                timeout_ms = self.shutdown_timeout.as_millis() as u64,
                "shutdown deadline reached; unsent telemetry dropped"
            );
        }

        HarvestReport {
            api: K::API.name,
            harvests: self.harvests,
            delivery: client.stats(),
            record: self.batch.record_stats(),
            deadline_exceeded: !drained,
            completed: true,
        }
    }

    /// Flushes the batch and queues its payloads. An empty flush sends nothing.
    async fn harvest(&mut self, sender: &Sender<K>) {
        self.harvests += 1;
        let (items, common) = self.batch.flush().await;
        if items.is_empty() {
            return;
        }
        tracing::trace!(api = K::API.name, items = items.len(), "harvested");
        let Prepared { payloads, .. } = sender.prepare(items, common).await;
        for payload in payloads {
            self.queue.push(payload, sender);
        }
    }
}

fn start<'a, K: Kind>(
    payload: Payload<K::Item>,
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
