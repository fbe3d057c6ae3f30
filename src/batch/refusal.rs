//! What a batch does with an item it refuses: counts it (always), logs it at
//! WARN (at most once per harvest interval for each reason), and hands it to
//! the caller's callback (if one was given), so that recording itself never
//! has to return an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::RecordCounters;
use crate::error::RecordError;

/// A callback told of every item a batch refuses; see
/// [`MetricBatchBuilder::on_refused`](crate::batch::MetricBatchBuilder::on_refused).
#[derive(Clone)]
pub(crate) struct OnRefused(Arc<dyn Fn(&RecordError) + Send + Sync>);

impl OnRefused {
    pub(crate) fn new(f: impl Fn(&RecordError) + Send + Sync + 'static) -> Self {
        OnRefused(Arc::new(f))
    }
}

impl std::fmt::Debug for OnRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnRefused(..)")
    }
}

thread_local! {
    /// Whether this thread is running a refusal callback.
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The reasons a refusal is logged under (one WARN each per interval).
#[derive(Clone, Copy)]
pub(crate) enum Reason {
    Invalid,
    BufferFull,
    SeriesLimit,
    Closed,
    OverBudget,
}

const REASONS: usize = 5;

impl Reason {
    /// Every reason, in the order of their values.
    const ALL: [Reason; REASONS] = [
        Reason::Invalid,
        Reason::BufferFull,
        Reason::SeriesLimit,
        Reason::Closed,
        Reason::OverBudget,
    ];

    fn of(error: &RecordError) -> Reason {
        match error {
            RecordError::BufferFull { .. } => Reason::BufferFull,
            RecordError::SeriesLimitReached { .. } => Reason::SeriesLimit,
            RecordError::Closed => Reason::Closed,
            RecordError::MemoryBudgetFull { .. } => Reason::OverBudget,
            _ => Reason::Invalid,
        }
    }

    /// The `RecordStats` field the reason is counted in.
    fn field(self) -> &'static str {
        match self {
            Reason::Invalid => "items_dropped_invalid",
            Reason::BufferFull => "items_dropped_buffer_full",
            Reason::SeriesLimit => "series_dropped_limit",
            Reason::Closed => "items_dropped_closed",
            Reason::OverBudget => "items_dropped_over_budget",
        }
    }
}

/// A batch's refusals: counts, the WARN limiter and the callback.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    pub(crate) counts: RecordCounters,
    /// Harvest intervals started (each flush starts one).
    interval: AtomicU64,
    /// The interval (plus one) each reason was last logged in.
    warned: [AtomicU64; REASONS],
    /// Warnings owed, per reason: refusals made inside a `tracing`
    /// callback (the tracing layer's), where `tracing` dispatches no event,
    /// logged when the next interval starts instead.
    owed: std::sync::Mutex<[Option<RecordError>; REASONS]>,
    on_refused: Option<OnRefused>,
}

impl Refusals {
    pub(crate) fn new(on_refused: Option<OnRefused>) -> Self {
        Refusals {
            on_refused,
            ..Refusals::default()
        }
    }

    /// Starts a new harvest interval: logs the warnings owed, and each
    /// reason may be logged once more.
    pub(crate) fn next_interval(&self) {
        let owed = match self.owed.lock() {
            Ok(mut owed) => std::mem::take(&mut *owed),
            Err(_) => Default::default(),
        };
        for (reason, error) in Reason::ALL.into_iter().zip(owed) {
            if let Some(error) = error {
                warn(reason, &error);
            }
        }
        self.interval.fetch_add(1, Ordering::Relaxed);
    }

    /// [`refused`](Self::refused), from inside a `tracing` callback: the
    /// warning, if one is due, is logged when the next interval starts
    /// (`tracing` drops events emitted while it dispatches another).
    #[cold]
    pub(crate) fn refused_in_callback(&self, error: RecordError) -> RecordError {
        let reason = Reason::of(&error);
        self.count(reason);
        if self.should_warn(reason) {
            if let Ok(mut owed) = self.owed.lock() {
                owed[reason as usize].get_or_insert_with(|| error.clone());
            }
        }
        self.call_back(&error);
        error
    }

    /// Counts a refusal, logs it (rate-limited), tells the callback, and
    /// hands the error back.
    #[cold]
    pub(crate) fn refused(&self, error: RecordError) -> RecordError {
        let reason = Reason::of(&error);
        self.count(reason);
        if self.should_warn(reason) {
            warn(reason, &error);
        }
        self.call_back(&error);
        error
    }

    /// Counts a refusal where there is no caller to hand an error to (a
    /// handle's write), building the error only if it is logged or a
    /// callback wants it.
    #[cold]
    pub(crate) fn refused_quietly(&self, reason: Reason, error: impl FnOnce() -> RecordError) {
        self.count(reason);
        let warn_now = self.should_warn(reason);
        if warn_now || self.on_refused.is_some() {
            let error = error();
            if warn_now {
                warn(reason, &error);
            }
            self.call_back(&error);
        }
    }

    /// Hands `error` to the callback, unless this thread is in the callback
    /// already: a callback that records into a batch that refuses it (a
    /// closed one) would otherwise call itself until the stack overflows.
    fn call_back(&self, error: &RecordError) {
        let Some(OnRefused(f)) = &self.on_refused else {
            return;
        };
        if IN_CALLBACK.with(|busy| busy.replace(true)) {
            return;
        }
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                IN_CALLBACK.with(|busy| busy.set(false));
            }
        }
        let _done = Done;
        f(error);
    }

    /// Counts `n` text values cut to their bound.
    pub(crate) fn truncated(&self, n: u64) {
        RecordCounters::add(&self.counts.values_truncated, n);
    }

    fn count(&self, reason: Reason) {
        let counts = &self.counts;
        let counter = match reason {
            Reason::Invalid => &counts.items_dropped_invalid,
            Reason::BufferFull => &counts.items_dropped_buffer_full,
            Reason::SeriesLimit => &counts.series_dropped_limit,
            Reason::Closed => &counts.items_dropped_closed,
            Reason::OverBudget => &counts.items_dropped_over_budget,
        };
        RecordCounters::add(counter, 1);
    }

    fn should_warn(&self, reason: Reason) -> bool {
        let now = self.interval.load(Ordering::Relaxed) + 1;
        let last = &self.warned[reason as usize];
        last.load(Ordering::Relaxed) != now && last.swap(now, Ordering::Relaxed) != now
    }
}

fn warn(reason: Reason, error: &RecordError) {
    tracing::warn!(
        %error,
        counted_in = reason.field(),
        "telemetry refused an item; further refusals for this reason are counted but not logged until the next harvest"
    );
}
