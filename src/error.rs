//! Error types of recording, building a client, and configuration. A send's
//! error, [`SendError`](crate::SendError), lives with the client that
//! produces it.
//!
//! Each error prints its own message only, and returns what caused it from
//! [`source`](std::error::Error::source): a cause is never printed twice
//! when the chain is printed (anyhow's `{:#}`, or walking `source()`).
//!
//! None of them ever holds or prints the API key.

use std::fmt;

/// The most causes [`Chain`] prints: a bound on a `source()` chain that
/// (wrongly) loops.
const MAX_CHAIN: usize = 16;

/// An error and its causes on one line, joined with `": "`, for the SDK's
/// own log lines: each error prints only its own message, so a log line
/// that printed `{err}` alone would lose the causes.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        let mut printed = 0;
        while let Some(error) = cause {
            if printed == MAX_CHAIN {
                return f.write_str(": ...");
            }
            write!(f, ": {error}")?;
            printed += 1;
            cause = error.source();
        }
        Ok(())
    }
}

/// Why a recording call refused an item.
///
/// A refused item is counted (see [`RecordStats`](crate::batch::RecordStats)) and never
/// reaches the wire; everything recorded before it is kept.
///
/// ```
/// use newrelic_telemetry::{MetricBatch, RecordError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let batch = MetricBatch::new();
/// assert_eq!(batch.try_record_count("", 1.0, ()).await, Err(RecordError::EmptyName));
/// let err = batch.try_record_gauge("cpu", f64::NAN, ()).await.unwrap_err();
/// assert_eq!(err, RecordError::NonFiniteValue { name: "cpu".into() });
/// assert_eq!(batch.record_stats().items_dropped_invalid, 2);
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
    /// A distribution point holds no value: there is nothing to send.
    EmptyDistribution,
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

impl RecordError {
    /// Whether the item broke a rule of the API (a name, value, attribute,
    /// id or timestamp it may not have): counted in
    /// [`RecordStats::items_dropped_invalid`](crate::batch::RecordStats::items_dropped_invalid).
    ///
    /// ```
    /// use newrelic_telemetry::MetricBatch;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batch = MetricBatch::new();
    /// let err = batch.try_record_count("hits", f64::NAN, ()).await.unwrap_err();
    /// assert!(err.is_invalid() && !err.is_full() && !err.is_closed());
    /// # }
    /// ```
    pub fn is_invalid(&self) -> bool {
        !self.is_full() && !self.is_closed()
    }

    /// Whether the batch had no room for the item (its capacity, its series
    /// limit, or the pipeline's memory budget), which an early harvest
    /// makes again.
    ///
    /// ```
    /// use newrelic_telemetry::{Log, LogBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let logs = LogBatch::builder().capacity(1).build();
    /// logs.record(Log::new("kept")).await;
    /// let err = logs.try_record(Log::new("no room")).await.unwrap_err();
    /// assert!(err.is_full() && !err.is_invalid());
    /// # }
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            RecordError::BufferFull { .. }
                | RecordError::SeriesLimitReached { .. }
                | RecordError::MemoryBudgetFull { .. }
        )
    }

    /// Whether the batch was closed (its harvester shut down).
    ///
    /// ```
    /// use newrelic_telemetry::{Event, EventBatch};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let events = EventBatch::new();
    /// events.close().await;
    /// assert!(events.try_record(Event::new("Late")).await.unwrap_err().is_closed());
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, RecordError::Closed)
    }
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
            RecordError::EmptyDistribution => {
                f.write_str("a distribution point needs at least one value")
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
/// Its message is its own; the HTTP client's error, when building that
/// client failed, is its [`source`](std::error::Error::source).
///
/// ```
/// use newrelic_telemetry::{BuildError, MetricClient};
/// use std::error::Error as _;
///
/// let err = MetricClient::builder("").build().unwrap_err();
/// assert!(matches!(err, BuildError::EmptyApiKey));
/// let err = MetricClient::builder("key").endpoint("ftp://example.com").build().unwrap_err();
/// assert!(matches!(err, BuildError::InvalidEndpoint { .. }));
/// assert_eq!(
///     err.to_string(),
///     r#"invalid endpoint URL "ftp://example.com": expected an http:// or https:// URL with a host"#
/// );
/// assert!(err.source().is_none()); // what is wrong is the message itself
///
/// // The key is never printed, even when it is what is wrong.
/// let err = MetricClient::builder("NRAK-SECRET\n").build().unwrap_err();
/// assert!(matches!(err, BuildError::InvalidApiKey));
/// assert!(!format!("{err} {err:?}").contains("NRAK-SECRET"));
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
    /// The `instrumentation.provider` set with
    /// [`ClientBuilder::instrumentation_provider`](crate::client::ClientBuilder::instrumentation_provider)
    /// is empty, blank, or over 4,000 characters.
    ///
    /// ```
    /// use newrelic_telemetry::{BuildError, MetricClient};
    ///
    /// let err = MetricClient::builder("key").instrumentation_provider(" ").build().unwrap_err();
    /// assert!(matches!(err, BuildError::InvalidInstrumentationProvider { .. }));
    /// assert_eq!(err.to_string(), r#"invalid instrumentation.provider " ": expected 1 to 4,000 characters, not all blank"#);
    /// ```
    InvalidInstrumentationProvider {
        /// The name as given.
        provider: String,
    },
    /// The retry policy cannot be used (a jitter outside 0 to 1, or NaN).
    ///
    /// ```
    /// use newrelic_telemetry::{BuildError, MetricClient, RetryPolicy};
    ///
    /// let err = MetricClient::builder("key")
    ///     .retry_policy(RetryPolicy::default().with_jitter(1.5))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, BuildError::InvalidRetryPolicy { .. }));
    /// assert_eq!(err.to_string(), "invalid retry policy: retry jitter 1.5 is not a fraction from 0 to 1");
    /// ```
    InvalidRetryPolicy {
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built. The message says only that; the
    /// HTTP client's error is the [`source`](std::error::Error::source).
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
            BuildError::InvalidInstrumentationProvider { provider } => {
                // Shown up to 100 characters: a 10,000-character mistake
                // would drown the message.
                let shown: String = provider.chars().take(100).collect();
                let cut = if shown.len() < provider.len() {
                    "..."
                } else {
                    ""
                };
                write!(
                    f,
                    "invalid instrumentation.provider {shown:?}{cut}: expected 1 to 4,000 characters, not all blank"
                )
            }
            BuildError::InvalidRetryPolicy { reason } => {
                write!(f, "invalid retry policy: {reason}")
            }
            BuildError::HttpClient(_) => f.write_str("could not build the HTTP client"),
        }
    }
}

/// The source is the HTTP client's error for
/// [`HttpClient`](BuildError::HttpClient), and none for the other variants.
impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::HttpClient(e) => Some(e),
            _ => None,
        }
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
    /// `NEW_RELIC_LICENSE_KEY`, and telemetry is enabled (a disabled
    /// [`Telemetry`](crate::Telemetry), with `NEW_RELIC_ENABLED=false` or
    /// [`TelemetryBuilder::enabled`](crate::TelemetryBuilder::enabled), needs
    /// no key). The message names the variables and the switch.
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
    /// A value set in code cannot be used. It is checked like the variable
    /// that would set it, never clamped.
    ///
    /// ```
    /// use newrelic_telemetry::{ConfigError, Telemetry};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = Telemetry::builder()
    ///     .api_key("key")
    ///     .harvest_interval(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, ConfigError::InvalidSetting { name: "harvest_interval", .. }));
    /// assert_eq!(
    ///     err.to_string(),
    ///     "TelemetryBuilder::harvest_interval(0ns) is invalid: expected from 1 ms to a day"
    /// );
    /// # }
    /// ```
    InvalidSetting {
        /// The [`TelemetryBuilder`](crate::TelemetryBuilder) method's name.
        name: &'static str,
        /// The value, as `Debug` prints it.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The configuration was readable but building the clients failed. The
    /// message says only that; the [`BuildError`] is the
    /// [`source`](std::error::Error::source), so printing the chain prints
    /// each message once.
    ///
    /// ```
    /// use newrelic_telemetry::{BuildError, ConfigError, Telemetry};
    /// use std::error::Error;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let err = Telemetry::builder()
    ///     .environment([("NEW_RELIC_API_KEY", "key")])
    ///     .metric_endpoint("ftp://example.com")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, ConfigError::Build(BuildError::InvalidEndpoint { .. })));
    ///
    /// // Walking `source()`: each layer's message, once.
    /// let mut messages = vec![err.to_string()];
    /// let mut cause = err.source();
    /// while let Some(e) = cause {
    ///     messages.push(e.to_string());
    ///     cause = e.source();
    /// }
    /// assert_eq!(
    ///     messages,
    ///     [
    ///         "could not build the telemetry clients",
    ///         r#"invalid endpoint URL "ftp://example.com": expected an http:// or https:// URL with a host"#,
    ///     ]
    /// );
    /// # }
    /// ```
    Build(BuildError),
    /// Harvesters need a Tokio runtime to run on, and there is none here.
    NoRuntime,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MissingApiKey => f.write_str(
                "no API key: set NEW_RELIC_API_KEY (or NEW_RELIC_LICENSE_KEY) or pass one in code; \
                 to run without sending anything, set NEW_RELIC_ENABLED=false or call \
                 TelemetryBuilder::enabled(false)",
            ),
            ConfigError::InvalidVariable {
                name,
                value,
                expected,
            } => write!(f, "{name}={value:?} is invalid: expected {expected}"),
            ConfigError::InvalidSetting {
                name,
                value,
                expected,
            } => write!(
                f,
                "TelemetryBuilder::{name}({value}) is invalid: expected {expected}"
            ),
            ConfigError::Build(_) => f.write_str("could not build the telemetry clients"),
            ConfigError::NoRuntime => {
                f.write_str("no Tokio runtime: build telemetry from within an async context")
            }
        }
    }
}

/// The source is the [`BuildError`] of [`Build`](ConfigError::Build), and
/// none for the other variants.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_joins_each_message_once() {
        let err = ConfigError::Build(BuildError::InvalidEndpoint {
            url: "ftp://x".into(),
            reason: "not http".into(),
        });
        assert_eq!(
            Chain(&err).to_string(),
            r#"could not build the telemetry clients: invalid endpoint URL "ftp://x": not http"#
        );
        assert_eq!(
            Chain(&ConfigError::MissingApiKey).to_string(),
            ConfigError::MissingApiKey.to_string()
        );
    }

    /// An error that (wrongly) is its own source.
    #[derive(Debug)]
    struct Loop;

    impl fmt::Display for Loop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loop")
        }
    }

    impl std::error::Error for Loop {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&Loop)
        }
    }

    #[test]
    fn a_chain_that_does_not_end_is_cut() {
        let text = Chain(&Loop).to_string();
        assert_eq!(text.matches("loop").count(), 1 + MAX_CHAIN);
        assert!(text.ends_with(": loop: ..."), "{text}");
    }
}
