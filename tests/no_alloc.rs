//! Recording into an existing metric series allocates nothing on the heap.
//!
//! A counting global allocator counts the allocations made on this test's
//! thread while `record_count`, `record_gauge` and `record_summary` update
//! series created beforehand, on a current_thread runtime.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use newrelic_telemetry::{MetricBatch, Value};

mod support;
use support::current_thread;

struct Counting;

thread_local! {
    /// Only allocations made on a thread that turned this on are counted, and
    /// each thread has its own count, so other tests running in parallel
    /// cannot disturb it.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = allocations();
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (allocations() - before, out)
}

/// Counts allocations on this thread from now until [`stop_counting`].
fn start_counting() -> usize {
    COUNTING.with(|c| c.set(true));
    allocations()
}

/// Allocations since `start` (from [`start_counting`]).
fn stop_counting(start: usize) -> usize {
    COUNTING.with(|c| c.set(false));
    allocations() - start
}

#[test]
fn the_counter_sees_allocations() {
    let (n, v) = allocations_during(|| std::hint::black_box(vec![1u8; 64]));
    drop(v);
    assert!(n >= 1, "the counting allocator must count");
}

#[test]
fn recording_into_existing_series_allocates_nothing() {
    const NAMES: usize = 20;
    const HOSTS: usize = 10;
    const ROUNDS: usize = 20;

    let rt = current_thread();
    let names: Vec<String> = (0..NAMES).map(|i| format!("bench.metric.{i}")).collect();
    let hosts: Vec<String> = (0..HOSTS).map(|j| format!("host-{j}")).collect();
    let status = Value::from(200);
    let batch = MetricBatch::builder().max_series(10_000).build();

    rt.block_on(async {
        // Create every series (this allocates).
        for name in &names {
            for host in &hosts {
                let attrs = [
                    ("host", host.as_str()),
                    ("env", "prod"),
                    ("region", "us-east-1"),
                ];
                batch.record_count(name, 1.0, attrs).await;
                batch.record_gauge(name, 1.0, attrs).await;
                batch.record_summary(name, 1.0, attrs).await;
                batch
                    .record_count(
                        name,
                        1.0,
                        [
                            ("host", Value::from(host.as_str())),
                            ("status", status.clone()),
                        ],
                    )
                    .await;
            }
        }
    });
    let series = batch.series_count();
    assert_eq!(series, NAMES * HOSTS * 4);
    let host_values: Vec<Value> = hosts.iter().map(|h| Value::from(h.as_str())).collect();

    // Counting starts inside the runtime, so only the recording calls count,
    // and after one uncounted pass: the recording calls yield to the scheduler
    // every so often (Tokio's cooperative budget), and the first yield in a
    // `block_on` makes the scheduler allocate its list of deferred wake-ups once.
    let (allocations, calls) = rt.block_on(async {
        for name in &names {
            for host in &hosts {
                let attrs = [
                    ("host", host.as_str()),
                    ("env", "prod"),
                    ("region", "us-east-1"),
                ];
                batch.record_count(name, 0.0, attrs).await;
            }
        }
        let start = start_counting();
        let mut calls = 0usize;
        for round in 0..ROUNDS {
            let v = round as f64;
            for name in &names {
                for (host, host_value) in hosts.iter().zip(&host_values) {
                    let attrs = [
                        ("host", host.as_str()),
                        ("env", "prod"),
                        ("region", "us-east-1"),
                    ];
                    // The same set in another order names the same series.
                    let reversed = [
                        ("region", "us-east-1"),
                        ("env", "prod"),
                        ("host", host.as_str()),
                    ];
                    batch.record_count(name, v, attrs).await;
                    batch.record_count(name, v, &reversed[..]).await;
                    batch.record_gauge(name, v, attrs).await;
                    batch.record_summary(name, v, attrs).await;
                    batch.record_summary(name, -v, reversed).await;
                    batch
                        .record_count(name, v, [("status", &status), ("host", host_value)])
                        .await;
                    calls += 6;
                }
            }
        }
        (stop_counting(start), calls)
    });

    assert_eq!(calls, NAMES * HOSTS * ROUNDS * 6);
    assert_eq!(batch.series_count(), series, "no series was created");
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations in {calls} recordings into existing series"
    );

    // The recordings really landed.
    let (metrics, _) = rt.block_on(batch.flush());
    assert_eq!(metrics.len(), series);
}

#[test]
fn mixed_maps_integers_and_owned_names_allocate_nothing() {
    use newrelic_telemetry::{ValueRef, attrs};
    use std::collections::{BTreeMap, HashMap};

    const ROUNDS: usize = 50;
    let rt = current_thread();
    let batch = MetricBatch::builder().max_series(10_000).build();
    let name = String::from("http.requests");
    let route = String::from("/orders");
    let status: u16 = 201;
    let map: HashMap<String, Value> = HashMap::from([
        ("route".to_owned(), Value::from("/orders")),
        ("status".to_owned(), Value::from(201)),
    ]);
    let tree: BTreeMap<&str, Value> = BTreeMap::from([
        ("route", Value::from("/cart")),
        ("status", Value::from(200)),
    ]);

    // Each form is recorded once per round: a tuple of pairs, `attrs!`, an
    // array of `ValueRef`s, a HashMap and a BTreeMap, with integer values and
    // a `String` name. The first pass creates the series (and allocates).
    let record_all = || async {
        for _ in 0..2 {
            batch
                .record_count(&name, 1, (("route", route.as_str()), ("status", status)))
                .await;
            batch
                .record_count(&name, 1_u64, attrs!["route" => &route, "status" => status])
                .await;
            batch
                .record_gauge(
                    &name,
                    route.len(),
                    [("route", ValueRef::from(&route)), ("status", status.into())],
                )
                .await;
            batch.record_summary(&name, 3_i32, &map).await;
            batch.record_count(&name, 1, &tree).await;
        }
    };
    rt.block_on(record_all());
    let series = batch.series_count();
    // The tuple, `attrs!` and the HashMap name the same count series.
    assert_eq!(series, 4);

    let allocations = rt.block_on(async {
        // Uncounted passes, past Tokio's cooperative budget (128 calls), so
        // that the scheduler's one-time allocation at the first yield in a
        // `block_on` happens here (see above).
        for _ in 0..30 {
            record_all().await;
        }
        let start = start_counting();
        for _ in 0..ROUNDS {
            record_all().await;
        }
        stop_counting(start)
    });
    assert_eq!(batch.series_count(), series, "no series was created");
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations recording mixed forms into existing series"
    );
}

#[test]
fn handles_allocate_nothing() {
    const SERIES: usize = 50;
    const ROUNDS: usize = 200;

    let rt = current_thread();
    let batch = MetricBatch::builder().max_series(10_000).build();
    let names: Vec<String> = (0..SERIES).map(|i| format!("handle.metric.{i}")).collect();
    let (counters, gauges, summaries, distributions) = rt.block_on(async {
        let mut handles = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for name in &names {
            let attrs = [("env", "prod"), ("region", "us-east-1")];
            handles.0.push(batch.counter(name, attrs).await.unwrap());
            handles.1.push(batch.gauge(name, attrs).await.unwrap());
            handles.2.push(batch.summary(name, attrs).await.unwrap());
            handles
                .3
                .push(batch.distribution(name, attrs).await.unwrap());
        }
        handles
    });
    // Writes first, then a flush, so that the counted writes are both the
    // first of an interval (which counts an item) and later ones. A
    // distribution's first value in each power of two makes its bucket
    // page: the writes reach the powers the counted ones will.
    let write_all = |v: f64| {
        for (((c, g), s), d) in counters
            .iter()
            .zip(&gauges)
            .zip(&summaries)
            .zip(&distributions)
        {
            c.add(v);
            g.set(v);
            s.record(v);
            d.record(v);
        }
    };
    for e in 0..=8 {
        write_all(f64::from(1 << e));
        write_all(-f64::from(1 << e));
    }
    let (first, _) = rt.block_on(batch.flush());
    assert_eq!(first.len(), 3 * SERIES);
    let points = rt.block_on(batch.distributions().flush()).0;
    assert_eq!(points.len(), SERIES);

    // Outside any runtime, as sync code would call them, and inside one.
    let (outside, ()) = allocations_during(|| {
        for round in 0..ROUNDS {
            write_all(round as f64);
        }
    });
    // The first bad value of an interval builds its error for the WARN.
    counters[0].add(f64::NAN);
    let inside = rt.block_on(async {
        let start = start_counting();
        for round in 0..ROUNDS {
            write_all(-(round as f64));
        }
        // Later ones are counted without building an error.
        counters[0].add(f64::NAN);
        stop_counting(start)
    });
    assert_eq!(outside, 0, "{outside} allocations through handles");
    assert_eq!(inside, 0, "{inside} allocations through handles");
    assert_eq!(batch.record_stats().items_dropped_invalid, 2);
    let (metrics, _) = rt.block_on(batch.flush());
    assert_eq!(metrics.len(), 3 * SERIES);
}

#[test]
fn the_metrics_facade_allocates_nothing_for_existing_series() {
    use metrics::{Key, Level, Metadata, Recorder};

    const ROUNDS: u64 = 200;
    let rt = current_thread();
    // Pointed at a local server, harvested only at shutdown.
    let server = rt
        .block_on(newrelic_telemetry::test_util::TestIngestServer::start())
        .unwrap();
    let telemetry = rt
        .block_on(async {
            server
                .telemetry_builder()
                .harvest_interval(std::time::Duration::from_secs(3600))
                .build()
        })
        .unwrap();
    let recorder = telemetry.metrics_recorder();
    // Each call site registers its key (a registry lookup) and records.
    let record = |v: u64| {
        metrics::counter!("facade.count", "route" => "/a").increment(v);
        metrics::counter!("facade.total", "route" => "/a").absolute(v * 10);
        metrics::gauge!("facade.gauge", "pool" => "main").set(v as f64);
        metrics::gauge!("facade.gauge", "pool" => "main").decrement(1.0);
        metrics::histogram!("facade.histogram", "route" => "/a").record(v as f64);
        metrics::histogram!("facade.histogram", "route" => "/a").record_many(v as f64, 3);
    };
    // The first rounds create the series, and the histogram's bucket pages
    // of the powers of two the values reach (this allocates).
    metrics::with_local_recorder(&recorder, || {
        (0..=8).for_each(|e| record(1 << e));
    });
    assert_eq!(telemetry.metrics().series_count(), 4);

    let (through_macros, ()) = allocations_during(|| {
        metrics::with_local_recorder(&recorder, || (2..ROUNDS).for_each(record));
    });
    // A handle from the recorder itself, registered again and kept.
    static KEY: Key = Key::from_static_name("facade.count");
    static METADATA: Metadata<'static> = Metadata::new("no_alloc", Level::INFO, None);
    let counter = recorder.register_counter(&KEY, &METADATA);
    counter.increment(1);
    let (through_handles, ()) = allocations_during(|| {
        for _ in 0..ROUNDS {
            drop(recorder.register_counter(&KEY, &METADATA));
            counter.increment(1);
        }
    });
    assert_eq!(
        telemetry.metrics().series_count(),
        5,
        "no series was created"
    );
    assert_eq!(
        through_macros, 0,
        "{through_macros} allocations recording through the facade"
    );
    assert_eq!(
        through_handles, 0,
        "{through_handles} allocations through the recorder's handles"
    );
    assert_eq!(
        telemetry.metrics().record_stats(),
        Default::default(),
        "nothing refused"
    );
    rt.block_on(telemetry.shutdown());
}
