//! The order in which a `Telemetry` stops, whoever asks: the tracing layers'
//! workers drain their channels into the batches first, then the harvesters
//! close the batches, flush them and send. `shutdown()` runs it, and so does a
//! watcher task when the token given to the builder (or
//! `Telemetry::cancellation_token()`) is cancelled elsewhere.

use tokio_util::sync::CancellationToken;

#[cfg(feature = "tracing-layer")]
use std::sync::Arc;
#[cfg(feature = "tracing-layer")]
use tokio::task::JoinHandle;

#[cfg(feature = "tracing-layer")]
use crate::tracing_layer::{LayerCounters, LayerStats};

/// What stops, in order.
pub(super) struct Lifecycle {
    /// The harvesters' own token: cancelled last, by [`Lifecycle::stop`] only
    /// (or when the `Telemetry` is dropped).
    pub(super) harvesters: CancellationToken,
    /// One stop at a time: a second caller waits for the first to finish
    /// draining the layers before the harvesters are stopped.
    stopping: tokio::sync::Mutex<()>,
    #[cfg(feature = "tracing-layer")]
    pub(super) layers: Layers,
}

/// The tracing layers a `Telemetry` made: their workers and the counters they
/// all share.
#[cfg(feature = "tracing-layer")]
pub(super) struct Layers {
    /// Stops the workers (each drains its channel first).
    pub(super) token: CancellationToken,
    pub(super) counters: Arc<LayerCounters>,
    /// Workers not yet awaited. A plain mutex: held only to push or take.
    workers: std::sync::Mutex<Vec<JoinHandle<LayerStats>>>,
}

#[cfg(feature = "tracing-layer")]
impl Layers {
    pub(super) fn push(&self, worker: JoinHandle<LayerStats>) {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(worker);
    }

    fn take(&self) -> Vec<JoinHandle<LayerStats>> {
        std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// What the layers counted so far.
    pub(super) fn stats(&self) -> LayerStats {
        self.counters.snapshot()
    }
}

impl Lifecycle {
    pub(super) fn new() -> Lifecycle {
        Lifecycle {
            harvesters: CancellationToken::new(),
            stopping: tokio::sync::Mutex::new(()),
            #[cfg(feature = "tracing-layer")]
            layers: Layers {
                token: CancellationToken::new(),
                counters: Arc::default(),
                workers: std::sync::Mutex::new(Vec::new()),
            },
        }
    }

    /// Drains the layers' channels into the batches, then stops the
    /// harvesters (which close the batches, flush and send). Safe to call
    /// from several places at once and again later.
    pub(super) async fn stop(&self) {
        let _one_at_a_time = self.stopping.lock().await;
        #[cfg(feature = "tracing-layer")]
        {
            self.layers.token.cancel();
            loop {
                let workers = self.layers.take();
                if workers.is_empty() {
                    break;
                }
                for worker in workers {
                    // A worker that panicked has nothing left to drain; what
                    // its layer exports from now on is counted as dropped.
                    if let Err(e) = worker.await {
                        tracing::error!(error = %e, "tracing layer worker ended abnormally");
                    }
                }
            }
        }
        self.harvesters.cancel();
    }

    /// Stops everything without waiting (the `Telemetry` is gone): the
    /// harvesters flush in the background.
    pub(super) fn abandon(&self) {
        #[cfg(feature = "tracing-layer")]
        self.layers.token.cancel();
        self.harvesters.cancel();
    }
}
