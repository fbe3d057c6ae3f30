//! One-call setup: the batches, clients and harvesters from one key, one
//! HTTP client and one cancellation token, shut down with one awaited call.

// One file per part; none of them uses anything from this file.
mod builder; // TelemetryBuilder: settings made in code, and build()
mod distributions; // the fifth pipeline's harvester, started on first use
pub mod env; // the NEW_RELIC_* variables, and their parsing into a typed config
mod handle; // Telemetry, Endpoints, TelemetryReport, TelemetryStats
mod lifecycle; // the order of a stop: tracing layers drained, then harvesters
mod per_api; // PerApi<T> (one value per API) and the closures that configure all four clients
mod pipelines; // what build() assembles: clients, batches, harvesters

pub use builder::TelemetryBuilder;
pub use handle::{Endpoints, Telemetry, TelemetryReport, TelemetryStats};
