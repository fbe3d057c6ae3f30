//! Measurements and the report: a process's CPU time from `/proc`,
//! percentiles, and the tables `report` prints from a results file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;

use crate::Error;

/// The builds, in the report's order; ratios are to `off`.
const BUILDS: [&str; 4] = ["off", "disabled", "on", "otel"];

/// What the report shows of a service's report line (the results file
/// keeps them all): this crate's items sent and lost, the OpenTelemetry
/// providers' shutdown outcomes and drops, and the SDKs' WARN and ERROR lines.
const REPORT_KEYS: [&str; 12] = [
    "enabled",
    "sent",
    "dropped",
    "refused",
    "layer_channel_full",
    "deadline_exceeded",
    "tracer",
    "meter",
    "logger",
    "spans_dropped",
    "logs_dropped",
    "sdk_warnings",
];

/// CPU time (user + system, every thread) of process `pid` so far, from
/// `/proc/<pid>/stat`, at the kernel's clock-tick resolution (10 ms).
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after field 2.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
        return Err(std::io::Error::other(format!(
            "unreadable /proc/{pid}/stat"
        )));
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64((utime + stime) as f64 / per_second))
}

/// The `q` quantile of sorted values (nearest rank); 0 for none.
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `report results.jsonl`: a table per framework.
pub fn report_main(args: &[String]) -> Result<(), Error> {
    let [path] = args else {
        return Err("usage: service-bench report results.jsonl".into());
    };
    let text = std::fs::read_to_string(path)?;
    let runs: Vec<Json> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut frameworks: Vec<String> = Vec::new();
    for run in &runs {
        let framework = text_of(&run["framework"]);
        if !frameworks.contains(&framework) {
            frameworks.push(framework);
        }
    }
    for framework in &frameworks {
        let of_framework: Vec<&Json> = runs
            .iter()
            .filter(|r| &text_of(&r["framework"]) == framework)
            .collect();
        print_framework(framework, &of_framework);
    }
    Ok(())
}

/// One measurement of a run, and how the report shows it.
struct Metric {
    title: &'static str,
    key: &'static str,
    show: fn(f64) -> String,
}

const METRICS: [Metric; 3] = [
    Metric {
        title: "requests/s",
        key: "requests_per_second",
        show: |v| format!("{v:.0}"),
    },
    Metric {
        title: "p99",
        key: "p99_us",
        show: |v| format!("{:.2} ms", v / 1000.0),
    },
    Metric {
        title: "CPU/request",
        key: "cpu_us_per_request",
        show: |v| format!("{v:.0} us"),
    },
];

fn print_framework(framework: &str, runs: &[&Json]) {
    // round -> build -> run
    let mut rounds: BTreeMap<u64, BTreeMap<String, &Json>> = BTreeMap::new();
    for run in runs {
        let round = run["round"].as_u64().unwrap_or(0);
        rounds
            .entry(round)
            .or_default()
            .insert(text_of(&run["build"]), run);
    }
    let first = runs[0];
    println!();
    println!(
        "== {framework}: {} round(s) of {} s at concurrency {}; each build's median over rounds, \
         and its ratio to compiled-out (off) of the same round: median [min-max] ==",
        rounds.len(),
        first["seconds"],
        first["concurrency"],
    );
    let mut header = format!("{:<9}", "build");
    for metric in &METRICS {
        header += &format!(" | {:>11} {:<18}", metric.title, "x off");
    }
    header += " | errors";
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for build in BUILDS {
        let of_build: Vec<(&Json, Option<&Json>)> = rounds
            .values()
            .filter_map(|r| r.get(build).map(|run| (*run, r.get("off").copied())))
            .collect();
        if of_build.is_empty() {
            continue;
        }
        let mut line = format!("{build:<9}");
        for metric in &METRICS {
            let values: Vec<f64> = of_build
                .iter()
                .filter_map(|(run, _)| run[metric.key].as_f64())
                .collect();
            let ratios: Vec<f64> = of_build
                .iter()
                .filter_map(|(run, off)| {
                    let value = run[metric.key].as_f64()?;
                    let floor = off.as_ref()?[metric.key].as_f64()?;
                    (floor > 0.0).then(|| value / floor)
                })
                .collect();
            let ratio = match (median(&ratios), min_max(&ratios)) {
                (Some(m), Some((lo, hi))) => format!("{m:.2} [{lo:.2}-{hi:.2}]"),
                _ => "-".to_owned(),
            };
            let value = median(&values).map_or("-".to_owned(), metric.show);
            line += &format!(" | {value:>11} {ratio:<18}");
        }
        let errors: u64 = of_build
            .iter()
            .map(|(run, _)| run["errors"].as_u64().unwrap_or(0))
            .sum();
        line += &format!(" | {errors}");
        println!("{line}");
    }

    println!();
    println!("what the sink received, per run (mean over rounds): requests, KiB as sent");
    for build in BUILDS {
        let of_build: Vec<&Json> = rounds
            .values()
            .filter_map(|r| r.get(build).copied())
            .collect();
        if of_build.is_empty() {
            continue;
        }
        let mut paths: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for run in &of_build {
            for (path, count) in run["sink"].as_object().into_iter().flatten() {
                let entry = paths.entry(path.clone()).or_default();
                entry.0 += count["requests"].as_u64().unwrap_or(0);
                entry.1 += count["bytes"].as_u64().unwrap_or(0);
            }
        }
        let n = of_build.len() as f64;
        let received = if paths.is_empty() {
            "nothing".to_owned()
        } else {
            paths
                .iter()
                .map(|(path, (requests, bytes))| {
                    format!(
                        "{path} {:.1} req {:.1} KiB",
                        *requests as f64 / n,
                        *bytes as f64 / n / 1024.0
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("  {build:<9} {received}");
    }

    println!();
    println!("the service's telemetry report at shutdown, and how it exited, per round");
    for build in BUILDS {
        for (round, runs) in &rounds {
            let Some(run) = runs.get(build) else {
                continue;
            };
            let pairs = run["report"].as_object();
            let report = REPORT_KEYS
                .iter()
                .filter_map(|key| Some(format!("{key}={}", text_of(pairs?.get(*key)?))))
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "  {build:<9} round {round}: exit {} | {report}",
                text_of(&run["exit"])
            );
        }
    }
}

fn text_of(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

fn min_max(values: &[f64]) -> Option<(f64, f64)> {
    let min = values.iter().copied().reduce(f64::min)?;
    let max = values.iter().copied().reduce(f64::max)?;
    Some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&values, 0.5), 50);
        assert_eq!(percentile(&values, 1.0), 100);
        assert_eq!(percentile(&[], 0.99), 0);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_time(std::process::id()).is_ok());
    }
}
