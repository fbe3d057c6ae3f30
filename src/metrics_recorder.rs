//! A [`metrics`] facade recorder (feature `metrics`): `metrics::counter!`,
//! `gauge!` and `histogram!` recorded into a [`Telemetry`](crate::Telemetry)'s
//! metric batch, and shipped by its harvester with everything else.
//!
//! | facade | New Relic | per harvest interval |
//! |---|---|---|
//! | counter (`increment`, `absolute`) | count | the increase over the interval |
//! | gauge (`set`, `increment`, `decrement`) | gauge | the last value, once set: at the time it was set, or, in an interval it was not written to, at the harvest's time (as an exporter that is scraped shows it) |
//! | histogram (`record`) | distribution (or summary) | the values' count, sum, min, max and exponential buckets, from which New Relic reads percentiles; with [`HistogramKind::Summary`], count, sum, min and max |
//!
//! A key's labels become string attributes, checked by the same rules as any
//! other metric's: a series refused (a reserved or too long attribute, a bad
//! name, the series limit, the memory budget) is counted once in
//! [`RecordStats`](crate::batch::RecordStats) when it is registered, and its
//! recordings are ignored; one refused for lack of room (series limit or
//! memory budget) is registered anew, and so tried again, by the next
//! `counter!` (or `gauge!`, `histogram!`) call for its key. Descriptions and
//! units (`describe_counter!` and the like) are ignored, and so is the
//! metadata (target, level) of the call site.
//!
//! Each key is bound once to a [`CounterHandle`], [`GaugeHandle`],
//! [`DistributionHandle`] or [`SummaryHandle`]
//! of the batch, kept in a `metrics_util` registry; so recording into a
//! series that exists takes a read lock on a registry shard and a lock-free
//! write, and allocates nothing. A series registered through the facade
//! stays in the batch for as long as the recorder lives, and is sent for each
//! interval in which it was written to.
//!
//! ```
//! use newrelic_telemetry::test_util::TestIngestServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestIngestServer::start().await?;
//! let telemetry = server.telemetry_builder().build()?;
//! // In a service: `telemetry.install_metrics_recorder()?`, once, in `main`.
//! let recorder = telemetry.metrics_recorder();
//! metrics::with_local_recorder(&recorder, || {
//!     metrics::counter!("jobs.done", "queue" => "mail").increment(2);
//!     metrics::counter!("jobs.done", "queue" => "mail").increment(1);
//!     metrics::gauge!("jobs.waiting").set(7.0);
//!     metrics::histogram!("job.ms").record(12.0);
//!     metrics::histogram!("job.ms").record(30.0);
//! });
//! telemetry.shutdown().await;
//!
//! let metrics = server.metrics();
//! let find = |name: &str| metrics.iter().find(|m| m["name"] == name).unwrap().clone();
//! assert_eq!(find("jobs.done")["type"], "count");
//! assert_eq!(find("jobs.done")["value"], 3.0);
//! assert_eq!(find("jobs.done")["attributes"]["queue"], "mail");
//! assert_eq!(find("jobs.waiting")["value"], 7.0);
//! // Histograms are distributions, sent over OTLP.
//! let job = &server.distributions()[0];
//! assert_eq!(job.name, "job.ms");
//! assert_eq!((job.distribution.count(), job.distribution.max()), (2, Some(30.0)));
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics::{CounterFn, GaugeFn, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use metrics_util::registry::{Registry, Storage};
use tokio::runtime::Handle;

use crate::attributes::{AsAttributes, ValueRef};
use crate::batch::{
    CounterHandle, DistributionHandle, GaugeHandle, HistogramKind, MetricBatch, SummaryHandle,
};
use crate::distribution::Distribution;
use crate::error::RecordError;
use crate::metric::Summary;

/// A [`metrics::Recorder`] that records into a metric batch: see the
/// [module documentation](self).
///
/// Made by [`Telemetry::metrics_recorder`](crate::Telemetry::metrics_recorder)
/// (every call gives the same recorder, cheaply cloned) and installed as the
/// process's recorder by
/// [`Telemetry::install_metrics_recorder`](crate::Telemetry::install_metrics_recorder);
/// or used for a scope with [`metrics::with_local_recorder`] or a thread with
/// [`metrics::set_default_local_recorder`].
#[derive(Clone)]
pub struct NewRelicRecorder {
    registry: Arc<Registry<Key, Binder>>,
}

impl fmt::Debug for NewRelicRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRelicRecorder")
            .field("batch", &self.registry.storage().batch)
            .finish_non_exhaustive()
    }
}

impl NewRelicRecorder {
    /// A disabled `Telemetry`'s recorder: every key gets a handle that does
    /// nothing, and no series is made.
    fn is_off(&self) -> bool {
        self.registry.storage().batch.is_off()
    }

    /// A recorder into `batch`; a series whose shard is busy when it is
    /// registered is bound by a task spawned on `runtime`.
    pub(crate) fn new(batch: Arc<MetricBatch>, runtime: Handle) -> Self {
        NewRelicRecorder {
            registry: Arc::new(Registry::new(Binder { batch, runtime })),
        }
    }
}

/// The error of [`Telemetry::install_metrics_recorder`](crate::Telemetry::install_metrics_recorder):
/// the process already has a global `metrics` recorder (this one or another),
/// and a global recorder can be set only once.
///
/// ```
/// use newrelic_telemetry::test_util::TestIngestServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// let telemetry = server.telemetry_builder().build()?;
/// telemetry.install_metrics_recorder()?;
/// let again = telemetry.install_metrics_recorder().unwrap_err();
/// assert!(again.to_string().contains("already installed"));
/// # telemetry.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct InstallError(());

impl InstallError {
    pub(crate) fn new() -> Self {
        InstallError(())
    }
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a global `metrics` recorder is already installed in this process (it can be set \
             only once); use the telemetry's recorder with `metrics::with_local_recorder` or \
             `metrics::set_default_local_recorder` instead",
        )
    }
}

impl std::error::Error for InstallError {}

impl metrics::Recorder for NewRelicRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> metrics::Counter {
        if self.is_off() {
            return metrics::Counter::noop();
        }
        let series = self.registry.get_or_create_counter(key, Arc::clone);
        if series.retry() {
            // Refused for lack of room: the next registration tries again.
            self.registry.delete_counter(key);
        }
        metrics::Counter::from_arc(series)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> metrics::Gauge {
        if self.is_off() {
            return metrics::Gauge::noop();
        }
        let series = self.registry.get_or_create_gauge(key, Arc::clone);
        if series.retry() {
            self.registry.delete_gauge(key);
        }
        metrics::Gauge::from_arc(series)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        if self.is_off() {
            return metrics::Histogram::noop();
        }
        let series = self.registry.get_or_create_histogram(key, Arc::clone);
        if series.retry() {
            self.registry.delete_histogram(key);
        }
        metrics::Histogram::from_arc(series)
    }
}

/// A key's labels, as attributes (string values).
#[derive(Clone, Copy)]
struct Labels<'k>(&'k Key);

impl AsAttributes for Labels<'_> {
    fn attribute_count(&self) -> usize {
        self.0.labels().len()
    }

    fn for_each_attribute<'s>(&'s self, mut f: impl FnMut(&'s str, ValueRef<'s>)) {
        for label in self.0.labels() {
            f(label.key(), ValueRef::Str(label.value()));
        }
    }
}

/// The registry's storage: makes the series of a new key and binds it to
/// the batch.
struct Binder {
    batch: Arc<MetricBatch>,
    runtime: Handle,
}

impl Binder {
    /// Binds now if the series' shard is free; otherwise (it is for a moment
    /// held, and a registration must not wait) a task binds it.
    fn make<H: Bind>(&self, key: &Key) -> Arc<Series<H>> {
        let series = Arc::new(Series::<H>::default());
        match H::try_bind(&self.batch, key.name(), Labels(key)) {
            Ok(Some(handle)) => series.finish(Ok(handle)),
            Ok(None) => {
                let (batch, key, pending) = (self.batch.clone(), key.clone(), series.clone());
                self.runtime.spawn(async move {
                    let bound = H::bind(&batch, key.name(), Labels(&key)).await;
                    pending.finish(bound);
                });
            }
            Err(e) => series.finish(Err(e)),
        }
        series
    }
}

impl Storage<Key> for Binder {
    type Counter = Arc<Series<CounterHandle>>;
    type Gauge = Arc<Series<GaugeHandle>>;
    type Histogram = Arc<Series<HistogramHandle>>;

    fn counter(&self, key: &Key) -> Self::Counter {
        self.make(key)
    }

    fn gauge(&self, key: &Key) -> Self::Gauge {
        self.make(key)
    }

    fn histogram(&self, key: &Key) -> Self::Histogram {
        self.make(key)
    }
}

/// A handle of the batch that a facade series binds to.
trait Bind: Sized + Send + Sync + 'static {
    /// What the facade series keeps besides the handle.
    type State: Default + Send + Sync;
    /// What is recorded before the handle is bound.
    type Held: Default + Send;

    fn try_bind(
        batch: &MetricBatch,
        name: &str,
        labels: Labels<'_>,
    ) -> Result<Option<Self>, RecordError>;

    fn bind<'a>(
        batch: &'a MetricBatch,
        name: &'a str,
        labels: Labels<'a>,
    ) -> impl Future<Output = Result<Self, RecordError>> + Send + 'a;

    /// Records what was held before binding.
    fn release(&self, state: &Self::State, held: Self::Held);
}

/// One facade series: its handle once bound (`None`: refused), and what was
/// recorded before that.
struct Series<H: Bind> {
    handle: OnceLock<Option<H>>,
    /// Refused for lack of room: to register again.
    retry: AtomicBool,
    held: Mutex<H::Held>,
    state: H::State,
}

impl<H: Bind> Default for Series<H> {
    fn default() -> Self {
        Series {
            handle: OnceLock::new(),
            retry: AtomicBool::new(false),
            held: Mutex::new(H::Held::default()),
            state: H::State::default(),
        }
    }
}

impl<H: Bind> Series<H> {
    /// Records through the handle, or holds the value until it is bound
    /// (`hold`); a refused series ignores it.
    #[inline]
    fn write(&self, write: impl FnOnce(&H), hold: impl FnOnce(&mut H::Held)) {
        match self.handle.get() {
            Some(Some(handle)) => write(handle),
            Some(None) => {}
            None => self.hold(write, hold),
        }
    }

    #[cold]
    #[inline(never)]
    fn hold(&self, write: impl FnOnce(&H), hold: impl FnOnce(&mut H::Held)) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock: the binder sets the handle before it
        // takes the lock to release what is held.
        match self.handle.get() {
            Some(Some(handle)) => {
                drop(held);
                write(handle);
            }
            Some(None) => {}
            None => hold(&mut held),
        }
    }

    /// Binds (or refuses) the series, then records what was held.
    fn finish(&self, bound: Result<H, RecordError>) {
        let handle = match bound {
            Ok(handle) => Some(handle),
            Err(e) => {
                let room = matches!(
                    e,
                    RecordError::SeriesLimitReached { .. } | RecordError::MemoryBudgetFull { .. }
                );
                self.retry.store(room, Ordering::Relaxed);
                None
            }
        };
        let _ = self.handle.set(handle);
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(Some(handle)) = self.handle.get() {
            handle.release(&self.state, held);
        }
    }

    fn retry(&self) -> bool {
        self.retry.load(Ordering::Relaxed)
    }
}

/// A facade counter: the total so far (for `absolute`).
#[derive(Default)]
struct Total(AtomicU64);

impl Bind for CounterHandle {
    type State = Total;
    /// The increase not yet added.
    type Held = u64;

    fn try_bind(
        batch: &MetricBatch,
        name: &str,
        labels: Labels<'_>,
    ) -> Result<Option<Self>, RecordError> {
        batch.try_counter(name, &labels)
    }

    fn bind<'a>(
        batch: &'a MetricBatch,
        name: &'a str,
        labels: Labels<'a>,
    ) -> impl Future<Output = Result<Self, RecordError>> + Send + 'a {
        batch.counter(name, labels)
    }

    fn release(&self, _: &Total, held: u64) {
        if held > 0 {
            self.add(held as f64);
        }
    }
}

impl Series<CounterHandle> {
    #[inline]
    fn add(&self, increase: u64) {
        self.write(
            |counter| counter.add(increase as f64),
            |held| *held = held.saturating_add(increase),
        );
    }
}

impl CounterFn for Series<CounterHandle> {
    /// Adds `value` to this interval's count.
    fn increment(&self, value: u64) {
        self.state.0.fetch_add(value, Ordering::Relaxed);
        self.add(value);
    }

    /// Raises the total to `value`, if it is higher (as `metrics` defines
    /// it: a lower value, from a caller racing with another, is ignored);
    /// the interval's count grows by the difference.
    fn absolute(&self, value: u64) {
        let before = self.state.0.fetch_max(value, Ordering::Relaxed);
        if value > before {
            self.add(value - before);
        }
    }
}

/// A facade gauge's value (the bits of an `f64`), which `increment` and
/// `decrement` change.
#[derive(Default)]
struct Level(AtomicU64);

/// Tries at setting the handle to the gauge's value while other threads
/// change it (a stale value is set at most this many times in a row).
const GAUGE_PUBLISH_TRIES: usize = 4;

impl Bind for GaugeHandle {
    type State = Level;
    /// Whether the value changed before binding.
    type Held = bool;

    /// A facade gauge is kept: once set, it is sent at every harvest with
    /// its last value, as exporters that are scraped show it.
    fn try_bind(
        batch: &MetricBatch,
        name: &str,
        labels: Labels<'_>,
    ) -> Result<Option<Self>, RecordError> {
        let gauge = batch.try_gauge(name, &labels)?;
        if let Some(gauge) = &gauge {
            gauge.keep_sending();
        }
        Ok(gauge)
    }

    async fn bind<'a>(
        batch: &'a MetricBatch,
        name: &'a str,
        labels: Labels<'a>,
    ) -> Result<Self, RecordError> {
        let gauge = batch.gauge(name, labels).await?;
        gauge.keep_sending();
        Ok(gauge)
    }

    fn release(&self, level: &Level, changed: bool) {
        if changed {
            publish(self, level);
        }
    }
}

/// Sets the handle to the gauge's value, again if it changed meanwhile.
#[inline]
fn publish(gauge: &GaugeHandle, level: &Level) {
    for _ in 0..GAUGE_PUBLISH_TRIES {
        let bits = level.0.load(Ordering::Acquire);
        gauge.set(f64::from_bits(bits));
        if level.0.load(Ordering::Acquire) == bits {
            return;
        }
    }
}

impl Series<GaugeHandle> {
    #[inline]
    fn publish(&self) {
        self.write(
            |gauge| publish(gauge, &self.state),
            |changed| *changed = true,
        );
    }

    /// A value that is not finite goes to the handle, which refuses and
    /// counts it, and leaves the gauge's value as it was.
    #[cold]
    fn refuse(&self, value: f64) {
        self.write(|gauge| gauge.set(value), |_| {});
    }
}

impl GaugeFn for Series<GaugeHandle> {
    fn increment(&self, value: f64) {
        let changed = self
            .state
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let sum = f64::from_bits(bits) + value;
                sum.is_finite().then(|| sum.to_bits())
            });
        match changed {
            Ok(_) => self.publish(),
            Err(bits) => self.refuse(f64::from_bits(bits) + value),
        }
    }

    fn decrement(&self, value: f64) {
        self.increment(-value);
    }

    fn set(&self, value: f64) {
        if !value.is_finite() {
            return self.refuse(value);
        }
        self.state.0.store(value.to_bits(), Ordering::Release);
        self.publish();
    }
}

/// What a facade histogram binds to: a distribution, or a summary where the
/// batch keeps histograms as summaries.
enum HistogramHandle {
    Distribution(DistributionHandle),
    Summary(SummaryHandle),
}

impl Bind for HistogramHandle {
    type State = ();
    /// The observations not yet recorded (finite ones only: others would
    /// spoil the rest).
    type Held = Option<Distribution>;

    fn try_bind(
        batch: &MetricBatch,
        name: &str,
        labels: Labels<'_>,
    ) -> Result<Option<Self>, RecordError> {
        Ok(match batch.histogram_kind() {
            HistogramKind::Summary => batch.try_summary(name, &labels)?.map(Self::Summary),
            HistogramKind::Distribution => batch
                .try_distribution(name, &labels)?
                .map(Self::Distribution),
        })
    }

    async fn bind<'a>(
        batch: &'a MetricBatch,
        name: &'a str,
        labels: Labels<'a>,
    ) -> Result<Self, RecordError> {
        Ok(match batch.histogram_kind() {
            HistogramKind::Summary => Self::Summary(batch.summary(name, labels).await?),
            HistogramKind::Distribution => {
                Self::Distribution(batch.distribution(name, labels).await?)
            }
        })
    }

    fn release(&self, _: &(), held: Option<Distribution>) {
        let Some(held) = held else { return };
        match self {
            HistogramHandle::Distribution(d) => d.merge(&held),
            HistogramHandle::Summary(s) => {
                if let (Some(min), Some(max)) = (held.min(), held.max()) {
                    s.merge(&Summary::new(held.count(), held.sum(), min, max));
                }
            }
        }
    }
}

/// Adds `count` observations of `value` to what is held before binding.
fn hold(held: &mut Option<Distribution>, value: f64, count: u64) {
    // A value that is not finite, or a sum that would not be, is left out.
    let _ = held
        .get_or_insert_with(Distribution::new)
        .record_n(value, count);
}

impl HistogramFn for Series<HistogramHandle> {
    fn record(&self, value: f64) {
        self.write(
            |histogram| match histogram {
                HistogramHandle::Distribution(d) => d.record(value),
                HistogramHandle::Summary(s) => s.record(value),
            },
            |held| hold(held, value, 1),
        );
    }

    fn record_many(&self, value: f64, count: usize) {
        if count == 0 {
            return;
        }
        let count = count as u64;
        self.write(
            |histogram| match histogram {
                HistogramHandle::Distribution(d) => d.record_many(value, count),
                HistogramHandle::Summary(s) => {
                    s.merge(&Summary::new(count, value * count as f64, value, value));
                }
            },
            |held| hold(held, value, count),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metric;

    /// A registration that finds its shard locked does not wait: a task
    /// binds the series later, and what was recorded meanwhile lands.
    #[tokio::test(flavor = "current_thread")]
    async fn a_series_whose_shard_is_busy_is_bound_by_a_task_and_loses_nothing() {
        for kind in [HistogramKind::Distribution, HistogramKind::Summary] {
            busy_shard_binds_later(kind).await;
        }
    }

    async fn busy_shard_binds_later(histograms: HistogramKind) {
        let batch = Arc::new(MetricBatch::builder().histogram_kind(histograms).build());
        let recorder = NewRelicRecorder::new(batch.clone(), Handle::current());
        let held = batch.hold_shards();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("late.count").increment(2);
            metrics::counter!("late.count").absolute(10); // total 2 -> 10
            metrics::gauge!("late.gauge").set(3.0);
            metrics::gauge!("late.gauge").increment(1.5);
            metrics::histogram!("late.histogram").record(4.0);
            metrics::histogram!("late.histogram").record_many(1.0, 3);
        });
        assert_eq!(
            batch.series_count(),
            0,
            "nothing bound while the shards are held"
        );
        drop(held);
        // Before the binding tasks have run: still held by the facade.
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("late.count").increment(1);
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(batch.series_count(), 3);
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("late.count").increment(4); // bound: straight in
        });

        let (metrics, _) = batch.flush().await;
        let (points, _) = batch.distributions().flush().await;
        let summaries = histograms == HistogramKind::Summary;
        assert_eq!(metrics.len(), if summaries { 3 } else { 2 });
        assert_eq!(points.len(), if summaries { 0 } else { 1 });
        for metric in &metrics {
            match metric {
                Metric::Count(c) => assert_eq!(c.value(), 15.0),
                Metric::Gauge(g) => assert_eq!(g.value(), 4.5),
                Metric::Summary(s) => assert_eq!(s.summary(), Summary::new(4, 7.0, 1.0, 4.0)),
            }
        }
        if let Some(point) = points.first() {
            // What was held, merged whole: the same as recorded directly.
            let mut direct = Distribution::new();
            for v in [4.0, 1.0, 1.0, 1.0] {
                direct.record(v).unwrap();
            }
            let d = point.distribution();
            assert_eq!(
                (d.count(), d.sum(), d.min(), d.max()),
                (4, 7.0, Some(1.0), Some(4.0))
            );
            assert_eq!(d.scale(), 5);
            let mut lowered = Distribution::with_max_size(2).unwrap();
            lowered.merge(&direct).unwrap();
            let mut got = Distribution::with_max_size(2).unwrap();
            got.merge(d).unwrap();
            assert_eq!(got, lowered);
            assert_eq!(d.quantile(0.5).map(|p| (p - 1.0).abs() < 0.01), Some(true));
        }
        assert_eq!(batch.record_stats(), crate::batch::RecordStats::default());
    }

    /// A series refused for lack of room is registered anew, and bound, by
    /// a later call once there is room; each refusal is counted.
    #[tokio::test(flavor = "current_thread")]
    async fn a_series_refused_for_lack_of_room_is_tried_again() {
        let batch = Arc::new(MetricBatch::builder().max_series(2).build());
        let recorder = NewRelicRecorder::new(batch.clone(), Handle::current());
        batch.record_count("string.call", 1.0, ()).await;
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("facade").increment(1); // no room: ignored
        });
        assert_eq!(batch.record_stats().series_dropped_limit, 1);
        batch.flush().await; // the string call's series leaves
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("facade").increment(2);
            metrics::counter!("facade").increment(3);
        });
        let (metrics, _) = batch.flush().await;
        match &metrics[..] {
            [Metric::Count(c)] => assert_eq!((c.name(), c.value()), ("facade", 5.0)),
            other => panic!("unexpected: {other:?}"),
        }
        assert_eq!(batch.record_stats().series_dropped_limit, 1);
    }
}
