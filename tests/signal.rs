//! `shutdown_signal()` completes when the process gets SIGTERM. This test
//! binary holds this one test only: it sends SIGTERM to its own process,
//! which the handler installed by `shutdown_signal()` catches.

#[cfg(unix)]
#[tokio::test(flavor = "current_thread")]
async fn sigterm_completes_the_shutdown_signal() {
    use std::time::Duration;

    // Installed here, before the signal is sent: the signal is not missed
    // even though the future has not been polled yet.
    let signal = newrelic_telemetry::shutdown_signal();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .await
        .expect("the kill command runs");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(20), signal)
        .await
        .expect("SIGTERM completes the shutdown signal");
}
