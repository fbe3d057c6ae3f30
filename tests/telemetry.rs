//! One-call setup: configuration from code and the environment (code wins,
//! malformed values are errors naming the variable), and the four pipelines
//! end to end through the test server.

use std::time::Duration;

use newrelic_telemetry::test_util::TestIngestServer;
use newrelic_telemetry::{ConfigError, Event, Log, Span, Telemetry, TelemetryBuilder, attrs};
use tokio_util::sync::CancellationToken;

mod support;
use support::{HOUR, server};

fn with_env(vars: &[(&str, &str)]) -> TelemetryBuilder {
    Telemetry::builder().environment(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn endpoints(server: &TestIngestServer) -> Vec<(&'static str, String)> {
    vec![
        ("NEW_RELIC_METRIC_API_URL", server.metric_url()),
        ("NEW_RELIC_EVENT_API_URL", server.event_url()),
        ("NEW_RELIC_LOG_API_URL", server.log_url()),
        ("NEW_RELIC_SPAN_API_URL", server.span_url()),
    ]
}

fn invalid_variable(result: Result<Telemetry, ConfigError>) -> &'static str {
    match result {
        Err(ConfigError::InvalidVariable { name, .. }) => name,
        other => panic!("expected an invalid variable, got {other:?}"),
    }
}

#[tokio::test]
async fn four_pipelines_from_the_environment_end_to_end() {
    let server = server().await;
    let mut vars: Vec<(&str, String)> = endpoints(&server);
    vars.push(("NEW_RELIC_API_KEY", "env-key".into()));
    vars.push(("NEW_RELIC_HARVEST_INTERVAL", "3600".into()));
    let telemetry = Telemetry::builder()
        .environment(vars)
        .service_name("checkout")
        .common_attributes(attrs!["host" => "web-1"])
        .client(|c| c.add_version_info("checkout", "1.0"))
        .build()
        .unwrap();

    telemetry
        .metrics()
        .record_count("orders", 2.0, [("plan", "pro")])
        .await;
    telemetry.events().record(Event::new("Order")).await;
    telemetry.logs().record(Log::new("placed")).await;
    telemetry
        .spans()
        .record(Span::new("place order").finish())
        .await;

    let report = telemetry.shutdown().await;
    assert_eq!(report.items_sent(), 4);
    assert_eq!(report.items_dropped(), 0);
    assert!(!report.deadline_exceeded());
    assert_eq!(
        report,
        telemetry.shutdown().await,
        "shutdown twice is harmless"
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert!(
        requests
            .iter()
            .all(|r| r.header("api-key") == Some("env-key"))
    );
    assert!(
        requests
            .iter()
            .all(|r| r.header("user-agent").unwrap().ends_with(" checkout/1.0"))
    );
    assert_eq!(
        server.metrics()[0]["attributes"]["service.name"],
        "checkout"
    );
    assert_eq!(server.metrics()[0]["attributes"]["plan"], "pro");
    assert_eq!(server.events()[0]["host"], "web-1");
    assert_eq!(server.logs()[0]["attributes"]["service.name"], "checkout");
    assert_eq!(server.spans()[0]["attributes"]["host"], "web-1");
}

#[tokio::test]
async fn code_wins_over_the_environment() {
    let env_server = server().await;
    let code_server = server().await;
    let mut vars: Vec<(&str, String)> = endpoints(&env_server);
    vars.push(("NEW_RELIC_API_KEY", "env-key".into()));
    vars.push(("NEW_RELIC_HARVEST_INTERVAL", "not used".into()));
    vars.push(("NEW_RELIC_REGION", "nowhere".into()));
    let telemetry = Telemetry::builder()
        .environment(vars)
        .api_key("code-key")
        .region(newrelic_telemetry::Region::Eu)
        .harvest_interval(HOUR)
        .event_endpoint(code_server.event_url())
        .build()
        .expect("values set in code are not read from the environment");
    telemetry.events().record(Event::new("E")).await;
    telemetry.metrics().record_gauge("g", 1.0, ()).await;
    telemetry.shutdown().await;
    assert_eq!(code_server.requests().len(), 1);
    assert_eq!(
        code_server.requests()[0].header("api-key"),
        Some("code-key")
    );
    assert_eq!(
        env_server.requests().len(),
        1,
        "the metric endpoint still comes from the environment"
    );
    assert_eq!(env_server.requests()[0].path, "/metric/v1");
}

#[tokio::test]
async fn the_license_key_is_the_fallback() {
    let server = server().await;
    let mut vars: Vec<(&str, String)> = endpoints(&server);
    vars.push(("NEW_RELIC_LICENSE_KEY", "license".into()));
    let telemetry = Telemetry::builder().environment(vars).build().unwrap();
    telemetry.events().record(Event::new("E")).await;
    telemetry.shutdown().await;
    assert_eq!(server.requests()[0].header("api-key"), Some("license"));

    let mut vars: Vec<(&str, String)> = endpoints(&server);
    vars.push(("NEW_RELIC_LICENSE_KEY", "license".into()));
    vars.push(("NEW_RELIC_API_KEY", "api".into()));
    let telemetry = Telemetry::builder().environment(vars).build().unwrap();
    telemetry.events().record(Event::new("E")).await;
    telemetry.shutdown().await;
    assert_eq!(server.requests()[1].header("api-key"), Some("api"));
}

#[tokio::test]
async fn missing_key_is_an_error() {
    assert!(matches!(
        with_env(&[]).build(),
        Err(ConfigError::MissingApiKey)
    ));
    assert!(matches!(
        with_env(&[("NEW_RELIC_API_KEY", "  ")]).build(),
        Err(ConfigError::MissingApiKey)
    ));
}

#[tokio::test]
async fn malformed_values_name_their_variable() {
    let key = ("NEW_RELIC_API_KEY", "k");
    assert_eq!(
        invalid_variable(with_env(&[key, ("NEW_RELIC_REGION", "MARS")]).build()),
        "NEW_RELIC_REGION"
    );
    for bad in ["soon", "0", "-5", "NaN", "inf"] {
        assert_eq!(
            invalid_variable(with_env(&[key, ("NEW_RELIC_HARVEST_INTERVAL", bad)]).build()),
            "NEW_RELIC_HARVEST_INTERVAL",
            "{bad}"
        );
    }
    for var in [
        "NEW_RELIC_METRIC_API_URL",
        "NEW_RELIC_EVENT_API_URL",
        "NEW_RELIC_LOG_API_URL",
        "NEW_RELIC_SPAN_API_URL",
    ] {
        assert_eq!(
            invalid_variable(with_env(&[key, (var, "ftp://x/y")]).build()),
            var
        );
        assert_eq!(
            invalid_variable(with_env(&[key, (var, "not a url")]).build()),
            var
        );
    }
    let err = with_env(&[key, ("NEW_RELIC_REGION", "MARS")])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("NEW_RELIC_REGION"), "{err}");
}

#[tokio::test]
async fn region_from_variable_or_key_prefix() {
    let eu = "https://metric-api.eu.newrelic.com/metric/v1";
    let us = "https://metric-api.newrelic.com/metric/v1";
    for (vars, metric) in [
        (
            vec![("NEW_RELIC_API_KEY", "k"), ("NEW_RELIC_REGION", "eu")],
            eu,
        ),
        (
            vec![
                ("NEW_RELIC_API_KEY", "eu01xxkey"),
                ("NEW_RELIC_REGION", "US"),
            ],
            us,
        ),
        (
            vec![
                ("NEW_RELIC_API_KEY", "eu01xxkey"),
                ("NEW_RELIC_HARVEST_INTERVAL", "0.5"),
            ],
            eu,
        ),
        (vec![("NEW_RELIC_API_KEY", "k")], us),
    ] {
        let telemetry = with_env(&vars)
            .shutdown_timeout(Duration::ZERO)
            .build()
            .unwrap();
        assert_eq!(telemetry.endpoints().metrics, metric, "{vars:?}");
        telemetry.shutdown().await;
    }
    let telemetry = with_env(&[("NEW_RELIC_API_KEY", "k"), ("NEW_RELIC_REGION", "US")])
        .region(newrelic_telemetry::Region::Eu)
        .build()
        .unwrap();
    let endpoints = telemetry.endpoints();
    assert_eq!(endpoints.metrics, eu, "code wins");
    assert_eq!(
        endpoints.events,
        "https://insights-collector.eu01.nr-data.net/v1/accounts/events"
    );
    assert_eq!(endpoints.logs, "https://log-api.eu.newrelic.com/log/v1");
    assert_eq!(
        endpoints.spans,
        "https://trace-api.eu.newrelic.com/trace/v1"
    );
    telemetry.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_harvest_interval_variable_is_used() {
    let server = server().await;
    let mut vars: Vec<(&str, String)> = endpoints(&server);
    vars.push(("NEW_RELIC_API_KEY", "k".into()));
    vars.push(("NEW_RELIC_HARVEST_INTERVAL", "2.5".into()));
    let telemetry = Telemetry::builder().environment(vars).build().unwrap();
    telemetry.metrics().record_count("c", 1.0, ()).await;
    tokio::time::sleep(Duration::from_millis(2400)).await;
    assert!(server.requests().is_empty());
    assert!(
        server
            .wait_for_requests(1, Duration::from_millis(200))
            .await
    );
    telemetry.shutdown().await;
}

#[tokio::test]
async fn one_external_token_stops_everything() {
    let server = server().await;
    let token = CancellationToken::new();
    let mut vars: Vec<(&str, String)> = endpoints(&server);
    vars.push(("NEW_RELIC_API_KEY", "k".into()));
    let telemetry = Telemetry::builder()
        .environment(vars)
        .cancellation_token(token.clone())
        .build()
        .unwrap();
    telemetry.logs().record(Log::new("bye")).await;
    token.cancel();
    let report = telemetry.join().await;
    assert_eq!(report.logs.delivery.items_sent, 1);
}

#[test]
fn outside_a_runtime_is_an_error_not_a_panic() {
    assert!(matches!(
        with_env(&[("NEW_RELIC_API_KEY", "k")]).build(),
        Err(ConfigError::NoRuntime)
    ));
}

#[tokio::test]
async fn client_settings_apply_to_all_four_clients_in_order() {
    let server = server().await;
    let telemetry = server
        .telemetry_builder()
        .client(|c| c.add_version_info("first", "1"))
        .client(|c| c.add_version_info("second", "2").license_key_header())
        .build()
        .unwrap();
    telemetry.metrics().record_gauge("g", 1.0, ()).await;
    telemetry.events().record(Event::new("E")).await;
    telemetry.logs().record(Log::new("l")).await;
    telemetry.spans().record(Span::new("s").finish()).await;
    let report = telemetry.shutdown().await;
    assert_eq!(report.items_sent(), 4);
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        let agent = request.header("user-agent").unwrap();
        assert!(agent.ends_with(" first/1 second/2"), "{agent}");
        assert_eq!(request.header("x-license-key"), Some("test-key"));
    }
}

#[tokio::test]
async fn a_region_set_in_the_client_closure_wins() {
    let telemetry = with_env(&[("NEW_RELIC_API_KEY", "k"), ("NEW_RELIC_REGION", "US")])
        .client(|c| c.region(newrelic_telemetry::Region::Eu))
        .shutdown_timeout(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(
        telemetry.endpoints().logs,
        "https://log-api.eu.newrelic.com/log/v1"
    );
    telemetry.shutdown().await;
}

/// One service name everywhere: a `service.name` common attribute set in
/// code wins over `service_name()` and the variables, on metrics and on the
/// spans and logs of the tracing layer alike.
#[tokio::test]
async fn a_common_service_name_wins_on_every_item_the_tracing_layer_included() {
    use tracing_subscriber::prelude::*;

    let server = server().await;
    let telemetry = server
        .telemetry_builder()
        .environment([("NEW_RELIC_SERVICE_NAME", "from-env")])
        .service_name("from-code")
        .common_attributes(attrs!["service.name" => "common"])
        .build()
        .unwrap();
    {
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(telemetry.tracing_layer()),
        );
        tracing::info_span!("work").in_scope(|| tracing::info!("done"));
    }
    telemetry.metrics().record_count("jobs", 1, ()).await;
    telemetry.shutdown().await;
    assert_eq!(server.metrics()[0]["attributes"]["service.name"], "common");
    assert_eq!(server.spans()[0]["attributes"]["service.name"], "common");
    assert_eq!(server.logs()[0]["attributes"]["service.name"], "common");
}

/// The service's name travels once per payload, in the common block: the
/// tracing layer of a `Telemetry` does not write it again on each span and
/// log. A name the layer is given in code is still written, and wins; a
/// field named `service.name` is not exported.
#[tokio::test]
async fn the_service_name_is_sent_once_per_payload_not_on_each_span_and_log() {
    use newrelic_telemetry::Api;
    use tracing_subscriber::prelude::*;

    let server = server().await;
    let telemetry = server
        .telemetry_builder()
        .service_name("orders")
        .build()
        .unwrap();
    {
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry()
                .with(telemetry.tracing_layer())
                .with(telemetry.tracing_layer_with(|layer| layer.service_name("override"))),
        );
        // A field of that name is not exported: it would move the item to
        // another entity.
        tracing::info_span!("work", service.name = "field")
            .in_scope(|| tracing::info!(service.name = "field", "done"));
    }
    telemetry.shutdown().await;

    for api in [Api::Span, Api::Log] {
        let bodies: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| r.api == Some(api))
            .map(|r| r.body)
            .collect();
        assert_eq!(bodies.len(), 1, "{api:?}");
        let block = &bodies[0][0];
        assert_eq!(block["common"]["attributes"]["service.name"], "orders");
        let key = if api == Api::Span { "spans" } else { "logs" };
        let own: Vec<_> = block[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["attributes"]["service.name"].clone())
            .collect();
        // One item from each layer: the plain one writes no name.
        assert_eq!(own.len(), 2, "{api:?}");
        assert!(own.contains(&serde_json::Value::Null), "{api:?}: {own:?}");
        assert!(own.contains(&"override".into()), "{api:?}: {own:?}");
    }
}

/// Off means off for every way of recording a metric, a whole `Metric`
/// included: not even checked, so not refused.
#[tokio::test]
async fn a_disabled_telemetry_does_not_check_a_whole_metric() {
    let no_env: [(&str, &str); 0] = [];
    let telemetry = Telemetry::builder()
        .environment(no_env)
        .enabled(false)
        .build()
        .unwrap();
    let bad = newrelic_telemetry::CountMetric::new("jobs", f64::NAN, Duration::from_secs(1));
    assert_eq!(telemetry.metrics().try_record_metric(bad).await, Ok(()));
    let report = telemetry.shutdown().await;
    assert_eq!((report.items_refused(), report.items_discarded()), (0, 0));
}

/// The report's one line names what was sent per API, what was lost, and
/// the pipelines that missed the shutdown deadline.
#[tokio::test]
async fn the_report_says_in_one_line_what_was_sent_and_what_missed_the_deadline() {
    use newrelic_telemetry::Api;
    use newrelic_telemetry::test_util::ScriptedResponse;

    let server = server().await;
    // The Trace API never answers within the (short) deadline.
    server.respond_to(
        Api::Span,
        ScriptedResponse::status(202).with_delay(Duration::from_secs(3600)),
    );
    let telemetry = server
        .telemetry_builder()
        .shutdown_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    telemetry.events().record(Event::new("Order")).await;
    telemetry.logs().record(Log::new("placed")).await;
    telemetry.logs().record(Log::new("paid")).await;
    telemetry.spans().record(Span::new("checkout")).await;
    let report = telemetry.shutdown().await;
    assert_eq!(
        report.to_string(),
        "sent 3 (metrics 0, events 1, logs 2, spans 0), dropped 1, refused 0, discarded 0, \
         shutdown deadline exceeded (spans)"
    );
}
