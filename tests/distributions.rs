//! Distributions end to end: recorded by name and through handles into a
//! `MetricBatch`, read at its flushes into points, sent by a harvester with
//! an OTLP client to the test server, which decodes the protobuf and
//! rebuilds each distribution. Every value recorded is in exactly one point
//! that arrived, or counted as dropped with its reason.

mod support;

use std::sync::Arc;
use std::time::Duration;

use newrelic_telemetry::attrs;
use newrelic_telemetry::client::{Client, Metrics, Otlp, RetryPolicy};
use newrelic_telemetry::distribution::Distribution;
use newrelic_telemetry::test_util::{ReceivedDistribution, ScriptedResponse, TestIngestServer};
use newrelic_telemetry::{Api, Harvester, MetricBatch};
use support::{client_builder, multi_thread, on_demand_harvester, server};

/// The count, sum, min and max of what arrived for `name`, merged over
/// every point (of every interval).
fn merged(received: &[ReceivedDistribution], name: &str) -> Distribution {
    let mut all = Distribution::new();
    for r in received.iter().filter(|r| r.name == name) {
        all.merge(&r.distribution).expect("a finite sum");
    }
    all
}

/// The exact `q`-quantile (nearest rank) of `values`, sorted.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[test]
fn values_from_many_tasks_arrive_once_each_with_their_percentiles() {
    let rt = multi_thread(4);
    rt.block_on(async {
        let server = server().await;
        let batch = Arc::new(
            MetricBatch::builder()
                .common_attributes(attrs!["service.name" => "checkout"])
                .build(),
        );
        let metrics =
            on_demand_harvester(batch.clone(), support::client::<Metrics>(&server)).spawn();
        let points = on_demand_harvester(
            batch.distributions().clone(),
            support::client::<Otlp>(&server),
        )
        .spawn();

        // 8 tasks by name, 4 through one shared handle; three harvests in
        // between.
        let handle = batch
            .distribution("job.duration", attrs!["queue" => "emails"])
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..12u32 {
            let (batch, handle) = (batch.clone(), handle.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..2_000u32 {
                    // Log-spread values from 0.5 to about 5,000.
                    let v = 0.5 * f64::from(1 + (i * 7919 + t * 104_729) % 10_000);
                    if t < 8 {
                        let route = if i % 2 == 0 { "/a" } else { "/b" };
                        batch
                            .record_distribution("http.duration", v, [("route", route)])
                            .await;
                    } else {
                        handle.record(v);
                    }
                    if i % 500 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for round in 0..3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            metrics.harvest_now();
            let _ = round;
        }
        for task in tasks {
            task.await.unwrap();
        }
        // The metric pipeline stops first: its last flush hands the
        // distributions' pipeline its points.
        metrics.shutdown().await;
        points.shutdown().await;

        let received = server.distributions();
        let http = merged(&received, "http.duration");
        let jobs = merged(&received, "job.duration");
        assert_eq!(http.count(), 8 * 2_000);
        assert_eq!(jobs.count(), 4 * 2_000);
        // Every point names its series and its sender.
        for r in &received {
            assert_eq!(r.resource.get("service.name"), Some(&"checkout".into()));
            assert!(r.time_unix_nano > r.start_time_unix_nano, "{r}");
        }
        let routes: std::collections::BTreeSet<_> = received
            .iter()
            .filter(|r| r.name == "http.duration")
            .map(|r| format!("{:?}", r.attributes.get("route")))
            .collect();
        assert_eq!(routes.len(), 2);

        // The exact values, for min, max, sum and percentiles.
        let mut values: Vec<f64> = (0..12u32)
            .flat_map(|t| {
                (0..2_000u32).map(move |i| 0.5 * f64::from(1 + (i * 7919 + t * 104_729) % 10_000))
            })
            .collect();
        let jobs_values: Vec<f64> = values.split_off(8 * 2_000);
        for (d, mut exact) in [(http, values), (jobs, jobs_values)] {
            exact.sort_by(f64::total_cmp);
            assert_eq!(d.min(), exact.first().copied());
            assert_eq!(d.max(), exact.last().copied());
            let sum: f64 = exact.iter().sum();
            assert!((d.sum() - sum).abs() <= sum * 1e-12, "{} vs {sum}", d.sum());
            // Within the bucket of the exact quantile: half a bucket's width
            // at the scale sent (about 2.2% at scale 4).
            let half_width = 2f64.powf(2f64.powi(-i32::from(d.scale()) - 1)) - 1.0;
            for q in [0.5, 0.9, 0.99] {
                let (estimate, want) = (d.quantile(q).unwrap(), exact_quantile(&exact, q));
                assert!(
                    (estimate - want).abs() / want <= half_width * 1.000_001,
                    "p{q}: {estimate} vs {want} at scale {}",
                    d.scale()
                );
            }
        }
        // Every point sent was received; nothing was dropped.
        let stats = points.stats();
        assert_eq!(stats.items_sent as usize, received.len());
        assert_eq!(stats.items_dropped(), 0);
        assert_eq!(batch.distributions().record_stats().items_dropped(), 0);
        // The OTLP requests carried the contract's headers.
        let otlp: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| r.api == Some(Api::Otlp))
            .collect();
        assert!(!otlp.is_empty());
        for r in &otlp {
            assert_eq!(r.header("api-key"), Some("k"));
            assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
            assert_eq!(r.header("content-encoding"), Some("gzip"));
        }
    });
}

#[test]
fn concurrent_writers_and_flushes_lose_and_repeat_nothing() {
    let rt = multi_thread(2);
    rt.block_on(async {
        let batch = Arc::new(MetricBatch::new());
        let handle = batch.distribution("d", ()).await.unwrap();
        let writers: Vec<_> = (0..3)
            .map(|t| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000u32 {
                        handle.record(f64::from(i % 977 + t));
                    }
                })
            })
            .collect();
        let mut total = Distribution::new();
        let mut flushes = 0;
        while writers.iter().any(|w| !w.is_finished()) || flushes == 0 {
            batch.flush().await;
            for point in batch.distributions().flush().await.0 {
                let d = point.distribution();
                // Each point is whole: its buckets hold exactly its count.
                assert_eq!(
                    d.zero_count() + d.positive().total() + d.negative().total(),
                    d.count()
                );
                total.merge(d).unwrap();
            }
            flushes += 1;
            tokio::task::yield_now().await;
        }
        for w in writers {
            w.join().unwrap();
        }
        batch.flush().await;
        for point in batch.distributions().flush().await.0 {
            total.merge(point.distribution()).unwrap();
        }
        assert_eq!(total.count(), 150_000);
        let sum: f64 = (0..3u32)
            .flat_map(|t| (0..50_000u32).map(move |i| f64::from(i % 977 + t)))
            .sum();
        assert_eq!(total.sum(), sum);
        assert_eq!((total.min(), total.max()), (Some(0.0), Some(978.0)));
        assert_eq!(total.zero_count(), 52); // i % 977 == 0 for t = 0
        assert!(flushes > 1);
    });
}

#[tokio::test(flavor = "current_thread")]
async fn edge_values_arrive_in_their_buckets() {
    let server = server().await;
    let batch = Arc::new(MetricBatch::new());
    let values = [
        0.0,
        -0.0,
        f64::from_bits(1), // the smallest subnormal
        f64::MIN_POSITIVE,
        1.0,
        2.0,
        1024.0,
        -3.5,
        -1e-300,
        f64::MAX / 4.0,
    ];
    for v in values {
        batch.record_distribution("edges", v, ()).await;
    }
    let points = on_demand_harvester(
        batch.distributions().clone(),
        support::client::<Otlp>(&server),
    )
    .spawn();
    batch.flush().await;
    points.shutdown().await;
    let received = server.distributions();
    assert_eq!(received.len(), 1);
    let got = &received[0].distribution;
    // What a plain distribution records, lowered to the same scale.
    let mut want = Distribution::new();
    for v in values {
        want.record(v).unwrap();
    }
    assert_eq!(got.scale(), want.scale());
    assert_eq!((got.count(), got.zero_count()), (10, 2));
    assert_eq!(
        (got.positive(), got.negative()),
        (want.positive(), want.negative())
    );
    assert_eq!((got.min(), got.max()), (Some(-3.5), Some(f64::MAX / 4.0)));
}

#[tokio::test(flavor = "current_thread")]
async fn non_finite_values_are_refused_and_counted() {
    let batch = MetricBatch::new();
    let handle = batch.distribution("d", ()).await.unwrap();
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        batch.record_distribution("d", v, ()).await;
        handle.record(v);
    }
    handle.record(f64::MAX);
    handle.record(f64::MAX); // the sum would overflow: refused
    assert_eq!(batch.record_stats().items_dropped_invalid, 7);
    batch.flush().await;
    let (points, _) = batch.distributions().flush().await;
    assert_eq!(points[0].distribution().count(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn bucket_pages_are_counted_in_the_budget_and_given_back() {
    let batch = MetricBatch::new();
    batch.record_distribution("d", 1.5, ()).await;
    let one_page = batch.memory().held_bytes;
    // 20 more powers of two: 20 more pages of 512 bytes (32 buckets in each
    // of two slots), and a few groups of the directory.
    for e in 1..=20 {
        batch.record_distribution("d", 2f64.powi(e) * 1.5, ()).await;
    }
    let more = batch.memory().held_bytes - one_page;
    assert!((20 * 512..20 * 512 + 4 * 128 + 1).contains(&more), "{more}");
    // A flush lets go of the series: its pages go back to the budget (the
    // point's own bytes are counted by the distributions' batch).
    batch.flush().await;
    assert_eq!(batch.memory().held_bytes, 0);
    assert_eq!(batch.distributions().len().await, 1);
}

/// Records `n` series of one value each and flushes them into the
/// distributions' batch.
async fn points(batch: &MetricBatch, n: usize) {
    for i in 0..n {
        batch
            .record_distribution("load", 1.0 + i as f64, [("series", i as i64)])
            .await;
    }
    batch.flush().await;
}

fn otlp_client(server: &TestIngestServer) -> newrelic_telemetry::client::ClientBuilder<Otlp> {
    client_builder::<Otlp>(server)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn server_errors_and_429_are_retried_then_delivered() {
    let server = server().await;
    server.respond_to_otlp_metrics(ScriptedResponse::status(503));
    server.respond_to_otlp_metrics(ScriptedResponse::status(429).with_header("Retry-After", "7"));
    let batch = MetricBatch::new();
    points(&batch, 3).await;
    let harvester = on_demand_harvester(
        batch.distributions().clone(),
        otlp_client(&server).build().unwrap(),
    )
    .spawn();
    let report = harvester.shutdown().await;
    let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 429, 200]);
    let requests = server.requests();
    assert!(requests[2].received_at - requests[1].received_at >= Duration::from_secs(7));
    assert_eq!(server.distributions().len(), 3);
    let stats = harvester.stats();
    assert_eq!(
        (stats.items_sent, stats.items_dropped(), stats.retries),
        (3, 0, 2)
    );
    assert_eq!((report.api, report.delivery.items_sent), (Api::Otlp, 3));
}

#[tokio::test(flavor = "current_thread")]
async fn a_413_splits_until_every_point_is_delivered_once() {
    let server = server().await;
    let batch = MetricBatch::new();
    points(&batch, 64).await;
    // Roughly what a dozen points take, compressed.
    server.set_max_body_bytes(Some(600));
    let harvester = on_demand_harvester(
        batch.distributions().clone(),
        otlp_client(&server).build().unwrap(),
    )
    .spawn();
    harvester.shutdown().await;
    let mut series: Vec<_> = server
        .distributions()
        .iter()
        .map(|r| r.attributes.get("series").cloned())
        .collect();
    series.sort_by_key(|v| format!("{v:?}"));
    series.dedup();
    assert_eq!(series.len(), 64);
    assert_eq!(server.distributions().len(), 64);
    let stats = harvester.stats();
    assert!(stats.payloads_split > 0, "{stats:?}");
    assert_eq!((stats.items_sent, stats.items_dropped()), (64, 0));
}

#[tokio::test(flavor = "current_thread")]
async fn a_partial_success_counts_the_refused_points_as_dropped() {
    let server = server().await;
    server.respond_to_otlp_metrics(ScriptedResponse::otlp_partial_success(
        2,
        "2 data points were too old",
    ));
    let batch = MetricBatch::new();
    points(&batch, 5).await;
    let harvester = on_demand_harvester(
        batch.distributions().clone(),
        otlp_client(&server).build().unwrap(),
    )
    .spawn();
    harvester.shutdown().await;
    let stats = harvester.stats();
    assert_eq!(
        (
            stats.items_sent,
            stats.items_dropped_rejected,
            stats.items_dropped()
        ),
        (3, 2, 2)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_backlog_at_shutdown_is_counted_when_the_endpoint_never_answers() {
    let server = server().await;
    server.respond_with(ScriptedResponse::status(200).with_delay(Duration::from_secs(3600)));
    let batch = MetricBatch::new();
    points(&batch, 10).await;
    let client = otlp_client(&server)
        .retry_policy(RetryPolicy::none())
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let harvester = on_demand_harvester(batch.distributions().clone(), client)
        .shutdown_timeout(Duration::from_secs(2))
        .spawn();
    let started = tokio::time::Instant::now();
    harvester.shutdown().await;
    assert!(started.elapsed() <= Duration::from_secs(2) + Duration::from_millis(100));
    let stats = harvester.stats();
    assert_eq!((stats.items_sent, stats.items_dropped_shutdown), (0, 10));
}

#[tokio::test(flavor = "current_thread")]
async fn the_otlp_client_posts_to_the_regions_and_the_urls_it_is_given() {
    use newrelic_telemetry::Region;
    for (region, url) in [
        (Region::Us, "https://otlp.nr-data.net/v1/metrics"),
        (Region::Eu, "https://otlp.eu01.nr-data.net/v1/metrics"),
        (Region::FedRamp, "https://gov-otlp.nr-data.net/v1/metrics"),
    ] {
        let client = Client::<Otlp>::builder("k").region(region).build().unwrap();
        assert_eq!(client.endpoint(), url);
    }
    // A URL without a path means that host's /v1/metrics.
    let client = Client::<Otlp>::builder("k")
        .endpoint("http://127.0.0.1:4318")
        .build()
        .unwrap();
    assert_eq!(client.endpoint(), "http://127.0.0.1:4318/v1/metrics");
    // The key goes in api-key even when the license-key header is chosen.
    let server = server().await;
    let client = otlp_client(&server).license_key_header().build().unwrap();
    let batch = MetricBatch::new();
    points(&batch, 1).await;
    let (items, common) = batch.distributions().flush().await;
    client.send_batch(items, common).await.unwrap();
    assert_eq!(server.requests()[0].header("api-key"), Some("k"));
    assert_eq!(server.requests()[0].header("x-license-key"), None);
}

#[test]
fn a_harvester_spawned_by_hand_ships_distributions() {
    // The everyday form: `Harvester::spawn` with the default interval.
    let rt = support::current_thread();
    rt.block_on(async {
        let server = server().await;
        let batch = Arc::new(MetricBatch::new());
        let metrics = Harvester::spawn(batch.clone(), support::client::<Metrics>(&server));
        let points = Harvester::spawn(
            batch.distributions().clone(),
            otlp_client(&server).build().unwrap(),
        );
        batch.record_distribution("q", 4.0, ()).await;
        metrics.shutdown().await;
        points.shutdown().await;
        assert_eq!(server.distributions().len(), 1);
    });
}

#[tokio::test(flavor = "current_thread")]
async fn a_telemetry_starts_its_distribution_pipeline_when_first_needed() {
    let server = server().await;
    let telemetry = server
        .telemetry_builder()
        .service_name("checkout")
        .build()
        .unwrap();
    assert_eq!(telemetry.endpoints().otlp, server.otlp_metrics_url());
    telemetry.metrics().record_count("orders", 1, ()).await;
    assert!(telemetry.stats().distributions.is_none());

    let latency = telemetry
        .metrics()
        .distribution("latency", ())
        .await
        .unwrap();
    for ms in 1..=50 {
        latency.record(f64::from(ms));
    }
    support::eventually(Duration::from_secs(10), || {
        telemetry.stats().distributions.is_some()
    })
    .await;
    let report = telemetry.shutdown().await;
    let distributions = report
        .distributions
        .clone()
        .expect("the fifth pipeline ran");
    assert_eq!(distributions.api, Api::Otlp);
    assert_eq!(distributions.delivery.items_sent, 1);
    assert_eq!(report.items_sent(), 2); // the count and the distribution
    let received = server.distributions();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].distribution.count(), 50);
    assert_eq!(
        received[0].resource.get("service.name"),
        Some(&"checkout".into())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_telemetry_with_no_distribution_never_calls_the_otlp_endpoint() {
    let server = server().await;
    let telemetry = server.telemetry_builder().build().unwrap();
    telemetry.metrics().record_summary("latency", 3.0, ()).await;
    let report = telemetry.shutdown().await;
    assert!(report.distributions.is_none());
    assert_eq!(report.items_sent(), 1);
    assert!(server.requests().iter().all(|r| r.api != Some(Api::Otlp)));
}

#[tokio::test(flavor = "current_thread")]
async fn distributions_recorded_just_before_shutdown_are_sent() {
    let server = server().await;
    let telemetry = server.telemetry_builder().build().unwrap();
    // No harvest has run: the pipeline starts as the stop begins.
    telemetry
        .metrics()
        .record_distribution("late", 9.0, ())
        .await;
    let report = telemetry.shutdown().await;
    assert_eq!(
        report.distributions.as_ref().map(|r| r.delivery.items_sent),
        Some(1)
    );
    assert_eq!(server.distributions()[0].name, "late");
    assert_eq!(report.items_dropped(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn an_empty_point_is_refused_not_sent() {
    use newrelic_telemetry::RecordError;
    use newrelic_telemetry::distribution::DistributionPoint;
    let server = server().await;
    let points = newrelic_telemetry::batch::ItemBatch::<DistributionPoint>::new();
    let empty = DistributionPoint::new("idle", Distribution::new(), Duration::from_secs(5));
    assert_eq!(
        points.try_record(empty).await,
        Err(RecordError::EmptyDistribution)
    );
    assert_eq!(points.record_stats().items_dropped_invalid, 1);
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn points_the_distributions_batch_cannot_take_are_counted() {
    let batch = MetricBatch::new();
    for series in 0..3 {
        batch
            .record_distribution("d", 1.0, [("series", series)])
            .await;
    }
    // Its harvester stopped first, by mistake: the points have nowhere to go.
    batch.distributions().close().await;
    batch.flush().await;
    let stats = batch.distributions().record_stats();
    assert_eq!(stats.items_dropped_closed, 3);
    assert!(batch.distributions().is_empty().await);
    // Nothing is held for them anywhere.
    assert_eq!(batch.memory().held_items, 0);
    assert_eq!(batch.distributions().memory().held_items, 0);
}
