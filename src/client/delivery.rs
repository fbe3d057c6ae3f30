//! The delivery policy that sits between "encode" and "post": the size limit
//! in force, the bounded retry loop, splitting on 413, and drop accounting.

use std::borrow::Borrow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use super::encode::{Encoded, Payload, PayloadEncoder};
use super::kind::Kind;
use super::report::{AttemptFailure, ConnectionError, DropReason, PayloadOutcome, PayloadReport};
use super::retry::RetryPolicy;
use super::stats::DeliveryCounters;
use crate::budget::HeldBytes;
use crate::common::{Common, Identity};

/// The ingest APIs' limit on a compressed payload: 10^6 bytes. Payloads are
/// cut under it as they are encoded; see [`ClientBuilder::max_payload_bytes`](crate::client::ClientBuilder::max_payload_bytes).
pub const MAX_PAYLOAD_BYTES: usize = 1_000_000;

/// The lowest size limit a 413 can teach: a proxy with a smaller limit is
/// still served, by splitting on its 413s, but no run of 413s can make the
/// client cut its payloads smaller than this before sending.
pub(crate) const MIN_LEARNED_LIMIT: usize = 64 * 1024;

/// How long a size limit learned from a 413 holds without a success; then
/// payloads go back to the configured maximum.
const LEARNED_LIMIT_TTL: Duration = Duration::from_secs(60);

/// The most of an answer's body that is read (the APIs answer a few bytes of
/// JSON; a misbehaving proxy may answer a page).
const MAX_ANSWER_BODY: usize = 16 * 1024;

/// Called with the report of every dropped payload.
pub(crate) type DropCallback = Arc<dyn Fn(&PayloadReport) + Send + Sync>;

/// Payloads ready to post, and reports for items that could not become one.
pub(crate) struct Prepared {
    pub(crate) payloads: Vec<Payload>,
    pub(crate) dropped: Vec<PayloadReport>,
}

/// What the attempts at one payload came to.
enum Attempted {
    Accepted(StatusCode, Option<Refused>),
    TooLarge,
    Dropped(DropReason),
}

/// How one answer is handled, per the ingest contract.
enum Answer {
    Accepted(StatusCode, Option<Refused>),
    Reject(StatusCode),
    TooLarge,
    RetryAfter(Option<Duration>),
    Retry(AttemptFailure),
}

/// Items of an accepted payload that the answer says were refused (OTLP's
/// partial success), and why.
type Refused = (usize, String);

/// An answer: its status, `Retry-After`, and what an accepted payload's
/// answer says was refused.
type Answered = (StatusCode, Option<Duration>, Option<Refused>);

fn classify(result: Result<Answered, reqwest::Error>) -> Answer {
    match result {
        Ok((status, _, refused)) if status.is_success() => Answer::Accepted(status, refused),
        // The contract's "drop" statuses, and redirects: the ingest APIs never
        // redirect, and following one would carry the key to another host.
        Ok((status, _, _))
            if status.is_redirection()
                || matches!(
                    status.as_u16(),
                    400 | 401 | 403 | 404 | 405 | 409 | 410 | 411
                ) =>
        {
            Answer::Reject(status)
        }
        Ok((StatusCode::PAYLOAD_TOO_LARGE, _, _)) => Answer::TooLarge,
        Ok((StatusCode::TOO_MANY_REQUESTS, retry_after, _)) => Answer::RetryAfter(retry_after),
        Ok((status, _, _)) => Answer::Retry(AttemptFailure::Status(status)),
        Err(e) if e.is_timeout() => Answer::Retry(AttemptFailure::Timeout),
        Err(e) => Answer::Retry(AttemptFailure::Connection(ConnectionError::new(e))),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The size limit in force: the configured maximum, or less for a while
/// after a 413 on a payload of several items (a proxy with a smaller limit).
/// A learned limit lapses a minute after the last 413 taught it, so a
/// transient 413 storm ends with payloads of the usual size; a proxy whose
/// limit is lasting costs one 413 and a split a minute.
#[derive(Debug)]
struct SizeLimit {
    max: usize,
    learned: std::sync::Mutex<Option<(usize, tokio::time::Instant)>>,
}

impl SizeLimit {
    fn new(max: usize) -> Self {
        SizeLimit {
            max,
            learned: std::sync::Mutex::new(None),
        }
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, Option<(usize, tokio::time::Instant)>> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limit payloads are cut to now.
    fn current(&self) -> usize {
        let mut learned = self.learned();
        match *learned {
            Some((limit, at)) if at.elapsed() < LEARNED_LIMIT_TTL => limit,
            Some(_) => {
                *learned = None;
                self.max
            }
            None => self.max,
        }
    }

    /// A payload of `bytes` was answered 413: cut later ones to half of it,
    /// but never below [`MIN_LEARNED_LIMIT`].
    fn too_large(&self, bytes: usize) {
        let limit = (bytes / 2).max(MIN_LEARNED_LIMIT).min(self.max);
        let mut learned = self.learned();
        let lower = learned.map_or(limit, |(old, _)| old.min(limit));
        *learned = Some((lower, tokio::time::Instant::now()));
    }
}

/// The shared core of a client: where and how to post, and the policy.
pub(crate) struct Sender<K: Kind> {
    pub(crate) http: reqwest::Client,
    pub(crate) url: reqwest::Url,
    pub(crate) headers: HeaderMap,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    /// The size limit in force: `max_payload_bytes`, or less for a while
    /// after a 413.
    size_limit: SizeLimit,
    pub(crate) audit: bool,
    pub(crate) counters: Arc<DeliveryCounters>,
    pub(crate) on_drop: Option<DropCallback>,
    /// Telemetry is disabled: items are counted as discarded, never sent.
    pub(crate) disabled: bool,
    /// The identity attributes every payload carries (`None`: turned off).
    pub(crate) identity: Option<Identity>,
    pub(crate) kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: Kind> Sender<K> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        http: reqwest::Client,
        url: reqwest::Url,
        headers: HeaderMap,
        timeout: Duration,
        retry: RetryPolicy,
        max_payload_bytes: usize,
        audit: bool,
        on_drop: Option<DropCallback>,
    ) -> Self {
        Sender {
            http,
            url,
            headers,
            timeout,
            retry,
            size_limit: SizeLimit::new(max_payload_bytes),
            audit,
            counters: Arc::default(),
            on_drop,
            disabled: false,
            identity: Some(Identity::default()),
            kind: std::marker::PhantomData,
        }
    }

    /// Counts `items` as discarded by a disabled client (no request, no
    /// error log: nothing was lost that was meant to be sent).
    pub(crate) fn discard(&self, items: usize) {
        DeliveryCounters::add(&self.counters.items_discarded, items as u64);
    }

    /// An encoder of `items` sharing `common` into payloads under the size
    /// limit in force; `held` counts the items' bytes against a budget. The
    /// client's identity attributes join `common` here, so the encoder
    /// writes (and measures) them with everything else.
    pub(crate) fn encoder<I>(
        &self,
        items: I,
        common: Common,
        held: HeldBytes,
    ) -> serde_json::Result<PayloadEncoder<K, I>>
    where
        I: ExactSizeIterator,
        I::Item: Borrow<K::Item>,
    {
        PayloadEncoder::new(
            items,
            common.with_identity(self.identity.clone()),
            held,
            self.size_limit.current(),
            self.size_limit.max,
            self.audit,
        )
    }

    /// The payload the encoder made, or the report of the item it could not
    /// make one of (counted and logged).
    pub(crate) fn payload_or_drop(&self, encoded: Encoded) -> Result<Payload, PayloadReport> {
        let (items, bytes, reason) = match encoded {
            Encoded::Payload(payload) => return Ok(payload),
            Encoded::TooLarge { bytes } => (1, bytes, DropReason::TooLarge { bytes }),
            Encoded::Failed { items, message } => (items, 0, DropReason::Encoding { message }),
        };
        let report = PayloadReport::dropped(K::API, None, items, bytes, 0, reason);
        self.report_drop(&report);
        Err(report)
    }

    /// Reports `items` dropped for `reason` before they became a payload.
    pub(crate) fn drop_unencoded(&self, items: usize, reason: DropReason) -> PayloadReport {
        let report = PayloadReport::dropped(K::API, None, items, 0, 0, reason);
        self.report_drop(&report);
        report
    }

    /// Encodes `items` into payloads under the size limit (all of them at
    /// once: for a send that waits for its outcome).
    pub(crate) async fn prepare(&self, items: Vec<K::Item>, common: Common) -> Prepared {
        let mut prepared = Prepared {
            payloads: Vec::new(),
            dropped: Vec::new(),
        };
        let n = items.len();
        let mut encoder = match self.encoder(items.into_iter(), common, HeldBytes::default()) {
            Ok(encoder) => encoder,
            Err(e) => {
                let reason = DropReason::Encoding {
                    message: e.to_string(),
                };
                prepared.dropped.push(self.drop_unencoded(n, reason));
                return prepared;
            }
        };
        while let Some(encoded) = encoder.next().await {
            match self.payload_or_drop(encoded) {
                Ok(payload) => prepared.payloads.push(payload),
                Err(report) => prepared.dropped.push(report),
            }
        }
        prepared
    }

    /// Delivers one payload under the retry policy. A 413 on several items
    /// splits it in two (new request ids); a 413 on one item drops that item
    /// alone. `resolved` grows by the items of each part as it ends, so a
    /// caller that gives up part-way knows what is still unaccounted for.
    pub(crate) async fn deliver(
        &self,
        payload: Payload,
        resolved: &AtomicUsize,
    ) -> Vec<PayloadReport> {
        let mut reports = Vec::new();
        let mut stack = vec![payload];
        while let Some(payload) = stack.pop() {
            let (attempted, attempts) = self.attempt(&payload).await;
            let (mut n, bytes, request_id) =
                (payload.len(), payload.body.len(), payload.request_id);
            let outcome = match attempted {
                Attempted::Accepted(status, refused) => {
                    if let Some((refused, message)) = refused.filter(|(r, _)| *r > 0) {
                        // The refused part gets a report of its own (its
                        // requests are counted in the accepted part's).
                        let report = PayloadReport {
                            api: K::API,
                            request_id: Some(request_id),
                            items: refused,
                            bytes: 0,
                            attempts: 0,
                            outcome: PayloadOutcome::Dropped(DropReason::PartiallyRejected {
                                message,
                            }),
                        };
                        self.report_drop(&report);
                        reports.push(report);
                        resolved.fetch_add(refused, Ordering::Relaxed);
                        n -= refused;
                    }
                    self.counters.sent(n, bytes);
                    PayloadOutcome::Accepted { status }
                }
                Attempted::TooLarge if n > 1 => {
                    self.size_limit.too_large(bytes);
                    self.counters.split();
                    tracing::debug!(
                        api = K::API.name(),
                        items = n,
                        "413 from the API; splitting the payload in two"
                    );
                    match payload.split::<K>().await {
                        Ok([first, second]) => {
                            stack.push(second);
                            stack.push(first);
                            continue;
                        }
                        Err(e) => PayloadOutcome::Dropped(DropReason::Encoding {
                            message: e.to_string(),
                        }),
                    }
                }
                // One item the API will not take: it alone is dropped, and
                // nothing is learned (it says nothing of other payloads).
                Attempted::TooLarge => PayloadOutcome::Dropped(DropReason::TooLarge { bytes }),
                Attempted::Dropped(reason) => PayloadOutcome::Dropped(reason),
            };
            let report = PayloadReport {
                api: K::API,
                request_id: Some(request_id),
                items: n,
                bytes,
                attempts,
                outcome,
            };
            self.report_drop(&report);
            reports.push(report);
            resolved.fetch_add(n, Ordering::Relaxed);
        }
        reports
    }

    /// Posts a payload until it is accepted, rejected, too large, or out of
    /// retries or budget. Returns the outcome and the number of requests made.
    async fn attempt(&self, payload: &Payload) -> (Attempted, u32) {
        let started = tokio::time::Instant::now();
        // No attempt runs past the payload's budget, and no wait ends past it.
        let deadline = self
            .retry
            .total_budget()
            .and_then(|budget| started.checked_add(budget));
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let (wait, failure) = match classify(self.post(payload, deadline).await) {
                Answer::Accepted(status, refused) => {
                    return (Attempted::Accepted(status, refused), attempts);
                }
                Answer::Reject(status) => {
                    return (
                        Attempted::Dropped(DropReason::Rejected { status }),
                        attempts,
                    );
                }
                Answer::TooLarge => return (Attempted::TooLarge, attempts),
                Answer::RetryAfter(after) => (
                    self.retry.wait_after_429(attempts, after),
                    AttemptFailure::Status(StatusCode::TOO_MANY_REQUESTS),
                ),
                Answer::Retry(failure) => (self.retry.wait_before(attempts), failure),
            };
            let out_of_retries = attempts > self.retry.max_retries();
            let out_of_budget = deadline.is_some_and(|d| {
                tokio::time::Instant::now()
                    .checked_add(wait)
                    .is_none_or(|t| t >= d)
            });
            if out_of_retries || out_of_budget {
                return (
                    Attempted::Dropped(DropReason::RetriesExhausted { last: failure }),
                    attempts,
                );
            }
            self.counters.retried();
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            if attempts == 1 {
                tracing::warn!(api = K::API.name(), items = payload.len(), request_id = %payload.request_id, error = %failure, wait_ms, "send failed; will retry");
            } else {
                tracing::debug!(api = K::API.name(), items = payload.len(), request_id = %payload.request_id, attempt = attempts, error = %failure, wait_ms, "send failed again; will retry");
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One POST, bounded by `deadline`. The answer's body is read (up to
    /// [`MAX_ANSWER_BODY`]) so the connection can be reused; a 2xx is final
    /// even if reading its body fails, since the payload was accepted.
    async fn post(
        &self,
        payload: &Payload,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Answered, reqwest::Error> {
        let mut timeout = self.timeout;
        if let Some(deadline) = deadline {
            timeout = timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        }
        let mut response = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("x-request-id", payload.request_id.to_string())
            .timeout(timeout)
            .body(payload.body.clone())
            .send()
            .await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(parse_retry_after);
        let mut body = Vec::new();
        while body.len() < MAX_ANSWER_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER_BODY - body.len())])
                }
                Ok(None) => break,
                Err(e) if status.is_success() => {
                    tracing::debug!(api = K::API.name(), error = %crate::error::Chain(&e), "accepted, but the answer's body broke off");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !status.is_success() {
            tracing::debug!(api = K::API.name(), %status, body = %String::from_utf8_lossy(&body), "non-success answer");
            return Ok((status, retry_after, None));
        }
        let refused = K::refused_in_answer(&body, payload.len());
        Ok((status, retry_after, refused))
    }

    /// Counts a drop, logs it at ERROR with the number of items lost, and
    /// tells the user's callback (a panic in the callback is caught and logged,
    /// so it cannot take the sending task down).
    pub(crate) fn report_drop(&self, report: &PayloadReport) {
        let Some(reason) = report.drop_reason() else {
            return;
        };
        self.counters.dropped(reason, report.items);
        tracing::error!(
            api = K::API.name(),
            items = report.items,
            request_id = ?report.request_id,
            reason = %reason,
            "telemetry dropped"
        );
        if let Some(callback) = &self.on_drop {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(report))).is_err()
            {
                tracing::error!(api = K::API.name(), "the on_drop callback panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_learned_size_limit_has_a_floor_and_lapses() {
        let limit = SizeLimit::new(MAX_PAYLOAD_BYTES);
        limit.too_large(600_000);
        assert_eq!(limit.current(), 300_000);
        limit.too_large(900_000); // a larger 413 does not raise it
        assert_eq!(limit.current(), 300_000);
        limit.too_large(20); // a tiny one cannot take it below the floor
        assert_eq!(limit.current(), MIN_LEARNED_LIMIT);
        tokio::time::advance(LEARNED_LIMIT_TTL - Duration::from_millis(1)).await;
        assert_eq!(limit.current(), MIN_LEARNED_LIMIT);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limit.current(), MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static(" 0 ")),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_str(&past).unwrap()),
            Some(Duration::ZERO)
        );
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let wait = parse_retry_after(&HeaderValue::from_str(&future).unwrap()).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }
}
