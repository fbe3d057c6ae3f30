//! The delivery policy that sits between "build a payload" and "post it":
//! encoding and size-splitting, the bounded retry loop, and drop accounting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::kind::Kind;
use super::report::{AttemptFailure, DropReason, PayloadOutcome, PayloadReport};
use super::retry::RetryPolicy;
use crate::common::Common;
use crate::stats::DeliveryCounters;

/// The ingest APIs' limit on a compressed payload.
///
/// ```
/// assert_eq!(newrelic_telemetry::MAX_PAYLOAD_BYTES, 1_000_000);
/// ```
pub const MAX_PAYLOAD_BYTES: usize = 1_000_000;

/// Target for audit log records.
pub(crate) const AUDIT_TARGET: &str = "newrelic_telemetry::audit";

/// Items serialised between two yields to the runtime while encoding.
const ENCODE_CHUNK: usize = 1024;

/// Gzip works through large payloads in slices of this size and yields to the
/// runtime between slices, so encoding never monopolises a worker thread.
const GZIP_SLICE: usize = 256 * 1024;

/// The most of an answer's body that is read (the APIs answer a few bytes of
/// JSON; a misbehaving proxy may answer a page).
const MAX_ANSWER_BODY: usize = 16 * 1024;

/// Called with the report of every dropped payload.
pub(crate) type DropCallback = Arc<dyn Fn(&PayloadReport) + Send + Sync>;

/// Items encoded and ready to post, with the request id all their attempts share.
pub(crate) struct Payload<T> {
    pub(crate) items: Vec<T>,
    pub(crate) common: Common,
    pub(crate) body: Bytes,
    pub(crate) request_id: Uuid,
}

impl<T> Payload<T> {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

/// Payloads ready to post, and reports for items that could not become one.
pub(crate) struct Prepared<T> {
    pub(crate) payloads: Vec<Payload<T>>,
    pub(crate) dropped: Vec<PayloadReport>,
}

/// What the attempts at one payload came to.
enum Attempted {
    Accepted(StatusCode),
    TooLarge,
    Dropped(DropReason),
}

/// How one answer is handled, per the ingest contract.
enum Answer {
    Accepted(StatusCode),
    Reject(StatusCode),
    TooLarge,
    RetryAfter(Option<Duration>),
    Retry(AttemptFailure),
}

fn classify(result: Result<(StatusCode, Option<Duration>), reqwest::Error>) -> Answer {
    match result {
        Ok((status, _)) if status.is_success() => Answer::Accepted(status),
        // The contract's "drop" statuses, and redirects: the ingest APIs never
        // redirect, and following one would carry the key to another host.
        Ok((status, _))
            if status.is_redirection()
                || matches!(
                    status.as_u16(),
                    400 | 401 | 403 | 404 | 405 | 409 | 410 | 411
                ) =>
        {
            Answer::Reject(status)
        }
        Ok((StatusCode::PAYLOAD_TOO_LARGE, _)) => Answer::TooLarge,
        Ok((StatusCode::TOO_MANY_REQUESTS, retry_after)) => Answer::RetryAfter(retry_after),
        Ok((status, _)) => Answer::Retry(AttemptFailure::Status(status)),
        Err(e) if e.is_timeout() => Answer::Retry(AttemptFailure::Timeout),
        Err(e) => Answer::Retry(AttemptFailure::Connection(error_chain(&e))),
    }
}

/// An error and its sources on one line (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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

/// Gzips `json`, yielding between slices of a large payload.
async fn gzip(json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder =
        async_compression::tokio::write::GzipEncoder::new(Vec::with_capacity(json.len() / 8 + 64));
    let mut slices = json.chunks(GZIP_SLICE).peekable();
    while let Some(slice) = slices.next() {
        encoder.write_all(slice).await?;
        if slices.peek().is_some() {
            tokio::task::yield_now().await;
        }
    }
    encoder.shutdown().await?;
    Ok(encoder.into_inner())
}

/// Encodes `items` sharing `common` exactly as a client of API `K` posts
/// them: the API's JSON, gzipped. Useful to inspect or measure payloads.
///
/// ```
/// use newrelic_telemetry::{encode_payload, Common, Event, Events};
/// use std::io::Read;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let body = encode_payload::<Events>(&[Event::new("Ping")], &Common::new()).await?;
/// let mut json = String::new();
/// flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut json)?;
/// assert!(json.starts_with(r#"[{"eventType":"Ping""#));
/// # Ok(()) }
/// ```
pub async fn encode_payload<K: Kind>(
    items: &[K::Item],
    common: &Common,
) -> std::io::Result<Vec<u8>> {
    gzip(&payload_json::<K>(items, common).await?).await
}

/// The payload's JSON, written [`ENCODE_CHUNK`] items at a time with a yield
/// to the runtime in between, so that encoding a large harvest never holds a
/// worker thread for long.
async fn payload_json<K: Kind>(items: &[K::Item], common: &Common) -> serde_json::Result<Vec<u8>> {
    let mut json = Vec::with_capacity(items.len() * 96 + 128);
    K::write_open(common, &mut json)?;
    for (n, chunk) in items.chunks(ENCODE_CHUNK).enumerate() {
        if n > 0 {
            tokio::task::yield_now().await;
        }
        for (i, item) in chunk.iter().enumerate() {
            if n > 0 || i > 0 {
                json.push(b',');
            }
            K::write_item(item, common, &mut json)?;
        }
    }
    json.extend_from_slice(K::CLOSE);
    Ok(json)
}

/// The shared core of a client: where and how to post, and the policy.
pub(crate) struct Sender<K: Kind> {
    pub(crate) http: reqwest::Client,
    pub(crate) url: reqwest::Url,
    pub(crate) headers: HeaderMap,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    /// The size limit in force: `max_payload_bytes`, lowered below the size of
    /// any payload the API answered 413 to (a proxy with a smaller limit), so
    /// that later payloads are split before sending rather than after a 413.
    size_limit: AtomicUsize,
    pub(crate) audit: bool,
    pub(crate) counters: Arc<DeliveryCounters>,
    pub(crate) on_drop: Option<DropCallback>,
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
            size_limit: AtomicUsize::new(max_payload_bytes),
            audit,
            counters: Arc::default(),
            on_drop,
            kind: std::marker::PhantomData,
        }
    }

    /// Encodes items as the API's JSON, gzipped.
    async fn encode(&self, items: &[K::Item], common: &Common) -> Result<Bytes, String> {
        let json = payload_json::<K>(items, common)
            .await
            .map_err(|e| e.to_string())?;
        if self.audit {
            tracing::debug!(
                target: AUDIT_TARGET,
                api = K::API.name,
                items = items.len(),
                payload = %String::from_utf8_lossy(&json),
                "payload"
            );
        }
        gzip(&json)
            .await
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }

    /// Encodes `items` into payloads under the size limit. An oversized payload
    /// is cut into as many parts as its size calls for, each part checked again;
    /// a single item still too large is dropped and reported.
    pub(crate) async fn prepare(&self, items: Vec<K::Item>, common: Common) -> Prepared<K::Item> {
        let mut prepared = Prepared {
            payloads: Vec::new(),
            dropped: Vec::new(),
        };
        // A stack of item runs, last run on top, so payloads keep item order.
        let mut todo = vec![items];
        while let Some(mut items) = todo.pop() {
            if items.is_empty() {
                continue;
            }
            let body = match self.encode(&items, &common).await {
                Ok(body) => body,
                Err(message) => {
                    let report = PayloadReport::dropped(
                        K::API.name,
                        None,
                        items.len(),
                        0,
                        0,
                        DropReason::Encoding { message },
                    );
                    self.report_drop(&report);
                    prepared.dropped.push(report);
                    continue;
                }
            };
            let limit = self.size_limit.load(Ordering::Relaxed);
            if body.len() <= limit {
                prepared.payloads.push(Payload {
                    items,
                    common: common.clone(),
                    body,
                    request_id: Uuid::new_v4(),
                });
            } else if items.len() == 1 {
                let report = PayloadReport::dropped(
                    K::API.name,
                    None,
                    1,
                    body.len(),
                    0,
                    DropReason::TooLarge { bytes: body.len() },
                );
                self.report_drop(&report);
                prepared.dropped.push(report);
            } else {
                let parts = (body.len().div_ceil(limit)).clamp(2, items.len());
                let size = items.len().div_ceil(parts);
                let mut runs = Vec::with_capacity(parts);
                while items.len() > size {
                    runs.push(items.split_off(items.len() - size));
                }
                runs.push(items);
                self.counters.split();
                tracing::debug!(
                    api = K::API.name,
                    bytes = body.len(),
                    parts = runs.len(),
                    "payload over the size limit; split"
                );
                todo.extend(runs);
            }
        }
        prepared
    }

    /// Delivers one payload under the retry policy. A 413 splits it in two (new
    /// request ids). `resolved` grows by the items of each part as it ends, so
    /// a caller that gives up part-way knows what is still unaccounted for.
    pub(crate) async fn deliver(
        &self,
        payload: Payload<K::Item>,
        resolved: &AtomicUsize,
    ) -> Vec<PayloadReport> {
        let mut reports = Vec::new();
        let mut stack = vec![payload];
        while let Some(payload) = stack.pop() {
            let (attempted, attempts) = self.attempt(&payload).await;
            let n = payload.len();
            let report = |outcome| PayloadReport {
                api: K::API.name,
                request_id: Some(payload.request_id),
                items: n,
                bytes: payload.body.len(),
                attempts,
                outcome,
            };
            match attempted {
                Attempted::Accepted(status) => {
                    self.counters.sent(n, payload.body.len());
                    reports.push(report(PayloadOutcome::Accepted { status }));
                }
                Attempted::TooLarge if n > 1 => {
                    self.learn_size_limit(&payload);
                    self.counters.split();
                    tracing::debug!(
                        api = K::API.name,
                        items = n,
                        "413 from the API; splitting the payload in two"
                    );
                    let Payload {
                        mut items, common, ..
                    } = payload;
                    let second = items.split_off(n / 2);
                    let mut parts = Vec::new();
                    for half in [items, second] {
                        let prepared = self.prepare(half, common.clone()).await;
                        for dropped in prepared.dropped {
                            resolved.fetch_add(dropped.items, Ordering::Relaxed);
                            reports.push(dropped);
                        }
                        parts.extend(prepared.payloads);
                    }
                    stack.extend(parts.into_iter().rev());
                    continue;
                }
                Attempted::TooLarge => {
                    self.learn_size_limit(&payload);
                    let r = report(PayloadOutcome::Dropped(DropReason::TooLarge {
                        bytes: payload.body.len(),
                    }));
                    self.report_drop(&r);
                    reports.push(r);
                }
                Attempted::Dropped(reason) => {
                    let r = report(PayloadOutcome::Dropped(reason));
                    self.report_drop(&r);
                    reports.push(r);
                }
            }
            resolved.fetch_add(n, Ordering::Relaxed);
        }
        reports
    }

    /// After a 413, holds later payloads below this one's size.
    fn learn_size_limit(&self, too_large: &Payload<K::Item>) {
        let below = too_large.body.len().saturating_sub(1).max(1);
        self.size_limit.fetch_min(below, Ordering::Relaxed);
    }

    /// Posts a payload until it is accepted, rejected, too large, or out of
    /// retries or budget. Returns the outcome and the number of requests made.
    async fn attempt(&self, payload: &Payload<K::Item>) -> (Attempted, u32) {
        let started = tokio::time::Instant::now();
        // No attempt runs past the payload's budget, and no wait ends past it.
        let deadline = self
            .retry
            .budget()
            .and_then(|budget| started.checked_add(budget));
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let (wait, failure) = match classify(self.post(payload, deadline).await) {
                Answer::Accepted(status) => return (Attempted::Accepted(status), attempts),
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
            let out_of_retries = attempts > self.retry.retries();
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
                tracing::warn!(api = K::API.name, items = payload.len(), request_id = %payload.request_id, error = %failure, wait_ms, "send failed; will retry");
            } else {
                tracing::debug!(api = K::API.name, items = payload.len(), request_id = %payload.request_id, attempt = attempts, error = %failure, wait_ms, "send failed again; will retry");
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One POST, bounded by `deadline`. The answer's body is read (up to
    /// [`MAX_ANSWER_BODY`]) so the connection can be reused; a 2xx is final
    /// even if reading its body fails, since the payload was accepted.
    async fn post(
        &self,
        payload: &Payload<K::Item>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(StatusCode, Option<Duration>), reqwest::Error> {
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
                    tracing::debug!(api = K::API.name, error = %e, "accepted, but the answer's body broke off");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !status.is_success() {
            tracing::debug!(api = K::API.name, %status, body = %String::from_utf8_lossy(&body), "non-success answer");
        }
        Ok((status, retry_after))
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
            api = K::API.name,
            items = report.items,
            request_id = ?report.request_id,
            reason = %reason,
            "telemetry dropped"
        );
        if let Some(callback) = &self.on_drop {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(report))).is_err()
            {
                tracing::error!(api = K::API.name, "the on_drop callback panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn gzip_round_trips_across_slices() {
        use std::io::Read;
        let json: Vec<u8> = (0..(GZIP_SLICE * 3 + 17))
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let gz = gzip(&json).await.unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, json);
    }
}
