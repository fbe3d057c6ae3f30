//! Wall-clock helpers. Batches anchor the wall clock to tokio's clock so that
//! intervals follow tokio's (pausable) time in tests and never run backwards.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a time before the Unix epoch reads as: no API takes it, and
/// validation refuses it like any timestamp past a signed 64-bit count.
pub(crate) const BEFORE_EPOCH: u64 = u64::MAX;

/// Milliseconds since the Unix epoch for `time` ([`BEFORE_EPOCH`] before it).
pub(crate) fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(duration_millis)
        .unwrap_or(BEFORE_EPOCH)
}

/// The current wall-clock time in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    millis_since_epoch(SystemTime::now())
}

/// Whole milliseconds in `d`, saturating.
pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An interval's length in whole milliseconds, at least 1 (the APIs take
/// only positive `interval.ms`).
pub(crate) fn interval_millis(d: Duration) -> u64 {
    duration_millis(d).max(1)
}

/// The coarsest a cheap clock may be for gauge timestamps: a set's time
/// stays within a few milliseconds of the set.
#[cfg(any(target_os = "linux", target_os = "android"))]
const COARSE_MAX_RESOLUTION_NS: i64 = 4_000_000;

/// A monotonic clock in milliseconds that is cheap to read, for stamping
/// gauge sets: Linux's `CLOCK_MONOTONIC_COARSE` (the time of the last
/// scheduler tick, read from the vDSO without a hardware counter), where its
/// resolution is at most 4 ms. `None` where there is no such clock (then the
/// caller reads tokio's clock).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoarseClock(());

impl CoarseClock {
    /// The coarse clock, if this platform has one fine enough.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn new() -> Option<Self> {
        use rustix::time::{ClockId, clock_getres};
        let res = clock_getres(ClockId::MonotonicCoarse);
        (res.tv_sec == 0 && res.tv_nsec > 0 && res.tv_nsec <= COARSE_MAX_RESOLUTION_NS)
            .then_some(CoarseClock(()))
    }

    /// The coarse clock, if this platform has one fine enough.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) fn new() -> Option<Self> {
        None
    }

    /// Milliseconds on the coarse clock (from an arbitrary origin).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[inline(always)]
    pub(crate) fn now_ms(self) -> u64 {
        use rustix::time::{ClockId, clock_gettime};
        let t = clock_gettime(ClockId::MonotonicCoarse);
        // A monotonic clock reads no negative fields.
        let (secs, nanos) = (
            u64::try_from(t.tv_sec).unwrap_or(0),
            u64::try_from(t.tv_nsec).unwrap_or(0),
        );
        secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
    }

    /// Milliseconds on the coarse clock (never built on this platform).
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) fn now_ms(self) -> u64 {
        0
    }
}

/// How far the wall clock may drift from the monotonic clock before interval
/// timestamps follow it again (an NTP step, a suspended VM).
const WALL_CLOCK_STEP: Duration = Duration::from_secs(30);

/// A wall clock that advances with `tokio::time::Instant`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base_ms: u64,
    base: tokio::time::Instant,
}

impl Clock {
    /// Anchors a clock at the present moment.
    pub(crate) fn start() -> Self {
        Clock {
            base_ms: now_ms(),
            base: tokio::time::Instant::now(),
        }
    }

    /// Ends the interval this clock anchors and starts the next one now.
    ///
    /// Returns the ended interval's clock. The next interval starts exactly
    /// where the ended one ends, so consecutive intervals tile; only if the
    /// wall clock was stepped by more than [`WALL_CLOCK_STEP`] meanwhile does
    /// the new anchor follow the wall clock instead.
    pub(crate) fn roll(&mut self) -> Clock {
        let now = tokio::time::Instant::now();
        let tiled = self
            .base_ms
            .saturating_add(duration_millis(now.saturating_duration_since(self.base)));
        let wall = now_ms();
        let base_ms = if tiled.abs_diff(wall) > duration_millis(WALL_CLOCK_STEP) {
            wall
        } else {
            tiled
        };
        std::mem::replace(self, Clock { base_ms, base: now })
    }

    /// The wall-clock time of the anchor, in ms since the epoch.
    pub(crate) fn start_ms(&self) -> u64 {
        self.base_ms
    }

    /// The anchor on tokio's clock.
    pub(crate) fn instant(&self) -> tokio::time::Instant {
        self.base
    }

    /// Milliseconds elapsed on tokio's clock since the anchor.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        duration_millis(self.base.elapsed())
    }

    /// The present wall-clock time according to this clock.
    pub(crate) fn now_ms(&self) -> u64 {
        self.base_ms.saturating_add(self.elapsed_ms())
    }
}
