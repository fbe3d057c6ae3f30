//! The fifth pipeline, of the metric batch's distributions, as the handle
//! sees it: its harvester once started, and whether it is known yet if it
//! will start (`pipelines.rs` starts and stops it).

use std::sync::{Arc, OnceLock};

use crate::harvester::Harvester;

/// The pipeline of the metric batch's distributions: its harvester, once
/// started, and whether it is known yet if it will start.
pub(super) struct DistributionPipeline {
    harvester: OnceLock<Harvester>,
    /// `true` once the harvester is started, or known never to be.
    settled: tokio::sync::watch::Sender<bool>,
}

impl DistributionPipeline {
    pub(super) fn new() -> Self {
        DistributionPipeline {
            harvester: OnceLock::new(),
            settled: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Starts it with `harvester`.
    pub(super) fn start(&self, harvester: Harvester) {
        let _ = self.harvester.set(harvester);
        self.settled.send_replace(true);
    }

    /// A guard that marks it settled when dropped (when the task that
    /// starts it ends, however it ends).
    pub(super) fn settle_on_drop(self: &Arc<Self>) -> Settled {
        Settled(self.clone())
    }

    /// Its harvester, if it started.
    pub(super) fn harvester(&self) -> Option<&Harvester> {
        self.harvester.get()
    }

    /// Completes once it is known whether the harvester runs: at once when
    /// it does, else when the telemetry stops without distributions.
    pub(super) async fn settled(&self) {
        let mut settled = self.settled.subscribe();
        // The sender lives in `self`: `wait_for` cannot fail.
        let _ = settled.wait_for(|s| *s).await;
    }
}

/// Marks the pipeline settled when dropped.
pub(super) struct Settled(Arc<DistributionPipeline>);

impl Drop for Settled {
    fn drop(&mut self) {
        self.0.settled.send_replace(true);
    }
}
