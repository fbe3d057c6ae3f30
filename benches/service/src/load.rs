//! The load client: a fixed number of concurrent clients, each sending
//! `POST /orders` back to back over a kept-alive connection until the
//! window ends; every request has a timeout, so a window ends at most one
//! timeout after its deadline.

use std::time::{Duration, Instant};

/// The body of every order: a small JSON document.
const ORDER: &str = r#"{"customer":"c-1042","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"currency":"EUR"}"#;

/// What one window of load did.
pub struct Window {
    /// Requests answered with a success status.
    pub completed: u64,
    /// Requests that failed, timed out or were answered with an error.
    pub errors: u64,
    /// The latency of every completed request, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// From the window's start until its last request ended.
    pub elapsed: Duration,
}

impl Window {
    pub fn requests_per_second(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }
}

/// A client for `concurrency` connections to the service.
pub fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("an HTTP client with no TLS settings builds")
}

/// Runs `concurrency` clients against `url` for `duration`.
pub async fn run(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    duration: Duration,
    timeout: Duration,
) -> Window {
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(16 * 1024);
                let mut errors = 0;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let response = client.post(&url).body(ORDER).timeout(timeout).send().await;
                    let ok = match response {
                        Ok(response) if response.status().is_success() => {
                            response.bytes().await.is_ok()
                        }
                        _ => false,
                    };
                    if ok {
                        let us = sent.elapsed().as_micros();
                        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((mut l, e)) = worker.await {
            latencies_us.append(&mut l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Window {
        completed: latencies_us.len() as u64,
        errors,
        latencies_us,
        elapsed,
    }
}
