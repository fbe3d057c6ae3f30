//! [`shutdown_signal`]: the future every service waits on before shutting
//! down.

use std::future::Future;

/// Completes when the process is asked to stop: on SIGTERM (what
/// orchestrators such as Kubernetes and systemd send) or Ctrl-C (SIGINT) on
/// Unix, on Ctrl-C elsewhere. Hand it to your HTTP server's graceful
/// shutdown, then shut the telemetry down:
///
/// ```no_run
/// use newrelic_telemetry::{Telemetry, shutdown_signal};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let telemetry = Telemetry::builder().service_name("checkout").build()?;
/// // axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
/// shutdown_signal().await;
/// let report = telemetry.shutdown().await;
/// println!("sent {} items, dropped {}", report.items_sent(), report.items_dropped());
/// # Ok(()) }
/// ```
///
/// Called inside a Tokio runtime, the handlers are installed at once, so a
/// signal that arrives before the future is first polled is not missed (and
/// no longer ends the process); outside one, at the first poll. A handler
/// that cannot be installed is logged at ERROR, and the future waits on the
/// other signal (if neither can be, it never completes, and the signals keep
/// their default action of ending the process).
///
/// It can be called more than once: each future completes on the next signal
/// after it was created.
///
/// ```
/// # #[cfg(unix)]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// let signal = newrelic_telemetry::shutdown_signal();
/// // Nothing has asked the process to stop.
/// assert!(tokio::time::timeout(Duration::from_millis(10), signal).await.is_err());
/// # }
/// # #[cfg(not(unix))] fn main() {}
/// ```
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        let install = |kind: SignalKind| in_runtime.then(|| signal(kind));
        let (term, interrupt) = (
            install(SignalKind::terminate()),
            install(SignalKind::interrupt()),
        );
        async move {
            let term = term.unwrap_or_else(|| signal(SignalKind::terminate()));
            let interrupt = interrupt.unwrap_or_else(|| signal(SignalKind::interrupt()));
            tokio::select! {
                () = wait(term, "SIGTERM") => {}
                () = wait(interrupt, "SIGINT") => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!(signal = "Ctrl-C", "shutdown signal received"),
            Err(error) => {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Completes on the next `name` signal; never, if its handler could not be
/// installed.
#[cfg(unix)]
async fn wait(installed: std::io::Result<tokio::signal::unix::Signal>, name: &'static str) {
    match installed {
        Ok(mut signal) => {
            if signal.recv().await.is_some() {
                tracing::info!(signal = name, "shutdown signal received");
                return;
            }
            // The runtime is going away: no more signals will come.
        }
        Err(error) => tracing::error!(%error, signal = name, "cannot listen for the signal"),
    }
    std::future::pending::<()>().await;
}
