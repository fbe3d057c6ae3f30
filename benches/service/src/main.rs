//! A service-level benchmark (issue 16): what this crate costs a real
//! service, next to the same service with telemetry disabled, compiled out,
//! and instrumented with the OpenTelemetry stack a user would pick instead.
//!
//! The service (`server`) is one of two: an actix-web 4 server with 2
//! workers, or an axum 0.8 server on a 2-worker Tokio runtime. Per
//! `POST /orders` it does the work of an instrumented handler:
//!
//! * request count and duration metrics (this crate's middleware; with
//!   OpenTelemetry, a counter and a histogram in a small middleware);
//! * an `Order` event (with OpenTelemetry, which has no events, a log record
//!   with the same attributes, through its Logs API);
//! * a handler span, a client span around a call to `GET /inventory` on the
//!   same server (a pooled reqwest client, `traceparent` injected), and that
//!   route's own server span, continuing the trace;
//! * a background task with its own span, parented to the handler's;
//! * three log lines (`tracing::info!`) inside the handler span;
//! * a business counter, `orders.placed`.
//!
//! Cargo features select the build: `nr` (this crate), `otel`
//! (`tracing-opentelemetry`, `opentelemetry_sdk`'s batch span and log
//! processors and periodic delta metric reader, `opentelemetry-appender-tracing`,
//! OTLP/HTTP), or neither (no telemetry code at all: the handlers' `tracing`
//! macros with a bare `tracing_subscriber::registry()`). "Disabled" is the `nr`
//! build run with `NEW_RELIC_ENABLED=false`.
//!
//! The driver (`drive`) starts a do-nothing ingest sink on 127.0.0.1 (202 to
//! any POST, counting requests and bytes per path), points every endpoint of
//! the service at it (`NEW_RELIC_*_API_URL`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! a dummy key), starts the service as a child process, waits until it
//! answers, runs a warm-up and then a measured window of `POST /orders` at a
//! fixed concurrency, reads the child's CPU time from `/proc/<pid>/stat`
//! around the measured window, then sends it SIGTERM and waits for it to
//! flush and exit. It appends one JSON line per run to a results file;
//! `report` turns that file into a table per framework: requests/s, p99 and
//! CPU per request as ratios to the compiled-out build of the same round,
//! with their spread over rounds, and what the sink received per build.
//!
//! Run it all (builds the three binaries, 3 rounds x 10 s of each of the
//! 8 combinations, interleaved):
//!
//! ```sh
//! benches/service/run.sh                       # from the crate's root
//! ROUNDS=1 SECONDS=2 benches/service/run.sh    # a smoke run
//! ```
//!
//! Or by hand:
//!
//! ```sh
//! cargo build --release --manifest-path benches/service/Cargo.toml --features nr
//! target/release/service-bench server --framework axum --port 8080
//! target/release/service-bench drive --server PATH --build on --framework axum --out results.jsonl
//! target/release/service-bench report results.jsonl
//! ```

#[cfg(all(feature = "nr", feature = "otel"))]
compile_error!("features `nr` and `otel` are exclusive: build one at a time");

mod app;
mod drive;
mod load;
#[cfg(not(any(feature = "nr", feature = "otel")))]
mod server_bare;
#[cfg(feature = "nr")]
mod server_nr;
#[cfg(feature = "otel")]
mod server_otel;
mod sink;
mod stats;

/// The instrumentation this binary was built with: each module has the same
/// items (`Instruments`, `run_axum`, `run_actix`).
#[cfg(not(any(feature = "nr", feature = "otel")))]
use server_bare as instr;
#[cfg(feature = "nr")]
use server_nr as instr;
#[cfg(feature = "otel")]
use server_otel as instr;

/// What this binary's `server` is, for the driver's sanity check.
pub const BUILT_WITH: &str = if cfg!(feature = "nr") {
    "nr"
} else if cfg!(feature = "otel") {
    "otel"
} else {
    "none"
};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => server(&args[1..]),
        Some("drive") => drive::main(&args[1..]),
        Some("report") => stats::report_main(&args[1..]),
        Some("built-with") => {
            println!("{BUILT_WITH}");
            Ok(())
        }
        _ => Err(USAGE.into()),
    };
    if let Err(e) = result {
        eprintln!("service-bench: {e}");
        std::process::exit(2);
    }
}

const USAGE: &str = "usage:
  service-bench server --framework actix|axum --port P
  service-bench drive --server PATH --build on|disabled|off|otel --framework actix|axum
                      [--seconds 10] [--warmup 2] [--concurrency 32] [--round 1]
                      [--out results.jsonl] [--log-dir DIR]
  service-bench report results.jsonl
  service-bench built-with";

/// `server --framework actix|axum --port P`: serves until SIGTERM, then
/// flushes its telemetry and exits.
fn server(args: &[String]) -> Result<(), Error> {
    let mut args = Args::new(args);
    let framework: String = args
        .value("--framework")?
        .ok_or("--framework is required")?;
    let port: u16 = args.value("--port")?.ok_or("--port is required")?;
    args.finish()?;
    match framework.as_str() {
        "axum" => instr::run_axum(port),
        "actix" => instr::run_actix(port),
        other => Err(format!("unknown framework {other:?} (actix or axum)").into()),
    }
}

/// `--name value` pairs, each taken once.
pub struct Args(Vec<(String, String)>);

impl Args {
    pub fn new(args: &[String]) -> Args {
        let pairs = args
            .chunks(2)
            .map(|pair| (pair[0].clone(), pair.get(1).cloned().unwrap_or_default()))
            .collect();
        Args(pairs)
    }

    /// The value of `--name`, parsed, if given.
    pub fn value<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, Error>
    where
        T::Err: std::fmt::Display,
    {
        let Some(i) = self.0.iter().position(|(n, _)| n == name) else {
            return Ok(None);
        };
        let (_, value) = self.0.remove(i);
        value
            .parse()
            .map(Some)
            .map_err(|e| format!("{name} {value:?}: {e}").into())
    }

    /// Fails on anything not taken.
    pub fn finish(self) -> Result<(), Error> {
        match self.0.first() {
            Some((name, _)) => Err(format!("unknown argument {name:?}\n{USAGE}").into()),
            None => Ok(()),
        }
    }
}
