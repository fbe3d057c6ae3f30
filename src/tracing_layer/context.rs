//! Trace context and `tracing` spans: continuing a remote parent
//! ([`with_remote_parent`], [`SpanExt::set_parent`]) and reading a span's
//! context for an outgoing request ([`SpanExt::trace_context`]).

use std::cell::RefCell;

use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan;

use super::span_store;
use crate::trace_context::TraceContext;

/// How the root spans created inside [`with_remote_parent`] start.
#[derive(Clone)]
pub(super) enum RootContext {
    /// They continue this remote parent, and take its sampling decision.
    Remote(TraceContext),
    /// They start a new trace, sampled by the layer's ratio.
    NewTrace,
}

thread_local! {
    /// Set by [`with_remote_parent`] while its closure runs.
    static ROOT_CONTEXT: RefCell<Option<RootContext>> = const { RefCell::new(None) };
}

/// How a root span created now on this thread starts: `None` outside
/// [`with_remote_parent`] (a new trace, whose decision
/// [`SpanExt::set_parent`] may still change).
pub(super) fn root_context() -> Option<RootContext> {
    ROOT_CONTEXT.with(|c| c.borrow().clone())
}

/// Puts the previous root context back, even if the closure panics.
struct Restore(Option<RootContext>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        ROOT_CONTEXT.with(|c| *c.borrow_mut() = previous);
    }
}

/// Runs `create` (which creates a span) so that the root spans it creates
/// continue `parent`: the trace id is the remote trace's, `parent.id` the
/// remote span's, the sampled flag the remote caller's decision, and the
/// `tracestate` is passed on. With `None` they start a new trace, sampled by
/// the layer's [ratio](crate::tracing_layer::NewRelicLayerBuilder::sample_ratio).
///
/// A root span is one with no parent the layer tracks. Either way the
/// sampling decision is made when the span is created, so an unsampled span
/// (and everything inside it) costs next to nothing: no attributes are
/// recorded, nothing is exported, and it is counted in
/// [`LayerStats::spans_unsampled`](crate::tracing_layer::LayerStats::spans_unsampled).
/// This is what the HTTP middleware (feature `tower`) does with the
/// `traceparent` header of every request.
///
/// ```
/// use http::HeaderMap;
/// use newrelic_telemetry::tracing_layer::{NewRelicLayer, with_remote_parent};
/// use newrelic_telemetry::SpanBatch;
/// use newrelic_telemetry::trace_context::TraceContext;
/// use std::sync::Arc;
/// use tokio_util::sync::CancellationToken;
/// use tracing_subscriber::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let spans = Arc::new(SpanBatch::new());
/// let (layer, worker) = NewRelicLayer::builder().spans(spans.clone()).build();
/// let subscriber = tracing_subscriber::registry().with(layer);
///
/// let mut headers = HeaderMap::new();
/// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// let remote = TraceContext::extract(&headers);
/// tracing::subscriber::with_default(subscriber, || {
///     let span = with_remote_parent(remote.as_ref(), || tracing::info_span!("handle request"));
///     span.in_scope(|| tracing::info_span!("query").in_scope(|| {}));
/// });
///
/// let stop = CancellationToken::new();
/// stop.cancel(); // the worker records what is queued, then ends
/// worker.run(stop).await;
/// let (items, _) = spans.flush().await;
/// let (query, root) = (&items[0], &items[1]);
/// assert_eq!(root.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(root.parent_id(), Some("00f067aa0ba902b7"));
/// assert_eq!(query.trace_id(), root.trace_id());
/// assert_eq!(query.parent_id(), Some(root.id()));
/// # }
/// ```
pub fn with_remote_parent<R>(parent: Option<&TraceContext>, create: impl FnOnce() -> R) -> R {
    let context = match parent {
        Some(parent) => RootContext::Remote(parent.clone()),
        None => RootContext::NewTrace,
    };
    let previous = ROOT_CONTEXT.with(|c| c.borrow_mut().replace(context));
    let _restore = Restore(previous);
    create()
}

/// Trace context for [`tracing::Span`]s, through the
/// [`NewRelicLayer`](crate::tracing_layer::NewRelicLayer)s of the span's
/// subscriber. Both work when that subscriber is built on
/// [`tracing_subscriber::Registry`] (`tracing_subscriber::registry()`, or
/// `fmt()`), the subscriber the layer needs anyway.
pub trait SpanExt {
    /// Makes this span continue `parent`, a context received from another
    /// service: it joins the remote trace, with the remote span as its
    /// `parent.id`, takes the remote sampling decision, and carries the
    /// `tracestate` on. Call it right after creating the span, before
    /// entering it: spans and logs created inside it before the call keep
    /// the trace they had. A span decided unsampled when it was created
    /// (inside [`with_remote_parent`], or under an unsampled parent) stays
    /// unsampled. Returns whether a layer tracks the span.
    ///
    /// [`with_remote_parent`] does the same when the span is created, and
    /// spends nothing on a span that turns out unsampled.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::{NewRelicLayer, SpanExt};
    /// use newrelic_telemetry::SpanBatch;
    /// use newrelic_telemetry::trace_context::TraceContext;
    /// use std::sync::Arc;
    /// use tokio_util::sync::CancellationToken;
    /// use tracing_subscriber::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let spans = Arc::new(SpanBatch::new());
    /// let (layer, worker) = NewRelicLayer::builder().spans(spans.clone()).build();
    /// let remote = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
    ///     let span = tracing::info_span!("handle message");
    ///     assert!(span.set_parent(&remote));
    ///     span.in_scope(|| {});
    /// });
    ///
    /// let stop = CancellationToken::new();
    /// stop.cancel();
    /// worker.run(stop).await;
    /// let (items, _) = spans.flush().await;
    /// assert_eq!(items[0].trace_id(), remote.trace_id());
    /// assert_eq!(items[0].parent_id(), Some(remote.span_id()));
    /// # }
    /// ```
    fn set_parent(&self, parent: &TraceContext) -> bool;

    /// This span's context, to send with a request made inside it
    /// ([`TraceContext::inject`], [`TraceContext::inject_into`]): its trace
    /// id, its id (or, for a span the layer does not track, that of its
    /// nearest tracked ancestor), its sampling decision and the
    /// `tracestate` it carries. `None` outside any tracked span.
    ///
    /// ```
    /// use newrelic_telemetry::tracing_layer::{NewRelicLayer, SpanExt};
    /// use newrelic_telemetry::SpanBatch;
    /// use std::sync::Arc;
    /// use tracing_subscriber::prelude::*;
    ///
    /// let (layer, _worker) = NewRelicLayer::builder().spans(Arc::new(SpanBatch::new())).build();
    /// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
    ///     let span = tracing::info_span!("call backend", otel.kind = "client");
    ///     let context = span.trace_context().expect("a tracked span");
    ///     let mut headers = http::HeaderMap::new();
    ///     context.inject(&mut headers);
    ///     assert!(headers["traceparent"].to_str().unwrap().starts_with("00-"));
    ///     assert!(tracing::Span::none().trace_context().is_none());
    /// });
    /// ```
    fn trace_context(&self) -> Option<TraceContext>;
}

impl SpanExt for tracing::Span {
    fn set_parent(&self, parent: &TraceContext) -> bool {
        self.with_subscriber(|(id, dispatch)| {
            dispatch
                .downcast_ref::<Registry>()
                .and_then(|registry| registry.span(id))
                .is_some_and(|span| span_store::continue_remote(&span, parent))
        })
        .unwrap_or(false)
    }

    fn trace_context(&self) -> Option<TraceContext> {
        self.with_subscriber(|(id, dispatch)| {
            dispatch
                .downcast_ref::<Registry>()
                .and_then(|registry| registry.span(id))
                .and_then(span_store::context)
        })
        .flatten()
    }
}

/// The context of the current span ([`tracing::Span::current`]), to send
/// with a request made now; `None` outside any span the layer tracks.
///
/// ```
/// use newrelic_telemetry::tracing_layer::{NewRelicLayer, current_trace_context};
/// use newrelic_telemetry::SpanBatch;
/// use std::sync::Arc;
/// use tracing_subscriber::prelude::*;
///
/// let http = newrelic_telemetry::client::http_client_builder().build().unwrap();
/// let (layer, _worker) = NewRelicLayer::builder().spans(Arc::new(SpanBatch::new())).build();
/// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
///     assert!(current_trace_context().is_none());
///     tracing::info_span!("job").in_scope(|| {
///         let request = http.get("http://127.0.0.1:9/");
///         let request = match current_trace_context() {
///             Some(context) => context.inject_into(request),
///             None => request,
///         };
///         assert!(request.build().unwrap().headers().contains_key("traceparent"));
///     });
/// });
/// ```
pub fn current_trace_context() -> Option<TraceContext> {
    tracing::Span::current().trace_context()
}
