//! Every error prints its own message and returns what caused it from
//! `source()`: printed as a chain (anyhow's `{:#}`, or walking `source()`),
//! each message appears once, the chain still names the root cause, and the
//! API key is in none of it. Each error here is provoked for real: a bad
//! variable, a bad endpoint, a refused port, a server that never answers, a
//! scripted status, a connection closed before an answer.

mod support;

use std::error::Error;
use std::time::Duration;

use newrelic_telemetry::client::{AttemptFailure, ConnectionError, DropReason};
use newrelic_telemetry::test_util::ScriptedResponse;
use newrelic_telemetry::{
    BuildError, ConfigError, CountMetric, Event, EventClient, Log, LogClient, Metric, MetricClient,
    RecordError, RetryPolicy, SendError, Telemetry,
};
use support::{Captured, RefusingPort, server};

/// The key every client here is built with; its secret part must never be
/// printed.
const KEY: &str = "NRAK-SUPERSECRET";
const SECRET: &str = "SUPERSECRET";

/// The messages of `err` and of each cause under it, outermost first.
fn chain(err: &(dyn Error + 'static)) -> Vec<String> {
    let mut messages = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(e) = cause {
        assert!(
            messages.len() < 32,
            "a source() chain that does not end: {messages:?}"
        );
        messages.push(e.to_string());
        cause = e.source();
    }
    messages
}

/// Checks `err`'s chain and returns its messages: none is empty, none
/// contains the text of a message under it (a cause printed twice), the key
/// is in none of them nor in the error's `Debug`, and joined with ": " they
/// mention each of `needles` (ignoring case).
fn check(err: &(dyn Error + 'static), needles: &[&str]) -> Vec<String> {
    let messages = chain(err);
    for (i, outer) in messages.iter().enumerate() {
        assert!(!outer.is_empty(), "an empty message in {messages:?}");
        for inner in &messages[i + 1..] {
            assert!(
                !outer.contains(inner.as_str()),
                "{outer:?} repeats its cause {inner:?}; the chain: {messages:?}"
            );
        }
    }
    let joined = messages.join(": ");
    assert!(!joined.contains(SECRET), "the key in {joined:?}");
    let debug = format!("{err:?}");
    assert!(!debug.contains(SECRET), "the key in {debug}");
    let lower = joined.to_lowercase();
    for needle in needles {
        assert!(
            lower.contains(&needle.to_lowercase()),
            "{needle:?} not in {joined:?}"
        );
    }
    messages
}

fn one_metric() -> Metric {
    CountMetric::new("hits", 1.0, Duration::from_secs(1)).into()
}

// --- configuration and building ---------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn a_malformed_variable_is_one_message_naming_it() {
    let err = Telemetry::builder()
        .environment([("NEW_RELIC_API_KEY", KEY), ("NEW_RELIC_REGION", "Mars")])
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::InvalidVariable { .. }),
        "{err:?}"
    );
    let messages = check(&err, &["NEW_RELIC_REGION", "Mars"]);
    assert_eq!(messages.len(), 1, "{messages:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_key_variable_that_cannot_be_sent_is_named_but_never_shown() {
    let err = Telemetry::builder()
        .environment([("NEW_RELIC_API_KEY", format!("{KEY}\u{7}"))])
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidVariable {
                name: "NEW_RELIC_API_KEY",
                ..
            }
        ),
        "{err:?}"
    );
    check(&err, &["NEW_RELIC_API_KEY", "visible ASCII"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_bad_endpoint_in_code_is_a_build_error_under_the_config_error() {
    let err = Telemetry::builder()
        .environment([("NEW_RELIC_API_KEY", KEY)])
        .metric_endpoint("ftp://example.com/metric")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Build(BuildError::InvalidEndpoint { .. })),
        "{err:?}"
    );
    let messages = check(&err, &["ftp://example.com/metric", "http://"]);
    assert_eq!(
        messages,
        [
            "could not build the telemetry clients".to_owned(),
            r#"invalid endpoint URL "ftp://example.com/metric": expected an http:// or https:// URL with a host"#
                .to_owned(),
        ]
    );
    let cause = err.source().and_then(|e| e.downcast_ref::<BuildError>());
    assert!(
        matches!(cause, Some(BuildError::InvalidEndpoint { .. })),
        "{cause:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_key_from_code_that_cannot_be_sent_is_never_shown() {
    let no_env: [(&str, &str); 0] = [];
    let err = Telemetry::builder()
        .environment(no_env)
        .api_key(format!("{KEY}\n"))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Build(BuildError::InvalidApiKey)),
        "{err:?}"
    );
    let messages = check(&err, &["API key", "HTTP header"]);
    assert_eq!(messages.len(), 2, "{messages:?}");
}

#[test]
fn a_bad_endpoint_is_one_message_with_what_is_wrong() {
    let err = MetricClient::builder(KEY)
        .endpoint("not a url")
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::InvalidEndpoint { .. }), "{err:?}");
    let messages = check(&err, &["not a url", "relative URL"]);
    assert_eq!(messages.len(), 1, "{messages:?}");
}

#[test]
fn the_http_clients_error_is_the_source_of_http_client_not_its_message() {
    // A real reqwest error (a request to a relative URL cannot be built),
    // wrapped as building the SDK's HTTP client would wrap one.
    let http = newrelic_telemetry::client::http_client_builder()
        .build()
        .expect("an HTTP client");
    let reqwest_error = http.get("not a url").build().unwrap_err();
    let reqwest_text = reqwest_error.to_string();
    let err = BuildError::HttpClient(reqwest_error);
    let messages = check(&err, &["could not build the HTTP client", "relative URL"]);
    assert_eq!(messages[0], "could not build the HTTP client");
    assert_eq!(messages[1], reqwest_text);
    assert!(err.source().is_some_and(|e| e.is::<reqwest::Error>()));
}

// --- sending ----------------------------------------------------------------

#[tokio::test]
async fn a_refused_connection_names_the_refusal_once() {
    let refusing = RefusingPort::bind();
    let client = EventClient::builder(KEY)
        .endpoint(refusing.url("/v1/accounts/events"))
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let err = client.send(Event::new("Ping")).await.unwrap_err();
    assert!(err.is_connect() && err.is_retries_exhausted(), "{err:?}");

    let messages = check(&err, &["connection refused", &refusing.addr().to_string()]);
    assert_eq!(
        messages[0],
        "1 of 1 items dropped: retries exhausted; last attempt: connection error"
    );
    assert_eq!(messages[1], "could not connect");
    // Under the SDK's two layers, the HTTP client's own errors.
    assert!(messages.len() >= 3, "{messages:?}");

    let connection = err
        .source()
        .and_then(|e| e.downcast_ref::<ConnectionError>())
        .expect("the connection error is the source");
    assert!(
        connection
            .source()
            .is_some_and(|e| e.is::<reqwest::Error>())
    );

    // The report's reason, which is no error with a source, tells it all on
    // one line: what the chain says, under the same layers.
    let reason = err.report().first_drop_reason().unwrap().to_string();
    assert_eq!(
        reason,
        format!(
            "retries exhausted; last attempt: connection error: {}",
            messages[1..].join(": ")
        )
    );
}

#[tokio::test]
async fn a_refused_connection_is_logged_with_all_its_causes() {
    let refusing = RefusingPort::bind();
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let client = LogClient::builder(KEY)
        .endpoint(refusing.url("/log/v1"))
        .retry_policy(
            RetryPolicy::default()
                .with_max_retries(1)
                .with_backoff_factor(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(1)),
        )
        .build()
        .unwrap();
    let err = client.send(Log::new("hello")).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    let text = captured.text();
    assert!(!text.contains(SECRET), "the key in the logs: {text}");
    let retried = captured
        .warnings()
        .into_iter()
        .find(|line| line.contains("send failed; will retry"))
        .unwrap_or_else(|| panic!("no retry warning in {text}"));
    assert!(
        retried.to_lowercase().contains("connection refused"),
        "{retried}"
    );
    let dropped = text
        .lines()
        .find(|line| line.contains("ERROR") && line.contains("telemetry dropped"))
        .unwrap_or_else(|| panic!("no drop logged in {text}"));
    assert!(
        dropped.to_lowercase().contains("connection refused"),
        "{dropped}"
    );
}

#[tokio::test]
async fn a_timeout_is_told_whole_in_the_message() {
    // Listening but never accepting: the kernel completes the handshake and
    // takes the request, and no answer ever comes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let client = EventClient::builder(KEY)
        .endpoint(format!("http://{addr}/v1/accounts/events"))
        .timeout(Duration::from_millis(200))
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = client.send(Event::new("Slow")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(err.is_timeout(), "{err:?}");
    let messages = check(&err, &["timed out"]);
    assert_eq!(
        messages,
        ["1 of 1 items dropped: retries exhausted; last attempt: timed out"]
    );
    drop(silent);
}

#[tokio::test]
async fn a_status_is_told_whole_in_the_message() {
    let server = server().await;
    let client = LogClient::builder(KEY)
        .endpoint(server.log_url())
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();

    server.respond_with(ScriptedResponse::status(503));
    let err = client.send(Log::new("retried")).await.unwrap_err();
    assert!(err.is_retries_exhausted() && !err.is_connect(), "{err:?}");
    let messages = check(&err, &["503"]);
    assert_eq!(
        messages,
        ["1 of 1 items dropped: retries exhausted; last attempt: status 503 Service Unavailable"]
    );

    server.respond_with(ScriptedResponse::status(403));
    let err = client.send(Log::new("rejected")).await.unwrap_err();
    assert!(err.is_rejected(), "{err:?}");
    let messages = check(&err, &["403"]);
    assert_eq!(
        messages,
        ["1 of 1 items dropped: rejected by the API with 403 Forbidden"]
    );
}

#[tokio::test]
async fn a_connection_that_breaks_off_says_so_once() {
    let server = server().await;
    server.respond_with(ScriptedResponse::close_connection());
    let client = EventClient::builder(KEY)
        .endpoint(server.event_url())
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let err = client.send(Event::new("Order")).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let messages = check(&err, &["broke off"]);
    assert_eq!(messages[1], "the connection broke off before an answer");
    assert!(
        messages.len() >= 3,
        "the HTTP client's error under it: {messages:?}"
    );
    assert!(matches!(
        err.report().first_drop_reason(),
        Some(DropReason::RetriesExhausted {
            last: AttemptFailure::Connection(_)
        })
    ));
}

#[tokio::test]
async fn an_invalid_item_names_its_rule_once() {
    let server = server().await;
    let client = EventClient::builder(KEY)
        .endpoint(server.event_url())
        .build()
        .unwrap();
    let err = client
        .send(Event::new("not a valid type!"))
        .await
        .unwrap_err();
    assert!(err.is_invalid(), "{err:?}");
    let messages = check(&err, &["not a valid type!"]);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0], "1 of 1 items dropped: invalid item");
    assert!(matches!(
        err.source().and_then(|e| e.downcast_ref::<RecordError>()),
        Some(RecordError::InvalidEventType { .. })
    ));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn the_message_tells_the_reason_whose_error_is_the_source() {
    // One invalid item (never sent) and one valid item the server answers
    // 503: two reasons. The message tells the broken rule, which is the
    // source, whatever order the report lists the two in.
    let server = server().await;
    server.respond_with(ScriptedResponse::status(503));
    let client = MetricClient::builder(KEY)
        .endpoint(server.metric_url())
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let items: Vec<Metric> = vec![
        one_metric(),
        CountMetric::new("nan", f64::NAN, Duration::from_secs(1)).into(),
    ];
    let err: SendError = client
        .send_batch(items, Default::default())
        .await
        .unwrap_err();
    assert!(err.is_invalid() && err.is_retries_exhausted(), "{err:?}");
    let messages = check(&err, &["nan"]);
    assert_eq!(messages[0], "2 of 2 items dropped: invalid item");
    assert!(matches!(
        err.source().and_then(|e| e.downcast_ref::<RecordError>()),
        Some(RecordError::NonFiniteValue { .. })
    ));
}

/// The capture sees an event whose callsite another thread, with no
/// subscriber, hit first (`tracing` would otherwise cache that thread's
/// "never" for it: the flake `Captured::subscriber` guards against).
#[test]
fn a_capture_sees_events_whose_callsite_another_thread_hit_first() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());
    let log = || tracing::error!("hit first on another thread");
    std::thread::spawn(log).join().unwrap();
    log();
    assert!(
        captured.text().contains("hit first on another thread"),
        "{}",
        captured.text()
    );
}
