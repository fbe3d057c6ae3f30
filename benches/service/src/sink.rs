//! The ingest sink: a do-nothing HTTP/1 server on 127.0.0.1 that answers
//! 202 to any POST on any path, after reading (and discarding) the body,
//! and counts requests and body bytes (as sent: gzipped or protobuf) per
//! path, so that the report can show what each build sent.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Requests and body bytes received on one path.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathCount {
    pub requests: u64,
    pub bytes: u64,
}

type Received = Arc<Mutex<BTreeMap<String, PathCount>>>;

/// A running sink; it stops when the driver's runtime does.
pub struct Sink {
    addr: SocketAddr,
    received: Received,
}

impl Sink {
    /// Binds 127.0.0.1 on any free port and serves in the background.
    pub async fn start() -> std::io::Result<Sink> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let received = Received::default();
        tokio::spawn(accept(listener, received.clone()));
        Ok(Sink { addr, received })
    }

    /// `http://127.0.0.1:PORT`, with no path.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What arrived so far, by path.
    pub fn received(&self) -> BTreeMap<String, PathCount> {
        self.received.lock().unwrap().clone()
    }
}

async fn accept(listener: TcpListener, received: Received) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let received = received.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, received.clone()));
            // A client going away mid-request is no concern of the sink's.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    received: Received,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let post = request.method() == Method::POST;
    let bytes = match request.into_body().collect().await {
        Ok(body) => body.to_bytes().len() as u64,
        Err(_) => 0,
    };
    let status = if post {
        let mut received = received.lock().unwrap();
        let count = received.entry(path).or_default();
        count.requests += 1;
        count.bytes += bytes;
        StatusCode::ACCEPTED
    } else {
        StatusCode::METHOD_NOT_ALLOWED
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    Ok(response)
}
