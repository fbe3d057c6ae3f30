//! Shared pieces of the benchmarks: the workload, sample bookkeeping for
//! `iter_custom`, and the floor-versus-measured report every bench prints.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use criterion::Criterion;

pub mod encode;
pub mod sink;

/// The workload: `names` metric names x `sets` attribute sets of three
/// string attributes `{"host": "host-{j}", "env": "prod", "region": "us-east-1"}`.
/// Series `i` has name `i % names` and attribute set `(i / names) % sets`, so
/// names vary fastest.
pub struct Workload {
    pub names: Vec<String>,
    pub hosts: Vec<String>,
}

impl Workload {
    pub fn new(names: usize, sets: usize) -> Self {
        Workload {
            names: (0..names).map(|i| format!("bench.metric.{i}")).collect(),
            hosts: (0..sets).map(|j| format!("host-{j}")).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len() * self.hosts.len()
    }

    /// Name and host of every series, in order (indexing it costs no division).
    pub fn table(&self) -> Vec<(&str, &str)> {
        (0..self.len()).map(|i| self.series(i)).collect()
    }

    /// Every series once, in an order of its own for each `seed` (a task's
    /// stream of requests), so that tasks sharing a batch do not walk the
    /// series in lockstep.
    pub fn shuffled(&self, seed: u64) -> Vec<(&str, &str)> {
        let mut table = self.table();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for i in (1..table.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            table.swap(i, (x % (i as u64 + 1)) as usize);
        }
        table
    }

    /// Name and host of series `i`.
    pub fn series(&self, i: usize) -> (&str, &str) {
        let n = self.names.len();
        (&self.names[i % n], &self.hosts[(i / n) % self.hosts.len()])
    }
}

/// The three borrowed attributes of a series (no allocation).
pub fn attrs(host: &str) -> [(&'static str, &str); 3] {
    [("host", host), ("env", "prod"), ("region", "us-east-1")]
}

/// The same attribute sets as the peer takes them: one array of the three
/// `KeyValue`s per host, built before any measurement.
pub fn otel_sets(w: &Workload) -> Vec<[opentelemetry::KeyValue; 3]> {
    w.hosts
        .iter()
        .map(|host| {
            [
                opentelemetry::KeyValue::new("host", host.clone()),
                opentelemetry::KeyValue::new("env", "prod"),
                opentelemetry::KeyValue::new("region", "us-east-1"),
            ]
        })
        .collect()
}

/// Criterion settings that keep every bench short on a 2-core machine.
pub fn criterion(measurement: Duration) -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measurement)
        .without_plots()
        .configure_from_args()
}

/// What an `iter_custom` routine measured, call by call. Criterion calls the
/// routine during warm-up first and then once per sample, so the last
/// `sample_size` entries are the samples it reports on.
#[derive(Clone, Default)]
pub struct Samples(Rc<RefCell<Vec<(u64, Duration)>>>);

impl Samples {
    pub fn push(&self, iters: u64, elapsed: Duration) {
        self.0.borrow_mut().push((iters, elapsed));
    }

    /// Median nanoseconds per iteration over the last `n` calls.
    pub fn median_ns(&self, n: usize) -> f64 {
        let all = self.0.borrow();
        let mut per: Vec<f64> = all[all.len().saturating_sub(n)..]
            .iter()
            .filter(|(iters, _)| *iters > 0)
            .map(|(iters, d)| d.as_nanos() as f64 / *iters as f64)
            .collect();
        if per.is_empty() {
            return f64::NAN;
        }
        per.sort_by(f64::total_cmp);
        per[per.len() / 2]
    }
}

/// How a ratio is judged against its target.
#[derive(Clone, Copy)]
pub enum Goal {
    /// measured time / floor time must be at most this.
    TimeAtMost(f64),
    /// measured throughput / floor throughput must be at least this.
    ThroughputAtLeast(f64),
}

/// Prints a floor and a measured path side by side, as time per unit, with
/// the ratio and whether it meets its target. Returns the ratio.
pub fn report(
    title: &str,
    unit: &str,
    floor: (&str, f64),
    measured: (&str, f64),
    goal: Goal,
) -> f64 {
    let width = floor.0.len().max(measured.0.len());
    println!();
    println!("=== {title} ===");
    if floor.1.is_nan() || measured.1.is_nan() {
        println!("  (not measured in this run)");
        return f64::NAN;
    }
    println!(
        "  floor     {:width$}  {:>10.1} ns/{unit}",
        floor.0, floor.1
    );
    println!(
        "  measured  {:width$}  {:>10.1} ns/{unit}",
        measured.0, measured.1
    );
    let (ratio, line) = match goal {
        Goal::TimeAtMost(max) => {
            let r = measured.1 / floor.1;
            (
                r,
                format!(
                    "time ratio {r:.2}x the floor (target <= {max:.2}x): {}",
                    verdict(r <= max)
                ),
            )
        }
        Goal::ThroughputAtLeast(min) => {
            let r = floor.1 / measured.1;
            (
                r,
                format!(
                    "throughput {:.0}% of the floor (target >= {:.0}%): {}",
                    r * 100.0,
                    min * 100.0,
                    verdict(r >= min)
                ),
            )
        }
    };
    println!("  {line}");
    ratio
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

/// Per-second rate of one unit taking `ns` nanoseconds.
pub fn per_second(ns: f64) -> f64 {
    1e9 / ns
}
