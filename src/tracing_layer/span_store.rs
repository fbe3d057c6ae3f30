//! What a layer keeps per exported span: its [`SpanData`] (the New Relic span
//! being built and its ids), stored in the span's extensions in the
//! subscriber's registry, keyed by layer so that several layers can share one
//! subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Subscriber;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::span::Span;

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
}

/// What a layer keeps for one exported span.
pub(super) struct SpanData {
    /// The New Relic span being built (its attributes are the span's fields).
    pub(super) span: Span,
    /// The ids as shared strings, cloned cheaply into logs and child spans.
    pub(super) trace_id: Arc<str>,
    pub(super) span_id: Arc<str>,
}

impl SpanData {
    /// The data for `span`, its ids shared.
    pub(super) fn new(span: Span) -> Self {
        SpanData {
            trace_id: Arc::from(span.trace_id()),
            span_id: Arc::from(span.id()),
            span,
        }
    }

    /// The trace id and span id, cheaply cloned.
    pub(super) fn ids(&self) -> (Arc<str>, Arc<str>) {
        (self.trace_id.clone(), self.span_id.clone())
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

/// The trace id and span id layer `layer` gave `span`, if it exports it.
pub(super) fn ids<S>(span: &SpanRef<'_, S>, layer: u64) -> Option<(Arc<str>, Arc<str>)>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
{
    span.extensions()
        .get::<Exported>()
        .and_then(|e| e.get(layer))
        .map(SpanData::ids)
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
