//! A lean ingest sink on 127.0.0.1: a real hyper HTTP/1.1 server that reads
//! each request body, answers 202 at once (as the ingest APIs do), then
//! gunzips the body and counts the JSON bytes and items on a blocking thread,
//! storing nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub items: AtomicU64,
    pub json_bytes: AtomicU64,
    pub errors: AtomicU64,
    /// When the last body was fully received, and when the last was counted.
    pub last_received: std::sync::Mutex<Option<Instant>>,
    pub last_counted: std::sync::Mutex<Option<Instant>>,
}

pub struct Sink {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
}

/// The Metric API's payload shape: `[{"common": {...}, "metrics": [...]}]`.
#[derive(Deserialize)]
struct Block {
    #[serde(default)]
    metrics: Vec<IgnoredAny>,
}

fn count(body: &[u8], c: &Counters) {
    let json = super::encode::gunzip(body);
    match serde_json::from_slice::<Vec<Block>>(&json) {
        Ok(blocks) => {
            let items: usize = blocks.iter().map(|b| b.metrics.len()).sum();
            c.items.fetch_add(items as u64, Ordering::Relaxed);
        }
        Err(_) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    c.json_bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
    *c.last_counted.lock().unwrap() = Some(Instant::now());
}

async fn handle(
    req: Request<Incoming>,
    c: Arc<Counters>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
            Bytes::new()
        }
    };
    *c.last_received.lock().unwrap() = Some(Instant::now());
    c.requests.fetch_add(1, Ordering::Relaxed);
    let counters = c.clone();
    tokio::task::spawn_blocking(move || count(&body, &counters));
    Ok(Response::builder()
        .status(202)
        .body(Full::new(Bytes::from_static(b"{\"requestId\":\"bench\"}")))
        .unwrap())
}

impl Sink {
    /// Starts the sink on the current runtime.
    pub async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let c = c.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, c.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink { addr, counters }
    }

    pub fn metric_url(&self) -> String {
        format!("http://{}/metric/v1", self.addr)
    }
}
