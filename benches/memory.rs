//! Target 6: bytes per aggregated series with 3 string attributes, measured
//! with 1,000,000 series in a batch (100 names x 10,000 attribute sets).
//!
//! Each layout is built in a child process of its own (this binary run again
//! with `--child LAYOUT`), so one layout's freed memory cannot hide another's
//! growth. Two figures per layout: live heap bytes (a counting global
//! allocator: allocated minus freed) and VmRSS growth, both divided by the
//! number of series. The floors are the two layouts of the performance notes:
//! interned names and attribute sets as keys of one `HashMap`, and a map from
//! `(u32 name id, u32 attribute-set id)`. The peer, `opentelemetry_sdk` (one
//! counter per name, its cardinality limit raised with a view, a manual
//! reader), is measured the same way.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use newrelic_telemetry::MetricBatch;

/// A hashable stand-in for `Value` (same size: 24 bytes).
#[derive(Clone, PartialEq, Eq, Hash)]
#[allow(dead_code)]
enum V {
    S(Arc<str>),
    I(i64),
    F(u64),
    B(bool),
}

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NAMES: usize = 100;
const SETS: usize = 10_000;
const SERIES: usize = NAMES * SETS;

fn rss_bytes() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<isize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Builds one layout with `SERIES` series and prints `live_bytes rss_bytes`
/// of growth, keeping the layout alive until after the measurement.
fn child(layout: &str) {
    let names: Vec<String> = (0..NAMES).map(|i| format!("bench.metric.{i}")).collect();
    let hosts: Vec<String> = (0..SETS).map(|j| format!("host-{j}")).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (live0, rss0) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    let keep: Box<dyn std::any::Any> = match layout {
        "batch" => {
            let batch = MetricBatch::builder()
                .max_series(2 * SERIES)
                .memory_budget(1 << 30)
                .build();
            rt.block_on(async {
                for i in 0..SERIES {
                    let (name, host) = (&names[i % NAMES], &hosts[i / NAMES]);
                    batch
                        .record_count(
                            name,
                            1.0,
                            [
                                ("host", host.as_str()),
                                ("env", "prod"),
                                ("region", "us-east-1"),
                            ],
                        )
                        .await;
                }
            });
            assert_eq!(batch.series_count(), SERIES);
            Box::new(batch)
        }
        "interned" => {
            type Set = Arc<[(Arc<str>, V)]>;
            let keys: Vec<Arc<str>> = ["env", "host", "region"].map(Arc::from).to_vec();
            let (prod, region) = (V::S("prod".into()), V::S("us-east-1".into()));
            let name_ids: Vec<Arc<str>> = names.iter().map(|n| Arc::from(n.as_str())).collect();
            let sets: Vec<Set> = hosts
                .iter()
                .map(|h| {
                    Arc::from(vec![
                        (keys[0].clone(), prod.clone()),
                        (keys[1].clone(), V::S(h.as_str().into())),
                        (keys[2].clone(), region.clone()),
                    ])
                })
                .collect();
            let mut map: HashMap<(Arc<str>, Set), f64> = HashMap::new();
            for i in 0..SERIES {
                map.insert((name_ids[i % NAMES].clone(), sets[i / NAMES].clone()), 1.0);
            }
            Box::new((map, name_ids, sets))
        }
        "ids" => {
            let mut map: HashMap<(u32, u32), f64> = HashMap::new();
            for i in 0..SERIES {
                map.insert(((i % NAMES) as u32, (i / NAMES) as u32), 1.0);
            }
            Box::new(map)
        }
        "otel" => {
            use opentelemetry::KeyValue;
            use opentelemetry::metrics::MeterProvider as _;
            use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, Stream, Temporality};
            let reader = ManualReader::builder()
                .with_temporality(Temporality::Delta)
                .build();
            let provider = SdkMeterProvider::builder()
                .with_reader(reader)
                .with_view(|_: &opentelemetry_sdk::metrics::Instrument| {
                    Stream::builder()
                        .with_cardinality_limit(2 * SETS)
                        .build()
                        .ok()
                })
                .build();
            let meter = provider.meter("bench");
            let counters: Vec<_> = names
                .iter()
                .map(|n| meter.f64_counter(n.clone()).build())
                .collect();
            for i in 0..SERIES {
                counters[i % NAMES].add(
                    1.0,
                    &[
                        KeyValue::new("host", hosts[i / NAMES].clone()),
                        KeyValue::new("env", "prod"),
                        KeyValue::new("region", "us-east-1"),
                    ],
                );
            }
            Box::new((provider, counters))
        }
        other => panic!("unknown layout {other}"),
    };
    let (live1, rss1) = (LIVE.load(Ordering::Relaxed), rss_bytes());
    println!("{} {}", live1 - live0, rss1 - rss0);
    drop(keep);
}

fn measure(layout: &str) -> (f64, f64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", layout])
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().unwrap());
    let (live, rss) = (it.next().unwrap(), it.next().unwrap());
    (live / SERIES as f64, rss / SERIES as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1]);
        return;
    }
    // `cargo test --benches` runs bench binaries without `--bench`: skip the
    // heavy measurement there.
    if !args.iter().any(|a| a == "--bench") {
        println!("memory: run with `cargo bench --bench memory`");
        return;
    }
    println!("=== target 6: memory per series, {SERIES} count series of 3 string attributes ===");
    println!("  (100 names x 10,000 attribute sets; each layout in a fresh process)");
    println!(
        "  {:58} {:>12} {:>12}",
        "layout", "heap B/series", "RSS B/series"
    );
    let rows = [
        ("ids", "floor: HashMap<(u32 name id, u32 set id), f64>"),
        (
            "interned",
            "floor: HashMap<(Arc<str>, Arc<[(Arc<str>, Value)]>), f64>, interned",
        ),
        ("batch", "measured: MetricBatch (record_count)"),
        ("otel", "peer: opentelemetry_sdk Counter::add"),
    ];
    let (mut batch, mut otel) = ((0.0, 0.0), (0.0, 0.0));
    for (layout, label) in rows {
        let (live, rss) = measure(layout);
        println!("  {label:66} {live:>14.1} {rss:>13.1}");
        match layout {
            "batch" => batch = (live, rss),
            "otel" => otel = (live, rss),
            _ => {}
        }
    }
    let worst = batch.0.max(batch.1);
    println!(
        "  MetricBatch: {worst:.0} bytes/series (the larger of heap and RSS; target <= 130): {}; \
         opentelemetry_sdk: {:.0} bytes/series ({:.2}x the batch)",
        if worst <= 130.0 { "MET" } else { "MISSED" },
        otel.0.max(otel.1),
        otel.0.max(otel.1) / worst
    );
}
