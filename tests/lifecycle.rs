//! One lifecycle for a service: `Telemetry` is a cheap clone shared by tasks,
//! its tracing layer is drained before its batches close, a record that
//! arrives during or after shutdown is counted (never silent), a disabled
//! telemetry sends nothing, and a cancelled service token stops everything
//! in the same order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use newrelic_telemetry::{ConfigError, Event, Log, Telemetry, env};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::prelude::*;

mod support;
use support::{eventually, poll_until, server};

const BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "current_thread")]
async fn the_layer_is_drained_before_the_batches_close() {
    let server = server().await;
    let telemetry = server
        .telemetry_builder()
        .service_name("checkout")
        .build()
        .unwrap();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(telemetry.tracing_layer()),
    );

    // Emitted just before shutdown: still in the layer's channel when
    // shutdown starts (its worker has not run yet on this thread).
    tracing::info_span!("last request").in_scope(|| tracing::info!("last words"));
    let report = telemetry.shutdown().await;

    assert_eq!(
        (report.layer.logs_recorded, report.layer.spans_recorded),
        (1, 1)
    );
    assert_eq!(report.items_sent(), 2);
    assert_eq!((report.items_dropped(), report.items_refused()), (0, 0));
    assert_eq!(server.logs()[0]["message"], "last words");
    assert_eq!(server.logs()[0]["attributes"]["service.name"], "checkout");
    assert_eq!(server.spans()[0]["attributes"]["service.name"], "checkout");

    // After shutdown: counted, in the report of any later call.
    tracing::info!("too late");
    let later = telemetry.shutdown().await;
    assert_eq!(later.layer.items_dropped_worker_gone, 1);
    assert_eq!(later.items_refused(), 1);
    assert_eq!(later.items_sent(), 2);
    assert_eq!(telemetry.stats().items_refused(), 1);
}

/// Logs emitted all through shutdown, from another task: each one is sent
/// or counted as refused, none is lost silently.
async fn logs_emitted_during_shutdown_are_all_accounted_for() {
    let server = server().await;
    let telemetry = server.telemetry_builder().build().unwrap();
    let layer = telemetry.tracing_layer_with(|layer| layer.channel_capacity(64));
    let subscriber = tracing_subscriber::registry().with(layer);
    let dispatch = tracing::Dispatch::new(subscriber);

    let emitted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let emitter = {
        let (emitted, stop, dispatch) = (emitted.clone(), stop.clone(), dispatch.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            // Bounded: at most 20,000 logs, and it stops when told.
            while n < 20_000 && !stop.load(Ordering::Relaxed) {
                tracing::dispatcher::with_default(&dispatch, || tracing::info!(n, "working"));
                n += 1;
                emitted.store(n, Ordering::Relaxed);
                if n % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Let some logs through before shutting down (yielding to the emitter
    // between checks).
    let emitted_100 = poll_until(BOUND, Duration::ZERO, || {
        std::future::ready(emitted.load(Ordering::Relaxed) >= 100)
    })
    .await;
    assert!(emitted_100, "the emitter made progress");

    let first = tokio::time::timeout(BOUND, telemetry.shutdown())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(BOUND, emitter).await.unwrap().unwrap();
    let report = telemetry.shutdown().await;

    let emitted = emitted.load(Ordering::Relaxed);
    let received = server.logs().len() as u64;
    eprintln!(
        "emitted {emitted}, received {received}, layer {:?}, batch {:?}",
        report.layer, report.logs.record
    );
    assert!(received >= 100, "logs emitted before shutdown were sent");
    assert_eq!(report.items_sent(), received);
    assert_eq!(report.items_dropped(), 0);
    assert_eq!(
        received + report.items_refused(),
        emitted,
        "every log emitted is sent or counted: {report:?}"
    );
    // The first report already counted what had been refused by then.
    assert!(first.items_sent() == report.items_sent());
    assert!(first.items_refused() <= report.items_refused());
}

#[tokio::test(flavor = "current_thread")]
async fn logs_during_shutdown_on_a_current_thread_runtime() {
    logs_emitted_during_shutdown_are_all_accounted_for().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_during_shutdown_on_a_multi_thread_runtime() {
    logs_emitted_during_shutdown_are_all_accounted_for().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_record_across_tasks_and_shut_down_together() {
    let server = server().await;
    let telemetry = server.telemetry_builder().build().unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let telemetry = telemetry.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    telemetry
                        .metrics()
                        .record_count("requests", 1, [("task", task % 2)])
                        .await;
                }
                telemetry
                    .logs()
                    .record(Log::new(format!("task {task} done")))
                    .await;
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
    }
    assert_eq!(telemetry.stats().items_accepted(), 2 + 8);

    // Two clones shut down at once: one stop, one report.
    let (a, b) = (telemetry.clone(), telemetry.clone());
    let (first, second) = tokio::time::timeout(BOUND, async {
        tokio::join!(
            tokio::spawn(async move { a.shutdown().await }),
            async move { b.shutdown().await }
        )
    })
    .await
    .unwrap();
    let first = first.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.items_sent(), 2 + 8);
    let total: f64 = server
        .metrics()
        .iter()
        .filter_map(|m| m["value"].as_f64())
        .sum();
    assert_eq!(total, 800.0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_service_token_stops_in_the_same_order() {
    let server = server().await;
    let service = CancellationToken::new();
    let telemetry = server
        .telemetry_builder()
        .cancellation_token(service.clone())
        .build()
        .unwrap();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(telemetry.tracing_layer()),
    );
    tracing::warn!("disk almost full");

    service.cancel(); // on SIGTERM, elsewhere in the service
    let report = tokio::time::timeout(BOUND, telemetry.join()).await.unwrap();
    assert_eq!(report.layer.logs_recorded, 1);
    assert_eq!(report.logs.delivery.items_sent, 1);
    assert_eq!(server.logs()[0]["message"], "disk almost full");
}

#[tokio::test(flavor = "current_thread")]
async fn disabled_telemetry_keeps_nothing_counts_nothing_and_sends_nothing() {
    let server = server().await;
    // Pointed at a real server, to see that nothing reaches it.
    let telemetry = server.telemetry_builder().enabled(false).build().unwrap();
    assert!(!telemetry.is_enabled());
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(telemetry.tracing_layer()),
    );

    // By name, items, the tracing layer, the metrics facade: nothing kept,
    // nothing checked (a NaN is not even refused).
    for _ in 0..3 {
        telemetry
            .metrics()
            .record_count("requests", 1, [("route", "/")])
            .await;
    }
    assert_eq!(
        telemetry
            .metrics()
            .try_record_gauge("load", f64::NAN, ())
            .await,
        Ok(())
    );
    telemetry.events().record(Event::new("Order")).await;
    tracing::info_span!("handle").in_scope(|| tracing::info!("handled"));
    metrics::with_local_recorder(&telemetry.metrics_recorder(), || {
        metrics::counter!("facade").increment(1);
    });
    assert_eq!(telemetry.metrics().series_count(), 0);
    assert_eq!(telemetry.stats().held_items(), 0);

    // A bound handle still aggregates; the harvest lets it go, counted.
    let jobs = telemetry.metrics().counter("jobs", ()).await.unwrap();
    jobs.add(2.0);
    telemetry.harvest_now();
    let discarded = eventually(BOUND, || telemetry.stats().items_discarded() >= 1).await;
    assert!(discarded, "{:?}", telemetry.stats());

    let report = telemetry.shutdown().await;
    assert!(server.requests().is_empty(), "no request reaches a server");
    assert_eq!(report.items_sent(), 0);
    assert_eq!(report.items_dropped(), 0);
    assert_eq!(report.items_discarded(), 1); // the handle's series
    assert_eq!(report.items_refused(), 0);
    assert_eq!(
        (report.layer.spans_recorded, report.layer.logs_recorded),
        (0, 0)
    );
    assert_eq!(telemetry.stats().held_items(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn disabled_from_the_environment_needs_no_key() {
    let telemetry = Telemetry::builder()
        .environment([(env::ENABLED, "false")])
        .build()
        .unwrap();
    assert!(!telemetry.is_enabled());
    telemetry.logs().record(Log::new("not kept")).await;
    assert_eq!(telemetry.stats().held_items(), 0);
    let report = tokio::time::timeout(BOUND, telemetry.shutdown())
        .await
        .unwrap();
    assert_eq!((report.items_discarded(), report.items_sent()), (0, 0));

    // Code wins over the variable.
    let on = Telemetry::builder()
        .environment([(env::ENABLED, "false")])
        .enabled(true)
        .build();
    assert!(matches!(on, Err(ConfigError::MissingApiKey)));

    let bad = Telemetry::builder()
        .environment([(env::ENABLED, "sometimes")])
        .build();
    assert!(matches!(
        bad,
        Err(ConfigError::InvalidVariable {
            name: env::ENABLED,
            ..
        })
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn the_missing_key_error_names_the_variables_and_the_switch() {
    let no_env: [(&str, &str); 0] = [];
    let err = Telemetry::builder()
        .environment(no_env)
        .build()
        .unwrap_err();
    let message = err.to_string();
    for needle in [
        "NEW_RELIC_API_KEY",
        "NEW_RELIC_LICENSE_KEY",
        "NEW_RELIC_ENABLED=false",
        "enabled(false)",
    ] {
        assert!(message.contains(needle), "{needle} in {message:?}");
    }
}
