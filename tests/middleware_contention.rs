//! Many first requests at once through `HttpServerLayer`: each makes new
//! series, so recordings meet on the shards' locks. A recording that waits
//! for a lock must be woken when it is free; every request completes and
//! is counted once.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use newrelic_telemetry::MetricBatch;
use newrelic_telemetry::middleware::{HttpServerLayer, REQUESTS_METRIC};
use tower_service::Service;

const TASKS: usize = 400;
const ROUTES: usize = 100;

#[test]
fn every_request_completes_while_new_series_wait_for_their_shard() {
    for round in 0..5 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            // Few shards: new series of different routes meet on them.
            let metrics = Arc::new(MetricBatch::builder().shards(1).build());
            let app = Router::new().route("/{id}", get(|| async { "ok" })).layer(
                HttpServerLayer::with_metrics(metrics.clone())
                    .route_with(|request| Some(request.uri.path().to_owned().into())),
            );
            let requests = (0..TASKS).map(|i| {
                let mut app = app.clone();
                tokio::spawn(async move {
                    std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut app, cx))
                        .await
                        .expect("ready");
                    let request = Request::get(format!("/{}", i % ROUTES))
                        .body(Body::empty())
                        .expect("a request");
                    app.call(request).await.expect("a response").status()
                })
            });
            let statuses =
                tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(requests))
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: a request never completed"));
            assert!(
                statuses
                    .iter()
                    .all(|s| s.as_ref().is_ok_and(|s| s.is_success()))
            );
            let (recorded, _) = metrics.flush().await;
            let counted: f64 = recorded
                .iter()
                .filter(|m| m.name() == REQUESTS_METRIC)
                .filter_map(|m| match m {
                    newrelic_telemetry::Metric::Count(c) => Some(c.value()),
                    _ => None,
                })
                .sum();
            assert_eq!(counted, TASKS as f64, "round {round}");
        });
    }
}
