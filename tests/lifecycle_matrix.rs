//! The lifecycle matrix: every way a service's telemetry stops, on every
//! runtime, against every kind of endpoint, generated from three tables:
//!
//! - runtime ([`FLAVORS`]): `current_thread`, `multi_thread` with 1 worker,
//!   `multi_thread` with 4 workers;
//! - stop ([`Stop`], one test per column): `telemetry.shutdown().await`; the
//!   last `Telemetry` clone dropped (then waiting, bounded, for the
//!   harvesters to finish); SIGTERM through `shutdown_signal()` then
//!   `shutdown()`; the runtime itself dropped; a panic in a handler task
//!   (which records, then panics) before `shutdown()`;
//! - endpoint ([`ENDPOINTS`]): answers 202; down (a port held by a bound but
//!   not listening socket: connections refused, and no other server can take
//!   the port); never answers (a scripted one-hour delay); a 429 storm (every
//!   answer 429 with `Retry-After: 1`); 413 on every request.
//!
//! Each case records a known set (4 metric series, 5 events, 6 logs, 7
//! spans; twice in the panic column), stops, and asserts, per API:
//!
//! - recorded = sent + dropped with a reason: from the final
//!   [`TelemetryReport`] (every drop also reached the `on_drop` callback with
//!   the same reason), or, with no report to read (the last clone dropped),
//!   from what the test server accepted, what `on_drop` was told, and what
//!   the batches still hold (nothing) and refused (nothing);
//! - what each endpoint means: a 202 sends everything (and the server got
//!   it all), a refused, silent or 429 endpoint loses everything at the
//!   shutdown deadline, a 413 drops everything as too large (split down to
//!   single items) or at the deadline;
//! - no hang: every wait in a case is bounded by a tokio timeout, and every
//!   case runs on a thread of its own under a watchdog;
//! - the shutdown deadline (300 ms here) is kept: the stop takes at most
//!   the deadline plus [`SHUTDOWN_SLACK`] on the paused clock, and at most 3x
//!   that in real time (the machine is shared: loose); the measured figure
//!   is printed for every case (`cargo test --test lifecycle_matrix --
//!   --nocapture`).
//!
//! The `current_thread` row runs on tokio's paused clock (the test server
//! runs on the same runtime, over loopback, so the clock only jumps when
//! nothing is left to do but wait on a timer); the deadline is then checked
//! exactly in virtual time, and the real time is bounded loosely as well.
//! Two exceptions run in real time (see [`Case::paused`]): the SIGTERM
//! column, whose signal comes from outside the runtime, and the 413 storm,
//! whose splitting never waits on a timer, so that on a paused clock its
//! deadline would never come. The `multi_thread` rows cannot pause their
//! clock.
//!
//! A dropped runtime gives no report of its own (its harvesters are dropped
//! mid-flight): that column checks that dropping it does not hang or panic,
//! and that the `Telemetry` that outlived it still answers `shutdown()` from
//! another runtime, at once, with a report that says the harvesters did not
//! complete and that loses no item from sight (see [`runtime_dropped`]).
//!
//! The cases of a column run concurrently, at most [`MAX_CONCURRENT_CASES`]
//! at a time across the whole file, each on its own thread (named after the
//! case, as are its runtime's workers) with its own runtime and endpoint.
//! Measured in debug mode on the 2-core VM, with other builds and tests
//! running (load average 4 to 6): the 75 cases take 15 to 18 s (21 s with
//! cargo's start-up); a stop that reaches its deadline returned 305 to
//! 430 ms after it began in real time (468 ms at worst for a 413 storm),
//! and exactly 300 to 301 ms on the paused clock.

use std::fmt;
use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use newrelic_telemetry::client::{DropReason, PayloadReport};
use newrelic_telemetry::harvester::{HarvestReport, SHUTDOWN_SLACK};
use newrelic_telemetry::test_util::{ScriptedResponse, TestIngestServer};
use newrelic_telemetry::{
    Api, Event, EventBatch, Log, LogBatch, MetricBatch, Span, SpanBatch, Telemetry,
    TelemetryBuilder, TelemetryReport, shutdown_signal,
};

/// Each harvester's shutdown deadline, in every case but those whose
/// endpoint accepts everything.
const DEADLINE: Duration = Duration::from_millis(300);
/// The deadline where the endpoint accepts everything: there the case is
/// that everything is sent, which a loaded machine must not turn into a
/// drop at a short deadline.
const ACCEPTS_DEADLINE: Duration = Duration::from_secs(10);
/// How much longer than `DEADLINE + SHUTDOWN_SLACK` a stop may take in real
/// time, on a shared machine.
const LOOSE_FACTOR: u32 = 3;
/// The longest any single wait inside a case may take before the case fails
/// as a hang.
const BOUND: Duration = Duration::from_secs(20);
/// The longest a column waits for its next case to finish.
const WATCHDOG: Duration = Duration::from_secs(45);
/// Cases running at once, across all the tests of this file.
const MAX_CONCURRENT_CASES: usize = 6;
/// Scripted answers queued for the "never answers" and "429" servers: more
/// than any case makes requests.
const SCRIPTED: usize = 10_000;

/// The case's shutdown deadline.
fn deadline(case: Case) -> Duration {
    if case.endpoint == Endpoint::Accepts {
        ACCEPTS_DEADLINE
    } else {
        DEADLINE
    }
}

/// The deadline plus the slack the harvester documents.
fn tight(case: Case) -> Duration {
    deadline(case) + SHUTDOWN_SLACK
}

fn loose(case: Case) -> Duration {
    tight(case) * LOOSE_FACTOR
}

// --- the tables -------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    CurrentThread,
    MultiThread1,
    MultiThread4,
}

const FLAVORS: [Flavor; 3] = [
    Flavor::CurrentThread,
    Flavor::MultiThread1,
    Flavor::MultiThread4,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Shutdown,
    LastCloneDropped,
    Sigterm,
    RuntimeDropped,
    HandlerPanic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Accepts,
    Down,
    NeverAnswers,
    TooManyRequests,
    TooLarge,
}

const ENDPOINTS: [Endpoint; 5] = [
    Endpoint::Accepts,
    Endpoint::Down,
    Endpoint::NeverAnswers,
    Endpoint::TooManyRequests,
    Endpoint::TooLarge,
];

/// Cases that fail because of a crate bug: skipped in the matrix, each
/// reproduced by an `#[ignore = "bug: ..."]` test below. None known.
const KNOWN_BUGS: &[(Flavor, Stop, Endpoint, &str)] = &[];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Case {
    flavor: Flavor,
    stop: Stop,
    endpoint: Endpoint,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flavor = match self.flavor {
            Flavor::CurrentThread => "current_thread",
            Flavor::MultiThread1 => "multi_thread(1)",
            Flavor::MultiThread4 => "multi_thread(4)",
        };
        let stop = match self.stop {
            Stop::Shutdown => "shutdown()",
            Stop::LastCloneDropped => "last clone dropped",
            Stop::Sigterm => "SIGTERM",
            Stop::RuntimeDropped => "runtime dropped",
            Stop::HandlerPanic => "handler panic",
        };
        let endpoint = match self.endpoint {
            Endpoint::Accepts => "202",
            Endpoint::Down => "down",
            Endpoint::NeverAnswers => "never answers",
            Endpoint::TooManyRequests => "429 storm",
            Endpoint::TooLarge => "413 always",
        };
        write!(f, "[{flavor} / {stop} / {endpoint}]")
    }
}

impl Case {
    fn column(stop: Stop) -> Vec<Case> {
        FLAVORS
            .iter()
            .flat_map(|&flavor| {
                ENDPOINTS.iter().map(move |&endpoint| Case {
                    flavor,
                    stop,
                    endpoint,
                })
            })
            .collect()
    }

    fn known_bug(self) -> Option<&'static str> {
        KNOWN_BUGS
            .iter()
            .find(|(f, s, e, _)| (*f, *s, *e) == (self.flavor, self.stop, self.endpoint))
            .map(|(.., bug)| *bug)
    }

    /// Whether the case runs on tokio's paused clock: on `current_thread`,
    /// except for SIGTERM (the signal comes from outside the runtime, and the
    /// clock would jump ahead while the `kill` runs) and for the 413 storm
    /// (splitting and resending never waits on a timer, so no time passes on
    /// a paused clock and its deadline never comes: only real time shows
    /// whether the deadline cuts the storm short).
    fn paused(self) -> bool {
        self.flavor == Flavor::CurrentThread
            && self.stop != Stop::Sigterm
            && self.endpoint != Endpoint::TooLarge
    }

    /// The case's runtime; its worker threads carry the case's name, so that
    /// a panic on them names the case.
    fn runtime(self) -> tokio::runtime::Runtime {
        let mut builder = match self.flavor {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::MultiThread1 | Flavor::MultiThread4 => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(if self.flavor == Flavor::MultiThread1 {
                    1
                } else {
                    4
                });
                builder
            }
        };
        builder.enable_all().thread_name(self.to_string());
        if self.paused() {
            builder.start_paused(true);
        }
        builder.build().expect("the runtime builds")
    }
}

// --- what is recorded, and what became of it --------------------------------

const APIS: [Api; 4] = [Api::Metric, Api::Event, Api::Log, Api::Span];

fn slot(api: Api) -> usize {
    APIS.iter()
        .position(|a| *a == api)
        .expect("one of the four APIs")
}

/// Items per API, in the order of [`APIS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts([u64; 4]);

impl Counts {
    fn of(&self, api: Api) -> u64 {
        self.0[slot(api)]
    }

    fn plus(self, other: Counts) -> Counts {
        let mut sum = self;
        for (a, b) in sum.0.iter_mut().zip(other.0) {
            *a += b;
        }
        sum
    }
}

/// What one call of [`record_set`] records: 4 metric series, 5 events, 6
/// logs and 7 spans.
const SET: Counts = Counts([4, 5, 6, 7]);

/// Records [`SET`], every item marked with `part` (so that two parts make
/// distinct metric series).
async fn record_set(telemetry: &Telemetry, part: &'static str) -> Counts {
    let metrics = telemetry.metrics();
    metrics
        .record_count("matrix.requests", 1, [("part", part), ("route", "/a")])
        .await;
    metrics
        .record_count("matrix.requests", 2, [("part", part), ("route", "/b")])
        .await;
    metrics
        .record_gauge("matrix.queue.depth", 3, [("part", part)])
        .await;
    metrics
        .record_summary("matrix.latency.ms", 12.5, [("part", part)])
        .await;
    for seq in 0..SET.of(Api::Event) {
        let event = Event::new("MatrixEvent")
            .with_attribute("part", part)
            .with_attribute("seq", seq as i64);
        telemetry.events().record(event).await;
    }
    for seq in 0..SET.of(Api::Log) {
        let log = Log::new(format!("{part} log {seq}")).with_attribute("part", part);
        telemetry.logs().record(log).await;
    }
    for seq in 0..SET.of(Api::Span) {
        let span = Span::new(format!("{part} span {seq}"))
            .with_attribute("part", part)
            .finish();
        telemetry.spans().record(span).await;
    }
    SET
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    TooLarge,
    Shutdown,
    Other,
}

/// What the `on_drop` callback was told: API, reason, items.
#[derive(Default)]
struct Drops(Mutex<Vec<(Api, Why, u64, String)>>);

impl Drops {
    fn lock(&self) -> MutexGuard<'_, Vec<(Api, Why, u64, String)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, report: &PayloadReport) {
        let Some(reason) = report.drop_reason() else {
            return;
        };
        let why = match reason {
            DropReason::TooLarge { .. } => Why::TooLarge,
            DropReason::ShutdownDeadline => Why::Shutdown,
            _ => Why::Other,
        };
        let entry = (report.api(), why, report.items() as u64, reason.to_string());
        self.lock().push(entry);
    }

    /// Items of `api` dropped, for `why` (any reason if `None`).
    fn items(&self, api: Api, why: Option<Why>) -> u64 {
        self.lock()
            .iter()
            .filter(|(a, w, ..)| *a == api && why.is_none_or(|why| why == *w))
            .map(|(_, _, n, _)| n)
            .sum()
    }

    fn total(&self, why: Option<Why>) -> u64 {
        APIS.iter().map(|&api| self.items(api, why)).sum()
    }

    /// The reasons given for drops other than the two expected ones.
    fn others(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, why, ..)| *why == Why::Other)
            .map(|(api, _, n, reason)| format!("{api:?}: {n} ({reason})"))
            .collect()
    }
}

/// Where a case's telemetry sends.
struct Target {
    /// The scripted test server, on the case's runtime (none when down).
    server: Option<TestIngestServer>,
    /// Down: a socket bound to a port and never listening, and its URL.
    /// Connections are refused, and no other test's server can take the
    /// port while the case holds it (as it could a port whose listener was
    /// dropped).
    refusing: Option<(tokio::net::TcpSocket, String)>,
}

impl Target {
    async fn start(endpoint: Endpoint) -> Target {
        if endpoint == Endpoint::Down {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            socket
                .bind(([127, 0, 0, 1], 0).into())
                .expect("a loopback port");
            let url = format!("http://{}", socket.local_addr().expect("its address"));
            return Target {
                server: None,
                refusing: Some((socket, url)),
            };
        }
        let server = TestIngestServer::start()
            .await
            .expect("the test server starts");
        match endpoint {
            Endpoint::NeverAnswers => server.respond_n(
                SCRIPTED,
                ScriptedResponse::status(202).with_delay(Duration::from_secs(3600)),
            ),
            Endpoint::TooManyRequests => server.respond_n(
                SCRIPTED,
                ScriptedResponse::status(429).with_header("Retry-After", "1"),
            ),
            // Every body is over one byte: 413, whatever its size.
            Endpoint::TooLarge => server.set_max_body_bytes(Some(1)),
            Endpoint::Accepts | Endpoint::Down => {}
        }
        Target {
            server: Some(server),
            refusing: None,
        }
    }

    fn builder(&self) -> TelemetryBuilder {
        match (&self.server, &self.refusing) {
            (Some(server), _) => server.telemetry_builder(),
            (None, Some((_, url))) => Telemetry::builder()
                .environment(std::iter::empty::<(String, String)>())
                .api_key("test-key")
                // No path: each API's own is appended.
                .metric_endpoint(url.clone())
                .event_endpoint(url.clone())
                .log_endpoint(url.clone())
                .span_endpoint(url.clone()),
            (None, None) => unreachable!("a target has a server or a refusing port"),
        }
    }

    /// Items of `api` the server accepted (answered 2xx).
    fn accepted(&self, api: Api) -> u64 {
        let Some(server) = &self.server else {
            return 0;
        };
        let items = match api {
            Api::Metric => server.metrics().len(),
            Api::Event => server.events().len(),
            Api::Log => server.logs().len(),
            Api::Span => server.spans().len(),
            _ => unreachable!("four APIs"),
        };
        items as u64
    }
}

/// The four batches, held past the `Telemetry` (they are `Arc`s).
struct Batches {
    metrics: Arc<MetricBatch>,
    events: Arc<EventBatch>,
    logs: Arc<LogBatch>,
    spans: Arc<SpanBatch>,
}

impl Batches {
    fn of(telemetry: &Telemetry) -> Batches {
        Batches {
            metrics: telemetry.metrics().clone(),
            events: telemetry.events().clone(),
            logs: telemetry.logs().clone(),
            spans: telemetry.spans().clone(),
        }
    }

    /// Whether these are the last references: each harvester holds its
    /// batch until its task ends, so all four have finished.
    fn harvesters_finished(&self) -> bool {
        Arc::strong_count(&self.metrics) == 1
            && Arc::strong_count(&self.events) == 1
            && Arc::strong_count(&self.logs) == 1
            && Arc::strong_count(&self.spans) == 1
    }

    /// Items of `api` the pipeline holds (recorded, neither sent nor dropped).
    fn held(&self, api: Api) -> u64 {
        let memory = match api {
            Api::Metric => self.metrics.memory(),
            Api::Event => self.events.memory(),
            Api::Log => self.logs.memory(),
            Api::Span => self.spans.memory(),
            _ => unreachable!("four APIs"),
        };
        memory.held_items as u64
    }

    /// Items of `api` the batch refused.
    fn refused(&self, api: Api) -> u64 {
        let record = match api {
            Api::Metric => self.metrics.record_stats(),
            Api::Event => self.events.record_stats(),
            Api::Log => self.logs.record_stats(),
            Api::Span => self.spans.record_stats(),
            _ => unreachable!("four APIs"),
        };
        record.items_dropped()
    }
}

/// A case's endpoint, telemetry and drop callback, and what it recorded.
struct Setup {
    case: Case,
    target: Target,
    telemetry: Telemetry,
    drops: Arc<Drops>,
    recorded: Counts,
}

impl Setup {
    async fn new(case: Case) -> Setup {
        let target = Target::start(case.endpoint).await;
        let drops = Arc::new(Drops::default());
        let on_drop = drops.clone();
        let telemetry = target
            .builder()
            .service_name("lifecycle-matrix")
            // No harvest but the last one: each metric series is one item.
            .harvest_interval(Duration::from_secs(3600))
            .shutdown_timeout(deadline(case))
            .client(move |c| c.on_drop(move |report: &PayloadReport| on_drop.add(report)))
            .build()
            .unwrap_or_else(|e| panic!("{case}: the telemetry builds: {e}"));
        Setup {
            case,
            target,
            telemetry,
            drops,
            recorded: Counts::default(),
        }
    }

    /// Records [`SET`] and checks that the pipelines hold all of it.
    async fn record(&mut self, part: &'static str) {
        let added = record_set(&self.telemetry, part).await;
        self.recorded = self.recorded.plus(added);
        self.check_held();
    }

    /// Everything recorded so far is held, nothing was refused.
    fn check_held(&self) {
        let case = self.case;
        let stats = self.telemetry.stats();
        let held = [
            stats.metrics.memory.held_items,
            stats.events.memory.held_items,
            stats.logs.memory.held_items,
            stats.spans.memory.held_items,
        ]
        .map(|n| n as u64);
        assert_eq!(
            Counts(held),
            self.recorded,
            "{case}: the pipelines hold what was recorded"
        );
        assert_eq!(stats.items_refused(), 0, "{case}: nothing refused");
    }

    /// The final report accounts for every item as the endpoint implies;
    /// returns a one-line summary.
    fn check_report(&self, report: &TelemetryReport) -> String {
        let case = self.case;
        assert_eq!(report.items_refused(), 0, "{case}: nothing refused");
        for (api, harvest) in harvests(report) {
            assert_eq!(harvest.api, api);
            assert!(
                harvest.completed,
                "{case} {api:?}: the harvester ran its shutdown to the end: {harvest:?}"
            );
            assert_eq!(
                harvest.memory.held_items, 0,
                "{case} {api:?}: nothing left held: {harvest:?}"
            );
            let d = &harvest.delivery;
            // Every drop the report counts reached `on_drop`, with its reason.
            assert_eq!(
                (
                    self.drops.items(api, None),
                    self.drops.items(api, Some(Why::Shutdown)),
                    self.drops.items(api, Some(Why::TooLarge)),
                ),
                (
                    d.items_dropped(),
                    d.items_dropped_shutdown,
                    d.items_dropped_too_large
                ),
                "{case} {api:?}: the callback was told of every drop: {d:?}"
            );
            self.check_outcome(api, d.items_sent, Some(harvest.deadline_exceeded));
            if self.case.endpoint == Endpoint::TooLarge && !harvest.deadline_exceeded {
                // One payload split down to single items: n - 1 splits.
                assert_eq!(
                    d.payloads_split,
                    self.recorded.of(api) - 1,
                    "{case} {api:?}: {d:?}"
                );
            }
            if self.target.server.is_some() {
                assert_eq!(
                    self.target.accepted(api),
                    d.items_sent,
                    "{case} {api:?}: the server accepted what the report says was sent"
                );
            }
        }
        format!(
            "sent {}, dropped {} (deadline {}, 413 {})",
            report.items_sent(),
            report.items_dropped(),
            self.drops.total(Some(Why::Shutdown)),
            self.drops.total(Some(Why::TooLarge)),
        )
    }

    fn check_outcome(&self, api: Api, sent: u64, deadline_exceeded: Option<bool>) {
        check_outcome(
            self.case,
            &self.recorded,
            &self.drops,
            api,
            sent,
            deadline_exceeded,
        );
    }
}

/// recorded = sent + dropped with a reason, for `api`, and the reasons are
/// the endpoint's. `deadline_exceeded` is the report's, if there is one.
fn check_outcome(
    case: Case,
    recorded: &Counts,
    drops: &Drops,
    api: Api,
    sent: u64,
    deadline_exceeded: Option<bool>,
) {
    let recorded = recorded.of(api);
    let dropped = drops.items(api, None);
    let at_deadline = drops.items(api, Some(Why::Shutdown));
    let too_large = drops.items(api, Some(Why::TooLarge));
    let others = drops.others();
    assert_eq!(
        sent + dropped,
        recorded,
        "{case} {api:?}: recorded = sent + dropped with a reason \
         (sent {sent}, deadline {at_deadline}, 413 {too_large}, other {others:?})"
    );
    assert!(others.is_empty(), "{case}: unexpected drops: {others:?}");
    match case.endpoint {
        Endpoint::Accepts => {
            assert_eq!(sent, recorded, "{case} {api:?}: everything sent");
            assert!(
                deadline_exceeded != Some(true),
                "{case} {api:?}: the deadline was not reached"
            );
        }
        Endpoint::Down | Endpoint::NeverAnswers | Endpoint::TooManyRequests => {
            assert_eq!(
                at_deadline, recorded,
                "{case} {api:?}: everything lost at the shutdown deadline"
            );
            assert!(
                deadline_exceeded != Some(false),
                "{case} {api:?}: the deadline was reached"
            );
        }
        Endpoint::TooLarge => {
            assert_eq!(sent, 0, "{case} {api:?}: nothing accepted");
            assert_eq!(
                too_large + at_deadline,
                recorded,
                "{case} {api:?}: dropped as too large, or at the deadline"
            );
            if deadline_exceeded == Some(false) {
                assert_eq!(too_large, recorded, "{case} {api:?}");
            }
        }
    }
}

fn harvests(report: &TelemetryReport) -> [(Api, &HarvestReport); 4] {
    [
        (Api::Metric, &report.metrics),
        (Api::Event, &report.events),
        (Api::Log, &report.logs),
        (Api::Span, &report.spans),
    ]
}

// --- time --------------------------------------------------------------------

/// How long a stop took: in real time, and on the paused clock if the case
/// runs on one.
#[derive(Clone, Copy, Debug)]
struct Took {
    real: Duration,
    paused: Option<Duration>,
}

impl fmt::Display for Took {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:7.1} ms real", self.real.as_secs_f64() * 1e3)?;
        match self.paused {
            Some(paused) => write!(f, " ({:5.1} ms paused clock)", paused.as_secs_f64() * 1e3),
            None => write!(f, "{:26}", ""),
        }
    }
}

/// Measures a stop; started and stopped inside the case's runtime.
struct Stopwatch {
    real: Instant,
    tokio: tokio::time::Instant,
    paused: bool,
}

impl Stopwatch {
    fn start(case: Case) -> Stopwatch {
        Stopwatch {
            real: Instant::now(),
            tokio: tokio::time::Instant::now(),
            paused: case.paused(),
        }
    }

    fn stop(&self) -> Took {
        Took {
            real: self.real.elapsed(),
            paused: self.paused.then(|| self.tokio.elapsed()),
        }
    }
}

/// The stop kept the deadline: exactly (deadline + slack) on the paused
/// clock, loosely (3x) in real time; and it did wait for the deadline when
/// it was exceeded.
fn check_took(case: Case, took: Took, deadline_exceeded: bool) {
    if let Some(paused) = took.paused {
        assert!(
            paused <= tight(case),
            "{case}: the stop took {paused:?} on the paused clock, over {:?} + {SHUTDOWN_SLACK:?}",
            deadline(case)
        );
        if deadline_exceeded {
            assert!(
                paused >= deadline(case),
                "{case}: {paused:?} (paused clock)"
            );
        }
    } else if deadline_exceeded {
        assert!(took.real >= deadline(case), "{case}: {:?}", took.real);
    }
    assert!(
        took.real <= loose(case),
        "{case}: the stop took {:?}, over {LOOSE_FACTOR} x ({:?} + {SHUTDOWN_SLACK:?})",
        took.real,
        deadline(case)
    );
}

/// `future`, bounded by [`BOUND`]: a hang fails the case, naming what hung.
async fn within<F: Future>(case: Case, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(BOUND, future).await {
        Ok(output) => output,
        Err(_) => panic!("{case}: {what} did not finish within {BOUND:?}: a hang"),
    }
}

// --- the stops -----------------------------------------------------------------

/// What a case measured, for the column's table.
struct Outcome {
    case: Case,
    took: Took,
    note: String,
}

/// `telemetry.shutdown().await`.
async fn by_shutdown(case: Case) -> Outcome {
    let mut setup = Setup::new(case).await;
    setup.record("main").await;
    let watch = Stopwatch::start(case);
    let report = within(case, "shutdown()", setup.telemetry.shutdown()).await;
    let took = watch.stop();
    let note = setup.check_report(&report);
    check_took(case, took, report.deadline_exceeded());
    Outcome { case, took, note }
}

/// A handler task records, then panics; the telemetry goes on recording,
/// is shut down, and ships both parts.
async fn by_handler_panic(case: Case) -> Outcome {
    let mut setup = Setup::new(case).await;
    let handler = setup.telemetry.clone();
    let task = tokio::spawn(async move {
        record_set(&handler, "handler").await;
        panic!("{EXPECTED_PANIC}: the handler failed after recording");
    });
    let joined = within(case, "the handler task", task).await;
    assert!(
        joined.as_ref().is_err_and(|e| e.is_panic()),
        "{case}: the handler task panicked: {joined:?}"
    );
    // What the handler recorded before it panicked is held...
    setup.recorded = setup.recorded.plus(SET);
    setup.check_held();
    // ...and the telemetry keeps working.
    setup.record("main").await;

    let watch = Stopwatch::start(case);
    let report = within(case, "shutdown()", setup.telemetry.shutdown()).await;
    let took = watch.stop();
    let note = setup.check_report(&report);
    check_took(case, took, report.deadline_exceeded());
    if case.endpoint == Endpoint::Accepts {
        let server = setup.target.server.as_ref().expect("a server");
        let from_handler = |items: Vec<serde_json::Value>| {
            items
                .iter()
                .filter(|item| item["attributes"]["part"] == "handler" || item["part"] == "handler")
                .count() as u64
        };
        let shipped = Counts([
            from_handler(server.metrics()),
            from_handler(server.events()),
            from_handler(server.logs()),
            from_handler(server.spans()),
        ]);
        assert_eq!(shipped, SET, "{case}: the handler's items were shipped");
    }
    Outcome { case, took, note }
}

/// The last clone dropped: no report. Wait (bounded) for the harvesters to
/// finish in the background, then account for every item from what is
/// left: the server's accepted items, the `on_drop` callback's drops with
/// their reasons, and the batches (nothing held, nothing refused).
async fn by_last_clone(case: Case) -> Outcome {
    let mut setup = Setup::new(case).await;
    setup.record("main").await;
    let batches = Batches::of(&setup.telemetry);
    let Setup {
        telemetry,
        target,
        drops,
        recorded,
        ..
    } = setup;
    let watch = Stopwatch::start(case);
    drop(telemetry);
    within(
        case,
        "the harvesters after the last clone was dropped",
        async {
            while !batches.harvesters_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        },
    )
    .await;
    let took = watch.stop();

    for api in APIS {
        assert_eq!(batches.held(api), 0, "{case} {api:?}: nothing left held");
        assert_eq!(batches.refused(api), 0, "{case} {api:?}: nothing refused");
        check_outcome(case, &recorded, &drops, api, target.accepted(api), None);
    }
    let at_deadline = drops.total(Some(Why::Shutdown));
    check_took(case, took, at_deadline > 0);
    let sent: u64 = APIS.iter().map(|&api| target.accepted(api)).sum();
    let note = format!(
        "sent {sent}, dropped {} (deadline {at_deadline}, 413 {})",
        drops.total(None),
        drops.total(Some(Why::TooLarge)),
    );
    Outcome { case, took, note }
}

/// One wave of the SIGTERM column: how a case says it is ready for the
/// signal, and when the signal was sent.
struct Wave {
    armed: mpsc::Sender<Case>,
    sent: Arc<OnceLock<Instant>>,
}

/// As a service does: wait for `shutdown_signal()`, then `shutdown()`.
async fn by_sigterm(case: Case, wave: &Wave) -> Outcome {
    let mut setup = Setup::new(case).await;
    setup.record("main").await;
    // Its handlers are installed now, before the signal is sent.
    let signal = shutdown_signal();
    wave.armed.send(case).expect("the column waits");
    within(case, "the SIGTERM", signal).await;
    let latency = wave
        .sent
        .get()
        .map_or_else(|| "?".to_owned(), |sent| format!("{:.1?}", sent.elapsed()));

    let watch = Stopwatch::start(case);
    let report = within(case, "shutdown()", setup.telemetry.shutdown()).await;
    let took = watch.stop();
    let note = setup.check_report(&report);
    check_took(case, took, report.deadline_exceeded());
    let note = format!("{note}; signal seen {latency} after it was sent");
    Outcome { case, took, note }
}

/// The runtime dropped under running harvesters (a payload on the wire for
/// each API). There is no report from the harvesters themselves: their
/// tasks are dropped mid-flight. What can be asserted: dropping the runtime
/// neither hangs nor panics (no task panicked on it either), the thread
/// exits, and the `Telemetry` that outlived the runtime still answers
/// `shutdown()`, from another runtime, at once (no hang), with a report that
/// says no harvester completed and loses no item from sight: every item is
/// sent, dropped with a reason, or still counted as held. (Only bounds: a
/// payload cut mid-split can be counted both dropped, for the parts already
/// answered, and held.)
fn runtime_dropped(case: Case, runtime: tokio::runtime::Runtime) -> Outcome {
    let setup = runtime.block_on(async {
        let mut setup = Setup::new(case).await;
        setup.record("main").await;
        setup.telemetry.harvest_now();
        match &setup.target.server {
            Some(server) => assert!(
                within(
                    case,
                    "the first requests",
                    server.wait_for_requests(4, BOUND)
                )
                .await,
                "{case}: each harvester sent a request"
            ),
            // Refused at once, retried at once, then a 1 s backoff.
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        setup
    });
    let started = Instant::now();
    drop(runtime);
    let dropped_in = started.elapsed();
    assert!(
        dropped_in <= loose(case),
        "{case}: dropping the runtime took {dropped_in:?}"
    );

    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("another runtime");
    let (report, took) = other.block_on(async {
        let watch = Stopwatch {
            real: Instant::now(),
            tokio: tokio::time::Instant::now(),
            paused: false,
        };
        let report = within(
            case,
            "shutdown() after the runtime",
            setup.telemetry.shutdown(),
        )
        .await;
        (report, watch.stop())
    });
    assert!(
        took.real <= loose(case),
        "{case}: shutdown() after the runtime took {:?}",
        took.real
    );
    for (api, harvest) in harvests(&report) {
        let recorded = setup.recorded.of(api);
        let d = &harvest.delivery;
        let held = harvest.memory.held_items as u64;
        assert!(
            !harvest.completed,
            "{case} {api:?}: the report says the harvester did not complete"
        );
        assert_eq!(harvest.record.items_dropped(), 0, "{case} {api:?}");
        assert_eq!(
            setup.drops.items(api, None),
            d.items_dropped(),
            "{case} {api:?}: the callback was told of every drop"
        );
        assert!(
            d.items_sent + d.items_dropped() <= recorded,
            "{case} {api:?}: nothing counted twice as sent or dropped: {d:?}"
        );
        assert!(
            d.items_sent + d.items_dropped() + held >= recorded,
            "{case} {api:?}: every item sent, dropped or held: {d:?}, held {held}"
        );
        assert!(
            setup.target.accepted(api) >= d.items_sent,
            "{case} {api:?}: what was counted sent reached the server"
        );
        if case.endpoint != Endpoint::Accepts {
            assert_eq!(d.items_sent, 0, "{case} {api:?}");
        }
    }
    let held: usize = harvests(&report)
        .iter()
        .map(|(_, h)| h.memory.held_items)
        .sum();
    let note = format!(
        "runtime dropped in {:.1} ms; then shutdown() in {:.1} ms: sent {}, dropped {}, held {held}",
        dropped_in.as_secs_f64() * 1e3,
        took.real.as_secs_f64() * 1e3,
        report.items_sent(),
        report.items_dropped(),
    );
    // Dropped outside any runtime: must not panic.
    let Setup {
        telemetry, target, ..
    } = setup;
    drop(other);
    drop(telemetry);
    drop(target);
    Outcome {
        case,
        took: Took {
            real: dropped_in,
            paused: None,
        },
        note,
    }
}

fn run_case(case: Case, wave: Option<&Wave>) -> Outcome {
    let runtime = case.runtime();
    match case.stop {
        Stop::Shutdown => runtime.block_on(by_shutdown(case)),
        Stop::LastCloneDropped => runtime.block_on(by_last_clone(case)),
        Stop::Sigterm => runtime.block_on(by_sigterm(case, wave.expect("a wave"))),
        Stop::RuntimeDropped => runtime_dropped(case, runtime),
        Stop::HandlerPanic => runtime.block_on(by_handler_panic(case)),
    }
}

// --- running a column --------------------------------------------------------

/// The message of the handler's deliberate panic, silenced by [`panic_hook`].
const EXPECTED_PANIC: &str = "lifecycle-matrix: expected handler panic";

/// Panics other than the deliberate one: the panicking thread's name (a
/// case's, for its own thread and its runtime's workers) and the message.
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Silences the handler's deliberate panic and records every other one, so
/// that a panic inside a task (which tokio catches) still fails its case.
fn panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = panic_message(info.payload());
            if message.contains(EXPECTED_PANIC) {
                return;
            }
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            PANICS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((thread, message));
            default(info);
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic)".to_owned()
    }
}

/// Limits the cases running at once, across the tests of this file.
struct Limiter {
    free: Mutex<usize>,
    freed: Condvar,
}

static LIMITER: Limiter = Limiter {
    free: Mutex::new(MAX_CONCURRENT_CASES),
    freed: Condvar::new(),
};

struct Permit(usize);

impl Limiter {
    fn acquire(&'static self, n: usize) -> Permit {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free < n {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= n;
        Permit(n)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        *LIMITER.free.lock().unwrap_or_else(PoisonError::into_inner) += self.0;
        LIMITER.freed.notify_all();
    }
}

type Finished = (Case, Result<Outcome, String>);

/// Runs `case` on a thread of its own, named after it; its outcome (or its
/// failure, as a message) is sent on `done`.
fn spawn_case(case: Case, permit: bool, wave: Option<Wave>, done: mpsc::Sender<Finished>) {
    std::thread::Builder::new()
        .name(case.to_string())
        .spawn(move || {
            let _permit = permit.then(|| LIMITER.acquire(1));
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_case(case, wave.as_ref())
            }))
            .map_err(|payload| panic_message(payload.as_ref()));
            let _ = done.send((case, result));
        })
        .expect("a thread for the case");
}

/// Waits for `cases` to finish (each within [`WATCHDOG`] of the previous),
/// prints their figures, and fails naming every case that failed or hung.
fn collect(title: &str, cases: &[Case], done: &mpsc::Receiver<Finished>) {
    let mut pending: Vec<Case> = cases.to_vec();
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    while !pending.is_empty() {
        match done.recv_timeout(WATCHDOG) {
            Ok((case, result)) => {
                pending.retain(|c| *c != case);
                let name = case.to_string();
                let panicked: Vec<String> = PANICS
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .filter(|(thread, _)| *thread == name)
                    .map(|(_, message)| message.clone())
                    .collect();
                match result {
                    Ok(_) if !panicked.is_empty() => {
                        failures.push(format!("{case}: a task panicked: {panicked:?}"));
                    }
                    Ok(outcome) => outcomes.push(outcome),
                    Err(message) => failures.push(format!("{case}: {message}")),
                }
            }
            Err(_) => {
                for case in &pending {
                    failures.push(format!(
                        "{case}: did not finish within {WATCHDOG:?}: a hang"
                    ));
                }
                break;
            }
        }
    }
    outcomes.sort_by_key(|o| {
        let flavor = FLAVORS.iter().position(|f| *f == o.case.flavor);
        let endpoint = ENDPOINTS.iter().position(|e| *e == o.case.endpoint);
        (flavor, endpoint)
    });
    println!(
        "{title}: deadline {DEADLINE:?} ({ACCEPTS_DEADLINE:?} where the endpoint accepts) + slack \
         {SHUTDOWN_SLACK:?}; real-time bound 3x"
    );
    for o in &outcomes {
        println!("  {:<54} {}  {}", o.case.to_string(), o.took, o.note);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Runs the 15 cases of a column, concurrently within the limit.
fn run_column(stop: Stop) {
    panic_hook();
    let mut cases = Case::column(stop);
    cases.retain(|case| match case.known_bug() {
        // A known bug (see `KNOWN_BUGS`): skipped here, reproduced by its
        // own ignored test.
        Some(bug) => {
            println!("{case}: skipped, known bug: {bug}");
            false
        }
        None => true,
    });
    let (done, finished) = mpsc::channel();
    for &case in &cases {
        spawn_case(case, true, None, done.clone());
    }
    drop(done);
    collect(&format!("{stop:?}"), &cases, &finished);
}

fn send_sigterm_to_this_process() {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("the kill command runs");
    assert!(status.success(), "kill -TERM: {status}");
}

// --- the tests: one per stop ------------------------------------------------------

#[test]
fn stop_with_shutdown() {
    run_column(Stop::Shutdown);
}

#[test]
fn stop_by_dropping_the_last_clone() {
    run_column(Stop::LastCloneDropped);
}

#[test]
fn stop_by_dropping_the_runtime() {
    run_column(Stop::RuntimeDropped);
}

#[test]
fn stop_after_a_handler_panics() {
    run_column(Stop::HandlerPanic);
}

/// SIGTERM goes to the whole process, and tokio hands it to every listener
/// in every runtime: cases cannot each get a signal of their own. So this
/// column runs in waves, one per runtime flavour, serialized: the wave's
/// five cases record and install `shutdown_signal()` (its handlers are
/// installed when it is called inside a runtime, as `tests/signal.rs`
/// relies on), then one SIGTERM is sent to this process and every case of
/// the wave sees it and shuts down. It is sent only once a handler is
/// installed: from then on tokio's handler stays for the life of the
/// process, so the signal can never end it. No other test here listens for
/// signals, so the other columns, running meanwhile, are not affected.
#[test]
fn stop_on_sigterm() {
    panic_hook();
    for flavor in FLAVORS {
        let cases: Vec<Case> = ENDPOINTS
            .iter()
            .map(|&endpoint| Case {
                flavor,
                stop: Stop::Sigterm,
                endpoint,
            })
            .filter(|case| case.known_bug().is_none())
            .collect();
        let _permits = LIMITER.acquire(cases.len().min(MAX_CONCURRENT_CASES));
        let (armed, armed_rx) = mpsc::channel();
        let sent = Arc::new(OnceLock::new());
        let (done, finished) = mpsc::channel();
        for &case in &cases {
            let wave = Wave {
                armed: armed.clone(),
                sent: sent.clone(),
            };
            spawn_case(case, false, Some(wave), done.clone());
        }
        drop((armed, done));
        let mut ready = 0;
        while ready < cases.len() && armed_rx.recv_timeout(BOUND).is_ok() {
            ready += 1;
        }
        if ready > 0 {
            let _ = sent.set(Instant::now());
            send_sigterm_to_this_process();
        }
        collect(&format!("Sigterm, {flavor:?}"), &cases, &finished);
    }
}
