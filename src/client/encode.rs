//! Encoding: items become gzipped JSON payloads, each under the size limit in
//! force, in slices that yield to the runtime.
//!
//! The JSON is never held whole: items are written into a small staging
//! slice and compressed as they go, with a sync flush after each slice so that
//! the compressed size is known exactly. A payload is cut when the next slice
//! could take it past the limit (a slice never compresses to more than its own
//! size and a few bytes), so payloads are sized before they are sent, not
//! after. Each payload remembers where its items start in its JSON, so that a
//! 413 can split it in two without the items: queued payloads hold only their
//! compressed bodies.
//!
//! Compression runs synchronously between yields, and everything a payload in
//! progress needs lives in the encoder, so a caller may stop awaiting at any
//! yield (a shutdown deadline) and go on later, or drop the encoder, without
//! losing track of an item.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::iter::Peekable;

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use uuid::Uuid;

use super::kind::Kind;
use crate::budget::HeldBytes;
use crate::common::{Common, Identity};

/// Target for audit log records (every payload at DEBUG, when enabled).
pub(crate) const AUDIT_TARGET: &str = "newrelic_telemetry::audit";

/// Uncompressed JSON gathered before it is compressed and the size measured;
/// also the most compressed or decompressed between two yields. At 64 KiB a
/// slice takes well under a millisecond at the per-request gzip level, so a
/// harvest never holds a runtime's worker long from the service's requests;
/// the sync flush that ends each slice costs a few percent of the size.
const SLICE_BYTES: usize = 64 * 1024;

/// Room kept free under the limit for the end of the stream (the closing
/// bytes, the final deflate block and the gzip trailer).
const END_MARGIN: usize = 1024;

/// A payload is full once less than this is left under the limit.
const FULL_WITHIN: usize = 16 * 1024;

/// The most uncompressed JSON one payload holds, whatever its compressed size:
/// it keeps item offsets in a `u32` and a payload's decompression bounded.
const MAX_PAYLOAD_JSON: usize = 64 * 1024 * 1024;

/// Bytes a payload holds per item for its item offsets.
const OFFSET_BYTES: usize = std::mem::size_of::<u32>();

fn gz_encoder(capacity: usize, level: u32) -> GzEncoder<Vec<u8>> {
    GzEncoder::new(Vec::with_capacity(capacity), Compression::new(level))
}

/// Items encoded and ready to post, with the request id all their attempts
/// share. It holds only the compressed body and where each item starts.
pub(crate) struct Payload {
    pub(crate) body: Bytes,
    pub(crate) request_id: Uuid,
    /// Offset in the JSON of each item's first byte.
    starts: Box<[u32]>,
    /// Offset in the JSON of the closing bytes.
    close_at: u32,
    /// The body's bytes, counted against the pipeline's budget.
    held: HeldBytes,
}

impl Payload {
    /// How many items the payload carries.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Bytes the payload holds, as counted against the budget.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held.bytes()
    }

    /// Splits the payload (of kind `K`) into two of half the items each,
    /// with new request ids (the contract's answer to a 413). Needs at least
    /// two items.
    ///
    /// The body is decompressed a slice at a time and each byte routed to the
    /// half it belongs to (the opening and closing bytes to both), so the
    /// JSON is never held whole.
    pub(crate) async fn split<K: Kind>(self) -> std::io::Result<[Payload; 2]> {
        let separator = K::SEPARATOR.len();
        let n = self.starts.len();
        let at = n / 2;
        if at == 0 {
            return Err(std::io::Error::other(
                "a payload of one item cannot be split",
            ));
        }
        let first_start = self.starts[0] as usize;
        let second_start = self.starts[at] as usize;
        // The separator between the halves belongs to neither.
        let first_end = second_start - separator;
        let close_at = self.close_at as usize;
        let shift = (second_start - first_start) as u32;
        let mut halves = [
            gz_encoder(self.body.len() / 2, K::GZIP_LEVEL),
            gz_encoder(self.body.len() / 2, K::GZIP_LEVEL),
        ];
        let mut decoder = GzDecoder::new(&self.body[..]);
        let mut buf = vec![0; SLICE_BYTES];
        let mut pos = 0;
        loop {
            let read = decoder.read(&mut buf)?;
            if read == 0 {
                break;
            }
            let chunk = &buf[..read];
            // Route each byte range of the chunk by where it lies in the JSON.
            let routes = [
                (0, first_start, [true, true]),
                (first_start, first_end, [true, false]),
                (second_start, close_at, [false, true]),
                (close_at, usize::MAX, [true, true]),
            ];
            for (from, to, to_half) in routes {
                let lo = from.max(pos);
                let hi = to.min(pos + read);
                if lo >= hi {
                    continue;
                }
                for (half, wanted) in halves.iter_mut().zip(to_half) {
                    if wanted {
                        half.write_all(&chunk[lo - pos..hi - pos])?;
                    }
                }
            }
            pos += read;
            if pos > MAX_PAYLOAD_JSON + SLICE_BYTES {
                return Err(std::io::Error::other(
                    "payload larger than any this crate makes",
                ));
            }
            tokio::task::yield_now().await;
        }
        let [first, second] = halves;
        let starts_first = self.starts[..at].to_vec().into_boxed_slice();
        let starts_second = self.starts[at..]
            .iter()
            .map(|&s| s - shift)
            .collect::<Box<[u32]>>();
        let close_first = first_end as u32;
        let close_second = self.close_at - shift;
        let mut parts = Vec::with_capacity(2);
        for (encoder, starts, close_at) in [
            (first, starts_first, close_first),
            (second, starts_second, close_second),
        ] {
            let mut body = encoder.finish()?;
            body.shrink_to_fit();
            let mut held = self.held.sibling();
            held.set(body.capacity() + starts.len() * OFFSET_BYTES);
            parts.push(Payload {
                body: Bytes::from(body),
                request_id: Uuid::new_v4(),
                starts,
                close_at,
                held,
            });
        }
        let second = parts.pop();
        match (parts.pop(), second) {
            (Some(a), Some(b)) => Ok([a, b]),
            _ => Err(std::io::Error::other("split made fewer than two parts")),
        }
    }
}

/// What encoding the next run of items came to.
pub(crate) enum Encoded {
    /// A payload under the limit in force, or a single item over it that is
    /// still within the API's limit (it is sent, and may be answered 413).
    Payload(Payload),
    /// A single item whose payload is over the client's maximum: it is never
    /// sent.
    TooLarge {
        /// The compressed size of its payload.
        bytes: usize,
    },
    /// Items that could not be encoded.
    Failed {
        /// How many.
        items: usize,
        /// Why.
        message: String,
    },
}

/// The payload being built.
struct Run {
    gz: GzEncoder<Vec<u8>>,
    /// The compressed bytes (and item offsets) so far.
    held: HeldBytes,
    starts: Vec<u32>,
    /// JSON bytes compressed so far.
    written: usize,
    /// JSON staged for the next compression.
    slice: Vec<u8>,
    /// Items in `slice`, whose raw bytes are still counted with the items.
    staged: usize,
    /// The whole JSON, when audit logging is on.
    audit: Option<Vec<u8>>,
}

impl Run {
    fn compressed(&self) -> usize {
        self.gz.get_ref().len()
    }
}

/// What one step of a run came to.
enum Step {
    /// A slice was compressed; more may follow.
    Compressed,
    /// The payload is complete (full, or no items are left).
    Complete,
}

/// Turns items into payloads one at a time, handing the items' bytes over to
/// the compressed bytes as they are encoded. Dropping [`next`](Self::next)'s
/// future at a yield loses nothing: the next call goes on where it stopped.
pub(crate) struct PayloadEncoder<K: Kind, I: Iterator>
where
    I::Item: Borrow<K::Item>,
{
    items: Peekable<I>,
    remaining: usize,
    /// Items that failed to serialise, reported before the next payload.
    failures: VecDeque<String>,
    common: Common,
    open: Vec<u8>,
    /// The raw items' bytes, handed over a share at a time.
    held: HeldBytes,
    per_item: usize,
    limit: usize,
    max: usize,
    audit: bool,
    run: Option<Run>,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: Kind, I: ExactSizeIterator> PayloadEncoder<K, I>
where
    I::Item: Borrow<K::Item>,
{
    /// An encoder of `items` sharing `common` into payloads of at most
    /// `limit` compressed bytes; a single item over `max` is never sent.
    /// `held` counts the items' bytes and is handed over as they are encoded.
    pub(crate) fn new(
        items: I,
        common: Common,
        held: HeldBytes,
        limit: usize,
        max: usize,
        audit: bool,
    ) -> serde_json::Result<Self> {
        let mut open = Vec::new();
        K::write_open(&common, &mut open)?;
        let remaining = items.len();
        Ok(PayloadEncoder {
            per_item: held.bytes() / remaining.max(1),
            items: items.peekable(),
            remaining,
            failures: VecDeque::new(),
            common,
            open,
            held,
            limit,
            max,
            audit,
            run: None,
            kind: std::marker::PhantomData,
        })
    }
}

impl<K: Kind, I: Iterator> PayloadEncoder<K, I>
where
    I::Item: Borrow<K::Item>,
{
    /// Encodes the next run of items; `None` when there are none left.
    pub(crate) async fn next(&mut self) -> Option<Encoded> {
        loop {
            if let Some(message) = self.failures.pop_front() {
                return Some(Encoded::Failed { items: 1, message });
            }
            if self.run.is_none() {
                self.items.peek()?;
                self.run = Some(self.start_run());
            }
            match self.step() {
                Ok(Step::Compressed) => tokio::task::yield_now().await,
                Ok(Step::Complete) => match self.finish() {
                    Ok(Some(encoded)) => return Some(encoded),
                    // Every item of the run failed: report them.
                    Ok(None) => {}
                    Err(e) => return Some(self.lost_run(&e)),
                },
                Err(e) => return Some(self.lost_run(&e)),
            }
        }
    }

    /// The compressor failed (it writes to memory, so it cannot in
    /// practice): the items taken into the run are lost, and counted.
    fn lost_run(&mut self, e: &std::io::Error) -> Encoded {
        let items = self.run.take().map_or(0, |run| run.starts.len());
        Encoded::Failed {
            items,
            message: e.to_string(),
        }
    }

    fn start_run(&self) -> Run {
        let mut slice = Vec::with_capacity(SLICE_BYTES.min(1024 * self.remaining + 64));
        slice.extend_from_slice(&self.open);
        Run {
            gz: gz_encoder(4096, K::GZIP_LEVEL),
            held: self.held.sibling(),
            starts: Vec::new(),
            written: 0,
            slice,
            staged: 0,
            audit: self.audit.then(Vec::new),
        }
    }

    /// Stages items until a slice is ready to compress (then compresses it),
    /// or until the payload is full or the items run out.
    fn step(&mut self) -> std::io::Result<Step> {
        let Some(run) = self.run.as_mut() else {
            return Ok(Step::Complete);
        };
        let room = self.limit.saturating_sub(run.compressed() + END_MARGIN);
        while let Some(item) = self.items.peek() {
            let mark = run.slice.len();
            if !run.starts.is_empty() {
                run.slice.extend_from_slice(K::SEPARATOR);
            }
            let start = run.written + run.slice.len();
            if let Err(e) = K::write_item(item.borrow(), &self.common, &mut run.slice) {
                run.slice.truncate(mark);
                self.failures.push_back(e.to_string());
                self.items.next();
                self.remaining -= 1;
                // Its raw bytes go with it.
                let left = self.held.bytes().saturating_sub(self.per_item);
                self.held.set(if self.remaining == 0 { 0 } else { left });
                continue;
            }
            let over = run.slice.len() > room || run.written + run.slice.len() > MAX_PAYLOAD_JSON;
            if over && !run.starts.is_empty() {
                // The item goes into the next payload.
                run.slice.truncate(mark);
                return Ok(Step::Complete);
            }
            run.starts.push(start as u32);
            run.staged += 1;
            self.items.next();
            self.remaining -= 1;
            if over {
                // A single item larger than the room: it goes alone.
                return Ok(Step::Complete);
            }
            if run.slice.len() >= SLICE_BYTES || run.slice.len() > room - run.slice.len() {
                Self::compress_slice(run, &mut self.held, self.per_item, self.remaining)?;
                let room = self.limit.saturating_sub(run.compressed() + END_MARGIN);
                return Ok(if room < FULL_WITHIN {
                    Step::Complete
                } else {
                    Step::Compressed
                });
            }
        }
        Ok(Step::Complete)
    }

    /// Compresses the staged slice and hands its items' raw bytes over to the
    /// compressed bytes, in one change to the budget.
    fn compress_slice(
        run: &mut Run,
        raw: &mut HeldBytes,
        per_item: usize,
        remaining: usize,
    ) -> std::io::Result<()> {
        run.gz.write_all(&run.slice)?;
        run.gz.flush()?;
        run.written += run.slice.len();
        if let Some(audit) = &mut run.audit {
            audit.extend_from_slice(&run.slice);
        }
        run.slice.clear();
        let released = if remaining == 0 {
            raw.bytes()
        } else {
            (per_item * run.staged).min(raw.bytes())
        };
        run.staged = 0;
        let compressed = run.gz.get_ref().capacity() + run.starts.len() * OFFSET_BYTES;
        raw.hand_over(released, &mut run.held, compressed);
        Ok(())
    }

    /// Ends the run's stream and makes its payload; `None` for a run whose
    /// every item failed.
    fn finish(&mut self) -> std::io::Result<Option<Encoded>> {
        let Some(mut run) = self.run.take() else {
            return Ok(None);
        };
        if run.starts.is_empty() {
            return Ok(None);
        }
        let close_at = run.written + run.slice.len();
        run.slice.extend_from_slice(K::CLOSE);
        Self::compress_slice(&mut run, &mut self.held, self.per_item, self.remaining)?;
        let Run {
            gz,
            mut held,
            starts,
            audit,
            ..
        } = run;
        let mut body = gz.finish()?;
        body.shrink_to_fit();
        if let Some(audit) = audit {
            tracing::debug!(
                target: AUDIT_TARGET,
                api = K::API.name(),
                items = starts.len(),
                payload = %String::from_utf8_lossy(&audit),
                "payload"
            );
        }
        if starts.len() == 1 && body.len() > self.max {
            return Ok(Some(Encoded::TooLarge { bytes: body.len() }));
        }
        held.set(body.capacity() + starts.len() * OFFSET_BYTES);
        Ok(Some(Encoded::Payload(Payload {
            body: Bytes::from(body),
            request_id: Uuid::new_v4(),
            starts: starts.into_boxed_slice(),
            close_at: close_at as u32,
            held,
        })))
    }
}

/// Encodes `items` sharing `common` exactly as a client of API `K` with
/// default settings posts them: the API's JSON, with the identity attributes
/// (`instrumentation.provider` = [`DEFAULT_INSTRUMENTATION_PROVIDER`](super::DEFAULT_INSTRUMENTATION_PROVIDER),
/// `collector.name`, `collector.version`), gzipped, as one payload whatever
/// its size. Useful to inspect or measure payloads.
///
/// ```
/// use newrelic_telemetry::{Common, Event};
/// use newrelic_telemetry::client::{encode_payload, Events};
/// use std::io::Read;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// let body = encode_payload::<Events>(&[Event::new("Ping")], &Common::new()).await?;
/// let mut json = String::new();
/// flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut json)?;
/// assert!(json.starts_with(r#"[{"eventType":"Ping""#));
/// let events: serde_json::Value = serde_json::from_str(&json)?;
/// assert_eq!(events[0]["instrumentation.provider"], "newRelic");
/// assert_eq!(events[0]["collector.name"], "newrelic-telemetry");
/// assert_eq!(events[0]["collector.version"], env!("CARGO_PKG_VERSION"));
/// # Ok(()) }
/// ```
pub async fn encode_payload<K: Kind>(
    items: &[K::Item],
    common: &Common,
) -> std::io::Result<Vec<u8>> {
    let mut encoder = PayloadEncoder::<K, _>::new(
        items.iter(),
        common.clone().with_identity(Some(Identity::default())),
        HeldBytes::default(),
        usize::MAX,
        usize::MAX,
        false,
    )
    .map_err(std::io::Error::other)?;
    let mut body = None;
    while let Some(encoded) = encoder.next().await {
        match encoded {
            Encoded::Payload(payload) if body.is_none() => body = Some(payload.body.to_vec()),
            Encoded::Payload(_) => {
                return Err(std::io::Error::other(
                    "more JSON than one payload holds (64 MiB)",
                ));
            }
            Encoded::TooLarge { .. } => unreachable!("there is no maximum"),
            Encoded::Failed { message, .. } => return Err(std::io::Error::other(message)),
        }
    }
    match body {
        Some(body) => Ok(body),
        None => {
            let mut gz = gz_encoder(64, K::GZIP_LEVEL);
            gz.write_all(&encoder.open)?;
            gz.write_all(K::CLOSE)?;
            gz.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Events;
    use crate::event::Event;
    use std::io::Read;

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event::new("E").with_attribute("seq", i as i64))
            .collect()
    }

    fn json_of(body: &[u8]) -> serde_json::Value {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    async fn payloads(items: Vec<Event>, limit: usize) -> Vec<Payload> {
        let n = items.len();
        let mut encoder = PayloadEncoder::<Events, _>::new(
            items.into_iter(),
            Common::new(),
            HeldBytes::default(),
            limit,
            limit,
            false,
        )
        .unwrap();
        let mut out = Vec::new();
        while let Some(encoded) = encoder.next().await {
            match encoded {
                Encoded::Payload(p) => out.push(p),
                _ => panic!("unexpected drop"),
            }
        }
        assert_eq!(out.iter().map(Payload::len).sum::<usize>(), n);
        out
    }

    /// The gzip size of `json` at `level`, in one stream.
    fn gzip_len(json: &[u8], level: u32) -> usize {
        let mut gz = gz_encoder(json.len(), level);
        gz.write_all(json).unwrap();
        gz.finish().unwrap().len()
    }

    #[tokio::test]
    async fn each_kind_compresses_at_its_level() {
        // Events grow with traffic: the cheap level. Metrics grow with
        // series: the usual one.
        // The same items every run (timestamps too), so the sizes are too.
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        const WORDS: [&str; 8] = [
            "gold", "silver", "bronze", "EUR", "USD", "web", "ios", "api",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let items: Vec<Event> = (0..5_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                Event::new("Order")
                    .with_timestamp(at)
                    .with_attribute("seq", i)
                    .with_attribute("tier", WORDS[(x % 8) as usize])
                    .with_attribute("channel", WORDS[(x >> 8) as usize % 8])
                    .with_attribute("amount", (x % 10_000) as f64 / 100.0)
                    .with_attribute("customer", format!("c-{}", x % 5_000))
            })
            .collect();
        let body = encode_payload::<Events>(&items, &Common::new())
            .await
            .unwrap();
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut json)
            .unwrap();
        let (fast, usual) = (gzip_len(&json, 2), gzip_len(&json, 6));
        assert!(fast > usual, "{fast} vs {usual}");
        // The payload, cut in slices with a sync flush after each, is a
        // little larger than one stream at its level; at level 6 it would
        // be smaller than one stream at level 2.
        assert!(
            body.len() >= fast && body.len() < fast + fast / 10,
            "{} vs {fast} (level 6: {usual})",
            body.len()
        );
        assert_eq!(
            (Events::GZIP_LEVEL, crate::client::Metrics::GZIP_LEVEL),
            (2, 6)
        );
    }

    #[tokio::test]
    async fn payloads_stay_under_the_limit_and_keep_item_order() {
        let parts = payloads(events(20_000), 40_000).await;
        assert!(parts.len() > 1);
        let mut seq = 0;
        for part in &parts {
            assert!(part.body.len() <= 40_000, "{}", part.body.len());
            for event in json_of(&part.body).as_array().unwrap() {
                assert_eq!(event["seq"], seq);
                seq += 1;
            }
        }
        // Full payloads, not a blind halving: all but the last are near the limit.
        assert!(parts[0].body.len() > 40_000 - 2 * FULL_WITHIN);
    }

    #[tokio::test]
    async fn a_split_keeps_every_item_once_with_new_ids() {
        let mut parts = payloads(events(101), usize::MAX).await;
        let payload = parts.pop().unwrap();
        let id = payload.request_id;
        let [a, b] = payload.split::<Events>().await.unwrap();
        assert_eq!((a.len(), b.len()), (50, 51));
        assert!(a.request_id != id && b.request_id != id && a.request_id != b.request_id);
        let seqs: Vec<_> = [a, b]
            .iter()
            .flat_map(|p| json_of(&p.body).as_array().unwrap().clone())
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, (0..101).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_split_part_splits_again() {
        let payload = payloads(events(9), usize::MAX).await.pop().unwrap();
        let [a, _] = payload.split::<Events>().await.unwrap();
        let [c, d] = a.split::<Events>().await.unwrap();
        assert_eq!((c.len(), d.len()), (2, 2));
        assert_eq!(json_of(&d.body)[1]["seq"], 3);
    }
}
