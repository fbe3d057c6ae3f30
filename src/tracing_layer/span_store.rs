//! What a layer keeps per exported span: its [`SpanData`] (the New Relic span
//! being built, its ids and its sampling decision), stored in the span's
//! extensions in the subscriber's registry, keyed by layer so that several
//! layers can share one subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Subscriber;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::span::Span;
use crate::trace_context::TraceContext;

/// Gives every layer its own key in span extensions, so that several layers
/// (for several accounts, say) can share a subscriber.
static NEXT_LAYER_ID: AtomicU64 = AtomicU64::new(1);

/// A key no other layer of this process has.
pub(super) fn next_layer_id() -> u64 {
    NEXT_LAYER_ID.fetch_add(1, Ordering::Relaxed)
}

/// What the layers keep in an exported span's extensions: one [`SpanData`] per
/// layer, the first inline (no allocation for the usual single layer).
struct Exported {
    first: (u64, SpanData),
    more: Vec<(u64, SpanData)>,
}

impl Exported {
    fn get(&self, layer: u64) -> Option<&SpanData> {
        if self.first.0 == layer {
            return Some(&self.first.1);
        }
        self.more.iter().find(|(l, _)| *l == layer).map(|(_, d)| d)
    }

    fn get_mut(&mut self, layer: u64) -> Option<&mut SpanData> {
        if self.first.0 == layer {
            return Some(&mut self.first.1);
        }
        self.more
            .iter_mut()
            .find(|(l, _)| *l == layer)
            .map(|(_, d)| d)
    }

    /// Takes the layer's data out; returns it and whether nothing is left.
    fn take(mut self, layer: u64) -> (Option<SpanData>, Option<Exported>) {
        if self.first.0 == layer {
            let rest = self.more.pop().map(|first| Exported {
                first,
                more: self.more,
            });
            return (Some(self.first.1), rest);
        }
        let found = self.more.iter().position(|(l, _)| *l == layer);
        let data = found.map(|i| self.more.swap_remove(i).1);
        (data, Some(self))
    }

    /// Every layer's data.
    fn all_mut(&mut self) -> impl Iterator<Item = &mut SpanData> {
        std::iter::once(&mut self.first.1).chain(self.more.iter_mut().map(|(_, d)| d))
    }
}

/// What a layer keeps for one span it tracks.
pub(super) struct SpanData {
    /// The New Relic span being built (its attributes are the span's
    /// fields); `None` for a span decided unsampled when it was created,
    /// which keeps only its ids.
    pub(super) span: Option<Span>,
    /// The ids as shared strings, cloned cheaply into logs and child spans.
    pub(super) trace_id: Arc<str>,
    pub(super) span_id: Arc<str>,
    /// Whether the span (and its trace here) is exported.
    pub(super) sampled: bool,
    /// The `tracestate` received with the trace, passed on unchanged.
    pub(super) trace_state: Option<Arc<str>>,
}

/// What a child inherits from its parent's [`SpanData`].
pub(super) struct Inherited {
    pub(super) trace_id: Arc<str>,
    pub(super) parent_id: Arc<str>,
    pub(super) sampled: bool,
    pub(super) trace_state: Option<Arc<str>>,
}

impl SpanData {
    /// The data for a sampled `span`, its ids shared.
    pub(super) fn new(span: Span, sampled: bool, trace_state: Option<Arc<str>>) -> Self {
        let (trace_id, span_id) = span.shared_ids();
        SpanData {
            trace_id,
            span_id,
            span: Some(span),
            sampled,
            trace_state,
        }
    }

    /// The trace id and span id, cheaply cloned.
    pub(super) fn ids(&self) -> (Arc<str>, Arc<str>) {
        (self.trace_id.clone(), self.span_id.clone())
    }

    /// What a child span inherits.
    pub(super) fn inherited(&self) -> Inherited {
        Inherited {
            trace_id: self.trace_id.clone(),
            parent_id: self.span_id.clone(),
            sampled: self.sampled,
            trace_state: self.trace_state.clone(),
        }
    }

    /// The span's context, as outgoing requests carry it.
    pub(super) fn context(&self) -> Option<TraceContext> {
        TraceContext::new(&self.trace_id, &self.span_id, self.sampled)
            .map(|c| c.with_trace_state(self.trace_state.as_deref()))
    }

    /// Continues `remote`: the span moves into its trace, under its span,
    /// and takes its sampling decision (unless the span was decided
    /// unsampled when it was created, which is final).
    pub(super) fn continue_remote(&mut self, remote: &TraceContext) {
        let trace_id: Arc<str> = Arc::from(remote.trace_id());
        self.trace_state = remote.trace_state().map(Arc::from);
        if let Some(span) = self.span.take() {
            self.span = Some(
                span.with_trace_id(trace_id.clone())
                    .with_parent_id(remote.span_id()),
            );
            self.sampled = remote.is_sampled();
        }
        self.trace_id = trace_id;
    }
}

/// Stores layer `layer`'s data for `span`.
pub(super) fn insert<S>(span: &SpanRef<'_, S>, layer: u64, data: SpanData)
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    let mut extensions = span.extensions_mut();
    match extensions.get_mut::<Exported>() {
        Some(exported) => exported.more.push((layer, data)),
        None => extensions.insert(Exported {
            first: (layer, data),
            more: Vec::new(),
        }),
    }
}

/// Calls `f` with layer `layer`'s data for `span`, if it exports the span.
pub(super) fn with_data<S, R>(
    span: &SpanRef<'_, S>,
    layer: u64,
    f: impl FnOnce(&mut SpanData) -> R,
) -> Option<R>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    let mut extensions = span.extensions_mut();
    extensions
        .get_mut::<Exported>()
        .and_then(|e| e.get_mut(layer))
        .map(f)
}

/// Takes layer `layer`'s data for `span` out (when the span closes), leaving
/// other layers' data in place.
pub(super) fn remove<S>(span: &SpanRef<'_, S>, layer: u64) -> Option<SpanData>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    let mut extensions = span.extensions_mut();
    let (data, rest) = match extensions.remove::<Exported>() {
        Some(exported) => exported.take(layer),
        None => (None, None),
    };
    if let Some(rest) = rest {
        extensions.insert(rest);
    }
    data
}

/// Continues `remote` in every layer's data for `span`; whether any layer
/// tracks the span.
pub(super) fn continue_remote<S>(span: &SpanRef<'_, S>, remote: &TraceContext) -> bool
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    let mut extensions = span.extensions_mut();
    let Some(exported) = extensions.get_mut::<Exported>() else {
        return false;
    };
    exported.all_mut().for_each(|d| d.continue_remote(remote));
    true
}

/// The context of the nearest span, from `span` up, that a layer tracks (the
/// first layer's, when several share the subscriber).
pub(super) fn context<S>(span: SpanRef<'_, S>) -> Option<TraceContext>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    span.scope().find_map(|s| {
        s.extensions()
            .get::<Exported>()
            .and_then(|e| e.first.1.context())
    })
}

/// The nearest span, from `span` up, that layer `layer` exports.
pub(super) fn nearest_exported<'a, S>(span: SpanRef<'a, S>, layer: u64) -> Option<SpanRef<'a, S>>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    span.scope().find(|s| {
        s.extensions()
            .get::<Exported>()
            .is_some_and(|e| e.get(layer).is_some())
    })
}
