//! A local ingest endpoint, for trying the SDK without a New Relic account
//! (feature `local-endpoint`).
//!
//! [`LocalEndpoint`] is a real HTTP server on 127.0.0.1 that accepts the four
//! ingest APIs, decodes what arrives, and keeps it, so that a program can show
//! what it would have sent. Nothing leaves the machine, everything received is
//! kept in memory until the endpoint is dropped, and every request is
//! accepted: use it on a developer's machine, not in production (where the
//! `NEW_RELIC_*` variables point [`Telemetry`](crate::Telemetry) at New
//! Relic).
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
use crate::telemetry::env::{API_KEY, ENABLED, LICENSE_KEY};
pub use crate::test_util::ReceivedRequest;
use crate::test_util::TestIngestServer;

/// The key [`LocalEndpoint::configure`] sets: the endpoint accepts any key.
const LOCAL_KEY: &str = "local-endpoint";

/// An ingest endpoint on an ephemeral port of 127.0.0.1, serving the four
/// ingest APIs until it is dropped. See the [module documentation](self).
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
    /// let keyed = std::env::var("NEW_RELIC_API_KEY").is_ok() || std::env::var("NEW_RELIC_LICENSE_KEY").is_ok();
    /// let off = std::env::var("NEW_RELIC_ENABLED").is_ok_and(|v| v.eq_ignore_ascii_case("false"));
    /// assert_eq!(local.is_some(), !keyed && !off);
    /// # if local.is_none() { return Ok(()) }
    /// let telemetry = Telemetry::builder().local_endpoint(local.as_ref()).build()?;
    /// telemetry.events().record(Event::new("Signup")).await;
    /// telemetry.shutdown().await;
    /// assert_eq!(local.unwrap().requests()[0].body[0]["eventType"], "Signup");
    /// # Ok(()) }
    /// ```
    pub async fn start_unless_keyed() -> std::io::Result<Option<LocalEndpoint>> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let off = std::env::var(ENABLED).is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "false" | "0" | "no" | "off"
            )
        });
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
