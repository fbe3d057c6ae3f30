//! Assembly of the pipelines, once the configuration is resolved: one set
//! of client settings and one HTTP client for five clients, four batches
//! sharing the common attributes, and four harvesters on one token; the
//! fifth pipeline, of the metric batch's distributions, starts when the
//! first distribution series is made and stops after the metric pipeline's
//! last flush.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::distributions::DistributionPipeline;
use super::env::Config;
use super::handle::{Endpoints, Parts, Telemetry};
use super::lifecycle::Lifecycle;
use super::per_api::{ConfigureClients, PerApi};
use crate::attributes::Attributes;
use crate::batch::refusal::OnRefused;
use crate::batch::{
    Batch, BatchItem, EventBatch, HistogramKind, ItemBatch, LogBatch, MetricBatch, SeriesLimits,
    SpanBatch,
};
use crate::client::{
    AllApis, Client, ClientSettings, Events, Kind, Logs, Metrics, Otlp, Spans, sdk_http_client,
};
use crate::error::ConfigError;
use crate::harvester::Harvester;

/// The builder's settings that are not read from the environment.
pub(super) struct Settings {
    pub(super) common_attributes: Attributes,
    pub(super) shutdown_timeout: Duration,
    pub(super) memory_budget: usize,
    pub(super) series_limits: SeriesLimits,
    /// What the metric batch's `record_histogram` records.
    pub(super) histograms: HistogramKind,
    /// Told of every item any of the four batches refuses.
    pub(super) on_refused: Option<OnRefused>,
    /// The service's token, if any: cancelling it stops the telemetry.
    pub(super) parent: Option<CancellationToken>,
}

/// Builds the clients and batches, spawns the harvesters on a token of their
/// own, and a watcher that stops everything in order when the public stop
/// token (a child of the builder's, if any) is cancelled.
pub(super) fn start(
    config: Config,
    configure_clients: Vec<ConfigureClients>,
    settings: Settings,
) -> Result<Telemetry, ConfigError> {
    let client_settings = client_settings(&config, configure_clients).disabled(!config.enabled);
    let client_settings = with_shared_http_client(client_settings)?;
    let clients = Clients::new(&client_settings, config.endpoints, config.otlp_endpoint)?;
    let endpoints = clients.endpoints();
    let batches = Batches::new(&settings, !config.enabled);
    let lifecycle = Arc::new(Lifecycle::new());
    let timing = Timing {
        interval: config.harvest_interval,
        shutdown_timeout: settings.shutdown_timeout,
    };
    let otlp = clients.otlp.clone();
    let harvesters = spawn_harvesters(&batches, clients, timing, &lifecycle.harvesters);
    let distributions = Arc::new(DistributionPipeline::new());
    let stop = settings
        .parent
        .as_ref()
        .map_or_else(CancellationToken::new, CancellationToken::child_token);
    let runtime = tokio::runtime::Handle::current();
    runtime.spawn(watch(stop.clone(), lifecycle.clone()));
    runtime.spawn(run_distributions(
        distributions.clone(),
        batches.metrics.clone(),
        otlp,
        timing,
        lifecycle.harvesters.clone(),
    ));
    Ok(Telemetry::from_parts(Parts {
        enabled: config.enabled,
        endpoints,
        metrics: batches.metrics,
        events: batches.events,
        logs: batches.logs,
        spans: batches.spans,
        harvesters,
        distributions,
        stop,
        lifecycle,
        runtime,
        #[cfg(feature = "metrics")]
        recorder: std::sync::OnceLock::new(),
        trace_sample_ratio: config.trace_sample_ratio,
    }))
}

/// Runs the ordered stop when `stop` is cancelled (by the service's token,
/// or by `Telemetry::cancellation_token()`); ends quietly when the
/// harvesters were stopped another way.
async fn watch(stop: CancellationToken, lifecycle: Arc<Lifecycle>) {
    tokio::select! {
        () = stop.cancelled() => lifecycle.stop().await,
        () = lifecycle.harvesters.cancelled() => {}
    }
}

/// The settings the four clients share: the key and region, then what code
/// configured, in order.
fn client_settings(config: &Config, configure_clients: Vec<ConfigureClients>) -> ClientSettings {
    // `Client::builder` needs an API kind to start from; any will do.
    let resolved = Client::<Metrics>::builder(String::new())
        .for_kind::<AllApis>()
        .with_api_key(config.api_key.clone())
        .region(config.region);
    configure_clients
        .into_iter()
        .fold(resolved, |settings, configure| configure(settings))
}

/// Gives the settings one HTTP client (one connection pool for all four
/// APIs), unless code gave its own.
fn with_shared_http_client(mut settings: ClientSettings) -> Result<ClientSettings, ConfigError> {
    if settings.has_http_client() {
        return Ok(settings);
    }
    let proxy = settings.take_proxy();
    Ok(settings.http_client(sdk_http_client(proxy)?))
}

/// The five clients.
struct Clients {
    metrics: Client<Metrics>,
    events: Client<Events>,
    logs: Client<Logs>,
    spans: Client<Spans>,
    otlp: Client<Otlp>,
}

impl Clients {
    /// One client per API from the shared `settings`, each sent to its
    /// endpoint (`None`: the region's).
    fn new(
        settings: &ClientSettings,
        endpoints: PerApi<Option<String>>,
        otlp_endpoint: Option<String>,
    ) -> Result<Clients, ConfigError> {
        Ok(Clients {
            metrics: client(settings, endpoints.metrics)?,
            events: client(settings, endpoints.events)?,
            logs: client(settings, endpoints.logs)?,
            spans: client(settings, endpoints.spans)?,
            otlp: client(settings, otlp_endpoint)?,
        })
    }

    fn endpoints(&self) -> Endpoints {
        Endpoints {
            metrics: self.metrics.endpoint().to_owned(),
            events: self.events.endpoint().to_owned(),
            logs: self.logs.endpoint().to_owned(),
            spans: self.spans.endpoint().to_owned(),
            otlp: self.otlp.endpoint().to_owned(),
        }
    }
}

fn client<K: Kind>(
    settings: &ClientSettings,
    endpoint: Option<String>,
) -> Result<Client<K>, ConfigError> {
    let builder = settings.for_kind::<K>();
    let builder = match endpoint {
        Some(url) => builder.endpoint(url),
        None => builder,
    };
    Ok(builder.build()?)
}

/// The four batches.
struct Batches {
    metrics: Arc<MetricBatch>,
    events: Arc<EventBatch>,
    logs: Arc<LogBatch>,
    spans: Arc<SpanBatch>,
}

impl Batches {
    /// Empty batches that add `common` to everything they send (the batch
    /// builders drop an empty set), each within `memory_budget`.
    fn new(settings: &Settings, off: bool) -> Batches {
        let (common, memory_budget, on_refused) = (
            &settings.common_attributes,
            settings.memory_budget,
            &settings.on_refused,
        );
        // The three item batches are configured alike.
        fn items<T: BatchItem>(
            common: &Attributes,
            memory_budget: usize,
            on_refused: &Option<OnRefused>,
            off: bool,
        ) -> Arc<ItemBatch<T>> {
            Arc::new(
                ItemBatch::builder()
                    .common_attributes(common.clone())
                    .memory_budget(memory_budget)
                    .on_refused_shared(on_refused.clone())
                    .off(off)
                    .build(),
            )
        }
        Batches {
            metrics: Arc::new(
                MetricBatch::builder()
                    .common_attributes(common.clone())
                    .memory_budget(memory_budget)
                    .series_limits(settings.series_limits.clone())
                    .histogram_kind(settings.histograms)
                    .on_refused_shared(on_refused.clone())
                    .off(off)
                    .build(),
            ),
            events: items(common, memory_budget, on_refused, off),
            logs: items(common, memory_budget, on_refused, off),
            spans: items(common, memory_budget, on_refused, off),
        }
    }
}

/// When the harvesters harvest, and how long their shutdown may take.
#[derive(Clone, Copy)]
struct Timing {
    interval: Duration,
    shutdown_timeout: Duration,
}

fn spawn_harvesters(
    batches: &Batches,
    clients: Clients,
    timing: Timing,
    token: &CancellationToken,
) -> PerApi<Harvester> {
    PerApi {
        metrics: spawn_harvester(batches.metrics.clone(), clients.metrics, timing, token),
        events: spawn_harvester(batches.events.clone(), clients.events, timing, token),
        logs: spawn_harvester(batches.logs.clone(), clients.logs, timing, token),
        spans: spawn_harvester(batches.spans.clone(), clients.spans, timing, token),
    }
}

/// Starts the distributions' harvester when the metric batch makes its
/// first distribution series (or, if one is made while stopping, after the
/// metric pipeline's last flush), and stops it after that flush, which
/// hands it the last points.
async fn run_distributions(
    pipeline: Arc<DistributionPipeline>,
    metrics: Arc<MetricBatch>,
    client: Client<Otlp>,
    timing: Timing,
    stopping: CancellationToken,
) {
    // Settled however this task ends: dropped with its runtime too.
    let _settled = pipeline.settle_on_drop();
    let made = tokio::select! {
        biased;
        () = metrics.distributions_made() => true,
        () = stopping.cancelled() => false,
    };
    if !made {
        // A distribution series may still be made until the last flush.
        let _ = tokio::time::timeout(timing.shutdown_timeout, metrics.last_flush_done()).await;
        if !metrics.distributions_used() {
            return;
        }
    }
    let token = CancellationToken::new();
    let harvester = spawn_harvester(metrics.distributions().clone(), client, timing, &token);
    pipeline.start(harvester);
    stopping.cancelled().await;
    let _ = tokio::time::timeout(timing.shutdown_timeout, metrics.last_flush_done()).await;
    token.cancel();
}

fn spawn_harvester<K: Kind, B: Batch<Item = K::Item>>(
    batch: Arc<B>,
    client: Client<K>,
    timing: Timing,
    token: &CancellationToken,
) -> Harvester {
    Harvester::builder(batch, client)
        .harvest_interval(timing.interval)
        .shutdown_timeout(timing.shutdown_timeout)
        .cancellation_token(token.clone())
        .spawn()
}
