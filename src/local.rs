//! A local ingest endpoint, for trying the SDK without a New Relic account
//! (feature `local-endpoint`).
//!
//! [`LocalEndpoint`] is a real HTTP server on 127.0.0.1 that accepts the four
//! ingest APIs and OTLP/HTTP metrics (`/v1/metrics`, where distributions go
//! as exponential histograms), decodes what arrives, and keeps it, so that a
//! program can show what it would have sent. Nothing leaves the machine,
//! everything received is kept in memory until the endpoint is dropped, and
//! every well-formed request is accepted (with any key; OTLP exports need
//! an `api-key` header, as New Relic's do): use it on a developer's machine,
//! not in production (where the `NEW_RELIC_*` variables point
//! [`Telemetry`](crate::Telemetry) at New Relic).
//!
//! [`requests`](LocalEndpoint::requests) shows every request decoded (an
//! OTLP export as JSON, see [`ReceivedRequest::body`]), and
//! [`distributions`](LocalEndpoint::distributions) each distribution that
//! arrived, printable as one line with its count, sum and p50, p90 and p99
//! read from its buckets ([`ReceivedDistribution`]).
//!
//! ```
//! use newrelic_telemetry::Telemetry;
//! use newrelic_telemetry::local::LocalEndpoint;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let local = LocalEndpoint::start().await?;
//! let telemetry = local.configure(Telemetry::builder().service_name("demo")).build()?;
//! telemetry.metrics().record_count("signups", 1.0, [("plan", "free")]).await;
//! telemetry.shutdown().await;
//!
//! let request = &local.requests()[0];
//! assert_eq!(request.path, "/metric/v1");
//! assert_eq!(request.body[0]["metrics"][0]["name"], "signups");
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

// The endpoint is the crate's test server with nothing scripted: it answers
// every well-formed request as New Relic does when it accepts one.
use crate::api::Api;
use crate::telemetry::TelemetryBuilder;
use crate::telemetry::env::{API_KEY, ENABLED, LICENSE_KEY, parse_switch};
use crate::test_util::TestIngestServer;
pub use crate::test_util::{ReceivedDistribution, ReceivedRequest};

/// The key [`LocalEndpoint::configure`] sets: the endpoint accepts any key.
const LOCAL_KEY: &str = "local-endpoint";

/// An ingest endpoint on an ephemeral port of 127.0.0.1, serving the four
/// ingest APIs and OTLP metrics until it is dropped. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct LocalEndpoint {
    server: TestIngestServer,
}

impl LocalEndpoint {
    /// Starts the endpoint on the current Tokio runtime.
    ///
    /// Fails when no port of 127.0.0.1 can be bound.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    ///
    /// ```
    /// use newrelic_telemetry::local::LocalEndpoint;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let local = LocalEndpoint::start().await?;
    /// assert!(local.addr().ip().is_loopback());
    /// assert!(local.requests().is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn start() -> std::io::Result<LocalEndpoint> {
        Ok(LocalEndpoint {
            server: TestIngestServer::start().await?,
        })
    }

    /// Starts the endpoint when the environment sets no API key
    /// (`NEW_RELIC_API_KEY` or `NEW_RELIC_LICENSE_KEY`) and does not turn
    /// telemetry off (`NEW_RELIC_ENABLED=false`), printing its address to
    /// stderr; otherwise `None`, and telemetry goes where the environment
    /// says. Hand the result to
    /// [`TelemetryBuilder::local_endpoint`]: the one way to say "the local
    /// endpoint unless configured", as the crate's examples do.
    ///
    /// ```
    /// use newrelic_telemetry::local::LocalEndpoint;
    /// use newrelic_telemetry::{Event, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = LocalEndpoint::start_unless_keyed().await?;
    /// # // Where this runs with a key set, it would send to New Relic: stop.
    /// # if local.is_none() { return Ok(()) }
    /// let telemetry = Telemetry::builder().local_endpoint(local.as_ref()).build()?;
    /// telemetry.events().record(Event::new("Signup")).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(local.unwrap().requests()[0].body[0]["eventType"], "Signup");
    /// # Ok(()) }
    /// ```
    pub async fn start_unless_keyed() -> std::io::Result<Option<LocalEndpoint>> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let off = std::env::var(ENABLED).is_ok_and(|v| parse_switch(&v) == Some(false));
        if set(API_KEY) || set(LICENSE_KEY) || off {
            return Ok(None);
        }
        let local = LocalEndpoint::start().await?;
        eprintln!(
            "No {API_KEY}: sending to a local ingest endpoint at http://{}",
            local.addr()
        );
        Ok(Some(local))
    }

    /// The address the endpoint listens on.
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    /// use newrelic_telemetry::local::LocalEndpoint;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let local = LocalEndpoint::start().await?;
    /// assert_eq!(local.url(Api::Log), format!("http://{}/log/v1", local.addr()));
    /// # Ok(()) }
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The URL of `api` on this endpoint, for a single client's
    /// [`endpoint`](crate::client::ClientBuilder::endpoint).
    ///
    /// ```
    /// use newrelic_telemetry::Api;
    /// use newrelic_telemetry::local::LocalEndpoint;
    /// use newrelic_telemetry::{Event, EventClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = LocalEndpoint::start().await?;
    /// let client = EventClient::builder("any-key").endpoint(local.url(Api::Event)).build()?;
    /// client.send(Event::new("Signup")).await?;
    /// assert_eq!(local.requests()[0].body[0]["eventType"], "Signup");
    /// # Ok(()) }
    /// ```
    pub fn url(&self, api: Api) -> String {
        self.server.url(api)
    }

    /// Points `builder`'s four APIs at this endpoint and gives it a
    /// placeholder key (the endpoint accepts any). Its other settings are
    /// kept, and the environment is still read for the rest.
    ///
    /// ```
    /// use newrelic_telemetry::local::LocalEndpoint;
    /// use newrelic_telemetry::{Log, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = LocalEndpoint::start().await?;
    /// let telemetry = local.configure(Telemetry::builder()).build()?;
    /// assert_eq!(telemetry.endpoints().logs, format!("http://{}/log/v1", local.addr()));
    /// telemetry.logs().record(Log::new("hello")).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(local.requests()[0].header("api-key"), Some("local-endpoint"));
    /// # Ok(()) }
    /// ```
    #[must_use = "configure returns the changed builder"]
    pub fn configure(&self, builder: TelemetryBuilder) -> TelemetryBuilder {
        builder
            .api_key(LOCAL_KEY)
            .metric_endpoint(self.url(Api::Metric))
            .event_endpoint(self.url(Api::Event))
            .log_endpoint(self.url(Api::Log))
            .span_endpoint(self.url(Api::Span))
            .otlp_endpoint(self.url(Api::Otlp))
    }

    /// Every request received so far, in order, each with its body gunzipped
    /// and parsed as JSON.
    ///
    /// ```
    /// use newrelic_telemetry::local::LocalEndpoint;
    /// use newrelic_telemetry::{Span, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = LocalEndpoint::start().await?;
    /// let telemetry = local.configure(Telemetry::builder()).build()?;
    /// telemetry.spans().record(Span::new("GET /").finish()).await;
    /// telemetry.shutdown().await;
    ///
    /// let requests = local.requests();
    /// assert_eq!((requests[0].path.as_str(), requests[0].status), ("/trace/v1", 202));
    /// assert_eq!(requests[0].body[0]["spans"][0]["attributes"]["name"], "GET /");
    /// # Ok(()) }
    /// ```
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.server.requests()
    }

    /// The URL of the OTLP/HTTP metrics export on this endpoint
    /// (`/v1/metrics`), where distributions are sent.
    ///
    /// ```
    /// use newrelic_telemetry::local::LocalEndpoint;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let local = LocalEndpoint::start().await?;
    /// assert_eq!(local.otlp_metrics_url(), format!("http://{}/v1/metrics", local.addr()));
    /// # Ok(()) }
    /// ```
    pub fn otlp_metrics_url(&self) -> String {
        self.server.otlp_metrics_url()
    }

    /// Every distribution received so far over OTLP, in order, each rebuilt
    /// from its buckets; its `Display` is one line with its count, sum and
    /// p50, p90 and p99 ([`ReceivedDistribution`]).
    ///
    /// ```
    /// use newrelic_telemetry::local::LocalEndpoint;
    ///
    /// # // An OTLP request written by hand (the crate's encoder is internal):
    /// # // `latency` in ms, one point of 5, 10 and 20 at scale 0 (buckets
    /// # // (2^i, 2^(i+1)], so offset 2 and three counts of 1).
    /// # fn varint(mut v: u64, out: &mut Vec<u8>) { while v >= 0x80 { out.push(v as u8 | 0x80); v >>= 7; } out.push(v as u8); }
    /// # fn field(n: u64, body: &[u8]) -> Vec<u8> { let mut out = Vec::new(); varint(n << 3 | 2, &mut out); varint(body.len() as u64, &mut out); out.extend_from_slice(body); out }
    /// # fn fixed(n: u64, v: u64) -> Vec<u8> { let mut out = Vec::new(); varint(n << 3 | 1, &mut out); out.extend(v.to_le_bytes()); out }
    /// # fn otlp_request() -> Vec<u8> {
    /// #     let attr = |k: &str, v: &str| field(1, &[field(1, k.as_bytes()), field(2, &field(1, v.as_bytes()))].concat());
    /// #     let buckets = [vec![0x08, 4], field(2, &[1, 1, 1])].concat();
    /// #     let point = [attr("route", "/orders"), fixed(4, 3), fixed(5, 35f64.to_bits()), field(8, &buckets), fixed(12, 5f64.to_bits()), fixed(13, 20f64.to_bits())].concat();
    /// #     let metric = [field(1, b"latency"), field(3, b"ms"), field(10, &[field(1, &point), vec![0x10, 1]].concat())].concat();
    /// #     field(1, &[field(1, &attr("service.name", "checkout")), field(2, &field(2, &metric))].concat())
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = LocalEndpoint::start().await?;
    /// reqwest::Client::new()
    ///     .post(local.otlp_metrics_url())
    ///     .header("api-key", "any")
    ///     .header("content-type", "application/x-protobuf")
    ///     .body(otlp_request())
    ///     .send()
    ///     .await?;
    ///
    /// let lines: Vec<String> = local.distributions().iter().map(|d| d.to_string()).collect();
    /// assert_eq!(
    ///     lines,
    ///     [r#"latency [ms] {route="/orders"}: count 3, sum 35, p50 11.31, p90 20, p99 20"#]
    /// );
    /// let request = &local.requests()[0];
    /// assert!(request.is_otlp_metrics());
    /// let point = &request.body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    ///     ["exponentialHistogram"]["dataPoints"][0];
    /// assert_eq!(point["positive"]["bucketCounts"], serde_json::json!([1, 1, 1]));
    /// # Ok(()) }
    /// ```
    pub fn distributions(&self) -> Vec<ReceivedDistribution> {
        self.server.distributions()
    }
}

impl TelemetryBuilder {
    /// Sends to `local` when it is there ([`LocalEndpoint::configure`]),
    /// and leaves the builder as it is when it is `None`: with
    /// [`LocalEndpoint::start_unless_keyed`], the local endpoint unless the
    /// environment configures New Relic.
    ///
    /// ```
    /// use newrelic_telemetry::local::LocalEndpoint;
    /// use newrelic_telemetry::{Log, Telemetry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = LocalEndpoint::start().await?;
    /// let telemetry = Telemetry::builder().local_endpoint(&local).build()?;
    /// telemetry.logs().record(Log::new("hello")).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(local.requests()[0].body[0]["logs"][0]["message"], "hello");
    ///
    /// let keyed = Telemetry::builder().api_key("key").local_endpoint(None).build()?;
    /// assert_eq!(keyed.endpoints().logs, "https://log-api.newrelic.com/log/v1");
    /// # keyed.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "local-endpoint")))]
    #[must_use = "builder methods return the changed builder"]
    pub fn local_endpoint<'a>(self, local: impl Into<Option<&'a LocalEndpoint>>) -> Self {
        match local.into() {
            Some(local) => local.configure(self),
            None => self,
        }
    }
}
