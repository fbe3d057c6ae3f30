//! Endpoint URLs: a URL with no path means "this host" (the API's path is
//! appended), in code and from the environment; an explicit path is kept;
//! the FedRAMP region's endpoints.

use std::time::Duration;

use newrelic_telemetry::{Api, Event, Log, Region, Span, Telemetry, env};

mod support;
use support::server;

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_host_and_port_from_the_environment_gets_each_api_path() {
    let server = server().await;
    let host = format!("http://{}", server.addr());
    let with_slash = format!("{host}/");
    let telemetry = Telemetry::builder()
        .environment([
            (env::API_KEY, "key"),
            (env::METRIC_API_URL, host.as_str()),
            (env::EVENT_API_URL, with_slash.as_str()),
            (env::LOG_API_URL, host.as_str()),
            (env::SPAN_API_URL, host.as_str()),
        ])
        .build()
        .unwrap();
    assert_eq!(telemetry.endpoints().metrics, server.metric_url());
    assert_eq!(telemetry.endpoints().events, server.event_url());

    record_one_of_each(&telemetry).await;
    let report = telemetry.shutdown().await;

    // Every item arrived at its API's path: nothing was posted to `/` and
    // dropped as rejected.
    assert_eq!((report.items_sent(), report.items_dropped()), (4, 0));
    let mut paths: Vec<_> = server.requests().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/log/v1", "/metric/v1", "/trace/v1", "/v1/accounts/events"]
    );
}

#[tokio::test]
async fn a_host_and_port_in_code_gets_the_api_path() {
    let server = server().await;
    let host = format!("http://{}", server.addr());
    let no_env: [(&str, &str); 0] = [];
    let telemetry = Telemetry::builder()
        .environment(no_env)
        .api_key("key")
        .metric_endpoint(&host)
        .event_endpoint(&host)
        .log_endpoint(&host)
        .span_endpoint(&host)
        .build()
        .unwrap();
    record_one_of_each(&telemetry).await;
    let report = telemetry.shutdown().await;
    assert_eq!((report.items_sent(), report.items_dropped()), (4, 0));
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn an_explicit_path_is_kept() {
    let server = server().await;
    // The test server serves only the APIs' own paths: a kept custom path
    // answers 404, which shows the path was not rewritten.
    let custom = format!("http://{}/proxy/metrics", server.addr());
    let telemetry = server
        .telemetry_builder()
        .metric_endpoint(&custom)
        .build()
        .unwrap();
    assert_eq!(telemetry.endpoints().metrics, custom);
    telemetry.metrics().record_count("kept", 1.0, ()).await;
    let report = telemetry.shutdown().await;
    assert_eq!(report.metrics.delivery.items_dropped_rejected, 1);
    assert!(server.wait_for_requests(1, BOUND).await);
    assert_eq!(server.requests()[0].path, "/proxy/metrics");
}

#[tokio::test]
async fn fedramp_endpoints_from_code_and_environment() {
    let no_env: [(&str, &str); 0] = [];
    let from_code = Telemetry::builder()
        .environment(no_env)
        .api_key("key")
        .region(Region::FedRamp)
        .build()
        .unwrap();
    let from_env = Telemetry::builder()
        .environment([(env::API_KEY, "eu01xx-key"), (env::REGION, "fedramp")])
        .build()
        .unwrap();
    for telemetry in [&from_code, &from_env] {
        let endpoints = telemetry.endpoints();
        assert_eq!(
            endpoints.metrics,
            "https://gov-metric-api.newrelic.com/metric/v1"
        );
        assert_eq!(
            endpoints.events,
            "https://gov-insights-collector.newrelic.com/v1/accounts/events"
        );
        assert_eq!(endpoints.logs, "https://gov-log-api.newrelic.com/log/v1");
        assert_eq!(
            endpoints.spans,
            "https://gov-trace-api.newrelic.com/trace/v1"
        );
        telemetry.cancellation_token().cancel();
    }
    assert_eq!(
        Api::Span.endpoint(Region::FedRamp),
        from_code.endpoints().spans
    );
}

async fn record_one_of_each(telemetry: &Telemetry) {
    telemetry
        .metrics()
        .record_count("requests", 1.0, [("route", "/")])
        .await;
    telemetry.events().record(Event::new("Order")).await;
    telemetry.logs().record(Log::new("placed")).await;
    telemetry.spans().record(Span::new("GET /").finish()).await;
}
