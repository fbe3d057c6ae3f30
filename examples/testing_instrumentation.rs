//! Testing your own instrumentation with the in-process test server
//! (feature `test-util`): point a `Telemetry` at it, run your code, shut
//! down, and assert on exactly what New Relic would have received.
//!
//! ```sh
//! cargo run --example testing_instrumentation
//! cargo test --example testing_instrumentation
//! ```

use std::time::Duration;

use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
use newrelic_telemetry::{Api, Event, RecordError, Telemetry};

/// The code under test: a checkout handler that records a count, a summary
/// and an event.
async fn checkout(telemetry: &Telemetry, plan: &str, amount: f64) -> Result<(), RecordError> {
    telemetry
        .metrics()
        .record_count("checkout.completed", 1.0, [("plan", plan)])
        .await;
    telemetry
        .metrics()
        .record_summary("checkout.amount", amount, [("plan", plan)])
        .await;
    telemetry
        .events()
        .try_record(
            Event::new("Checkout")
                .with_attribute("plan", plan)
                .with_attribute("amount", amount),
        )
        .await
}

/// What a test of `checkout` checks, shared by `main` and the test below.
async fn check_checkout_instrumentation() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestIngestServer::start().await?;
    // The first event payload fails with a 503: the SDK retries it.
    server.respond_to(Api::Event, ScriptedResponse::status(503));
    let telemetry = server
        .telemetry_builder()
        .harvest_interval(Duration::from_secs(3600))
        .build()?;

    checkout(&telemetry, "pro", 30.0).await?;
    checkout(&telemetry, "pro", 10.0).await?;
    checkout(&telemetry, "free", 0.0).await?;
    let report = telemetry.shutdown().await;
    assert_eq!(report.items_dropped(), 0);

    let metrics = server.metrics();
    let pro_count = metrics
        .iter()
        .find(|m| m["name"] == "checkout.completed" && m["attributes"]["plan"] == "pro")
        .ok_or("no pro count")?;
    assert_eq!(pro_count["value"], 2.0);
    let pro_amount = metrics
        .iter()
        .find(|m| m["name"] == "checkout.amount" && m["attributes"]["plan"] == "pro")
        .ok_or("no pro summary")?;
    assert_eq!(pro_amount["value"]["sum"], 40.0);
    assert_eq!(pro_amount["value"]["max"], 30.0);

    let events = server.events();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e["eventType"] == "Checkout"));
    assert_eq!(report.events.delivery.retries, 1);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    check_checkout_instrumentation().await?;
    println!("checkout instrumentation: metrics and events arrived as expected");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn checkout_is_instrumented() {
        super::check_checkout_instrumentation().await.unwrap();
    }
}
