//! Property tests of the batch as a whole: any sequence of recordings by
//! name, handles, series limits changed on the way, harvests that let go of
//! idle series and flushes that let go of all keeps every name's total
//! exact (what was recorded is what is sent, with the overflow series
//! holding what had no room), keeps each name within its limit plus one
//! overflow series, and gives back every byte and series it reserved.

use std::collections::HashMap;

use proptest::prelude::*;

use super::drain::Release;
use super::{CounterHandle, MetricBatch};
use crate::error::RecordError;
use crate::metric::Metric;

#[derive(Clone, Debug)]
enum Op {
    Count { name: u8, user: u8, value: u8 },
    Observe { name: u8, user: u8, value: u8 },
    Bind { name: u8, user: u8 },
    Add { handle: u8, value: u8 },
    Unbind { handle: u8 },
    Limit { name: Option<u8>, limit: u8 },
    Harvest,
    Flush,
}

const NAMES: u8 = 3;

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES;
    prop_oneof![
        8 => (name.clone(), 0..24u8, 1..100u8).prop_map(|(name, user, value)| Op::Count { name, user, value }),
        3 => (name.clone(), 0..24u8, 1..100u8).prop_map(|(name, user, value)| Op::Observe { name, user, value }),
        1 => (name.clone(), 0..24u8).prop_map(|(name, user)| Op::Bind { name, user }),
        3 => (any::<u8>(), 1..100u8).prop_map(|(handle, value)| Op::Add { handle, value }),
        1 => any::<u8>().prop_map(|handle| Op::Unbind { handle }),
        1 => (proptest::option::of(name), 0..6u8).prop_map(|(name, limit)| Op::Limit { name, limit }),
        1 => Just(Op::Harvest),
        1 => Just(Op::Flush),
    ]
}

fn metric_name(n: u8) -> String {
    format!("m{n}")
}

/// What the batch was given and what it sent, per (type, name): a count's
/// sum, or a summary's count and sum.
#[derive(Default)]
struct Ledger {
    recorded: HashMap<String, (u64, u64)>,
    sent: HashMap<String, (u64, u64)>,
}

fn key(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

impl Ledger {
    fn record(&mut self, key: String, count: u64, sum: u64) {
        let e = self.recorded.entry(key).or_default();
        e.0 += count;
        e.1 += sum;
    }

    /// Takes a flush's metrics; checks that no name holds more than one
    /// overflow series or more series than `most` allows.
    fn sent(&mut self, metrics: &[Metric], most: &HashMap<String, usize>) {
        let mut series: HashMap<String, (usize, usize)> = HashMap::new();
        for metric in metrics {
            let overflow = metric.attributes().contains_key(super::OVERFLOW_ATTRIBUTE);
            let (k, count, sum) = match metric {
                Metric::Count(c) => (key("count", c.name()), 0, c.value() as u64),
                Metric::Summary(s) => (
                    key("summary", s.name()),
                    s.summary().count,
                    s.summary().sum as u64,
                ),
                Metric::Gauge(_) => unreachable!("no gauges here"),
            };
            let e = series.entry(k.clone()).or_default();
            if overflow {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
            let e = self.sent.entry(k).or_default();
            e.0 += count;
            e.1 += sum;
        }
        for (k, (own, overflow)) in series {
            assert!(overflow <= 1, "{k}: {overflow} overflow series");
            let name = k.split(':').nth(1).unwrap_or_default();
            let most = most.get(name).copied().unwrap_or(usize::MAX);
            assert!(own <= most, "{k}: {own} series, at most {most}");
        }
    }
}

async fn run(ops: Vec<Op>, max_series: usize) {
    let batch = MetricBatch::builder()
        .series_limit(3)
        .max_series(max_series)
        .idle_harvests(1)
        .shards(2)
        .build();
    let mut ledger = Ledger::default();
    let mut handles: Vec<(String, CounterHandle)> = Vec::new();
    // Each name's own limit if it has one, else the default; and the most
    // series a name may have held: the largest limit it had.
    let mut rules: HashMap<String, usize> = HashMap::new();
    let mut default = 3;
    let mut most: HashMap<String, usize> = (0..NAMES).map(|n| (metric_name(n), 3)).collect();
    let allowed = |r: Result<(), RecordError>| match r {
        Ok(()) => true,
        Err(RecordError::SeriesLimitReached { .. } | RecordError::MemoryBudgetFull { .. }) => false,
        Err(e) => panic!("refused: {e}"),
    };
    for op in ops {
        match op {
            Op::Count { name, user, value } => {
                let name = metric_name(name);
                let r = batch
                    .try_record_count(&name, f64::from(value), [("user", i64::from(user))])
                    .await;
                if allowed(r) {
                    ledger.record(key("count", &name), 0, u64::from(value));
                }
            }
            Op::Observe { name, user, value } => {
                let name = metric_name(name);
                let r = batch
                    .try_record_summary(&name, f64::from(value), [("user", i64::from(user))])
                    .await;
                if allowed(r) {
                    ledger.record(key("summary", &name), 1, u64::from(value));
                }
            }
            Op::Bind { name, user } => {
                let name = metric_name(name);
                match batch.counter(&name, [("user", i64::from(user))]).await {
                    Ok(counter) => handles.push((name, counter)),
                    Err(e) => assert!(!allowed(Err(e))),
                }
            }
            Op::Add { handle, value } => {
                if let Some((name, counter)) =
                    handles.get(usize::from(handle) % handles.len().max(1))
                {
                    counter.add(f64::from(value));
                    ledger.record(key("count", name), 0, u64::from(value));
                }
            }
            Op::Unbind { handle } => {
                if !handles.is_empty() {
                    handles.swap_remove(usize::from(handle) % handles.len());
                }
            }
            Op::Limit { name, limit } => {
                let limit = usize::from(limit);
                match name {
                    Some(n) => {
                        batch.set_series_limit_for(&metric_name(n), limit);
                        rules.insert(metric_name(n), limit);
                    }
                    None => {
                        batch.set_series_limit(limit);
                        default = limit;
                    }
                }
                for n in 0..NAMES {
                    let name = metric_name(n);
                    let limit = match rules.get(&name).copied().unwrap_or(default) {
                        0 => usize::MAX,
                        limit => limit,
                    };
                    let m = most.entry(name).or_default();
                    *m = (*m).max(limit);
                }
            }
            Op::Harvest => {
                let taken = batch.drain(Release::Idle).await;
                let (metrics, _) = taken.release(&batch.shared.budget);
                ledger.sent(&metrics, &most);
            }
            Op::Flush => {
                let (metrics, _) = batch.flush().await;
                ledger.sent(&metrics, &most);
            }
        }
    }
    drop(handles);
    let (metrics, _) = batch.flush().await;
    ledger.sent(&metrics, &most);
    assert_eq!(ledger.sent, {
        let mut recorded = ledger.recorded.clone();
        recorded.retain(|_, v| *v != (0, 0));
        recorded
    });
    assert_eq!(batch.series_count(), 0);
    assert_eq!(batch.series.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(batch.overflows().iter().all(|o| o.series == 0));
    let memory = batch.memory();
    assert_eq!((memory.held_bytes, memory.held_items), (0, 0), "{memory:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn totals_per_name_are_exact_through_limits_and_evictions(
        ops in proptest::collection::vec(op(), 1..120),
        max_series in 4usize..24,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(run(ops, max_series));
    }
}
