//! What happened to what was sent.

use std::fmt;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::error::RecordError;

/// Why items were dropped instead of delivered.
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
}

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
        }
    }
}

/// How one attempt at sending a payload failed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// The API answered with a status worth retrying (408, 429, 5xx, ...).
    Status(StatusCode),
    /// The request took longer than the client's timeout.
    Timeout,
    /// The connection could not be made or broke off.
    Connection(String),
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptFailure::Status(s) => write!(f, "status {s}"),
            AttemptFailure::Timeout => f.write_str("timed out"),
            AttemptFailure::Connection(e) => write!(f, "connection error: {e}"),
        }
    }
}

/// How a payload ended.
#[derive(Clone, Debug, PartialEq)]
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
#[derive(Clone, Debug, PartialEq)]
pub struct PayloadReport {
    pub(crate) api: &'static str,
    pub(crate) request_id: Option<Uuid>,
    pub(crate) items: usize,
    pub(crate) bytes: usize,
    pub(crate) attempts: u32,
    pub(crate) outcome: PayloadOutcome,
}

impl PayloadReport {
    pub(crate) fn dropped(
        api: &'static str,
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
    pub fn api(&self) -> &'static str {
        self.api
    }

    /// The `x-request-id` the payload was sent with (none if it was never sent).
    pub fn request_id(&self) -> Option<Uuid> {
        self.request_id
    }

    /// How many items the payload held.
    pub fn items(&self) -> usize {
        self.items
    }

    /// The payload's compressed size in bytes (0 if it was never encoded).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many requests were made for it (0 if none).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How it ended.
    pub fn outcome(&self) -> &PayloadOutcome {
        &self.outcome
    }

    /// Whether the API accepted it.
    pub fn is_accepted(&self) -> bool {
        matches!(self.outcome, PayloadOutcome::Accepted { .. })
    }

    /// Why it was dropped, if it was.
    pub fn drop_reason(&self) -> Option<&DropReason> {
        match &self.outcome {
            PayloadOutcome::Dropped(reason) => Some(reason),
            PayloadOutcome::Accepted { .. } => None,
        }
    }
}

/// What happened to the items of one send: a report per payload, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SendReport {
    payloads: Vec<PayloadReport>,
}

impl SendReport {
    pub(crate) fn new(payloads: Vec<PayloadReport>) -> Self {
        SendReport { payloads }
    }

    /// Every payload's report.
    pub fn payloads(&self) -> &[PayloadReport] {
        &self.payloads
    }

    /// Items the API accepted.
    pub fn items_sent(&self) -> usize {
        self.payloads
            .iter()
            .filter(|p| p.is_accepted())
            .map(|p| p.items)
            .sum()
    }

    /// Items dropped.
    pub fn items_dropped(&self) -> usize {
        self.payloads
            .iter()
            .filter(|p| !p.is_accepted())
            .map(|p| p.items)
            .sum()
    }

    /// The status of the last accepted payload, if any.
    pub fn status(&self) -> Option<StatusCode> {
        self.payloads.iter().rev().find_map(|p| match p.outcome {
            PayloadOutcome::Accepted { status } => Some(status),
            PayloadOutcome::Dropped(_) => None,
        })
    }

    /// The first reason anything was dropped.
    pub fn first_drop_reason(&self) -> Option<&DropReason> {
        self.payloads.iter().find_map(PayloadReport::drop_reason)
    }
}
