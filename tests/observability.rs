//! What the SDK says about itself: drops logged at ERROR with the item count,
//! audit logging of payloads only when asked for, the key in no log line; and
//! proxies set on the builder.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use newrelic_telemetry::client::Events;
use newrelic_telemetry::test_util::ScriptedResponse;
use newrelic_telemetry::{Common, Event, EventClient, RetryPolicy, Telemetry};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

mod support;
use support::{client_builder, current_thread, current_thread_paused, server};

#[derive(Clone, Debug)]
struct Captured {
    level: tracing::Level,
    target: String,
    fields: Vec<(String, String)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        struct Fields(Vec<(String, String)>);
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                self.0.push((field.name().to_owned(), format!("{value:?}")));
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                self.0.push((field.name().to_owned(), value.to_owned()));
            }
        }
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields: fields.0,
        });
    }
}

impl Capture {
    fn events(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }
}

/// Runs `test` on a current-thread runtime with `capture` as the subscriber.
fn with_capture<F: std::future::Future<Output = ()>>(capture: &Capture, test: impl FnOnce() -> F) {
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    current_thread_paused().block_on(test());
}

/// [`with_capture`] on tokio's real clock: for a test that waits on a real
/// server, where a paused clock would jump past the request timeout while
/// a loaded machine is slow to answer.
fn with_capture_real_clock<F: std::future::Future<Output = ()>>(
    capture: &Capture,
    test: impl FnOnce() -> F,
) {
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    current_thread().block_on(test());
}

const KEY: &str = "NRAK-TOPSECRET-1234";

#[test]
fn drops_are_logged_at_error_with_the_item_count_and_never_the_key() {
    let capture = Capture::default();
    with_capture_real_clock(&capture, || async {
        let server = server().await;
        server.respond_with(ScriptedResponse::status(503));
        server.respond_with(ScriptedResponse::status(403));
        let client = EventClient::builder(KEY)
            .endpoint(server.event_url())
            .retry_policy(
                RetryPolicy::default()
                    .with_backoff_factor(Duration::from_millis(5))
                    .with_jitter(0.0),
            )
            .audit_logging(true)
            .build()
            .unwrap();
        let events = (0..3)
            .map(|i| Event::new("E").with_attribute("i", i))
            .collect();
        client.send_batch(events, Common::new()).await.unwrap_err();
    });
    let logged = capture.events();
    let drops: Vec<_> = logged
        .iter()
        .filter(|e| e.level == tracing::Level::ERROR && e.target.starts_with("newrelic_telemetry"))
        .collect();
    assert_eq!(drops.len(), 1, "{logged:#?}");
    assert_eq!(drops[0].field("items"), Some("3"));
    assert_eq!(drops[0].field("api"), Some("event"));
    assert!(
        drops[0].field("reason").unwrap().contains("403"),
        "{:?}",
        drops[0]
    );
    let retry_warnings = logged
        .iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .count();
    assert_eq!(retry_warnings, 1, "the 503 is retried with a warning");
    for event in &logged {
        for (_, value) in &event.fields {
            assert!(!value.contains("TOPSECRET"), "key leaked in {event:?}");
        }
    }
}

#[test]
fn audit_logging_records_every_payload_only_when_enabled() {
    for enabled in [false, true] {
        let capture = Capture::default();
        with_capture(&capture, || async {
            let server = server().await;
            let client = EventClient::builder(KEY)
                .endpoint(server.event_url())
                .audit_logging(enabled)
                .build()
                .unwrap();
            client
                .send(Event::new("Audited").with_attribute("n", 1))
                .await
                .unwrap();
            client
                .send(Event::new("Audited").with_attribute("n", 2))
                .await
                .unwrap();
        });
        let audit: Vec<_> = capture
            .events()
            .into_iter()
            .filter(|e| e.target == "newrelic_telemetry::audit")
            .collect();
        if !enabled {
            assert!(audit.is_empty(), "off by default: {audit:?}");
            continue;
        }
        assert_eq!(audit.len(), 2);
        assert!(audit.iter().all(|e| e.level == tracing::Level::DEBUG));
        let payload: serde_json::Value =
            serde_json::from_str(audit[1].field("payload").unwrap()).unwrap();
        assert_eq!(payload[0]["eventType"], "Audited");
        assert_eq!(payload[0]["n"], 2);
        assert!(
            audit
                .iter()
                .all(|e| !format!("{e:?}").contains("TOPSECRET"))
        );
    }
}

#[tokio::test]
async fn a_proxy_set_on_the_builder_carries_the_requests() {
    // The test server plays the HTTP proxy: requests for an unresolvable host
    // can only arrive through it.
    let proxy = server().await;
    let client = EventClient::builder("k")
        .endpoint("http://insights.example.invalid/v1/accounts/events")
        .proxy(reqwest::Proxy::http(format!("http://{}", proxy.addr())).unwrap())
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    client.send(Event::new("ViaProxy")).await.unwrap();
    assert_eq!(proxy.events()[0]["eventType"], "ViaProxy");
    assert_eq!(
        proxy.requests()[0].header("host"),
        Some("insights.example.invalid")
    );

    let telemetry = Telemetry::builder()
        .environment([("NEW_RELIC_API_KEY", "k")])
        .event_endpoint("http://insights.example.invalid/v1/accounts/events")
        .client({
            let proxy = reqwest::Proxy::http(format!("http://{}", proxy.addr())).unwrap();
            move |c| c.proxy(proxy)
        })
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    telemetry
        .events()
        .record(Event::new("TelemetryViaProxy"))
        .await;
    telemetry.shutdown().await;
    assert_eq!(proxy.events()[1]["eventType"], "TelemetryViaProxy");
}

#[tokio::test]
async fn the_telemetry_builder_never_shows_the_key() {
    let from_code = Telemetry::builder().api_key(KEY);
    let from_env = Telemetry::builder().environment([("NEW_RELIC_API_KEY", KEY)]);
    for text in [format!("{from_code:?}"), format!("{from_env:?}")] {
        assert!(!text.contains("TOPSECRET"), "{text}");
    }
    assert!(
        format!("{from_env:?}").contains("NEW_RELIC_API_KEY"),
        "names are shown, values are not"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_so_the_key_stays_home() {
    let elsewhere = server().await;
    let server = server().await;
    server
        .respond_with(ScriptedResponse::status(307).with_header("Location", elsewhere.event_url()));
    let client = EventClient::builder(KEY)
        .endpoint(server.event_url())
        .build()
        .unwrap();
    let err = client.send(Event::new("E")).await.unwrap_err();
    assert!(matches!(
        err.report().first_drop_reason(),
        Some(newrelic_telemetry::client::DropReason::Rejected { status }) if status.as_u16() == 307
    ));
    assert!(
        elsewhere.requests().is_empty(),
        "the key never reached another host"
    );
    assert_eq!(server.requests().len(), 1, "a redirect is not retried");
}

#[tokio::test]
async fn a_panicking_drop_callback_is_contained() {
    let server = server().await;
    server.respond_with(ScriptedResponse::status(400));
    let client = client_builder::<Events>(&server)
        .on_drop(|_| panic!("callback bug"))
        .build()
        .unwrap();
    let err = client.send(Event::new("E")).await.unwrap_err();
    assert_eq!(err.report().items_dropped(), 1);
    assert_eq!(client.stats().items_dropped_rejected, 1);
    client.send(Event::new("Next")).await.unwrap();
}
