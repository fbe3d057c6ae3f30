//! Fault injection: the delivery policy against a scripted server on
//! 127.0.0.1. Every item carries a unique `seq`; the tests check, item by
//! item, that what the server accepted plus what the counters report dropped
//! is exactly what was recorded.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use newrelic_telemetry::client::{AttemptFailure, DropReason, Events, PayloadReport};
use newrelic_telemetry::test_util::{ReceivedRequest, ScriptedResponse, TestIngestServer};
use newrelic_telemetry::{Api, Common, Event, EventBatch, EventClient, Harvester, RetryPolicy};

mod support;
use support::{accepted_seqs, client_builder, noise, seq_event, server};

/// Events with unique `seq`s (and 64 characters of noise each, so that sizes
/// are predictable).
fn events(range: std::ops::Range<i64>) -> Vec<Event> {
    range.map(seq_event).collect()
}

fn request_ids(requests: &[ReceivedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.header("x-request-id").unwrap().to_owned())
        .collect()
}

fn gaps(requests: &[ReceivedRequest]) -> Vec<Duration> {
    requests
        .windows(2)
        .map(|w| w[1].received_at - w[0].received_at)
        .collect()
}

async fn client(server: &TestIngestServer, policy: RetryPolicy) -> EventClient {
    client_builder::<Events>(server)
        .retry_policy(policy)
        .build()
        .unwrap()
}

fn secs(s: &[u64]) -> Vec<Duration> {
    s.iter().map(|&s| Duration::from_secs(s)).collect()
}

#[tokio::test(start_paused = true)]
async fn transient_5xx_is_retried_with_backoff_under_one_request_id() {
    let server = server().await;
    for status in [500, 502, 503] {
        server.respond_with(ScriptedResponse::status(status));
    }
    let client = client(&server, RetryPolicy::default()).await;
    let report = client
        .send_batch(events(0..10), Common::new())
        .await
        .unwrap();

    let requests = server.requests();
    let statuses: Vec<_> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 502, 503, 200]);
    let ids = request_ids(&requests);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one request id across retries"
    );
    assert_eq!(gaps(&requests), secs(&[0, 1, 2]), "backoff 0, 1, 2 s");
    assert_eq!(report.payloads()[0].attempts(), 4);
    assert_eq!(client.stats().retries, 3);
    assert_eq!(accepted_seqs(&server), (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn the_specifications_example_schedule() {
    let server = server().await;
    server.respond_n(9, ScriptedResponse::status(503));
    let policy = RetryPolicy::default()
        .with_backoff_factor(Duration::from_secs(5))
        .with_max_backoff(Duration::from_secs(80))
        .with_max_retries(8)
        .with_total_budget(None);
    let err = client(&server, policy)
        .await
        .send(Event::new("E"))
        .await
        .unwrap_err();
    assert_eq!(
        gaps(&server.requests()),
        secs(&[0, 5, 10, 20, 40, 80, 80, 80])
    );
    assert!(matches!(
        err.report().first_drop_reason(),
        Some(DropReason::RetriesExhausted { last: AttemptFailure::Status(s) }) if s.as_u16() == 503
    ));
}

#[tokio::test(start_paused = true)]
async fn status_408_is_retried() {
    let server = server().await;
    server.respond_with(ScriptedResponse::status(408));
    client(&server, RetryPolicy::default())
        .await
        .send_batch(events(0..3), Common::new())
        .await
        .unwrap();
    let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [408, 200]);
    assert_eq!(accepted_seqs(&server), [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn status_429_waits_retry_after_in_seconds() {
    let server = server().await;
    server.respond_with(ScriptedResponse::status(429).with_header("Retry-After", "7"));
    client(&server, RetryPolicy::default())
        .await
        .send(Event::new("E"))
        .await
        .unwrap();
    assert_eq!(gaps(&server.requests()), secs(&[7]));
}

#[tokio::test(start_paused = true)]
async fn status_429_waits_retry_after_as_an_http_date() {
    let server = server().await;
    let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(4));
    server.respond_with(ScriptedResponse::status(429).with_header("Retry-After", when));
    client(&server, RetryPolicy::default())
        .await
        .send(Event::new("E"))
        .await
        .unwrap();
    let gap = gaps(&server.requests())[0];
    // HTTP dates have a resolution of one second.
    assert!(
        gap >= Duration::from_secs(2) && gap <= Duration::from_secs(4),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn status_429_without_retry_after_falls_back_to_backoff() {
    let server = server().await;
    server.respond_n(3, ScriptedResponse::status(429));
    client(&server, RetryPolicy::default())
        .await
        .send(Event::new("E"))
        .await
        .unwrap();
    // At least the backoff factor, even for the first retry.
    assert_eq!(gaps(&server.requests()), secs(&[1, 1, 2]));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_is_capped() {
    let server = server().await;
    server.respond_with(ScriptedResponse::status(429).with_header("Retry-After", "3600"));
    let policy = RetryPolicy::default().with_max_retry_after(Duration::from_secs(30));
    client(&server, policy)
        .await
        .send(Event::new("E"))
        .await
        .unwrap();
    assert_eq!(gaps(&server.requests()), secs(&[30]));
}

#[tokio::test]
async fn rejections_are_dropped_at_once_counted_and_reported() {
    for status in [400u16, 401, 403, 404, 405, 409, 410, 411] {
        let server = server().await;
        server.respond_with(ScriptedResponse::status(status));
        let seen: Arc<Mutex<Vec<PayloadReport>>> = Arc::default();
        let sink = seen.clone();
        let client = client_builder::<Events>(&server)
            .on_drop(move |report| sink.lock().unwrap().push(report.clone()))
            .build()
            .unwrap();
        let err = client
            .send_batch(events(0..5), Common::new())
            .await
            .unwrap_err();
        assert_eq!(server.requests().len(), 1, "{status} is not retried");
        assert!(matches!(
            err.report().first_drop_reason(),
            Some(DropReason::Rejected { status: s }) if s.as_u16() == status
        ));
        assert_eq!(client.stats().items_dropped_rejected, 5);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].items(), seen[0].api()), (5, Api::Event));
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_closed_mid_request_is_retried() {
    let server = server().await;
    server.respond_with(ScriptedResponse::close_connection());
    client(&server, RetryPolicy::default())
        .await
        .send_batch(events(0..4), Common::new())
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [0, 200]
    );
    let ids = request_ids(&requests);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(accepted_seqs(&server), [0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_response_slower_than_the_timeout_is_retried() {
    let server = server().await;
    server.respond_with(ScriptedResponse::status(202).with_delay(Duration::from_secs(5)));
    let client = client_builder::<Events>(&server)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let report = client
        .send_batch(events(0..2), Common::new())
        .await
        .unwrap();
    assert_eq!(report.payloads()[0].attempts(), 2);
    // Both attempts carry the same request id, which is how a back end
    // recognises the duplicate when a timed-out attempt was in fact processed.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let ids = request_ids(&requests);
    assert_eq!(ids[0], ids[1]);
    let unique: BTreeSet<_> = accepted_seqs(&server).into_iter().collect();
    assert_eq!(unique, (0..2).collect());
}

#[tokio::test]
async fn no_retry_policy_sends_once() {
    let server = server().await;
    server.respond_with(ScriptedResponse::status(503));
    let err = client(&server, RetryPolicy::none())
        .await
        .send(Event::new("E"))
        .await
        .unwrap_err();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(err.report().payloads()[0].attempts(), 1);
}

#[tokio::test]
async fn payloads_over_the_size_limit_are_split_before_sending() {
    let server = server().await;
    let client = client_builder::<Events>(&server)
        .max_payload_bytes(2_000)
        .build()
        .unwrap();
    let report = client
        .send_batch(events(0..400), Common::new())
        .await
        .unwrap();
    let requests = server.requests();
    assert!(requests.len() > 1);
    assert!(requests.iter().all(|r| r.wire_bytes <= 2_000));
    let ids: BTreeSet<_> = request_ids(&requests).into_iter().collect();
    assert_eq!(ids.len(), requests.len(), "a new request id per part");
    assert_eq!(
        accepted_seqs(&server),
        (0..400).collect::<Vec<_>>(),
        "in order, once each"
    );
    assert_eq!(report.items_sent(), 400);
}

#[tokio::test]
async fn status_413_splits_the_payload_in_two_with_new_request_ids() {
    let server = server().await;
    let client = client(&server, RetryPolicy::default()).await;
    let body = newrelic_telemetry::client::encode_payload::<newrelic_telemetry::client::Events>(
        &events(0..100),
        &Common::new(),
    )
    .await
    .unwrap();
    server.set_max_body_bytes(Some(body.len() * 2 / 3));
    let report = client
        .send_batch(events(0..100), Common::new())
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [413, 200, 200]
    );
    let ids = request_ids(&requests);
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    assert_eq!(accepted_seqs(&server), (0..100).collect::<Vec<_>>());
    assert_eq!(report.items_sent(), 100);
    assert_eq!(client.stats().payloads_split, 1);
}

#[tokio::test]
async fn a_persistent_413_on_single_items_ends_with_them_dropped() {
    let server = server().await;
    server.set_max_body_bytes(Some(10));
    let client = client(&server, RetryPolicy::default()).await;
    let err = client
        .send_batch(events(0..4), Common::new())
        .await
        .unwrap_err();
    // 4 items, then halves of 2, then single items: each item is sent on its
    // own once before it is dropped as too large (seven requests, bounded).
    assert_eq!(server.requests().len(), 7);
    assert_eq!(err.report().items_dropped(), 4);
    assert!(matches!(
        err.report().first_drop_reason(),
        Some(DropReason::TooLarge { .. })
    ));
    assert_eq!(client.stats().items_dropped_too_large, 4);

    // A 413 on a single item teaches nothing about other payloads: the next
    // items are sent too (the server might have recovered), and dropped only
    // after their own 413s.
    client
        .send_batch(events(4..8), Common::new())
        .await
        .unwrap_err();
    assert_eq!(server.requests().len(), 14);
    assert_eq!(client.stats().items_dropped_too_large, 8);
}

#[tokio::test]
async fn after_a_413_later_payloads_are_split_before_sending() {
    let server = server().await;
    let client = client(&server, RetryPolicy::default()).await;
    let body = newrelic_telemetry::client::encode_payload::<newrelic_telemetry::client::Events>(
        &events(0..10_000),
        &Common::new(),
    )
    .await
    .unwrap();
    assert!(
        body.len() > 300_000,
        "{} bytes: large enough to learn from",
        body.len()
    );
    server.set_max_body_bytes(Some(body.len() * 2 / 3));
    client
        .send_batch(events(0..10_000), Common::new())
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 3, "413, then two halves");
    client
        .send_batch(events(10_000..20_000), Common::new())
        .await
        .unwrap();
    let statuses: Vec<_> = server.requests()[3..].iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no second 413: {statuses:?}"
    );
    let unique: BTreeSet<_> = accepted_seqs(&server).into_iter().collect();
    assert_eq!(unique, (0..20_000).collect());
}

#[tokio::test]
async fn a_single_item_over_the_limit_is_dropped_without_a_request() {
    let server = server().await;
    let client = client_builder::<Events>(&server)
        .max_payload_bytes(200)
        .build()
        .unwrap();
    let huge = Event::new("Big").with_attribute(
        "blob",
        (0..20).map(|seed| noise(seed, 64)).collect::<String>(),
    );
    let err = client
        .send_batch(vec![huge, Event::new("Small")], Common::new())
        .await
        .unwrap_err();
    assert_eq!(
        (err.report().items_sent(), err.report().items_dropped()),
        (1, 1)
    );
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.events()[0]["eventType"], "Small");
}

#[tokio::test(start_paused = true)]
async fn a_429_storm_stays_within_its_budget() {
    let server = server().await;
    server.respond_n(
        1000,
        ScriptedResponse::status(429).with_header("Retry-After", "5"),
    );
    let policy = RetryPolicy::default()
        .with_max_retries(1000)
        .with_total_budget(Some(Duration::from_secs(30)));
    let started = tokio::time::Instant::now();
    let err = client(&server, policy)
        .await
        .send(Event::new("E"))
        .await
        .unwrap_err();
    assert!(started.elapsed() <= Duration::from_secs(30));
    assert_eq!(
        server.requests().len(),
        6,
        "attempts at 0, 5, ..., 25 s: a sixth wait would end at the budget"
    );
    assert!(matches!(
        err.report().first_drop_reason(),
        Some(DropReason::RetriesExhausted { last: AttemptFailure::Status(s) }) if s.as_u16() == 429
    ));
}

/// Harvests `n` events with unique `seq`s through a harvester and returns
/// its report once shut down.
async fn harvest_events(
    server: &TestIngestServer,
    policy: RetryPolicy,
    shutdown_timeout: Duration,
    max_queued_items: usize,
    rounds: i64,
    per_round: i64,
) -> newrelic_telemetry::harvester::HarvestReport {
    let batch = Arc::new(EventBatch::new());
    let harvester = Harvester::builder(batch.clone(), client(server, policy).await)
        .harvest_interval(Duration::from_secs(5))
        .shutdown_timeout(shutdown_timeout)
        .max_queued_items(max_queued_items)
        .spawn();
    for round in 0..rounds {
        for e in events(round * per_round..(round + 1) * per_round) {
            batch.record(e).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    harvester.shutdown().await
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_an_outage_returns_by_its_deadline_with_drops_reported() {
    let server = server().await;
    server.respond_n(100_000, ScriptedResponse::status(503));
    let started = tokio::time::Instant::now();
    let report = harvest_events(
        &server,
        RetryPolicy::default(),
        Duration::from_secs(3),
        10_000,
        2,
        10,
    )
    .await;
    let shutdown_took = started.elapsed() - Duration::from_secs(10);
    assert!(shutdown_took <= Duration::from_secs(3), "{shutdown_took:?}");
    assert!(report.deadline_exceeded && report.completed);
    assert_eq!(report.delivery.items_sent, 0);
    assert_eq!(report.delivery.items_dropped(), 20, "{:?}", report.delivery);
    assert_eq!(report.delivery.items_dropped_shutdown, 20);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_the_oldest_payload_and_counts_it() {
    let server = server().await;
    // Down for the first 60 s of requests, then back.
    server.respond_n(9, ScriptedResponse::status(503));
    let policy = RetryPolicy::default()
        .with_max_retries(8)
        .with_total_budget(None);
    let report = harvest_events(&server, policy, Duration::from_secs(120), 15, 6, 10).await;
    let d = report.delivery;
    assert!(d.items_dropped_queue_full > 0, "{d:?}");
    assert_eq!(d.items_sent + d.items_dropped(), 60, "{d:?}");
    let accepted = accepted_seqs(&server);
    assert_eq!(accepted.len() as u64, d.items_sent);
    // The oldest waiting payloads went first: whatever was accepted after the
    // first (in-flight) payload is the newest data.
    assert!(accepted.contains(&59));
}

#[tokio::test(start_paused = true)]
async fn every_item_is_accounted_for_under_mixed_faults() {
    let server = server().await;
    server.respond_with(ScriptedResponse::status(500));
    server.respond_with(ScriptedResponse::close_connection());
    server.respond_with(ScriptedResponse::status(429).with_header("Retry-After", "1"));
    server.respond_with(ScriptedResponse::status(400));
    server.respond_with(ScriptedResponse::status(502));
    server.respond_with(ScriptedResponse::status(413));
    server.respond_n(20, ScriptedResponse::status(503));
    let policy = RetryPolicy::default().with_max_retries(4);
    let report = harvest_events(&server, policy, Duration::from_secs(60), 10_000, 8, 25).await;
    let d = report.delivery;

    let accepted = accepted_seqs(&server);
    let unique: BTreeSet<_> = accepted.iter().copied().collect();
    assert_eq!(unique.len(), accepted.len(), "nothing accepted twice");
    assert_eq!(accepted.len() as u64, d.items_sent);
    assert_eq!(d.items_sent + d.items_dropped(), 200, "{d:?}");
    assert!(unique.iter().all(|seq| (0..200).contains(seq)));
    assert!(
        d.items_dropped_rejected >= 25,
        "the 400 dropped a payload: {d:?}"
    );
    assert!(!report.deadline_exceeded);
}
