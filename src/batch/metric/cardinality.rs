//! Series limits per metric name, and the overflow series that keep totals
//! exact past them.
//!
//! A metric name (of one type) may hold at most its limit of series (by
//! default [`DEFAULT_SERIES_LIMIT`], set per name or name prefix). Past it,
//! a measurement for a new attribute set goes to the name's **overflow
//! series**: the same name and type with the single attribute
//! `otel.metric.overflow = true`, as OpenTelemetry's specification has it.
//! The same happens when the batch-wide limits (`max_series`, the memory
//! budget) have no room for a name's new series: every name that holds a
//! series has the room for its overflow series reserved, so one exploding
//! name never stops another from recording, and costs at most one series
//! past its limit.
//!
//! The overflow series is found with no lock, like any series: a recording
//! that finds no series of its own looks for its name's overflow series
//! (one more hash) and records there if the series says its name is
//! *diverting* (at its limit). The registry here, behind a `std` mutex taken
//! under a shard's lock and never the other way round, counts each name's
//! series, holds its reservation, and keeps what says who caused an
//! overflow: the measurements diverted per interval, the attribute key with
//! the most distinct values among a sample of them, and an estimate of the
//! distinct series the name made in the current UTC day (New Relic stops
//! aggregating a name past 100,000 a day).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hashbrown::{Equivalent, HashMap};

use super::key::Seeds;
use super::series::Series;
use super::sketch::DistinctSketch;
use crate::attributes::AsAttributes;
use crate::budget::{MemoryBudget, arc_str_bytes};
use crate::metric::MetricKind;

/// The series a metric name (of one type) may hold by default before new
/// attribute sets go to its overflow series; see
/// [`MetricBatchBuilder::series_limit`](crate::batch::MetricBatchBuilder::series_limit).
///
/// ```
/// assert_eq!(newrelic_telemetry::batch::DEFAULT_SERIES_LIMIT, 2_000);
/// ```
pub const DEFAULT_SERIES_LIMIT: usize = 2_000;

pub use crate::validate::OVERFLOW_ATTRIBUTE;

/// Distinct series a day past which New Relic stops aggregating a name.
const NEW_RELIC_DAILY_SERIES: u64 = 100_000;
/// The share of it at which a name's daily estimate is logged: 80%.
const DAILY_WARNING: u64 = NEW_RELIC_DAILY_SERIES / 5 * 4;
/// Series a name makes in a day that are counted exactly, before a sketch
/// takes over (names that make fewer never pay for one).
const EXACT_DAILY: u64 = 1024;
/// The daily sketch: 2,048 registers, 2 KB, 2.3% standard error.
const DAY_PRECISION: u32 = 11;
/// A census sketch: 256 registers per key, 6.5% standard error.
const CENSUS_PRECISION: u32 = 8;
/// Attribute keys a name's census follows at most.
const CENSUS_KEYS: usize = 8;
/// How often an overflowing name is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(3600);
/// One diverted measurement in this many is sampled into the census.
pub(super) const SAMPLE_EVERY: u64 = 64;

/// Series limits: one for every name, and rules for names and prefixes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeriesLimits {
    default: usize,
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    /// A whole name, or a prefix (given with a trailing `*`).
    pattern: String,
    prefix: bool,
    limit: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits {
            default: DEFAULT_SERIES_LIMIT,
            rules: Vec::new(),
        }
    }
}

impl SeriesLimits {
    /// The limit of every name no rule matches (0: none).
    pub(crate) fn set_default(&mut self, limit: usize) {
        self.default = limit;
    }

    /// The limit of the name `pattern`, or of every name starting with it
    /// when it ends in `*` (0: none). Setting a pattern again replaces it.
    pub(crate) fn set(&mut self, pattern: &str, limit: usize) {
        let (pattern, prefix) = match pattern.strip_suffix('*') {
            Some(p) => (p, true),
            None => (pattern, false),
        };
        self.rules
            .retain(|r| !(r.prefix == prefix && r.pattern == pattern));
        self.rules.push(Rule {
            pattern: pattern.to_owned(),
            prefix,
            limit,
        });
    }

    /// The limit of `name`: its own rule, else the longest prefix that
    /// matches, else the default; `usize::MAX` for none.
    pub(crate) fn of(&self, name: &str) -> usize {
        let exact = self.rules.iter().find(|r| !r.prefix && r.pattern == name);
        let rule = exact.or_else(|| {
            self.rules
                .iter()
                .filter(|r| r.prefix && name.starts_with(&r.pattern))
                .max_by_key(|r| r.pattern.len())
        });
        match rule.map_or(self.default, |r| r.limit) {
            0 => usize::MAX,
            limit => limit,
        }
    }
}

/// A name of one type: the registry's key.
#[derive(Hash, PartialEq, Eq)]
struct NameKey {
    kind: MetricKind,
    name: Arc<str>,
}

/// A borrowed [`NameKey`], hashed the same way (a derived `Hash` hashes the
/// fields in order, and `Arc<str>` hashes as `str`).
#[derive(Hash)]
struct NameRef<'a> {
    kind: MetricKind,
    name: &'a str,
}

impl Equivalent<NameKey> for NameRef<'_> {
    fn equivalent(&self, key: &NameKey) -> bool {
        self.kind == key.kind && self.name == &*key.name
    }
}

/// What the registry keeps of one name.
pub(super) struct NameState {
    /// Its series limit (`usize::MAX`: none).
    limit: usize,
    /// Its series held (not counting the overflow series).
    pub(super) series: usize,
    /// Its overflow series, once made.
    overflow: Option<Series>,
    /// Bytes of the budget reserved for the overflow series while it is not
    /// made.
    reserved_bytes: usize,
    /// Bytes of the budget the entry itself, its census and its daily
    /// sketch hold.
    held_bytes: usize,
    /// Measurements diverted in the last interval (`overflowed`), and in
    /// this one by overflow series let go of meanwhile (`pending`).
    overflowed: u64,
    pending: u64,
    /// The batch had no room for a new series of the name this interval:
    /// its overflow series takes them until the next harvest.
    batch_full: bool,
    census: Option<Box<Census>>,
    day: DailySeries,
}

impl NameState {
    /// Whether a new series of the name goes to its overflow series.
    pub(super) fn at_limit(&self) -> bool {
        self.series >= self.limit
    }

    /// The batch has no room for a new series of the name: new ones go to
    /// its overflow series until the next harvest.
    pub(super) fn batch_full(&mut self) {
        self.batch_full = true;
        self.sync();
    }

    /// Points the overflow series' diverting mark at the name's state.
    fn sync(&self) {
        if let Some(series) = &self.overflow {
            series.set_diverting(self.at_limit() || self.batch_full);
        }
    }
}

/// Which series a census sample or a new series comes from.
struct Census {
    keys: Vec<(Box<str>, DistinctSketch)>,
}

impl Census {
    fn bytes() -> usize {
        CENSUS_KEYS
            * (std::mem::size_of::<(Box<str>, DistinctSketch)>()
                + DistinctSketch::heap_bytes(CENSUS_PRECISION)
                + 32)
    }

    fn add(&mut self, seeds: Seeds, attrs: &(impl AsAttributes + ?Sized)) {
        attrs.for_each_attribute(|key, value| {
            let at = match self.keys.iter().position(|(k, _)| &**k == key) {
                Some(at) => at,
                None if self.keys.len() < CENSUS_KEYS => {
                    self.keys
                        .push((key.into(), DistinctSketch::new(CENSUS_PRECISION)));
                    self.keys.len() - 1
                }
                None => return,
            };
            self.keys[at].1.insert(seeds.pair(key, value));
        });
    }

    /// The key with the most distinct values, and their estimated number.
    fn top(&self) -> Option<(String, u64)> {
        self.keys
            .iter()
            .map(|(k, s)| (k, s.estimate().round() as u64))
            .max_by_key(|&(_, n)| n)
            .map(|(k, n)| (k.to_string(), n))
    }
}

/// The distinct series a name made in the current UTC day: the series made
/// counted exactly up to [`EXACT_DAILY`] (one let go of and made again
/// counts again), then a sketch of the distinct ones after (so the estimate
/// may count a series made in both parts twice: at most [`EXACT_DAILY`] too
/// many). A name that made more than [`EXACT_DAILY`] (the names this is
/// for) keeps its tally for the day while it leaves the batch and comes
/// back (a harvest lets go of idle series), until a flush that lets go of
/// everything; the others' tallies go with them.
#[derive(Default)]
struct DailySeries {
    /// The UTC day counted.
    day: u64,
    made: u64,
    sketch: Option<Box<DistinctSketch>>,
    warned: bool,
}

/// What a tally kept apart holds besides its sketch: its place in the map.
const PARKED_BYTES: usize = std::mem::size_of::<(NameKey, DailySeries)>() + 1;
/// What a day sketch holds.
const DAY_SKETCH_BYTES: usize = 1 << DAY_PRECISION;

impl DailySeries {
    fn estimate(&self) -> u64 {
        match &self.sketch {
            Some(sketch) if self.made > EXACT_DAILY => {
                EXACT_DAILY + sketch.estimate().round() as u64
            }
            _ => self.made,
        }
    }
}

/// The current UTC day, as days since the Unix epoch.
fn utc_day() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// The registry of names: limits, series counts, reservations, reports.
pub(super) struct Names {
    limits: SeriesLimits,
    map: HashMap<NameKey, NameState, foldhash::fast::RandomState>,
    /// Names that left during this interval after diverting measurements.
    departed: Vec<NameOverflow>,
    /// The report of the last interval.
    last: Vec<NameOverflow>,
    /// When each name was last logged (pruned after an hour).
    warned: HashMap<(MetricKind, Box<str>), Instant, foldhash::fast::RandomState>,
    /// The day's tallies of names that left (see [`DailySeries`]), and the
    /// budget's bytes they hold.
    parked: HashMap<NameKey, DailySeries, foldhash::fast::RandomState>,
    parked_bytes: usize,
}

/// What became of a name when one of its series left.
pub(super) enum Left {
    /// The name stays.
    Stays,
    /// The name stays, and its overflow series left: the caller counts its
    /// reservation's series again (its bytes are added back here).
    OverflowSeries,
    /// The name left with its last series: give back its reservation (a
    /// series and these bytes), if it held one (`None`: its overflow
    /// series, which had taken it, just left).
    Gone { reserved_bytes: Option<usize> },
}

impl Names {
    pub(super) fn new(limits: SeriesLimits) -> Self {
        Names {
            limits,
            map: HashMap::default(),
            departed: Vec::new(),
            last: Vec::new(),
            warned: HashMap::default(),
            parked: HashMap::default(),
            parked_bytes: 0,
        }
    }

    pub(super) fn get(&mut self, kind: MetricKind, name: &str) -> Option<&mut NameState> {
        self.map.get_mut(&NameRef { kind, name })
    }

    /// What a name's entry holds (its own copy of the name: the shards'
    /// interners sweep strings nothing else uses).
    pub(super) fn entry_bytes(name: &str) -> usize {
        std::mem::size_of::<(NameKey, NameState)>() + 1 + arc_str_bytes(name.len())
    }

    /// Registers a name with its first series on the way (the caller has
    /// reserved a series and `reserved_bytes` for its overflow series, and
    /// [`entry_bytes`](Self::entry_bytes)).
    pub(super) fn add(
        &mut self,
        kind: MetricKind,
        name: &str,
        reserved_bytes: usize,
        budget: &MemoryBudget,
    ) {
        let limit = self.limits.of(name);
        // The day's tally, if the name left earlier today with one.
        let mut held_bytes = Self::entry_bytes(name);
        let day = match self.parked.remove(&NameRef { kind, name }) {
            Some(day) if day.day == utc_day() => {
                let sketch = day.sketch.as_ref().map_or(0, |_| DAY_SKETCH_BYTES);
                self.parked_bytes -= PARKED_BYTES + sketch;
                budget.release_bytes(PARKED_BYTES);
                held_bytes += sketch;
                day
            }
            Some(day) => {
                let sketch = day.sketch.as_ref().map_or(0, |_| DAY_SKETCH_BYTES);
                self.parked_bytes -= PARKED_BYTES + sketch;
                budget.release_bytes(PARKED_BYTES + sketch);
                DailySeries::default()
            }
            None => DailySeries::default(),
        };
        self.map.insert(
            NameKey {
                kind,
                name: name.into(),
            },
            NameState {
                limit,
                series: 0,
                overflow: None,
                reserved_bytes,
                held_bytes,
                overflowed: 0,
                pending: 0,
                batch_full: false,
                census: None,
                day,
            },
        );
    }

    /// Counts a series made for the name (`hash`: the series' hash). Feeds
    /// its daily estimate and, if the name has one, its census; returns the
    /// daily estimate when it first passes 80% of New Relic's daily limit.
    pub(super) fn series_made(
        &mut self,
        kind: MetricKind,
        name: &str,
        hash: u64,
        seeds: Seeds,
        attrs: &(impl AsAttributes + ?Sized),
        budget: &MemoryBudget,
    ) -> Option<u64> {
        let state = self.map.get_mut(&NameRef { kind, name })?;
        state.series += 1;
        state.sync();
        if let Some(census) = &mut state.census {
            census.add(seeds, attrs);
        }
        let today = utc_day();
        let day = &mut state.day;
        if day.day != today {
            if day.sketch.take().is_some() {
                state.held_bytes -= DAY_SKETCH_BYTES;
                budget.release_bytes(DAY_SKETCH_BYTES);
            }
            *day = DailySeries {
                day: today,
                ..DailySeries::default()
            };
        }
        day.made += 1;
        if day.made > EXACT_DAILY {
            if day.sketch.is_none() && budget.try_reserve_bookkeeping(DAY_SKETCH_BYTES) {
                state.held_bytes += DAY_SKETCH_BYTES;
                day.sketch = Some(Box::new(DistinctSketch::new(DAY_PRECISION)));
            }
            if let Some(sketch) = &mut day.sketch {
                sketch.insert(hash);
            }
        }
        let estimate = day.estimate();
        (estimate >= DAILY_WARNING && !day.warned).then(|| {
            day.warned = true;
            estimate
        })
    }

    /// Forgets every name's tally of the day (a flush that lets go of
    /// everything the batch holds).
    pub(super) fn forget_days(&mut self, budget: &MemoryBudget) {
        self.parked.clear();
        budget.release_bytes(std::mem::take(&mut self.parked_bytes));
    }

    /// The name's overflow series was made: it takes the reservation
    /// (returned, in bytes).
    pub(super) fn overflow_made(
        &mut self,
        kind: MetricKind,
        name: &str,
        series: Series,
        budget: &MemoryBudget,
    ) -> Option<usize> {
        let state = self.get(kind, name)?;
        state.overflow = Some(series);
        state.sync();
        if state.census.is_none() && budget.try_reserve_bookkeeping(Census::bytes()) {
            state.held_bytes += Census::bytes();
            state.census = Some(Box::new(Census {
                keys: Vec::with_capacity(CENSUS_KEYS),
            }));
        }
        Some(std::mem::take(&mut state.reserved_bytes))
    }

    /// Samples a diverted measurement's attributes into the name's census.
    pub(super) fn sample(
        &mut self,
        kind: MetricKind,
        name: &str,
        seeds: Seeds,
        attrs: &(impl AsAttributes + ?Sized),
    ) {
        if let Some(census) = self.get(kind, name).and_then(|s| s.census.as_mut()) {
            census.add(seeds, attrs);
        }
    }

    /// One of the name's series (the overflow series, if `overflow`) left
    /// the batch. When the overflow series leaves while the name stays,
    /// its reservation is taken again (`reserve_bytes`, added to the
    /// budget here); when the name's last series leaves, the name leaves.
    pub(super) fn left(
        &mut self,
        series: &Series,
        overflow: bool,
        reserve_bytes: usize,
        budget: &MemoryBudget,
    ) -> Left {
        let key = NameRef {
            kind: series.kind(),
            name: &series.name,
        };
        let Some(state) = self.map.get_mut(&key) else {
            return Left::Stays;
        };
        if overflow {
            state.pending += series.take_diverted();
            state.overflow = None;
            if state.series > 0 {
                state.reserved_bytes = reserve_bytes;
                budget.add_bytes(reserve_bytes);
                return Left::OverflowSeries;
            }
        } else {
            state.series = state.series.saturating_sub(1);
            state.sync();
            if state.series > 0 || state.overflow.is_some() {
                return Left::Stays;
            }
        }
        let Some((key, mut state)) = self.map.remove_entry(&key) else {
            return Left::Stays;
        };
        if state.pending > 0 {
            // Reported at the end of the interval all the same.
            state.overflowed = std::mem::take(&mut state.pending);
            state.series = 0;
            self.departed.push(report(&key, &state));
        }
        let mut released = state.held_bytes;
        if state.day.made > EXACT_DAILY {
            // A name this tally is for: kept for the day, with its sketch.
            let sketch = state.day.sketch.as_ref().map_or(0, |_| DAY_SKETCH_BYTES);
            released -= sketch;
            budget.add_bytes(PARKED_BYTES);
            self.parked_bytes += PARKED_BYTES + sketch;
            self.parked.insert(key, std::mem::take(&mut state.day));
        }
        budget.release_bytes(released);
        Left::Gone {
            reserved_bytes: (state.reserved_bytes > 0).then_some(state.reserved_bytes),
        }
    }

    /// Changes the limits: each name's follows at once (series past a
    /// lowered limit stay; new ones go to the overflow series).
    pub(super) fn set_limits(&mut self, change: impl FnOnce(&mut SeriesLimits)) {
        change(&mut self.limits);
        for (key, state) in &mut self.map {
            state.limit = self.limits.of(&key.name);
            state.sync();
        }
    }

    /// Ends an interval: takes each overflow series' diverted count, makes
    /// the interval's report (names that diverted measurements, most first,
    /// those that left the batch meanwhile too), and returns the total
    /// diverted and the names to log (each at most once an hour).
    pub(super) fn end_interval(&mut self, now: Instant) -> (u64, Vec<NameOverflow>) {
        let mut report_now = std::mem::take(&mut self.departed);
        for (key, state) in &mut self.map {
            state.overflowed = std::mem::take(&mut state.pending)
                + state.overflow.as_ref().map_or(0, Series::take_diverted);
            state.batch_full = false;
            state.sync();
            if state.overflowed > 0 {
                let mut report = report(key, state);
                // The same name may have left and come back this interval.
                if let Some(at) = report_now
                    .iter()
                    .position(|r| r.kind == report.kind && r.name == report.name)
                {
                    report.overflowed_last_interval +=
                        report_now.swap_remove(at).overflowed_last_interval;
                }
                report_now.push(report);
            }
        }
        report_now.sort_by(|a, b| {
            b.overflowed_last_interval
                .cmp(&a.overflowed_last_interval)
                .then_with(|| a.name.cmp(&b.name))
        });
        let total = report_now.iter().map(|r| r.overflowed_last_interval).sum();
        self.warned
            .retain(|_, at| now.saturating_duration_since(*at) < WARN_EVERY);
        let to_log = report_now
            .iter()
            .filter(|r| {
                let key = (r.kind, r.name.as_str().into());
                let due = !self.warned.contains_key(&key);
                if due {
                    self.warned.insert(key, now);
                }
                due
            })
            .cloned()
            .collect();
        self.last = report_now;
        (total, to_log)
    }

    /// The last interval's report.
    pub(super) fn overflowing(&self) -> Vec<NameOverflow> {
        self.last.clone()
    }

    /// The daily estimate of distinct series a name made.
    #[cfg(test)]
    pub(super) fn daily_estimate(&self, kind: MetricKind, name: &str) -> Option<u64> {
        self.map
            .get(&NameRef { kind, name })
            .map(|s| s.day.estimate())
    }
}

fn report(key: &NameKey, state: &NameState) -> NameOverflow {
    NameOverflow {
        name: key.name.to_string(),
        kind: key.kind,
        limit: (state.limit != usize::MAX).then_some(state.limit),
        series: state.series,
        overflowed_last_interval: state.overflowed,
        top_attribute: state.census.as_ref().and_then(|c| c.top()),
        distinct_series_today: state.day.estimate(),
    }
}

/// A metric name whose new series go, or went, to its overflow series: who
/// caused an overflow, from [`MetricBatch::overflows`](crate::MetricBatch::overflows).
///
/// ```
/// use newrelic_telemetry::MetricBatch;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let batch = MetricBatch::builder().series_limit(2).build();
/// for user in 0..100 {
///     batch.record_count("logins", 1.0, [("user.id", user)]).await;
/// }
/// batch.flush().await;
/// let report = &batch.overflows()[0];
/// assert_eq!(report.name, "logins");
/// assert_eq!(report.overflowed_last_interval, 98);
/// assert_eq!(report.top_attribute.as_ref().unwrap().0, "user.id");
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NameOverflow {
    /// The metric's name.
    pub name: String,
    /// Its type.
    pub kind: MetricKind,
    /// Its series limit (`None`: no limit; the batch-wide limits diverted
    /// it).
    pub limit: Option<usize>,
    /// Its series held at the end of the interval, besides the overflow
    /// series (0: the name left the batch, as every series does at a
    /// [`flush`](crate::MetricBatch::flush)).
    pub series: usize,
    /// Measurements recorded by name, and handles bound (one each, for
    /// the writes through them are not counted), that went to the
    /// overflow series in the interval.
    pub overflowed_last_interval: u64,
    /// The attribute key with the most distinct values seen since the name
    /// first overflowed, with their estimated number: in the series it made
    /// since, and in a sample of the measurements recorded by name into the
    /// overflow series (one in 64). A lower bound that names the culprit.
    pub top_attribute: Option<(String, u64)>,
    /// An estimate of the distinct series the name made since the start of
    /// the current UTC day (New Relic stops aggregating a name past
    /// 100,000 a day): up to 1,024, the series made (one made again counts
    /// again); past that, within a few percent.
    pub distinct_series_today: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daily estimate of a name's distinct series: series made counted
    /// exactly up to 1,024, then within the sketch's error (three standard errors, 6.9%, plus
    /// the 1,024 it may count twice) at 10^5 and 10^6; one warning as it
    /// passes 80,000.
    #[test]
    fn the_daily_estimate_is_within_its_error_and_warns_once() {
        let seeds = Seeds::new(&super::super::key::HashBuilder::default());
        let budget = MemoryBudget::new(16 << 20);
        let mut names = Names::new(SeriesLimits::default());
        names.add(MetricKind::Count, "logins", 100, &budget);
        let mut warnings = Vec::new();
        for n in 1..=1_000_000u64 {
            // Each series made twice: the estimate counts distinct ones.
            for _ in 0..1 + u64::from(n % 10 == 0) {
                let hash = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                if let Some(e) =
                    names.series_made(MetricKind::Count, "logins", hash, seeds, &(), &budget)
                {
                    warnings.push((n, e));
                }
            }
            let check = |estimate: u64| {
                let error = estimate.abs_diff(n) as f64;
                assert!(error <= 0.069 * n as f64 + 1024.0, "{n}: {estimate}");
            };
            match n {
                // Series made, counted exactly: made again counts again.
                1_000 => assert_eq!(
                    names.daily_estimate(MetricKind::Count, "logins"),
                    Some(1_093)
                ),
                100_000 | 1_000_000 => check(
                    names
                        .daily_estimate(MetricKind::Count, "logins")
                        .unwrap_or(0),
                ),
                _ => {}
            }
        }
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (at, estimate) = warnings[0];
        assert!(estimate >= DAILY_WARNING);
        assert!((70_000..=90_000).contains(&at), "warned after {at} series");
    }

    /// A name that made more than 1,024 series keeps its tally for the
    /// day when it leaves the batch and comes back; a smaller one's goes
    /// with it; a flush that lets go of everything forgets them.
    #[test]
    fn the_day_is_kept_for_the_names_it_is_for() {
        use super::super::series::{Placement, Series};
        let seeds = Seeds::new(&super::super::key::HashBuilder::default());
        let budget = MemoryBudget::new(16 << 20);
        let mut names = Names::new(SeriesLimits::default());
        let series = |name: &str| {
            Series::new(
                MetricKind::Count,
                name.into(),
                Arc::new(crate::Attributes::new()),
                Placement::Packed,
                &MemoryBudget::new(0),
            )
        };
        // What the batch does around the registry: the entry's bytes taken
        // from the budget with the name's first series.
        let add = |names: &mut Names, name: &str| {
            budget.add_bytes(Names::entry_bytes(name));
            names.add(MetricKind::Count, name, 0, &budget);
        };
        for (name, made) in [("big", 1_500u64), ("small", 10)] {
            add(&mut names, name);
            for n in 0..made {
                names.series_made(MetricKind::Count, name, n, seeds, &(), &budget);
            }
            for _ in 0..made {
                names.left(&series(name), false, 0, &budget);
            }
            add(&mut names, name);
        }
        let big = names.daily_estimate(MetricKind::Count, "big").unwrap_or(0);
        assert!((1_400..1_600).contains(&big), "{big}");
        assert_eq!(names.daily_estimate(MetricKind::Count, "small"), Some(0));
        // Left again: the big one's tally is kept apart, with its sketch.
        for name in ["big", "small"] {
            names.left(&series(name), false, 0, &budget);
        }
        assert_eq!(
            budget.snapshot().held_bytes,
            PARKED_BYTES + DAY_SKETCH_BYTES
        );
        names.forget_days(&budget);
        assert_eq!(budget.snapshot().held_bytes, 0);
    }

    #[test]
    fn limits_take_the_exact_name_then_the_longest_prefix() {
        let mut limits = SeriesLimits::default();
        limits.set("http.*", 10);
        limits.set("http.server.*", 20);
        limits.set("http.server.duration", 30);
        limits.set("unlimited", 0);
        assert_eq!(limits.of("http.client.duration"), 10);
        assert_eq!(limits.of("http.server.requests"), 20);
        assert_eq!(limits.of("http.server.duration"), 30);
        assert_eq!(limits.of("unlimited"), usize::MAX);
        assert_eq!(limits.of("db.query"), DEFAULT_SERIES_LIMIT);
        limits.set("http.*", 11); // replaced, not added
        assert_eq!(limits.of("http.client.duration"), 11);
        limits.set_default(0);
        assert_eq!(limits.of("db.query"), usize::MAX);
    }
}
