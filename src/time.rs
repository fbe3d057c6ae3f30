//! Wall-clock helpers. Batches anchor the wall clock to tokio's clock so that
//! intervals follow tokio's (pausable) time in tests and never run backwards.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch for `time` (0 before the epoch).
pub(crate) fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| duration_millis(d))
        .unwrap_or(0)
}

/// The current wall-clock time in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    millis_since_epoch(SystemTime::now())
}

/// Whole milliseconds in `d`, saturating.
pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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
