//! Host safety during a long outage, as a stress program (no criterion):
//!
//! 1. Memory. A log pipeline whose endpoint is down (a closed port on
//!    127.0.0.1, or a server that reads every request and never answers),
//!    ~84 KB logs (twenty 4,000-character attributes, each its own
//!    allocation) recorded by one task as fast as it can for a few seconds.
//!    Reported next to the budget: the process's peak RSS (`VmHWM`) and its
//!    growth over the start, the SDK's own `peak_bytes`, and the items
//!    recorded, refused (`MemoryBudgetFull`) and dropped (by reason). Each run
//!    is a child process of its own (this binary run again with `--child`),
//!    so one run's peak cannot hide in another's.
//! 2. Shutdown overrun. A backlog of ~76 MB of logs in a 256 MiB pipeline, a
//!    payload in flight that the server never answers, and a 500 ms
//!    `shutdown_timeout`: how long `shutdown()` takes past the timeout
//!    (median and max of a few runs), on a current-thread and a 2-worker
//!    runtime, for a harvester stopped while idle and one stopped while a
//!    harvest is encoding the backlog.
//!
//! Run: `cargo bench --bench outage` (about a minute in release). `cargo test
//! --all-targets` runs this binary without `--bench`: it then makes one tiny
//! run of each part in process, as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use newrelic_telemetry::batch::DEFAULT_MEMORY_BUDGET;
use newrelic_telemetry::harvester::SHUTDOWN_SLACK;
use newrelic_telemetry::{Harvester, Log, LogBatch, LogClient, RecordError, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const MIB: usize = 1024 * 1024;

/// `len` hex characters, different for each seed (gzip takes them to about
/// half their size).
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

fn pads() -> Vec<String> {
    (0..20).map(|i| noise(1000 + i, 4000)).collect()
}

const KEYS: [&str; 20] = [
    "pad0", "pad1", "pad2", "pad3", "pad4", "pad5", "pad6", "pad7", "pad8", "pad9", "pad10",
    "pad11", "pad12", "pad13", "pad14", "pad15", "pad16", "pad17", "pad18", "pad19",
];

/// A log of ~84 KB whose text is its own (twenty fresh 4,000-byte strings).
fn owned_log(seq: u64, pads: &[String]) -> Log {
    pads.iter().zip(KEYS).fold(
        Log::new(format!("big {seq}")).with_attribute("seq", seq as i64),
        |log, (pad, key)| log.with_attribute(key, pad.as_str()),
    )
}

/// A log of ~84 KB (as counted and encoded) sharing its text with every
/// other: a large backlog that costs the process little to build.
fn shared_log(seq: u64, pads: &[Arc<str>]) -> Log {
    pads.iter().zip(KEYS).fold(
        Log::new(format!("big {seq}")).with_attribute("seq", seq as i64),
        |log, (pad, key)| log.with_attribute(key, Value::from(pad.clone())),
    )
}

/// A `/proc/self/status` figure in bytes (0 where there is none).
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Down {
    /// Nothing listens: every connection is refused at once.
    ClosedPort,
    /// A server that reads every request and never answers.
    Silent,
}

impl Down {
    fn name(self) -> &'static str {
        match self {
            Down::ClosedPort => "closed port",
            Down::Silent => "never answers",
        }
    }

    fn parse(s: &str) -> Down {
        match s {
            "closed" => Down::ClosedPort,
            _ => Down::Silent,
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Down::ClosedPort => "closed",
            Down::Silent => "silent",
        }
    }
}

/// A URL on 127.0.0.1 where nothing listens.
async fn closed_port_url() -> String {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/log/v1")
}

/// A server that accepts connections, reads and discards what comes in, and
/// never answers.
async fn silent_server_url() -> String {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{addr}/log/v1")
}

async fn url_for(down: Down) -> String {
    match down {
        Down::ClosedPort => closed_port_url().await,
        Down::Silent => silent_server_url().await,
    }
}

// --- 1. memory during an outage ---------------------------------------------

#[derive(Debug, Default)]
struct OutageRun {
    budget: usize,
    sdk_peak: usize,
    rss_start: usize,
    rss_peak: usize,
    recorded: u64,
    refused: u64,
    sent: u64,
    queue_full: u64,
    retries_exhausted: u64,
    shutdown: u64,
    other: u64,
}

impl OutageRun {
    fn to_line(&self) -> String {
        format!(
            "RESULT {} {} {} {} {} {} {} {} {} {} {}",
            self.budget,
            self.sdk_peak,
            self.rss_start,
            self.rss_peak,
            self.recorded,
            self.refused,
            self.sent,
            self.queue_full,
            self.retries_exhausted,
            self.shutdown,
            self.other
        )
    }

    fn from_line(line: &str) -> Option<OutageRun> {
        let v: Vec<u64> = line
            .strip_prefix("RESULT ")?
            .split(' ')
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?;
        let [
            budget,
            sdk_peak,
            rss_start,
            rss_peak,
            recorded,
            refused,
            sent,
            qf,
            re,
            sd,
            other,
        ] = v[..]
        else {
            return None;
        };
        Some(OutageRun {
            budget: budget as usize,
            sdk_peak: sdk_peak as usize,
            rss_start: rss_start as usize,
            rss_peak: rss_peak as usize,
            recorded,
            refused,
            sent,
            queue_full: qf,
            retries_exhausted: re,
            shutdown: sd,
            other,
        })
    }
}

/// Records ~84 KB logs into a pipeline of `budget` bytes whose endpoint is
/// `down`, as fast as one task can, for `run`; then shuts it down (1 s).
fn outage(budget: usize, down: Down, run: Duration) -> OutageRun {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pads = pads();
        let logs = Arc::new(LogBatch::builder().memory_budget(budget).build());
        let client = LogClient::builder("k")
            .endpoint(url_for(down).await)
            .build()
            .unwrap();
        let harvester = Harvester::builder(logs.clone(), client)
            .shutdown_timeout(Duration::from_secs(1))
            .spawn();
        let mut out = OutageRun {
            budget: logs.memory().budget_bytes,
            rss_start: status_bytes("VmRSS:"),
            ..OutageRun::default()
        };
        let end = Instant::now() + run;
        let mut seq = 0;
        while Instant::now() < end {
            match logs.try_record(owned_log(seq, &pads)).await {
                Ok(()) => out.recorded += 1,
                Err(RecordError::MemoryBudgetFull { .. }) => out.refused += 1,
                Err(e) => panic!("unexpected {e}"),
            }
            seq += 1;
            tokio::task::yield_now().await;
        }
        let report = harvester.shutdown().await;
        let d = report.delivery;
        out.sdk_peak = report.memory.peak_bytes;
        out.rss_peak = status_bytes("VmHWM:");
        out.sent = d.items_sent;
        out.queue_full = d.items_dropped_queue_full;
        out.retries_exhausted = d.items_dropped_retries_exhausted;
        out.shutdown = d.items_dropped_shutdown;
        out.other = d.items_dropped() - out.queue_full - out.retries_exhausted - out.shutdown;
        assert_eq!(
            d.items_sent + d.items_dropped(),
            out.recorded,
            "every recorded item is sent or counted dropped: {d:?}"
        );
        assert_eq!(report.memory.held_items, 0, "{:?}", report.memory);
        assert_eq!(report.record.items_dropped_over_budget, out.refused);
        out
    })
}

/// Runs [`outage`] in a child process, so that its `VmHWM` is its own.
fn outage_in_child(budget: usize, down: Down, run: Duration) -> OutageRun {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--child",
            &budget.to_string(),
            down.arg(),
            &run.as_millis().to_string(),
        ])
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(OutageRun::from_line)
        .unwrap_or_else(|| panic!("no result from the child: {stdout}"))
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

fn print_outage_table(run: Duration, rows: &[(Down, OutageRun)]) {
    println!(
        "=== host safety 1: memory during an outage ({:.1} s of ~84 KB logs, one recording task, 2 workers) ===",
        run.as_secs_f64()
    );
    println!(
        "  {:14} {:>9} {:>10} {:>12} {:>10} {:>10} {:>10} {:>8} {:>8} {:>6} {:>10} {:>8} {:>8} {:>6}",
        "endpoint",
        "budget",
        "SDK peak",
        "peak-budget",
        "RSS start",
        "RSS peak",
        "RSS growth",
        "recorded",
        "refused",
        "sent",
        "queue_full",
        "retries",
        "shutdown",
        "other"
    );
    for (down, r) in rows {
        println!(
            "  {:14} {:>5.1} MiB {:>6.2} MiB {:>+8.1} KiB {:>6.1} MiB {:>6.1} MiB {:>6.1} MiB {:>8} {:>8} {:>6} {:>10} {:>8} {:>8} {:>6}",
            down.name(),
            mb(r.budget),
            mb(r.sdk_peak),
            (r.sdk_peak as f64 - r.budget as f64) / 1024.0,
            mb(r.rss_start),
            mb(r.rss_peak),
            mb(r.rss_peak.saturating_sub(r.rss_start)),
            r.recorded,
            r.refused,
            r.sent,
            r.queue_full,
            r.retries_exhausted,
            r.shutdown,
            r.other
        );
    }
    println!(
        "  (SDK peak: MemoryStats::peak_bytes; RSS peak: VmHWM of the process, runtime and test data included)"
    );
}

// --- 2. shutdown overrun ----------------------------------------------------

const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq)]
enum StopAt {
    /// The harvester is waiting for its next tick.
    Idle,
    /// A harvest is encoding the backlog.
    DuringHarvest,
}

/// One shutdown: `backlog` large logs waiting, a payload in flight that is
/// never answered. Returns how long `shutdown()` took.
async fn one_shutdown(backlog: u64, stop_at: StopAt, pads: &[Arc<str>]) -> Duration {
    let logs = Arc::new(LogBatch::builder().memory_budget(256 * MIB).build());
    let client = LogClient::builder("k")
        .endpoint(silent_server_url().await)
        .build()
        .unwrap();
    let harvester = Harvester::builder(logs.clone(), client)
        .harvest_interval(Duration::from_secs(3600))
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .spawn();
    logs.record(Log::new("first")).await;
    harvester.harvest_now();
    while harvester.memory().held_bytes == 0 || !logs.is_empty().await {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for seq in 0..backlog {
        logs.record(shared_log(seq, pads)).await;
    }
    if stop_at == StopAt::DuringHarvest {
        harvester.harvest_now();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !logs.is_empty().await {
            assert!(Instant::now() < deadline, "the harvest did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let started = Instant::now();
    let report = harvester.shutdown().await;
    let took = started.elapsed();
    let d = report.delivery;
    assert_eq!(d.items_sent + d.items_dropped(), backlog + 1, "{d:?}");
    assert!(report.deadline_exceeded, "{report:?}");
    assert_eq!(report.memory.held_items, 0);
    took
}

fn runtime(multi_thread: bool) -> tokio::runtime::Runtime {
    if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }
}

fn shutdown_table(backlog: u64, runs: usize) {
    let pads: Vec<Arc<str>> = pads().into_iter().map(Arc::from).collect();
    println!(
        "=== host safety 2: shutdown overrun, {backlog} logs of ~84 KB waiting ({:.0} MB), a request never answered, shutdown_timeout {} ms (SHUTDOWN_SLACK {} ms) ===",
        backlog as f64 * 84_000.0 / 1e6,
        SHUTDOWN_TIMEOUT.as_millis(),
        SHUTDOWN_SLACK.as_millis()
    );
    println!(
        "  {:15} {:25} {:>5} {:>12} {:>12} {:>12}",
        "runtime", "stopped", "runs", "median took", "median over", "max over"
    );
    for multi_thread in [false, true] {
        let rt = runtime(multi_thread);
        for stop_at in [StopAt::Idle, StopAt::DuringHarvest] {
            let mut took: Vec<Duration> = (0..runs)
                .map(|_| rt.block_on(one_shutdown(backlog, stop_at, &pads)))
                .collect();
            took.sort();
            let over = |d: Duration| d.saturating_sub(SHUTDOWN_TIMEOUT).as_secs_f64() * 1e3;
            println!(
                "  {:15} {:25} {:>5} {:>9.0} ms {:>9.0} ms {:>9.0} ms",
                if multi_thread {
                    "multi-thread(2)"
                } else {
                    "current-thread"
                },
                match stop_at {
                    StopAt::Idle => "idle",
                    StopAt::DuringHarvest => "during a harvest",
                },
                runs,
                took[runs / 2].as_secs_f64() * 1e3,
                over(took[runs / 2]),
                over(took[runs - 1]),
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let budget = args[i + 1].parse().unwrap();
        let down = Down::parse(&args[i + 2]);
        let run = Duration::from_millis(args[i + 3].parse().unwrap());
        println!("{}", outage(budget, down, run).to_line());
        return;
    }
    // `cargo test --all-targets` runs bench binaries without `--bench`: a
    // tiny run of each part then, in process.
    if !args.iter().any(|a| a == "--bench") {
        let run = Duration::from_millis(300);
        let row = outage(4 * MIB, Down::ClosedPort, run);
        print_outage_table(run, &[(Down::ClosedPort, row)]);
        shutdown_table(30, 1);
        println!("outage: smoke run only; `cargo bench --bench outage` for the figures");
        return;
    }

    let run = Duration::from_secs(5);
    let rows: Vec<(Down, OutageRun)> = [
        (DEFAULT_MEMORY_BUDGET, Down::ClosedPort),
        (DEFAULT_MEMORY_BUDGET, Down::Silent),
        (4 * MIB, Down::ClosedPort),
        (64 * MIB, Down::ClosedPort),
    ]
    .into_iter()
    .map(|(budget, down)| (down, outage_in_child(budget, down, run)))
    .collect();
    print_outage_table(run, &rows);
    println!();
    shutdown_table(900, 3);
}
