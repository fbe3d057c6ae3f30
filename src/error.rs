//! Error types, one per concern: recording, building a client, sending, and
//! configuration from the environment.
//!
//! None of them ever holds or prints the API key.

use std::fmt;

use crate::client::SendReport;

/// Why a recording call refused an item.
///
/// A refused item is counted (see [`RecordStats`](crate::RecordStats)) and never
/// reaches the wire; everything recorded before it is kept.
///
/// ```
/// use newrelic_telemetry::{MetricBatch, RecordError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let batch = MetricBatch::new();
/// assert_eq!(batch.record_count("", 1.0, ()).await, Err(RecordError::EmptyName));
/// let err = batch.record_gauge("cpu", f64::NAN, ()).await.unwrap_err();
/// assert_eq!(err, RecordError::NonFiniteValue { name: "cpu".into() });
/// assert_eq!(batch.record_stats().rejected_invalid, 2);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RecordError {
    /// A metric name or a span name is empty.
    EmptyName,
    /// Adding the value to its series would make the aggregate infinite (a sum
    /// past `f64::MAX`); the series keeps its value.
    AggregateOverflow {
        /// The metric's name.
        name: String,
    },
    /// A metric value (or a summary field) is NaN or infinite.
    NonFiniteValue {
        /// The metric's name.
        name: String,
    },
    /// A float attribute is NaN or infinite.
    NonFiniteAttribute {
        /// The attribute's key.
        key: String,
    },
    /// A span's id or trace id is empty.
    EmptySpanId,
    /// An event type is empty, too long, or has characters other than ASCII
    /// letters, digits, `_` and `:`.
    InvalidEventType {
        /// The event type as given (its first 64 characters).
        event_type: String,
    },
    /// An attribute key is empty.
    EmptyAttributeKey,
    /// An attribute key is longer than the API allows.
    AttributeKeyTooLong {
        /// The key's first 64 characters.
        key: String,
        /// The key's length in characters.
        chars: usize,
        /// The API's limit.
        limit: usize,
    },
    /// An item has more attributes than the API allows.
    TooManyAttributes {
        /// How many the item had.
        count: usize,
        /// The API's limit.
        limit: usize,
    },
    /// A metric attribute uses a key the Metric API reserves (`interval.ms`,
    /// `timestamp`, `value`, `common`, `min`, `max`, `count`, `sum`, `metrics`,
    /// or the metric's own name).
    ReservedAttribute {
        /// The reserved key.
        key: String,
    },
    /// A summary has a count of zero or a minimum above its maximum.
    InvalidSummary,
    /// The batch holds as many items as it is allowed to; the new item was
    /// dropped (the items already buffered are kept).
    BufferFull {
        /// The batch's capacity.
        capacity: usize,
    },
    /// The batch was closed: its harvester has shut down (or is shutting
    /// down) and will not flush it again.
    Closed,
    /// The metric batch holds as many series as it is allowed to; a new series
    /// was dropped (existing series still aggregate).
    SeriesLimitReached {
        /// The batch's series limit.
        limit: usize,
    },
    /// A name the series or item is known by (a metric name) is longer than
    /// its documented bound.
    NameTooLong {
        /// The name's first 64 characters.
        name: String,
        /// The name's length in characters.
        chars: usize,
        /// The bound.
        limit: usize,
    },
    /// A span id, trace id or parent id is longer than its documented bound.
    SpanIdTooLong {
        /// The id's length in characters.
        chars: usize,
        /// The bound.
        limit: usize,
    },
    /// A timestamp the API would not accept: before 1970, past what a signed
    /// 64-bit count of milliseconds holds, or outside the API's window (the
    /// Metric API takes 48 hours back to 24 hours ahead, the Log API 48 hours
    /// back).
    TimestampOutOfRange {
        /// The timestamp in milliseconds since the epoch (`u64::MAX` for a
        /// time before 1970).
        timestamp_ms: u64,
    },
    /// Keeping the item would pass the pipeline's memory budget; it was
    /// dropped (what is already held is kept, and the harvester is asked to
    /// make room).
    MemoryBudgetFull {
        /// The pipeline's budget in bytes.
        budget_bytes: usize,
    },
}

/// The first `n` characters of `s`, for error messages.
pub(crate) fn prefix(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::EmptyName => f.write_str("name is empty"),
            RecordError::AggregateOverflow { name } => write!(
                f,
                "metric {name:?} would overflow to infinity; the value was not added"
            ),
            RecordError::NonFiniteValue { name } => {
                write!(f, "metric {name:?} has a NaN or infinite value")
            }
            RecordError::NonFiniteAttribute { key } => {
                write!(f, "attribute {key:?} is NaN or infinite")
            }
            RecordError::InvalidEventType { event_type } => write!(
                f,
                "event type {event_type:?} is invalid: it must be 1 to 255 ASCII letters, digits, '_' or ':'"
            ),
            RecordError::EmptyAttributeKey => f.write_str("an attribute key is empty"),
            RecordError::EmptySpanId => f.write_str("a span id or trace id is empty"),
            RecordError::AttributeKeyTooLong { key, chars, limit } => write!(
                f,
                "attribute key {key:?}... is {chars} characters long, over the limit of {limit}"
            ),
            RecordError::TooManyAttributes { count, limit } => {
                write!(f, "{count} attributes, over the limit of {limit}")
            }
            RecordError::ReservedAttribute { key } => {
                write!(f, "attribute key {key:?} is reserved by the Metric API")
            }
            RecordError::InvalidSummary => {
                f.write_str("summary needs a count above zero and min <= max")
            }
            RecordError::BufferFull { capacity } => {
                write!(f, "batch is full ({capacity} items); the item was dropped")
            }
            RecordError::Closed => {
                f.write_str("batch is closed: its harvester has shut down; the item was dropped")
            }
            RecordError::SeriesLimitReached { limit } => write!(
                f,
                "metric batch holds its limit of {limit} series; the new series was dropped"
            ),
            RecordError::NameTooLong { name, chars, limit } => write!(
                f,
                "name {name:?}... is {chars} characters long, over the limit of {limit}"
            ),
            RecordError::SpanIdTooLong { chars, limit } => write!(
                f,
                "a span id, trace id or parent id is {chars} characters long, over the limit of {limit}"
            ),
            RecordError::TimestampOutOfRange { timestamp_ms } => write!(
                f,
                "timestamp {timestamp_ms} ms is outside what the API accepts"
            ),
            RecordError::MemoryBudgetFull { budget_bytes } => write!(
                f,
                "the pipeline holds its memory budget of {budget_bytes} bytes; the item was dropped"
            ),
        }
    }
}

impl std::error::Error for RecordError {}

/// Why a client (or a [`Telemetry`](crate::Telemetry)) could not be built.
///
/// ```
/// use newrelic_telemetry::{BuildError, MetricClient};
///
/// let err = MetricClient::builder("").build().unwrap_err();
/// assert!(matches!(err, BuildError::EmptyApiKey));
/// let err = MetricClient::builder("key").endpoint("ftp://example.com").build().unwrap_err();
/// assert!(matches!(err, BuildError::InvalidEndpoint { .. }));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The API key is empty.
    EmptyApiKey,
    /// The API key cannot be sent in an HTTP header (it has control characters
    /// or non-visible bytes). The key itself is never printed.
    InvalidApiKey,
    /// An endpoint URL is not an absolute `http` or `https` URL.
    InvalidEndpoint {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A product token for the `User-Agent` header is empty or has characters
    /// a header cannot carry.
    InvalidVersionInfo {
        /// The token as given.
        token: String,
    },
    /// The HTTP client could not be built.
    HttpClient(reqwest::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::EmptyApiKey => f.write_str("the API key is empty"),
            BuildError::InvalidApiKey => {
                f.write_str("the API key has characters that cannot be sent in an HTTP header")
            }
            BuildError::InvalidEndpoint { url, reason } => {
                write!(f, "invalid endpoint URL {url:?}: {reason}")
            }
            BuildError::InvalidVersionInfo { token } => {
                write!(f, "invalid User-Agent product token {token:?}")
            }
            BuildError::HttpClient(e) => write!(f, "could not build the HTTP client: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::HttpClient(e) => Some(e),
            _ => None,
        }
    }
}

/// A send in which some items were dropped rather than accepted.
///
/// The [`SendReport`] says, payload by payload, what was accepted and what was
/// dropped and why.
///
/// ```
/// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
/// use newrelic_telemetry::{Event, EventClient};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// server.respond_with(ScriptedResponse::status(400)); // not retried
/// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
/// let err = client.send(Event::new("Purchase")).await.unwrap_err();
/// assert_eq!(err.report().items_dropped(), 1);
/// assert!(err.to_string().starts_with("1 of 1 items dropped"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SendError {
    report: SendReport,
}

impl SendError {
    pub(crate) fn new(report: SendReport) -> Self {
        SendError { report }
    }

    /// What happened to every payload of the send.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// # use newrelic_telemetry::{Log, LogClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(403));
    /// # let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let err = client.send(Log::new("hello")).await.unwrap_err();
    /// assert_eq!(err.report().items_sent(), 0);
    /// # Ok(()) }
    /// ```
    pub fn report(&self) -> &SendReport {
        &self.report
    }

    /// Takes the report out of the error.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// # use newrelic_telemetry::{Log, LogClient};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(403));
    /// # let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let report = match client.send(Log::new("hello")).await {
    ///     Ok(report) => report,
    ///     Err(err) => err.into_report(),
    /// };
    /// assert_eq!(report.items_dropped(), 1);
    /// # Ok(()) }
    /// ```
    pub fn into_report(self) -> SendReport {
        self.report
    }

    /// Whether some items broke an API rule and were never sent
    /// ([`DropReason::Invalid`](crate::DropReason::Invalid)). The first such
    /// rule is the error's [`source`](std::error::Error::source).
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Event, EventClient, RecordError};
    /// use std::error::Error as _;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
    /// let err = client.send(Event::new("not a valid type!")).await.unwrap_err();
    /// assert!(err.is_invalid() && !err.is_rejected());
    /// let rule = err.source().and_then(|e| e.downcast_ref::<RecordError>());
    /// assert!(matches!(rule, Some(RecordError::InvalidEventType { .. })));
    /// assert!(server.requests().is_empty()); // never sent
    /// # Ok(()) }
    /// ```
    pub fn is_invalid(&self) -> bool {
        self.any_dropped(|reason| matches!(reason, crate::DropReason::Invalid(_)))
    }

    /// Whether the API rejected a payload with a status that retrying cannot
    /// fix (400, 401, 403, ...; [`DropReason::Rejected`](crate::DropReason::Rejected)).
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Log, LogClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(403)); // a wrong key, say
    /// # let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let err = client.send(Log::new("hello")).await.unwrap_err();
    /// assert!(err.is_rejected());
    /// assert!(!err.is_retries_exhausted()); // a rejection is not retried
    /// assert_eq!(server.requests().len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn is_rejected(&self) -> bool {
        self.any_dropped(|reason| matches!(reason, crate::DropReason::Rejected { .. }))
    }

    /// Whether a single item was still too large to send after splitting
    /// ([`DropReason::TooLarge`](crate::DropReason::TooLarge)).
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::TestIngestServer;
    /// use newrelic_telemetry::{Log, LogClient};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// server.set_max_body_bytes(Some(1)); // the server answers 413 to everything
    /// # let client = LogClient::builder("test-key").endpoint(server.log_url()).build()?;
    /// let err = client.send(Log::new("hello")).await.unwrap_err();
    /// assert!(err.is_too_large());
    /// # Ok(()) }
    /// ```
    pub fn is_too_large(&self) -> bool {
        self.any_dropped(|reason| matches!(reason, crate::DropReason::TooLarge { .. }))
    }

    /// Whether a payload used up its retries or its time budget
    /// ([`DropReason::RetriesExhausted`](crate::DropReason::RetriesExhausted)),
    /// however its last attempt failed: with a status, a timeout
    /// ([`is_timeout`](Self::is_timeout)) or a connection error
    /// ([`is_connect`](Self::is_connect)).
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Log, LogClient, RetryPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(503));
    /// let client = LogClient::builder("test-key")
    ///     .endpoint(server.log_url())
    ///     .retry_policy(RetryPolicy::none()) // one attempt
    ///     .build()?;
    /// let err = client.send(Log::new("hello")).await.unwrap_err();
    /// assert!(err.is_retries_exhausted());
    /// assert!(!err.is_timeout() && !err.is_connect()); // it ended on a 503
    /// # Ok(()) }
    /// ```
    pub fn is_retries_exhausted(&self) -> bool {
        self.any_dropped(|reason| matches!(reason, crate::DropReason::RetriesExhausted { .. }))
    }

    /// Whether a payload was dropped after its last attempt timed out (the
    /// client's request timeout, 15 s unless configured).
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient, RetryPolicy};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// tokio::time::pause(); // the 30 s below pass instantly
    /// # let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::status(202).with_delay(Duration::from_secs(30)));
    /// let client = EventClient::builder("test-key")
    ///     .endpoint(server.event_url())
    ///     .timeout(Duration::from_secs(1))
    ///     .retry_policy(RetryPolicy::none())
    ///     .build()?;
    /// let err = client.send(Event::new("Slow")).await.unwrap_err();
    /// assert!(err.is_timeout() && err.is_retries_exhausted());
    /// # Ok(()) }
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.any_dropped(|reason| {
            matches!(
                reason,
                crate::DropReason::RetriesExhausted {
                    last: crate::AttemptFailure::Timeout
                }
            )
        })
    }

    /// Whether a payload was dropped after its last attempt could not connect,
    /// or lost its connection before an answer.
    ///
    /// ```
    /// # use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
    /// use newrelic_telemetry::{Event, EventClient, RetryPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = TestIngestServer::start().await?;
    /// server.respond_with(ScriptedResponse::close_connection());
    /// let client = EventClient::builder("test-key")
    ///     .endpoint(server.event_url())
    ///     .retry_policy(RetryPolicy::none())
    ///     .build()?;
    /// let err = client.send(Event::new("Order")).await.unwrap_err();
    /// assert!(err.is_connect() && !err.is_timeout());
    /// # Ok(()) }
    /// ```
    pub fn is_connect(&self) -> bool {
        self.any_dropped(|reason| {
            matches!(
                reason,
                crate::DropReason::RetriesExhausted {
                    last: crate::AttemptFailure::Connection(_)
                }
            )
        })
    }

    /// Whether any dropped payload's reason matches. A send can drop several
    /// payloads for different reasons, so more than one predicate can hold.
    fn any_dropped(&self, matches: impl Fn(&crate::DropReason) -> bool) -> bool {
        self.report
            .payloads()
            .iter()
            .filter_map(|payload| payload.drop_reason())
            .any(matches)
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} items dropped",
            self.report.items_dropped(),
            self.report.items_dropped() + self.report.items_sent()
        )?;
        if let Some(reason) = self.report.first_drop_reason() {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

/// The source is the first API rule an item broke (a [`RecordError`]), when
/// items were dropped as invalid. Other drops carry no underlying error: a
/// status or a timeout is the whole story, and a connection error's text is
/// in the [`DropReason`](crate::DropReason).
impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.report
            .payloads()
            .iter()
            .find_map(|payload| match payload.drop_reason() {
                Some(crate::DropReason::Invalid(rule)) => {
                    Some(rule as &(dyn std::error::Error + 'static))
                }
                _ => None,
            })
    }
}

/// A configuration value (usually an environment variable) that could not be
/// used. It names the variable; it never prints an API key.
///
/// ```
/// use newrelic_telemetry::{ConfigError, Telemetry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let no_vars: [(&str, &str); 0] = [];
/// let err = Telemetry::builder().environment(no_vars).build().unwrap_err();
/// assert!(matches!(err, ConfigError::MissingApiKey));
///
/// let err = Telemetry::builder()
///     .environment([("NEW_RELIC_API_KEY", "key"), ("NEW_RELIC_REGION", "Mars")])
///     .build()
///     .unwrap_err();
/// assert!(matches!(err, ConfigError::InvalidVariable { name: "NEW_RELIC_REGION", .. }));
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// No API key was given in code, `NEW_RELIC_API_KEY` or
    /// `NEW_RELIC_LICENSE_KEY`.
    MissingApiKey,
    /// A variable is set to a value that cannot be used.
    InvalidVariable {
        /// The variable's name.
        name: &'static str,
        /// The value (never shown for key variables).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The configuration was readable but building the clients failed.
    Build(BuildError),
    /// Harvesters need a Tokio runtime to run on, and there is none here.
    NoRuntime,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MissingApiKey => f.write_str(
                "no API key: set NEW_RELIC_API_KEY (or NEW_RELIC_LICENSE_KEY) or pass one in code",
            ),
            ConfigError::InvalidVariable {
                name,
                value,
                expected,
            } => write!(f, "{name}={value:?} is invalid: expected {expected}"),
            ConfigError::Build(e) => write!(f, "{e}"),
            ConfigError::NoRuntime => {
                f.write_str("no Tokio runtime: build telemetry from within an async context")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Build(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BuildError> for ConfigError {
    fn from(e: BuildError) -> Self {
        ConfigError::Build(e)
    }
}
