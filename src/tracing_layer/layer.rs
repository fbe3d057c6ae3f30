//! [`NewRelicLayer`] itself: the `tracing_subscriber` callbacks that turn
//! spans into New Relic spans and events into logs, and hand them to the
//! worker's channel without waiting.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{Level, Subscriber, span};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::context::{self, RootContext};
use super::keys::{Keys, shared_static};
use super::span_store::{self, SpanData};
use super::stats::{LayerCounters, LayerHandle};
use super::visitor::FieldVisitor;
use super::worker::{Item, ItemSender};
use crate::attributes::{Attributes, Value};
use crate::id::{random_hex_id, random_trace_id, trace_id_hex};
use crate::log::Log;
use crate::span::{Span, SpanEvent};
use crate::trace_context::sampled_by_ratio;

/// The most span events one span carries; later ones are counted in
/// [`LayerStats::span_events_dropped`](crate::tracing_layer::LayerStats::span_events_dropped).
///
/// ```
/// use newrelic_telemetry::tracing_layer::{MAX_SPAN_EVENTS, NewRelicLayer};
/// use newrelic_telemetry::SpanBatch;
/// use std::sync::Arc;
/// use tokio_util::sync::CancellationToken;
/// use tracing_subscriber::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let spans = Arc::new(SpanBatch::new());
/// let (layer, worker) = NewRelicLayer::builder().spans(spans.clone()).span_events(true).build();
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info_span!("long job").in_scope(|| {
///         for step in 0..MAX_SPAN_EVENTS + 3 {
///             tracing::info!(step, "step done");
///         }
///     });
/// });
///
/// let stop = CancellationToken::new();
/// stop.cancel(); // the worker records what is queued, then ends
/// assert_eq!(worker.run(stop).await.span_events_dropped, 3);
/// assert_eq!(spans.flush().await.0[0].events().len(), MAX_SPAN_EVENTS);
/// # }
/// ```
pub const MAX_SPAN_EVENTS: usize = 100;

/// A `tracing` layer that exports closed spans as New Relic spans and events as
/// New Relic logs. See the
/// [module documentation](crate::tracing_layer) for what it exports,
/// how, and what happens when its channel is full.
///
/// Build it with [`NewRelicLayer::builder`], which also returns the
/// [`LayerWorker`](crate::tracing_layer::LayerWorker) to run.
///
/// ```
/// use newrelic_telemetry::tracing_layer::NewRelicLayer;
/// use newrelic_telemetry::{LogBatch, SpanBatch};
/// use std::sync::Arc;
/// use tokio_util::sync::CancellationToken;
/// use tracing_subscriber::filter::LevelFilter;
/// use tracing_subscriber::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let spans = Arc::new(SpanBatch::new());
/// let logs = Arc::new(LogBatch::new());
/// let (layer, worker) = NewRelicLayer::builder()
///     .spans(spans.clone())
///     .logs(logs.clone())
///     .service_name("checkout")
///     .build();
/// let worker = worker.spawn(CancellationToken::new());
///
/// let subscriber = tracing_subscriber::registry().with(layer.with_filter(LevelFilter::INFO));
/// tracing::subscriber::with_default(subscriber, || {
///     let _span = tracing::info_span!("charge", order.id = 1234).entered();
///     tracing::info!(amount = 12.5, "card charged");
///     tracing::debug!("not exported: below the layer's filter");
/// });
///
/// // The subscriber (and the layer in it) is gone: the worker drains and ends.
/// let stats = worker.await?;
/// assert_eq!((stats.spans_recorded, stats.logs_recorded), (1, 1));
/// let (logs, _) = logs.flush().await;
/// let (spans, _) = spans.flush().await;
/// assert_eq!(logs[0].message(), "card charged");
/// assert_eq!(logs[0].attributes().get("span.id"), Some(&spans[0].id().into()));
/// # Ok(()) }
/// ```
pub struct NewRelicLayer {
    id: u64,
    sender: ItemSender,
    export_spans: bool,
    export_logs: bool,
    span_events: bool,
    sample_ratio: f64,
    service_name: Option<Arc<str>>,
    excluded: Box<[Cow<'static, str>]>,
    keys: Keys,
    counters: Arc<LayerCounters>,
}

impl fmt::Debug for NewRelicLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRelicLayer")
            .field("export_spans", &self.export_spans)
            .field("export_logs", &self.export_logs)
            .field("span_events", &self.span_events)
            .field("sample_ratio", &self.sample_ratio)
            .field("service_name", &self.service_name)
            .field("excluded", &self.excluded)
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// What the builder decided for a layer.
pub(super) struct Settings {
    pub(super) export_spans: bool,
    pub(super) export_logs: bool,
    pub(super) span_events: bool,
    pub(super) sample_ratio: f64,
    pub(super) service_name: Option<Arc<str>>,
    pub(super) excluded: Vec<Cow<'static, str>>,
}

impl NewRelicLayer {
    /// A layer that hands what it exports to `sender`: spans if
    /// `export_spans`, events as logs if `export_logs`.
    pub(super) fn new(
        sender: ItemSender,
        counters: Arc<LayerCounters>,
        settings: Settings,
    ) -> Self {
        NewRelicLayer {
            id: span_store::next_layer_id(),
            sender,
            export_spans: settings.export_spans,
            export_logs: settings.export_logs,
            span_events: settings.span_events && settings.export_spans,
            sample_ratio: settings.sample_ratio,
            service_name: settings.service_name,
            excluded: settings.excluded.into_boxed_slice(),
            keys: Keys::new(),
            counters,
        }
    }

    /// A handle to the layer's counters, to keep before the layer is moved
    /// into a subscriber.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::NewRelicLayer;
    /// use newrelic_telemetry::SpanBatch;
    /// use std::sync::Arc;
    ///
    /// let (layer, _worker) = NewRelicLayer::builder().spans(Arc::new(SpanBatch::new())).build();
    /// let handle = layer.handle(); // still usable after `layer` moves into a subscriber
    /// assert_eq!(handle.stats().spans_recorded, 0);
    /// ```
    pub fn handle(&self) -> LayerHandle {
        LayerHandle::new(self.counters.clone())
    }

    /// Whether `target` is one the layer never exports.
    fn is_excluded(&self, target: &str) -> bool {
        self.excluded.iter().any(|prefix| {
            target
                .strip_prefix(prefix.as_ref())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
    }

    /// Flags the span as failed by an `ERROR` event with `message` inside it.
    fn flag_error(&self, span: &mut Span, message: &str) {
        let attributes = span.attributes_mut();
        attributes.insert(self.keys.error.clone(), true);
        if !attributes.contains_key(&self.keys.error_message) {
            attributes.insert(self.keys.error_message.clone(), message);
        }
    }

    /// Attaches an event to its span as a span event, up to
    /// [`MAX_SPAN_EVENTS`]; counts the ones past it.
    fn add_span_event(
        &self,
        span: &mut Span,
        metadata: &tracing::Metadata<'_>,
        message: &str,
        fields: &Attributes,
    ) {
        if span.events().len() >= MAX_SPAN_EVENTS {
            self.counters
                .span_events_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let name = if message.is_empty() {
            metadata.name()
        } else {
            message
        };
        let mut span_event = SpanEvent::new(name);
        let attributes = span_event.attributes_mut();
        for (key, value) in fields.pairs() {
            attributes.insert(key.clone(), value.clone());
        }
        attributes.insert(self.keys.level.clone(), self.keys.level(metadata.level()));
        attributes.insert(self.keys.target.clone(), metadata.target());
        span.add_event(span_event);
    }

    /// A new span's data, built only when it is sampled (or may still be):
    /// its name, service name, target and fields.
    fn build_span(
        &self,
        attrs: &span::Attributes<'_>,
        span: Span,
        sampled: bool,
        trace_state: Option<Arc<str>>,
    ) -> SpanData {
        let mut nr = span;
        if let Some(service) = &self.service_name {
            nr = nr.with_service_name(service.clone());
        }
        if self.export_spans {
            let attributes = nr.attributes_mut();
            // Its fields and `code.namespace`, with room for the status and
            // error a middleware or an event may add later.
            attributes.reserve(attrs.metadata().fields().len() + 3);
            attributes.insert(
                self.keys.code_namespace.clone(),
                Value::String(shared_static(attrs.metadata().target())),
            );
            let mut visitor = FieldVisitor::for_span(attributes, &self.keys);
            attrs.record(&mut visitor);
            if let Some(name) = visitor.into_span_name() {
                *nr.name_mut() = name;
            }
        }
        SpanData::new(nr, sampled, trace_state)
    }

    /// The data of a root span (one with no tracked parent): a new trace,
    /// or the remote parent given by `with_remote_parent`.
    fn root_data(&self, attrs: &span::Attributes<'_>) -> SpanData {
        let root = context::root_context();
        // (trace id, remote parent, sampled, trace state, decided for good)
        let (trace_id, parent, sampled, trace_state, decided) = match &root {
            Some(RootContext::Remote(remote)) => (
                Arc::from(remote.trace_id()),
                Some(remote.span_id()),
                remote.is_sampled(),
                remote.trace_state().map(Arc::from),
                true,
            ),
            // Outside `with_remote_parent`, `set_parent` may still change
            // the decision: the span is built either way.
            _ => {
                let id = random_trace_id();
                let sampled = sampled_by_ratio(id, self.sample_ratio);
                (trace_id_hex(id), None, sampled, None, root.is_some())
            }
        };
        if decided && !sampled {
            // Ids only, nothing built: children and outgoing requests carry
            // the trace on, unsampled.
            return SpanData {
                trace_id,
                span_id: random_hex_id(),
                span: None,
                sampled: false,
                trace_state,
            };
        }
        let nr = Span::in_trace(attrs.metadata().name(), trace_id, parent.map(Arc::from));
        self.build_span(attrs, nr, sampled, trace_state)
    }
}

impl<S> Layer<S> for NewRelicLayer
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if !(self.export_spans || self.export_logs) {
            return;
        }
        let metadata = attrs.metadata();
        if self.is_excluded(metadata.target()) {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = span
            .parent()
            .and_then(|p| span_store::nearest_exported(p, self.id))
            .and_then(|p| span_store::with_data(&p, self.id, |d| d.inherited()));

        let data = match parent {
            None => self.root_data(attrs),
            Some(parent) if !parent.sampled => {
                // Inside an unsampled trace: nothing to keep, nothing to
                // build. Children and events find the unsampled ancestor.
                if self.export_spans {
                    self.counters
                        .spans_unsampled
                        .fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Some(parent) => {
                let nr = Span::in_trace(metadata.name(), parent.trace_id, Some(parent.parent_id));
                self.build_span(attrs, nr, true, parent.trace_state)
            }
        };
        span_store::insert(&span, self.id, data);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if !self.export_spans {
            return;
        }
        let Some(span) = ctx.span(id) else {
            return;
        };
        span_store::with_data(&span, self.id, |data| {
            if let Some(nr) = &mut data.span {
                let mut visitor = FieldVisitor::for_span(nr.attributes_mut(), &self.keys);
                values.record(&mut visitor);
                if let Some(name) = visitor.into_span_name() {
                    *nr.name_mut() = name;
                }
            }
        });
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if !(self.export_spans || self.export_logs) {
            return;
        }
        // An event bridged from the `log` crate (`tracing-log`) has its
        // level's generic metadata: its real target comes from its fields.
        #[cfg(feature = "log")]
        let normalized = tracing_log::NormalizeEvent::normalized_metadata(event);
        #[cfg(feature = "log")]
        let metadata = normalized.as_ref().unwrap_or(event.metadata());
        #[cfg(not(feature = "log"))]
        let metadata = event.metadata();
        if self.is_excluded(metadata.target()) {
            return;
        }
        // The callsite's own target lives as long as the program (a `log`
        // record's does not): shared, not copied, into each log.
        #[cfg(feature = "log")]
        let static_target = normalized.is_none().then(|| event.metadata().target());
        #[cfg(not(feature = "log"))]
        let static_target = Some(event.metadata().target());
        let is_error = *metadata.level() == Level::ERROR;
        let in_span = ctx
            .event_span(event)
            .and_then(|s| span_store::nearest_exported(s, self.id));
        if !self.export_logs && (in_span.is_none() || !(is_error || self.span_events)) {
            return;
        }

        let mut fields = Attributes::with_capacity(metadata.fields().len() + 6);
        let mut visitor = FieldVisitor::for_event(&mut fields, &self.keys);
        #[cfg(feature = "log")]
        if normalized.is_some() {
            visitor = visitor.skipping_log_fields();
        }
        event.record(&mut visitor);
        let message = visitor.into_message().unwrap_or_default();

        let ids = in_span.and_then(|span| {
            span_store::with_data(&span, self.id, |data| {
                if let Some(nr) = &mut data.span {
                    if self.export_spans && is_error {
                        self.flag_error(nr, &message);
                    }
                    if self.span_events {
                        self.add_span_event(nr, metadata, &message, &fields);
                    }
                }
                data.ids()
            })
        });

        if !self.export_logs {
            return;
        }
        fields.insert(self.keys.level.clone(), self.keys.level(metadata.level()));
        let target = match static_target {
            Some(target) => Value::String(shared_static(target)),
            None => Value::from(metadata.target()),
        };
        fields.insert(self.keys.target.clone(), target);
        if let Some((trace_id, span_id)) = ids {
            fields.insert(self.keys.trace_id.clone(), Value::String(trace_id));
            fields.insert(self.keys.span_id.clone(), Value::String(span_id));
        }
        if let Some(service) = &self.service_name {
            fields.insert(
                self.keys.service_name.clone(),
                Value::String(service.clone()),
            );
        }
        self.sender
            .send(Item::Log(Log::new(message).with_attributes(fields)));
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if !self.export_spans {
            return;
        }
        let Some(span) = ctx.span(&id) else {
            return;
        };
        if let Some(data) = span_store::remove(&span, self.id) {
            match data.span {
                Some(nr) if data.sampled => self.sender.send(Item::Span(nr.finish())),
                _ => {
                    self.counters
                        .spans_unsampled
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
