//! What happened to what was sent.

use std::fmt;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::api::Api;
use crate::error::{Chain, RecordError};

/// Why items were dropped instead of delivered.
///
/// ```
/// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
/// use newrelic_telemetry::{Event, EventClient};
/// use newrelic_telemetry::client::DropReason;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// server.respond_with(ScriptedResponse::status(401));
/// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
/// let err = client.send(Event::new("Purchase")).await.unwrap_err();
/// match err.report().first_drop_reason() {
///     Some(DropReason::Rejected { status }) => assert_eq!(status.as_u16(), 401),
///     other => panic!("unexpected: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DropReason {
    /// The items broke an API rule and were never sent.
    Invalid(RecordError),
    /// The API rejected the payload with a status that retrying cannot fix
    /// (400, 401, 403, 404, 405, 409, 410, 411).
    Rejected {
        /// The status the API answered.
        status: StatusCode,
    },
    /// A payload of a single item was still over the size limit (or answered 413).
    TooLarge {
        /// The payload's compressed size.
        bytes: usize,
    },
    /// The payload used up its retries or its time budget.
    RetriesExhausted {
        /// How the last attempt failed.
        last: AttemptFailure,
    },
    /// The queue of payloads waiting to be sent was full; the oldest payload
    /// was dropped to make room.
    QueueFull,
    /// Shutdown reached its deadline before the payload was delivered.
    ShutdownDeadline,
    /// The items could not be encoded as JSON.
    Encoding {
        /// The encoder's message.
        message: String,
    },
    /// The API accepted the payload but refused some of its items in its
    /// answer (OTLP's `partial_success`: its `rejected_data_points`).
    PartiallyRejected {
        /// Why, as the API said it.
        message: String,
    },
}

impl DropReason {
    /// The error beneath the reason, if any: the rule an item broke, or the
    /// connection error that ended the last attempt.
    pub(crate) fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DropReason::Invalid(rule) => Some(rule),
            DropReason::RetriesExhausted {
                last: AttemptFailure::Connection(e),
            } => Some(e),
            _ => None,
        }
    }

    /// Writes the reason without the text of its [`cause`](Self::cause),
    /// for an error whose `source()` is that cause.
    pub(crate) fn fmt_without_cause(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Invalid(_) => f.write_str("invalid item"),
            DropReason::RetriesExhausted {
                last: AttemptFailure::Connection(_),
            } => f.write_str("retries exhausted; last attempt: connection error"),
            other => fmt::Display::fmt(other, f),
        }
    }
}

/// The whole story on one line, causes included (a `DropReason` is not an
/// error with a `source()`): the reason, then the rule an item broke or the
/// connection error with its causes.
///
/// ```
/// use newrelic_telemetry::{EventClient, Event, RetryPolicy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let socket = tokio::net::TcpSocket::new_v4()?;
/// socket.bind("127.0.0.1:0".parse()?)?; // bound, never listening: refused
/// let client = EventClient::builder("key")
///     .endpoint(format!("http://{}/v1/accounts/events", socket.local_addr()?))
///     .retry_policy(RetryPolicy::none())
///     .build()?;
/// let err = client.send(Event::new("Ping")).await.unwrap_err();
/// let reason = err.report().first_drop_reason().unwrap().to_string();
/// assert!(reason.starts_with("retries exhausted; last attempt: connection error: could not connect"));
/// assert!(reason.to_lowercase().contains("connection refused"), "{reason}");
/// # Ok(()) }
/// ```
impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Invalid(e) => write!(f, "invalid item: {e}"),
            DropReason::Rejected { status } => write!(f, "rejected by the API with {status}"),
            DropReason::TooLarge { bytes } => {
                write!(f, "a single item is too large ({bytes} bytes compressed)")
            }
            DropReason::RetriesExhausted { last } => {
                write!(f, "retries exhausted; last attempt: {last}")
            }
            DropReason::QueueFull => f.write_str("the send queue was full"),
            DropReason::ShutdownDeadline => {
                f.write_str("shutdown deadline reached before delivery")
            }
            DropReason::Encoding { message } => write!(f, "could not encode: {message}"),
            DropReason::PartiallyRejected { message } => {
                write!(f, "refused by the API in an accepted payload: {message}")
            }
        }
    }
}

/// How one attempt at sending a payload failed.
///
/// ```
/// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
/// use newrelic_telemetry::{Log, LogClient, RetryPolicy};
/// use newrelic_telemetry::client::{AttemptFailure, DropReason};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// server.respond_with(ScriptedResponse::status(503));
/// let client = LogClient::builder("test-key")
///     .endpoint(server.log_url())
///     .retry_policy(RetryPolicy::none())
///     .build()?;
/// let err = client.send(Log::new("hello")).await.unwrap_err();
/// match err.report().first_drop_reason() {
///     Some(DropReason::RetriesExhausted { last: AttemptFailure::Status(s) }) => {
///         assert_eq!(s.as_u16(), 503)
///     }
///     other => panic!("unexpected: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// The API answered with a status worth retrying (408, 429, 5xx, ...).
    Status(StatusCode),
    /// The request took longer than the client's timeout.
    Timeout,
    /// The connection could not be made or broke off.
    Connection(ConnectionError),
}

/// A connection that could not be made or broke off. Its message says which
/// ("could not connect", or "the connection broke off before an answer");
/// its [`source`](std::error::Error::source) is the HTTP client's error,
/// which leads on to the operating system's. Printing the chain (anyhow's
/// `{:#}`, or walking `source()`) prints each message once.
///
/// ```
/// use newrelic_telemetry::{EventClient, Event, RetryPolicy};
/// use newrelic_telemetry::client::{AttemptFailure, ConnectionError, DropReason};
/// use std::error::Error;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let socket = tokio::net::TcpSocket::new_v4()?;
/// socket.bind("127.0.0.1:0".parse()?)?; // bound, never listening: refused
/// let client = EventClient::builder("key")
///     .endpoint(format!("http://{}/v1/accounts/events", socket.local_addr()?))
///     .retry_policy(RetryPolicy::none())
///     .build()?;
/// let err = client.send(Event::new("Ping")).await.unwrap_err();
/// match err.report().first_drop_reason() {
///     Some(DropReason::RetriesExhausted { last: AttemptFailure::Connection(e) }) => {
///         assert_eq!(e.to_string(), "could not connect");
///         assert!(e.source().is_some_and(|e| e.is::<reqwest::Error>()));
///     }
///     other => panic!("unexpected: {other:?}"),
/// }
/// assert!(err.is_connect());
///
/// // The send's error leads to it, and on to the HTTP client's error.
/// let mut messages = vec![err.to_string()];
/// let mut cause = err.source();
/// while let Some(e) = cause {
///     messages.push(e.to_string());
///     cause = e.source();
/// }
/// assert_eq!(messages[0], "1 of 1 items dropped: retries exhausted; last attempt: connection error");
/// assert_eq!(messages[1], "could not connect");
/// // Each message once: none repeats the one after it.
/// for pair in messages.windows(2) {
///     assert!(!pair[0].contains(&pair[1]), "{pair:?}");
/// }
/// // And the whole chain still names the root cause.
/// assert!(messages.join(": ").to_lowercase().contains("connection refused"), "{messages:?}");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectionError {
    /// Whether the connection could not be made (rather than broke off).
    connect: bool,
    /// The HTTP client's error with its causes, on one line: what two
    /// connection errors are compared by.
    detail: String,
    source: std::sync::Arc<reqwest::Error>,
}

impl ConnectionError {
    pub(crate) fn new(error: reqwest::Error) -> Self {
        ConnectionError {
            connect: error.is_connect(),
            detail: Chain(&error).to_string(),
            source: std::sync::Arc::new(error),
        }
    }
}

impl PartialEq for ConnectionError {
    fn eq(&self, other: &Self) -> bool {
        self.connect == other.connect && self.detail == other.detail
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.connect {
            "could not connect"
        } else {
            "the connection broke off before an answer"
        })
    }
}

/// The source is the HTTP client's error (a `reqwest::Error`).
impl std::error::Error for ConnectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptFailure::Status(s) => write!(f, "status {s}"),
            AttemptFailure::Timeout => f.write_str("timed out"),
            AttemptFailure::Connection(e) => write!(f, "connection error: {}", Chain(e)),
        }
    }
}

/// How a payload ended.
///
/// ```
/// use newrelic_telemetry::client::PayloadOutcome;
/// # use newrelic_telemetry::test_util::TestIngestServer;
/// # use newrelic_telemetry::{Event, EventClient};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = TestIngestServer::start().await?;
/// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
/// let report = client.send(Event::new("Purchase")).await?;
/// match report.payloads()[0].outcome() {
///     PayloadOutcome::Accepted { status } => assert_eq!(status.as_u16(), 200),
///     PayloadOutcome::Dropped(reason) => panic!("dropped: {reason}"),
///     other => panic!("an outcome added later: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PayloadOutcome {
    /// The API accepted it.
    Accepted {
        /// The status it answered (202 for most APIs, 200 for events).
        status: StatusCode,
    },
    /// It was dropped.
    Dropped(DropReason),
}

/// What happened to one payload (one request id).
///
/// ```
/// # use newrelic_telemetry::test_util::TestIngestServer;
/// # use newrelic_telemetry::{Event, EventClient};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = TestIngestServer::start().await?;
/// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
/// let report = client.send(Event::new("Purchase")).await?;
/// let payload = &report.payloads()[0];
/// assert_eq!(payload.api(), newrelic_telemetry::Api::Event);
/// assert_eq!((payload.items(), payload.attempts()), (1, 1));
/// assert!(payload.is_accepted() && payload.drop_reason().is_none());
/// assert!(payload.bytes() > 0);
/// let id = payload.request_id().unwrap().to_string();
/// assert_eq!(server.requests()[0].header("x-request-id"), Some(id.as_str()));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PayloadReport {
    pub(crate) api: Api,
    pub(crate) request_id: Option<Uuid>,
    pub(crate) items: usize,
    pub(crate) bytes: usize,
    pub(crate) attempts: u32,
    pub(crate) outcome: PayloadOutcome,
}

impl PayloadReport {
    pub(crate) fn dropped(
        api: Api,
        request_id: Option<Uuid>,
        items: usize,
        bytes: usize,
        attempts: u32,
        reason: DropReason,
    ) -> Self {
        PayloadReport {
            api,
            request_id,
            items,
            bytes,
            attempts,
            outcome: PayloadOutcome::Dropped(reason),
        }
    }

    /// The API: `metric`, `event`, `log` or `trace`.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// let payload = &report.payloads()[0];
    /// assert_eq!(payload.api(), newrelic_telemetry::Api::Event);
    /// # Ok(()) }
    /// ```
    pub fn api(&self) -> Api {
        self.api
    }

    /// The `x-request-id` the payload was sent with (none if it was never sent).
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// let payload = &report.payloads()[0];
    /// assert!(payload.request_id().is_some());
    /// # Ok(()) }
    /// ```
    pub fn request_id(&self) -> Option<Uuid> {
        self.request_id
    }

    /// How many items the payload held.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// let payload = &report.payloads()[0];
    /// assert_eq!(payload.items(), 1);
    /// # Ok(()) }
    /// ```
    pub fn items(&self) -> usize {
        self.items
    }

    /// The payload's compressed size in bytes (0 if it was never encoded).
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// let payload = &report.payloads()[0];
    /// assert!(payload.bytes() > 0);
    /// # Ok(()) }
    /// ```
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many requests were made for it (0 if none).
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// let payload = &report.payloads()[0];
    /// assert_eq!(payload.attempts(), 1);
    /// # Ok(()) }
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How it ended.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// let payload = &report.payloads()[0];
    /// assert!(matches!(payload.outcome(), newrelic_telemetry::client::PayloadOutcome::Accepted { .. }));
    /// # Ok(()) }
    /// ```
    pub fn outcome(&self) -> &PayloadOutcome {
        &self.outcome
    }

    /// Whether the API accepted it.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// let payload = &report.payloads()[0];
    /// assert!(payload.is_accepted());
    /// # Ok(()) }
    /// ```
    pub fn is_accepted(&self) -> bool {
        matches!(self.outcome, PayloadOutcome::Accepted { .. })
    }

    /// Why it was dropped, if it was.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// let payload = &report.payloads()[0];
    /// assert_eq!(payload.drop_reason(), None);
    /// # Ok(()) }
    /// ```
    pub fn drop_reason(&self) -> Option<&DropReason> {
        match &self.outcome {
            PayloadOutcome::Dropped(reason) => Some(reason),
            PayloadOutcome::Accepted { .. } => None,
        }
    }
}

/// What happened to the items of one send: a report per payload, in order
/// (two for an OTLP payload whose answer refused some of its points: the
/// accepted part, then the refused one, with the same request id).
///
/// ```
/// # use newrelic_telemetry::test_util::TestIngestServer;
/// # use newrelic_telemetry::{Event, EventClient};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = TestIngestServer::start().await?;
/// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
/// let report = client
///     .send_batch(vec![Event::new("Purchase"), Event::new("Refund")], Default::default())
///     .await?;
/// assert_eq!(report.payloads().len(), 1);
/// assert_eq!((report.items_sent(), report.items_dropped()), (2, 0));
/// assert_eq!(report.status().map(|s| s.as_u16()), Some(200));
/// assert!(report.first_drop_reason().is_none());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SendReport {
    payloads: Vec<PayloadReport>,
}

impl SendReport {
    pub(crate) fn new(payloads: Vec<PayloadReport>) -> Self {
        SendReport { payloads }
    }

    /// Every payload's report.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// assert_eq!(report.payloads().len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn payloads(&self) -> &[PayloadReport] {
        &self.payloads
    }

    /// Items the API accepted.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// assert_eq!(report.items_sent(), 1);
    /// # Ok(()) }
    /// ```
    pub fn items_sent(&self) -> usize {
        self.payloads
            .iter()
            .filter(|p| p.is_accepted())
            .map(|p| p.items)
            .sum()
    }

    /// Items dropped.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// assert_eq!(report.items_dropped(), 0);
    /// # Ok(()) }
    /// ```
    pub fn items_dropped(&self) -> usize {
        self.payloads
            .iter()
            .filter(|p| !p.is_accepted())
            .map(|p| p.items)
            .sum()
    }

    /// The status of the last accepted payload, if any.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// assert_eq!(report.status().unwrap().as_u16(), 200); // the Event API answers 200
    /// # Ok(()) }
    /// ```
    pub fn status(&self) -> Option<StatusCode> {
        self.payloads.iter().rev().find_map(|p| match p.outcome {
            PayloadOutcome::Accepted { status } => Some(status),
            PayloadOutcome::Dropped(_) => None,
        })
    }

    /// The first reason anything was dropped.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// # use newrelic_telemetry::{Event, EventClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// # let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let report = client.send(Event::new("Order")).await?;
    /// assert!(report.first_drop_reason().is_none());
    /// # Ok(()) }
    /// ```
    pub fn first_drop_reason(&self) -> Option<&DropReason> {
        self.payloads.iter().find_map(PayloadReport::drop_reason)
    }
}
