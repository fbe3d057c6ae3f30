//! The driver: one run of one build of the service. It starts the sink,
//! starts the service as a child process with every endpoint pointed at the
//! sink, waits until it answers, loads it (a warm-up, then the measured
//! window, with the child's CPU time read around it), stops it with SIGTERM
//! (bounded: SIGKILL after a minute), and appends what it saw to the results
//! file as one JSON line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::sink::Sink;
use crate::{Args, Error, load, stats};

/// How long the service may take to answer its first request.
const READY_BOUND: Duration = Duration::from_secs(30);
/// How long it may take to stop (and flush) after SIGTERM.
const STOP_BOUND: Duration = Duration::from_secs(60);
/// A dummy key: the endpoints are the sink's, so it goes nowhere else.
const DUMMY_KEY: &str = "service-bench-dummy-key";

struct Options {
    server: PathBuf,
    build: String,
    framework: String,
    seconds: f64,
    warmup: f64,
    concurrency: usize,
    round: u32,
    timeout: f64,
    out: PathBuf,
    log_dir: PathBuf,
}

pub fn main(args: &[String]) -> Result<(), Error> {
    let mut args = Args::new(args);
    let options = Options {
        server: args.value("--server")?.ok_or("--server is required")?,
        build: args.value("--build")?.ok_or("--build is required")?,
        framework: args
            .value("--framework")?
            .ok_or("--framework is required")?,
        seconds: args.value("--seconds")?.unwrap_or(10.0),
        warmup: args.value("--warmup")?.unwrap_or(2.0),
        concurrency: args.value("--concurrency")?.unwrap_or(32),
        round: args.value("--round")?.unwrap_or(1),
        timeout: args.value("--timeout")?.unwrap_or(5.0),
        out: args
            .value("--out")?
            .unwrap_or_else(|| "results.jsonl".into()),
        log_dir: args
            .value("--log-dir")?
            .unwrap_or_else(|| "service-bench-logs".into()),
    };
    args.finish()?;
    check_build(&options)?;
    std::fs::create_dir_all(&options.log_dir)?;

    // The driver's own runtime (load client and sink) shares the machine
    // with the service: two workers, like the service's.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&options))?;

    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&options.out)?;
    writeln!(out, "{result}")?;
    println!(
        "round {} {:>5} {:<8} {:>9.0} req/s  p99 {:>8.2} ms  CPU {:>7.1} us/req  errors {}  exit {}",
        options.round,
        options.framework,
        options.build,
        result["requests_per_second"].as_f64().unwrap_or(0.0),
        result["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
        result["cpu_us_per_request"].as_f64().unwrap_or(0.0),
        result["errors"],
        result["exit"],
    );
    Ok(())
}

/// The binary is the build the run says it is.
fn check_build(options: &Options) -> Result<(), Error> {
    let expected = match options.build.as_str() {
        "on" | "disabled" => "nr",
        "otel" => "otel",
        "off" => "none",
        other => return Err(format!("unknown build {other:?} (on, disabled, off, otel)").into()),
    };
    let output = Command::new(&options.server).arg("built-with").output()?;
    let built = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if built != expected {
        return Err(format!(
            "{}: built with {built:?}, but build {} needs {expected:?}",
            options.server.display(),
            options.build
        )
        .into());
    }
    Ok(())
}

async fn run(options: &Options) -> Result<Json, Error> {
    let sink = Sink::start().await?;
    let port = free_port()?;
    let log_path = options.log_dir.join(format!(
        "r{}-{}-{}.log",
        options.round, options.framework, options.build
    ));
    let mut child = spawn(options, &sink, port, &log_path)?;
    let base = format!("http://127.0.0.1:{port}");

    let measured = async {
        wait_ready(&mut child, &base).await?;
        let client = load::client(options.concurrency);
        let url = format!("{base}/orders");
        let timeout = Duration::from_secs_f64(options.timeout);
        let warmup = Duration::from_secs_f64(options.warmup);
        load::run(&client, &url, options.concurrency, warmup, timeout).await;
        let cpu_before = stats::cpu_time(child.id())?;
        let window = load::run(
            &client,
            &url,
            options.concurrency,
            Duration::from_secs_f64(options.seconds),
            timeout,
        )
        .await;
        let cpu = stats::cpu_time(child.id())? - cpu_before;
        Ok::<_, Error>((window, cpu))
    }
    .await;
    // Stopped whatever happened above: no child outlives its run.
    let exit = stop(&mut child).await;
    let (window, cpu) = measured?;

    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let received: serde_json::Map<String, Json> = sink
        .received()
        .into_iter()
        .map(|(path, c)| (path, json!({"requests": c.requests, "bytes": c.bytes})))
        .collect();
    let cpu_us = cpu.as_secs_f64() * 1e6;
    let completed = window.completed.max(1) as f64;
    Ok(json!({
        "round": options.round,
        "framework": options.framework,
        "build": options.build,
        "seconds": options.seconds,
        "concurrency": options.concurrency,
        "completed": window.completed,
        "errors": window.errors,
        "elapsed_s": window.elapsed.as_secs_f64(),
        "requests_per_second": window.requests_per_second(),
        "p50_us": stats::percentile(&window.latencies_us, 0.50),
        "p99_us": stats::percentile(&window.latencies_us, 0.99),
        "max_us": window.latencies_us.last().copied().unwrap_or(0),
        "cpu_s": cpu.as_secs_f64(),
        "cpu_us_per_request": cpu_us / completed,
        "sink": received,
        "report": report_line(&log),
        "exit": exit,
        "log": log_path.display().to_string(),
    }))
}

/// A port nothing listens on now (the service binds it a moment later).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Starts the service, its output in `log_path`, configured by the
/// environment as a deployed service would be; only the build's own
/// variables are set (none inherited).
fn spawn(options: &Options, sink: &Sink, port: u16, log_path: &PathBuf) -> Result<Child, Error> {
    let log = File::create(log_path)?;
    let mut command = Command::new(&options.server);
    command
        .args(["server", "--framework", &options.framework])
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (name, _) in std::env::vars() {
        if name.starts_with("NEW_RELIC_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let url = sink.url();
    match options.build.as_str() {
        "on" | "disabled" => {
            command.env("NEW_RELIC_API_KEY", DUMMY_KEY);
            for api in ["METRIC", "EVENT", "LOG", "SPAN", "OTLP"] {
                command.env(format!("NEW_RELIC_{api}_API_URL"), &url);
            }
            command.env("NEW_RELIC_HARVEST_INTERVAL", "5");
            if options.build == "disabled" {
                command.env("NEW_RELIC_ENABLED", "false");
            }
        }
        "otel" => {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", &url);
        }
        _ => {}
    }
    Ok(command.spawn()?)
}

/// Until `GET /health` answers, bounded; fails at once if the child exits.
async fn wait_ready(child: &mut Child, base: &str) -> Result<(), Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("the service exited before it was ready: {status}").into());
        }
        let response = client.get(format!("{base}/health")).send().await;
        if response.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if started.elapsed() > READY_BOUND {
            return Err("the service did not answer within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then wait (bounded; SIGKILL after [`STOP_BOUND`]). Returns how
/// it ended: `"0"`, another exit code, a signal, or `"killed"`.
async fn stop(child: &mut Child) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return format!("exited early: {status}");
    }
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match status.code() {
                    Some(code) => code.to_string(),
                    None => status.to_string(),
                };
            }
            Ok(None) if started.elapsed() < STOP_BOUND => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return "killed".to_owned();
            }
        }
    }
}

/// The `nr-report` or `otel-report` line of the service's log, as an
/// object of its `key=value` pairs; with the OpenTelemetry SDK's drop
/// counts (it logs them at shutdown, at WARN) and the number of WARN and
/// ERROR lines the SDKs logged.
fn report_line(log: &str) -> Json {
    let mut pairs = serde_json::Map::new();
    let report = log
        .lines()
        .find(|l| l.starts_with("nr-report ") || l.starts_with("otel-report "));
    for pair in report.into_iter().flat_map(str::split_whitespace) {
        if let Some((key, value)) = pair.split_once('=') {
            pairs.insert(key.to_owned(), number_or_text(value));
        }
    }
    if report.is_some_and(|l| l.starts_with("otel-report ")) {
        for (key, counter) in [
            ("spans_dropped", "dropped_span_count="),
            ("logs_dropped", "dropped_logs_count="),
        ] {
            let dropped: u64 = log
                .lines()
                .flat_map(str::split_whitespace)
                .filter_map(|word| word.strip_prefix(counter)?.parse::<u64>().ok())
                .sum();
            pairs.insert(key.to_owned(), dropped.into());
        }
    }
    let warnings = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count();
    pairs.insert("sdk_warnings".to_owned(), warnings.into());
    Json::Object(pairs)
}

fn number_or_text(value: &str) -> Json {
    value
        .parse::<u64>()
        .map(Json::from)
        .unwrap_or_else(|_| Json::from(value))
}
