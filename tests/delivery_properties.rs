//! Property of the delivery policy around the 413 split: for any batch of
//! events or logs (of varied sizes, some alone over a limit) and any answers
//! from the server (a body-size limit, and scripted 413s, 5xx, 408s, 429s
//! with a short `Retry-After`, 2xx, rejections and dropped connections,
//! interleaved), sent through a client in one to three `send_batch` calls or
//! through a harvester, every item is either received by the server exactly
//! once or counted as dropped once with a reason, never both and never
//! neither, and the delivery counters say so.
//!
//! Items carry a unique `seq` attribute. Every request the server received is
//! decoded, so each drop a client reports (to its `on_drop` callback) is
//! traced through its `x-request-id` to the very items it dropped; a payload
//! dropped before it was ever sent (a single item over `max_payload_bytes`)
//! accounts for one item that no request carried. The split itself is
//! checked too: a 413 on a payload of several items is followed by its two
//! halves, in order, under request ids never used before.
//!
//! Every case runs on one shared runtime on the real clock with backoffs of a
//! millisecond or two, bounded by [`CASE_TIMEOUT`]; no answer is delayed and
//! the request timeout is longer than a case, so no request times out (the
//! one documented way an item may arrive twice).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use newrelic_telemetry::batch::{BatchItem, ItemBatch};
use newrelic_telemetry::client::{
    AttemptFailure, Client, DeliveryStats, DropReason, Events, Kind, Logs, PayloadReport,
    SendReport,
};
use newrelic_telemetry::harvester::HarvestReport;
use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
use newrelic_telemetry::{Common, Event, Harvester, Log, RetryPolicy};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde_json::Value as Json;
use support::fail;

mod support;

/// How long one case may take, every request and backoff included.
const CASE_TIMEOUT: Duration = Duration::from_secs(10);
/// The request timeout: longer than a case, so that none times out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A harvester's shutdown deadline: within a case, far beyond what its sends take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(8);
/// Characters per attribute value of an event (the Event API allows 4,096).
const EVENT_VALUE_CHARS: usize = 4000;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        max_shrink_iters: 256,
        ..support::proptest_config(cases)
    }
}

/// The binary's one runtime (see `support::shared_runtime`).
fn runtime() -> &'static tokio::runtime::Runtime {
    support::shared_runtime()
}

/// The SDK's HTTP client setup, without proxies (loopback only).
fn http() -> reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        newrelic_telemetry::client::http_client_builder()
            .no_proxy()
            .build()
            .expect("an HTTP client")
    })
    .clone()
}

// ---------------------------------------------------------------------------
// Items

/// `len` printable ASCII characters that gzip cannot squeeze much (none that
/// JSON escapes), the same for the same `seed`.
fn noise(seed: usize, len: usize) -> String {
    let mut x = (seed as u64 ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match b'!' + ((x >> 40) % 94) as u8 {
                b'"' | b'\\' => 'q',
                b => char::from(b),
            }
        })
        .collect()
}

/// The two item kinds: how to make item `seq` with `pad` characters of
/// noise, and how to read the `seq`s back out of a request's body.
trait Flavor: Kind<Item: BatchItem> {
    fn item(seq: usize, pad: usize) -> Self::Item;
    fn url(server: &TestIngestServer) -> String;
    fn seqs(body: &Json) -> Option<Vec<usize>>;
}

fn seq_of(value: Option<&Json>) -> Option<usize> {
    usize::try_from(value?.as_u64()?).ok()
}

impl Flavor for Events {
    fn item(seq: usize, pad: usize) -> Event {
        let text = noise(seq, pad);
        let mut event = Event::new("Work").with_attribute("seq", seq as i64);
        for (i, chunk) in text.as_bytes().chunks(EVENT_VALUE_CHARS).enumerate() {
            let chunk = String::from_utf8(chunk.to_vec()).expect("ASCII");
            event = event.with_attribute(format!("pad{i}"), chunk);
        }
        event
    }

    fn url(server: &TestIngestServer) -> String {
        server.event_url()
    }

    fn seqs(body: &Json) -> Option<Vec<usize>> {
        body.as_array()?
            .iter()
            .map(|e| seq_of(e.get("seq")))
            .collect()
    }
}

impl Flavor for Logs {
    fn item(seq: usize, pad: usize) -> Log {
        Log::new(noise(seq, pad)).with_attribute("seq", seq as i64)
    }

    fn url(server: &TestIngestServer) -> String {
        server.log_url()
    }

    fn seqs(body: &Json) -> Option<Vec<usize>> {
        let mut seqs = Vec::new();
        for block in body.as_array()? {
            for log in block.get("logs")?.as_array()? {
                seqs.push(seq_of(log.get("attributes")?.get("seq"))?);
            }
        }
        Some(seqs)
    }
}

// ---------------------------------------------------------------------------
// Cases

/// A scripted answer (taken by the next request, whatever its size).
#[derive(Clone, Copy, Debug)]
enum Answer {
    Accept(u16),
    TooLarge,
    /// 5xx or 408: retried with backoff.
    Transient(u16),
    /// 429, with this `Retry-After` (in seconds, cut to a few milliseconds).
    TooMany(Option<&'static str>),
    Reject(u16),
    /// The connection closed after the request was read, without an answer.
    Close,
}

impl Answer {
    fn scripted(self) -> ScriptedResponse {
        match self {
            Answer::Accept(status) | Answer::Transient(status) | Answer::Reject(status) => {
                ScriptedResponse::status(status)
            }
            Answer::TooLarge => ScriptedResponse::status(413),
            Answer::TooMany(None) => ScriptedResponse::status(429),
            Answer::TooMany(Some(after)) => {
                ScriptedResponse::status(429).with_header("Retry-After", after)
            }
            Answer::Close => ScriptedResponse::close_connection(),
        }
    }
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        3 => select(vec![200u16, 202]).prop_map(Answer::Accept),
        4 => Just(Answer::TooLarge),
        3 => select(vec![500u16, 502, 503, 504, 408]).prop_map(Answer::Transient),
        2 => select(vec![None, Some("0"), Some("1")]).prop_map(Answer::TooMany),
        1 => select(vec![400u16, 403, 410]).prop_map(Answer::Reject),
        1 => Just(Answer::Close),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `send_batch` of the items in this many rounds, one after the other
    /// (a later round is encoded under what a 413 taught the client).
    Client { rounds: usize },
    /// Recorded into a batch whose harvester sends them at shutdown.
    Harvester,
}

#[derive(Clone, Debug)]
struct Case {
    logs: bool,
    /// Characters of noise in each item.
    pads: Vec<usize>,
    /// The server's limit on a body on the wire (413 over it).
    server_limit: Option<usize>,
    /// The client's `max_payload_bytes`.
    client_max: Option<usize>,
    script: Vec<Answer>,
    retries: u32,
    budget: bool,
    mode: Mode,
}

fn pads() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        // Many small items.
        3 => vec(0usize..1_500, 1..=32),
        // Fewer, some of them large (several attribute values, long
        // messages); kept small enough for an unoptimised gzip.
        1 => vec(prop_oneof![2 => 0usize..1_000, 1 => 4_000usize..12_000], 2..=10),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        pads(),
        prop_oneof![
            1 => Just(None),
            // 128 bytes to 90 KiB, evenly on a log scale.
            4 => (7.0f64..16.5).prop_map(|e| Some(e.exp2() as usize)),
        ],
        prop_oneof![2 => Just(None), 1 => (256usize..=12_000).prop_map(Some)],
        vec(answer(), 0..=10),
        0u32..=3,
        any::<bool>(),
        prop_oneof![
            3 => (1usize..=3).prop_map(|rounds| Mode::Client { rounds }),
            1 => Just(Mode::Harvester),
        ],
    )
        .prop_map(
            |(logs, pads, server_limit, client_max, script, retries, budget, mode)| Case {
                logs,
                pads,
                server_limit,
                client_max,
                script,
                retries,
                budget,
                mode,
            },
        )
}

// ---------------------------------------------------------------------------
// One case

/// A request as the server saw it.
struct Sent {
    id: String,
    seqs: Vec<usize>,
    status: u16,
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        let checked = async {
            if case.logs {
                check::<Logs>(case).await
            } else {
                check::<Events>(case).await
            }
        };
        tokio::time::timeout(CASE_TIMEOUT, checked)
            .await
            .unwrap_or_else(|_| Err(fail("the case did not finish in time")))
    })
}

/// Sends the items through a harvester, shut down once they are recorded.
async fn harvest<K: Flavor>(
    client: Client<K>,
    items: Vec<K::Item>,
) -> Result<HarvestReport, TestCaseError> {
    let batch = Arc::new(ItemBatch::<K::Item>::new());
    let harvester = Harvester::builder(batch.clone(), client)
        .harvest_interval(Duration::from_secs(3600))
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .spawn();
    for item in items {
        batch.try_record(item).await.map_err(fail)?;
    }
    let report = harvester.shutdown().await;
    prop_assert!(report.completed && !report.deadline_exceeded, "{report:?}");
    prop_assert_eq!(report.record.items_dropped(), 0, "{:?}", report.record);
    Ok(report)
}

async fn check<K: Flavor>(case: &Case) -> Result<(), TestCaseError> {
    let server = TestIngestServer::start().await.map_err(fail)?;
    server.set_max_body_bytes(case.server_limit);
    for answer in &case.script {
        server.respond_with(answer.scripted());
    }
    let policy = RetryPolicy::default()
        .with_max_retries(case.retries)
        .with_backoff_factor(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(2))
        .with_max_retry_after(Duration::from_millis(3))
        .with_total_budget(case.budget.then_some(Duration::from_secs(5)));
    let reported: Arc<Mutex<Vec<PayloadReport>>> = Arc::default();
    let sink = reported.clone();
    let mut builder = Client::<K>::builder("test-key")
        .endpoint(K::url(&server))
        .http_client(http())
        .timeout(REQUEST_TIMEOUT)
        .retry_policy(policy)
        .on_drop(move |report| sink.lock().unwrap().push(report.clone()));
    if let Some(max) = case.client_max {
        builder = builder.max_payload_bytes(max);
    }
    let client = builder.build().map_err(fail)?;
    let max_payload_bytes = case
        .client_max
        .unwrap_or(newrelic_telemetry::client::MAX_PAYLOAD_BYTES);

    let n = case.pads.len();
    let items: Vec<K::Item> = case
        .pads
        .iter()
        .enumerate()
        .map(|(seq, &pad)| K::item(seq, pad))
        .collect();

    // What the client said of each send (harvesters say it in counters only).
    let mut send_reports: Vec<SendReport> = Vec::new();
    let stats: DeliveryStats = match case.mode {
        Mode::Client { rounds } => {
            let per_round = n.div_ceil(rounds);
            let mut rest = items;
            while !rest.is_empty() {
                let tail = rest.split_off(per_round.min(rest.len()));
                let round = std::mem::replace(&mut rest, tail);
                let len = round.len();
                let result = client.send_batch(round, Common::new()).await;
                let report = match &result {
                    Ok(report) => report.clone(),
                    Err(e) => e.report().clone(),
                };
                prop_assert_eq!(result.is_ok(), report.items_dropped() == 0);
                prop_assert_eq!(report.items_sent() + report.items_dropped(), len);
                send_reports.push(report);
            }
            client.stats()
        }
        Mode::Harvester => harvest::<K>(client.clone(), items).await?.delivery,
    };

    // Every request, decoded.
    let mut sent: Vec<Sent> = Vec::new();
    for r in server.requests() {
        prop_assert_eq!(r.api, Some(K::API));
        let id = r
            .header("x-request-id")
            .ok_or_else(|| fail("a request without an x-request-id"))?
            .to_owned();
        let seqs = K::seqs(&r.body).ok_or_else(|| fail("a body without every item's seq"))?;
        prop_assert!(!seqs.is_empty(), "a request of no items");
        prop_assert!(seqs.iter().all(|&s| s < n), "an item never recorded");
        let unique: BTreeSet<usize> = seqs.iter().copied().collect();
        prop_assert_eq!(unique.len(), seqs.len(), "an item twice in one request");
        sent.push(Sent {
            id,
            seqs,
            status: r.status,
        });
    }
    let attempts_of = |id: &str| -> Vec<&Sent> { sent.iter().filter(|s| s.id == id).collect() };

    // Attempts at one payload (one request id) carry the same items.
    let mut ids: BTreeMap<&str, &[usize]> = BTreeMap::new();
    for s in &sent {
        let first = *ids.entry(s.id.as_str()).or_insert(&s.seqs);
        prop_assert_eq!(first, &s.seqs[..], "request {} changed its items", s.id);
    }

    // A 413 on several items: its two halves follow, in order, each under a
    // request id never used before.
    let mut splits = 0u64;
    for (i, s) in sent.iter().enumerate() {
        if s.status != 413 || s.seqs.len() < 2 {
            continue;
        }
        splits += 1;
        let used: BTreeSet<&str> = sent[..=i].iter().map(|s| s.id.as_str()).collect();
        let (first, second) = s.seqs.split_at(s.seqs.len() / 2);
        for half in [first, second] {
            let followed = sent[i + 1..]
                .iter()
                .any(|later| later.seqs == half && !used.contains(later.id.as_str()));
            prop_assert!(
                followed,
                "a 413 on {} items (request {}) was not followed by its half {:?}",
                s.seqs.len(),
                s.id,
                half
            );
        }
    }

    // What the server accepted, item by item.
    let mut received = vec![0u64; n];
    let mut carried = vec![false; n];
    let mut accepted_requests = 0u64;
    for s in &sent {
        for &seq in &s.seqs {
            carried[seq] = true;
        }
        if (200..300).contains(&s.status) {
            accepted_requests += 1;
            for &seq in &s.seqs {
                received[seq] += 1;
            }
        }
    }

    // Each drop the client reported, traced to the items it dropped.
    let drops = reported.lock().unwrap().clone();
    let mut dropped: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut never_sent_drops = 0usize;
    let (mut too_large, mut rejected, mut exhausted) = (0u64, 0u64, 0u64);
    for d in &drops {
        prop_assert_eq!(d.api(), K::API);
        let reason = d
            .drop_reason()
            .ok_or_else(|| fail("on_drop with an accepted payload"))?;
        match reason {
            DropReason::TooLarge { .. } => too_large += d.items() as u64,
            DropReason::Rejected { .. } => rejected += d.items() as u64,
            DropReason::RetriesExhausted { .. } => exhausted += d.items() as u64,
            other => return Err(fail(format!("an unexpected drop: {other}"))),
        }
        let Some(id) = d.request_id() else {
            // Never sent: a single item over the client's maximum.
            prop_assert!(
                matches!(reason, DropReason::TooLarge { bytes } if *bytes > max_payload_bytes),
                "dropped unsent: {reason} (max {max_payload_bytes})"
            );
            prop_assert_eq!(d.items(), 1);
            never_sent_drops += 1;
            continue;
        };
        let tries = attempts_of(&id.to_string());
        let Some(last) = tries.last() else {
            return Err(fail(format!(
                "request {id} dropped ({reason}) but never sent"
            )));
        };
        prop_assert_eq!(d.attempts() as usize, tries.len(), "attempts at {}", id);
        prop_assert_eq!(d.items(), last.seqs.len(), "items of {}", id);
        let consistent = match reason {
            DropReason::Rejected { status } => last.status == status.as_u16(),
            DropReason::TooLarge { .. } => last.status == 413 && last.seqs.len() == 1,
            DropReason::RetriesExhausted {
                last: AttemptFailure::Status(status),
            } => last.status == status.as_u16(),
            DropReason::RetriesExhausted {
                last: AttemptFailure::Connection(_),
            } => last.status == 0,
            _ => false,
        };
        prop_assert!(
            consistent,
            "request {} dropped ({}) after a {}",
            id,
            reason,
            last.status
        );
        for &seq in &last.seqs {
            dropped[seq].push(reason.to_string());
        }
    }

    // Every item: received exactly once, or dropped once, never both, never
    // neither; one that no request carried was dropped before sending.
    let mut never_sent = 0usize;
    for seq in 0..n {
        match (received[seq], dropped[seq].len(), carried[seq]) {
            (1, 0, true) | (0, 1, true) => {}
            (0, 0, false) => never_sent += 1,
            (r, _, c) => {
                return Err(fail(format!(
                    "item {seq}: received {r} times, dropped {:?}, sent: {c}",
                    dropped[seq]
                )));
            }
        }
    }
    prop_assert_eq!(never_sent, never_sent_drops, "items dropped before sending");

    // The counters say the same.
    let received_items: u64 = received.iter().sum();
    prop_assert_eq!(stats.items_sent, received_items, "{:?}", stats);
    prop_assert_eq!(stats.payloads_sent, accepted_requests, "{:?}", stats);
    prop_assert_eq!(stats.items_dropped_too_large, too_large, "{:?}", stats);
    prop_assert_eq!(stats.items_dropped_rejected, rejected, "{:?}", stats);
    prop_assert_eq!(
        stats.items_dropped_retries_exhausted,
        exhausted,
        "{:?}",
        stats
    );
    prop_assert_eq!(
        stats.items_sent + stats.items_dropped(),
        n as u64,
        "{:?}",
        stats
    );
    prop_assert_eq!(stats.items_discarded, 0);
    prop_assert_eq!(stats.payloads_split, splits, "{:?}", stats);
    prop_assert_eq!(
        stats.retries,
        (sent.len() - ids.len()) as u64,
        "every further attempt at a payload is a retry: {:?}",
        stats
    );

    // And so do the reports `send_batch` returned: the same drops, and each
    // accepted payload is the one accepted request of its id.
    if !send_reports.is_empty() {
        let payloads: Vec<&PayloadReport> =
            send_reports.iter().flat_map(SendReport::payloads).collect();
        let report_drops: Vec<PayloadReport> = payloads
            .iter()
            .filter(|p| !p.is_accepted())
            .map(|p| (*p).clone())
            .collect();
        prop_assert_eq!(&report_drops, &drops);
        let accepted: Vec<&&PayloadReport> = payloads.iter().filter(|p| p.is_accepted()).collect();
        prop_assert_eq!(accepted.len() as u64, accepted_requests);
        for p in accepted {
            let id = p
                .request_id()
                .ok_or_else(|| fail("accepted without a request id"))?;
            let tries = attempts_of(&id.to_string());
            let last = tries
                .last()
                .ok_or_else(|| fail(format!("request {id} accepted but never sent")))?;
            prop_assert!((200..300).contains(&last.status));
            prop_assert_eq!(p.attempts() as usize, tries.len());
            prop_assert_eq!(p.items(), last.seqs.len());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn every_item_is_received_once_or_dropped_once_with_a_reason(case in case()) {
        run(&case)?;
    }
}
