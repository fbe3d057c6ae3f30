//! The error of a send: what was dropped, payload by payload.

use std::fmt;

use super::report::{AttemptFailure, DropReason, SendReport};

/// A send in which some items were dropped rather than accepted.
///
/// The [`SendReport`] says, payload by payload, what was accepted and what was
/// dropped and why.
///
/// The message says how many items were dropped and why, without the text
/// of the error beneath (the rule an item broke, or a connection error):
/// that is the [`source`](std::error::Error::source), so printing the chain
/// (anyhow's `{:#}`, or walking `source()`) prints each message once. A drop
/// with nothing beneath it (a status, a timeout) is told whole in the message.
///
/// ```
/// use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
/// use newrelic_telemetry::{Event, EventClient};
/// use std::error::Error as _;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TestIngestServer::start().await?;
/// server.respond_with(ScriptedResponse::status(400)); // not retried
/// let client = EventClient::builder("test-key").endpoint(server.event_url()).build()?;
/// let err = client.send(Event::new("Purchase")).await.unwrap_err();
/// assert_eq!(err.report().items_dropped(), 1);
/// assert_eq!(err.to_string(), "1 of 1 items dropped: rejected by the API with 400 Bad Request");
/// assert!(err.source().is_none()); // the status is the whole story
///
/// // An invalid item: the rule it broke is the source, not in the message.
/// let err = client.send(Event::new("not a valid type!")).await.unwrap_err();
/// assert_eq!(err.to_string(), "1 of 1 items dropped: invalid item");
/// let rule = err.source().map(|e| e.to_string()).unwrap_or_default();
/// assert!(rule.starts_with(r#"event type "not a valid type!" is invalid"#), "{rule}");
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
    /// ([`DropReason::Invalid`](DropReason::Invalid)). The first such
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
        self.any_dropped(|reason| matches!(reason, DropReason::Invalid(_)))
    }

    /// Whether the API rejected a payload with a status that retrying cannot
    /// fix (400, 401, 403, ...; [`DropReason::Rejected`](DropReason::Rejected)).
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
        self.any_dropped(|reason| matches!(reason, DropReason::Rejected { .. }))
    }

    /// Whether a single item was still too large to send after splitting
    /// ([`DropReason::TooLarge`](DropReason::TooLarge)).
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
        self.any_dropped(|reason| matches!(reason, DropReason::TooLarge { .. }))
    }

    /// Whether a payload used up its retries or its time budget
    /// ([`DropReason::RetriesExhausted`](DropReason::RetriesExhausted)),
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
        self.any_dropped(|reason| matches!(reason, DropReason::RetriesExhausted { .. }))
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
                DropReason::RetriesExhausted {
                    last: AttemptFailure::Timeout
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
                DropReason::RetriesExhausted {
                    last: AttemptFailure::Connection(_)
                }
            )
        })
    }

    /// Whether any dropped payload's reason matches. A send can drop several
    /// payloads for different reasons, so more than one predicate can hold.
    fn any_dropped(&self, matches: impl Fn(&DropReason) -> bool) -> bool {
        self.reasons().any(matches)
    }

    /// Every dropped payload's reason, in order.
    fn reasons(&self) -> impl Iterator<Item = &DropReason> + Clone {
        self.report
            .payloads()
            .iter()
            .filter_map(|payload| payload.drop_reason())
    }

    /// The reason the message tells and whose error is the source: the
    /// first rule an item broke, else the first connection error that used
    /// up a payload's retries, else the first reason of all.
    fn main_reason(&self) -> Option<&DropReason> {
        self.reasons()
            .find(|reason| matches!(reason, DropReason::Invalid(_)))
            .or_else(|| self.reasons().find(|reason| reason.cause().is_some()))
            .or_else(|| self.reasons().next())
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
        if let Some(reason) = self.main_reason() {
            f.write_str(": ")?;
            reason.fmt_without_cause(f)?;
        }
        Ok(())
    }
}

/// The source is the error beneath the reason the message tells: the first
/// API rule an item broke (a [`RecordError`](crate::RecordError)), else the
/// [`ConnectionError`](super::ConnectionError) that used up a payload's
/// retries. Other drops carry no underlying error: a status or a timeout is
/// the whole story, and is in the message.
impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.main_reason().and_then(DropReason::cause)
    }
}
