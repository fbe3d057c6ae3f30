//! Encoding: items become gzipped JSON payloads, each under the size limit in
//! force, in slices that yield to the runtime.
//!
//! The JSON is never held whole: items are written into a small staging
//! buffer and compressed as they go, with a sync flush now and then so that
//! the compressed size is known exactly. A payload is cut when the next slice
//! could take it past the limit (a slice never compresses to more than its own
//! size and a few bytes), so payloads are sized before they are sent, not
//! after. Each payload remembers where its items start in its JSON, so that a
//! 413 can split it in two without the items: queued payloads hold only their
//! compressed bodies.

use std::borrow::Borrow;
use std::iter::Peekable;

use async_compression::tokio::write::GzipEncoder;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::kind::Kind;
use crate::budget::HeldBytes;
use crate::common::Common;

/// Target for audit log records (every payload at DEBUG, when enabled).
pub(crate) const AUDIT_TARGET: &str = "newrelic_telemetry::audit";

/// Uncompressed JSON gathered before it is compressed and the size measured.
const SLICE_BYTES: usize = 128 * 1024;

/// Room kept free under the limit for the end of the stream (the closing
/// bytes, the final deflate block and the gzip trailer).
const END_MARGIN: usize = 1024;

/// A payload is full once less than this is left under the limit.
const FULL_WITHIN: usize = 16 * 1024;

/// The most uncompressed JSON one payload holds, whatever its compressed size:
/// it bounds the memory a 413 split needs and keeps item offsets in a `u32`.
const MAX_PAYLOAD_JSON: usize = 64 * 1024 * 1024;

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

    /// Splits the payload into two of half the items each, with new request
    /// ids (the contract's answer to a 413). Needs at least two items.
    pub(crate) async fn split(self) -> std::io::Result<[Payload; 2]> {
        let json = gunzip(&self.body).await?;
        let at = self.starts.len() / 2;
        let halves = [(0, at), (at, self.starts.len())];
        let open = &json[..self.starts[0] as usize];
        let close = &json[self.close_at as usize..];
        let mut parts = Vec::with_capacity(2);
        for (first, end) in halves {
            let from = self.starts[first] as usize;
            let to = match self.starts.get(end) {
                // Up to the comma before the next item.
                Some(&next) => next as usize - 1,
                None => self.close_at as usize,
            };
            let shift = from - open.len();
            let starts = self.starts[first..end]
                .iter()
                .map(|&s| s - shift as u32)
                .collect();
            let mut part = Vec::with_capacity(open.len() + (to - from) + close.len());
            part.extend_from_slice(open);
            part.extend_from_slice(&json[from..to]);
            let close_at = part.len() as u32;
            part.extend_from_slice(close);
            let body = gzip(&part).await?;
            let mut held = self.held.sibling();
            held.set(body.len() + (end - first) * 4);
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

/// Turns items into payloads one at a time, releasing the items' bytes from
/// the budget as they are encoded.
pub(crate) struct PayloadEncoder<K: Kind, I: Iterator>
where
    I::Item: Borrow<K::Item>,
{
    items: Peekable<I>,
    remaining: usize,
    /// Items that failed to serialise, reported before the next payload.
    failures: std::collections::VecDeque<String>,
    common: Common,
    open: Vec<u8>,
    /// The items' bytes, given back a share at a time.
    held: HeldBytes,
    per_item: usize,
    limit: usize,
    max: usize,
    audit: bool,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: Kind, I: ExactSizeIterator> PayloadEncoder<K, I>
where
    I::Item: Borrow<K::Item>,
{
    /// An encoder of `items` sharing `common` into payloads of at most
    /// `limit` compressed bytes; a single item over `max` is never sent.
    /// `held` counts the items' bytes and is released as they are encoded.
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
            failures: std::collections::VecDeque::new(),
            common,
            open,
            held,
            limit,
            max,
            audit,
            kind: std::marker::PhantomData,
        })
    }
}

impl<K: Kind, I: Iterator> PayloadEncoder<K, I>
where
    I::Item: Borrow<K::Item>,
{
    /// One item is done with: it left the encoder's hands.
    fn consumed(&mut self) {
        self.items.next();
        self.remaining -= 1;
        let left = if self.remaining == 0 {
            0
        } else {
            self.held.bytes().saturating_sub(self.per_item)
        };
        self.held.set(left);
    }

    /// Encodes the next run of items; `None` when there are none left.
    pub(crate) async fn next(&mut self) -> Option<Encoded> {
        loop {
            if let Some(message) = self.failures.pop_front() {
                return Some(Encoded::Failed { items: 1, message });
            }
            self.items.peek()?;
            let before = self.remaining;
            match self.encode_run().await {
                Ok(Some(encoded)) => return Some(encoded),
                // Every item of the run failed: report them.
                Ok(None) => continue,
                // The compressor failed (it writes to memory, so it cannot in
                // practice): the items taken into this run are lost, counted.
                Err(e) => {
                    return Some(Encoded::Failed {
                        items: before - self.remaining - self.failures.len(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    async fn encode_run(&mut self) -> std::io::Result<Option<Encoded>> {
        let mut gz = GzipEncoder::new(Vec::new());
        gz.write_all(&self.open).await?;
        let mut audit = self.audit.then(|| self.open.clone());
        let mut held = self.held.sibling();
        let mut starts: Vec<u32> = Vec::new();
        // JSON written to the encoder so far, and staged beside it.
        let mut written = self.open.len();
        let mut slice: Vec<u8> = Vec::with_capacity(SLICE_BYTES.min(1024 * self.remaining + 64));
        let mut compressed = 0;
        loop {
            let room = self.limit.saturating_sub(compressed + END_MARGIN);
            let Some(item) = self.items.peek() else {
                break;
            };
            let mark = slice.len();
            if !starts.is_empty() {
                slice.push(b',');
            }
            let start = written + slice.len();
            K::write_item(item.borrow(), &self.common, &mut slice)
                .map_err(std::io::Error::other)?;
            let over = slice.len() > room || written + slice.len() > MAX_PAYLOAD_JSON;
            if over && !starts.is_empty() {
                // The item goes into the next payload.
                slice.truncate(mark);
                break;
            }
            starts.push(start as u32);
            self.consumed();
            if over {
                // A single item larger than the room: it goes alone.
                break;
            }
            let room_left = room - slice.len();
            if slice.len() >= SLICE_BYTES || slice.len() > room_left {
                written += slice.len();
                gz.write_all(&slice).await?;
                if let Some(audit) = &mut audit {
                    audit.extend_from_slice(&slice);
                }
                slice.clear();
                gz.flush().await?;
                compressed = gz.get_ref().len();
                held.set(compressed + starts.len() * 4);
                if self.limit.saturating_sub(compressed + END_MARGIN) < FULL_WITHIN {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        if starts.is_empty() {
            return Ok(None);
        }
        let close_at = written + slice.len();
        slice.extend_from_slice(K::CLOSE);
        gz.write_all(&slice).await?;
        gz.shutdown().await?;
        let body = gz.into_inner();
        if let Some(mut audit) = audit {
            audit.extend_from_slice(&slice);
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
        held.set(body.len() + starts.len() * 4);
        Ok(Some(Encoded::Payload(Payload {
            body: Bytes::from(body),
            request_id: Uuid::new_v4(),
            starts: starts.into_boxed_slice(),
            close_at: close_at as u32,
            held,
        })))
    }
}

/// Gzips `json`, yielding between slices.
async fn gzip(json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzipEncoder::new(Vec::with_capacity(json.len() / 8 + 64));
    let mut slices = json.chunks(SLICE_BYTES).peekable();
    while let Some(slice) = slices.next() {
        encoder.write_all(slice).await?;
        if slices.peek().is_some() {
            tokio::task::yield_now().await;
        }
    }
    encoder.shutdown().await?;
    Ok(encoder.into_inner())
}

/// Gunzips a body this crate made, yielding between slices.
async fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(body);
    let mut json = Vec::with_capacity(body.len() * 4);
    let mut buf = vec![0; SLICE_BYTES];
    loop {
        let n = decoder.read(&mut buf).await?;
        if n == 0 {
            return Ok(json);
        }
        json.extend_from_slice(&buf[..n]);
        if json.len() > MAX_PAYLOAD_JSON + SLICE_BYTES {
            return Err(std::io::Error::other(
                "payload larger than any this crate makes",
            ));
        }
        tokio::task::yield_now().await;
    }
}

/// Encodes `items` sharing `common` exactly as a client of API `K` posts
/// them: the API's JSON, gzipped, as one payload whatever its size. Useful to
/// inspect or measure payloads.
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
    let mut encoder = PayloadEncoder::<K, _>::new(
        items.iter(),
        common.clone(),
        HeldBytes::default(),
        usize::MAX,
        usize::MAX,
        false,
    )
    .map_err(std::io::Error::other)?;
    let mut body = Vec::new();
    while let Some(encoded) = encoder.next().await {
        match encoded {
            Encoded::Payload(payload) if body.is_empty() => body = payload.body.to_vec(),
            Encoded::Payload(_) => {
                return Err(std::io::Error::other(
                    "more JSON than one payload holds (64 MiB)",
                ));
            }
            Encoded::TooLarge { .. } => unreachable!("there is no maximum"),
            Encoded::Failed { message, .. } => return Err(std::io::Error::other(message)),
        }
    }
    if body.is_empty() {
        body = gzip(&[&encoder.open[..], K::CLOSE].concat()).await?;
    }
    Ok(body)
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
        let [a, b] = payload.split().await.unwrap();
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
        let [a, _] = payload.split().await.unwrap();
        let [c, d] = a.split().await.unwrap();
        assert_eq!((c.len(), d.len()), (2, 2));
        assert_eq!(json_of(&d.body)[1]["seq"], 3);
    }
}
