//! Percentiles read from a [`Distribution`]'s buckets, against the exact
//! quantiles of the samples, and the distribution's invariants for any
//! input.
//!
//! - For uniform(1, 1000), log-normal (mu = 3, sigma = 1) and bimodal (two
//!   log-normals far apart) samples from a seeded generator written here
//!   (SplitMix64 and Box-Muller), recorded into a distribution of 160
//!   buckets per side, p50, p90 and p99 each lie in the bucket that holds
//!   the exact quantile (nearest rank of the sorted samples), so their
//!   relative error is at most one bucket width at the scale reached
//!   (`base - 1`, `base = 2^(2^-scale)`). Each test prints the scale it
//!   reached and the errors. The sample size is 10^6 in an optimized build
//!   (`cargo test --release`) and 10^5 in a debug build
//!   (`cfg!(debug_assertions)`), which keeps the debug run to about a second.
//! - Properties, for any sequence of finite values (subnormals, powers of
//!   two, zeros of both signs and `f64::MAX` among them) and any `max_size`:
//!   the count is the number of values accepted (a value is refused only
//!   when it would make the sum infinite), the sum matches, min and max are
//!   exact, every value is counted in the bucket that holds it at the final
//!   scale (checked against boundaries computed here from the value's
//!   exponent and significand), bucket counts and zeros add up to the
//!   count, no side spans more than `max_size` buckets, and quantiles lie in
//!   the exact quantile's bucket. Merging `b` into `a` gives the same scale
//!   and counts as recording `a`'s and `b`'s values into one distribution.

mod support;

use std::collections::BTreeMap;

use newrelic_telemetry::distribution::Distribution;
use newrelic_telemetry::distribution::{DistributionError, MAX_SCALE, MIN_SCALE};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

// --- samples ------------------------------------------------------------------

/// How many samples each quantile test draws: 10^6 in an optimized build,
/// 10^5 in a debug one.
const SAMPLES: usize = if cfg!(debug_assertions) {
    100_000
} else {
    1_000_000
};

/// SplitMix64: a small, fast, well-mixed 64-bit generator; seeded, so each
/// test draws the same samples on every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal, by Box-Muller (one of the pair; the other is
    /// dropped for simplicity).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn log_normal(&mut self, mu: f64, sigma: f64) -> f64 {
        (mu + sigma * self.normal()).exp()
    }
}

/// The 0-based nearest rank of the `q`-quantile of `n` values,
/// `max(⌈q·n⌉, 1) - 1`: the definition `Distribution::quantile` documents.
fn rank(q: f64, n: usize) -> usize {
    ((q * n as f64).ceil() as usize).max(1) - 1
}

/// `2^exponent` for an exponent in the normal range, exactly.
fn pow2(exponent: i32) -> f64 {
    assert!((-1022..=1023).contains(&exponent));
    f64::from_bits(((exponent + 1023) as u64) << 52)
}

/// The boundaries `(lower, upper)` of bucket `index` at `scale`, computed
/// here (not with the crate): `2^(index·2^-scale)` and the next one.
fn bounds(scale: i8, index: i32) -> (f64, f64) {
    let at = |i: i32| (f64::from(i) * (-f64::from(scale)).exp2()).exp2();
    (at(index), at(index + 1))
}

/// Records `samples` into a distribution of 160 buckets per side and checks
/// p50, p90 and p99 against the exact quantiles; returns the scale reached.
fn check_quantiles(name: &str, mut samples: Vec<f64>) -> i8 {
    let mut d = Distribution::with_max_size(160).unwrap();
    for &v in &samples {
        d.record(v).unwrap();
    }
    samples.sort_unstable_by(f64::total_cmp);
    let n = samples.len();
    assert_eq!(d.count(), n as u64);
    assert_eq!((d.min(), d.max()), (Some(samples[0]), Some(samples[n - 1])));
    let exact_sum: f64 = samples.iter().sum();
    assert!(
        (d.sum() - exact_sum).abs() <= exact_sum * 1e-9,
        "{name}: sum"
    );

    let scale = d.scale();
    // One bucket's width, relative to its lower boundary.
    let width = (-f64::from(scale)).exp2().exp2() - 1.0;
    println!(
        "{name}: {n} samples, scale {scale}, bucket width {:.2}%, {} positive buckets",
        width * 100.0,
        d.positive().len()
    );
    for q in [0.5, 0.9, 0.99] {
        let exact = samples[rank(q, n)];
        let estimate = d.quantile(q).unwrap();
        let error = (estimate - exact).abs() / exact;
        println!(
            "  p{:<2} exact {exact:>12.4} estimate {estimate:>12.4} error {:.3}%",
            q * 100.0,
            error * 100.0
        );
        // The bucket that holds the exact quantile, by the crate, and its
        // boundaries, computed here.
        let index = d.bucket_index(exact).unwrap();
        let (lower, upper) = bounds(scale, index);
        assert!(
            lower < exact * (1.0 + 1e-12) && exact <= upper * (1.0 + 1e-12),
            "{name} p{q}: the exact quantile {exact} is not in bucket {index} ({lower}, {upper}]"
        );
        assert!(
            lower * (1.0 - 1e-12) <= estimate && estimate <= upper * (1.0 + 1e-12),
            "{name} p{q}: the estimate {estimate} is outside the bucket ({lower}, {upper}] of the exact {exact}"
        );
        assert_eq!(d.bucket_index(estimate), Some(index), "{name} p{q}");
        assert!(
            error <= width,
            "{name} p{q}: error {error} over the width {width}"
        );
    }
    scale
}

#[test]
fn percentiles_of_uniform_samples_lie_in_the_exact_quantiles_bucket() {
    let mut rng = SplitMix64(0x5EED_0001);
    let samples = (0..SAMPLES).map(|_| 1.0 + 999.0 * rng.uniform()).collect();
    // Values in (1, 1000): 160 buckets are 16 per power of two, scale 4
    // (a width of 2^(1/16) - 1, about 4.4%).
    assert_eq!(check_quantiles("uniform(1, 1000)", samples), 4);
}

#[test]
fn percentiles_of_log_normal_samples_lie_in_the_exact_quantiles_bucket() {
    let mut rng = SplitMix64(0x5EED_0002);
    let samples = (0..SAMPLES).map(|_| rng.log_normal(3.0, 1.0)).collect();
    // About ten standard deviations (14 powers of two) between the
    // extremes: 8 buckets per power of two.
    assert!(check_quantiles("log-normal(3, 1)", samples) >= 3);
}

#[test]
fn percentiles_of_bimodal_samples_lie_in_the_exact_quantiles_bucket() {
    let mut rng = SplitMix64(0x5EED_0003);
    // 70% around e^1 (2.7 ms, a cache hit), 30% around e^6 (400 ms, a
    // miss): p50 in the first mode, p90 and p99 in the second.
    let samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            if rng.uniform() < 0.7 {
                rng.log_normal(1.0, 0.4)
            } else {
                rng.log_normal(6.0, 0.4)
            }
        })
        .collect();
    let mut sorted = samples.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    assert!(sorted[rank(0.5, SAMPLES)] < 20.0 && sorted[rank(0.9, SAMPLES)] > 100.0);
    assert!(check_quantiles("bimodal", samples) >= 3);
}

// --- properties -------------------------------------------------------------

/// `sign · m · 2^e` for `m` in [1, 2).
fn scaled(negative: bool, m: f64, e: i32) -> f64 {
    let v = m * pow2(e);
    if negative { -v } else { v }
}

/// Values no sum of 200 of which can overflow: moderate ones, the whole
/// normal range up to 2^1000, subnormals, powers of two, zeros.
fn bounded() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => (any::<bool>(), 1.0f64..2.0, -40i32..40).prop_map(|(n, m, e)| scaled(n, m, e)),
        2 => (any::<bool>(), 1.0f64..2.0, -1022i32..1000).prop_map(|(n, m, e)| scaled(n, m, e)),
        1 => (any::<bool>(), 1u64..(1 << 52)).prop_map(|(n, bits)| {
            let v = f64::from_bits(bits);
            if n { -v } else { v }
        }),
        1 => (any::<bool>(), -1022i32..1000).prop_map(|(n, e)| scaled(n, 1.0, e)),
        1 => select(vec![0.0, -0.0, f64::MIN_POSITIVE, 1.0, -1.0, 0.5, 3.0]),
    ]
}

/// Any finite value, the largest magnitudes included (whose sums may
/// overflow).
fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => bounded(),
        1 => (any::<bool>(), 1.0f64..2.0, 1000i32..=1023).prop_map(|(n, m, e)| scaled(n, m, e)),
        1 => select(vec![f64::MAX, -f64::MAX, f64::from_bits(f64::MAX.to_bits() - 1)]),
    ]
}

fn max_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(160usize), 2usize..=40]
}

/// Whether bucket `index` at `scale` holds `value`'s magnitude, checked
/// from its exponent and significand: exactly for scales <= 0 (whole
/// powers of two) and for powers of two, within 10^-12 for other
/// boundaries, which the logarithm method may round across. A subnormal
/// belongs in the bucket that ends at 2^-1022.
fn holds(scale: i8, index: i32, value: f64) -> bool {
    let bits = value.abs().to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i64;
    let (exponent, significand) = if biased == 0 {
        // Counted with 2^-1022.
        (-1022i64, 1.0f64)
    } else {
        (
            biased - 1023,
            f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52)),
        )
    };
    let index = i64::from(index);
    if scale <= 0 {
        // Bucket `index` is (2^lo, 2^hi].
        let lo = index << -scale;
        let hi = (index + 1) << -scale;
        let above_lo = exponent > lo || (exponent == lo && significand > 1.0);
        let within_hi = exponent < hi || (exponent == hi && significand == 1.0);
        return above_lo && within_hi;
    }
    // Position of the bucket within the value's power of two, in steps of
    // 2^-scale: the bucket is (2^(j/2^s), 2^((j+1)/2^s)] of the significand.
    let per_power = 1i64 << scale;
    let j = index - exponent * per_power;
    if significand == 1.0 {
        return j == -1;
    }
    if !(0..per_power).contains(&j) {
        return false;
    }
    let lower = (j as f64 / per_power as f64).exp2();
    let upper = ((j + 1) as f64 / per_power as f64).exp2();
    lower < significand * (1.0 + 1e-12) && significand <= upper * (1.0 + 1e-12)
}

/// The bucket one scale finer (`2 * index` or `2 * index + 1`) that holds
/// `value`; `None` when [`holds`] cannot tell (within 10^-12 of the
/// boundary between them).
fn index_one_finer(scale: i8, index: i32, value: f64) -> Option<i32> {
    match [2 * index, 2 * index + 1].map(|i| holds(scale + 1, i, value)) {
        [true, false] => Some(2 * index),
        [false, true] => Some(2 * index + 1),
        _ => None,
    }
}

/// The sum of `values`, compensated (Neumaier): exact to about one
/// rounding whatever their order.
fn compensated_sum(values: &[f64]) -> f64 {
    let (mut sum, mut compensation) = (0.0f64, 0.0f64);
    for &v in values {
        let t = sum + v;
        compensation += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + compensation
}

/// What each side's non-empty buckets should hold: each non-zero value's
/// index at `d`'s scale, by sign.
fn expected_buckets(d: &Distribution, values: &[f64]) -> [BTreeMap<i32, u64>; 2] {
    let mut sides = [BTreeMap::new(), BTreeMap::new()];
    for &v in values.iter().filter(|&&v| v != 0.0) {
        let side = usize::from(v < 0.0);
        *sides[side].entry(d.bucket_index(v).unwrap()).or_insert(0) += 1;
    }
    sides
}

fn non_empty(b: &newrelic_telemetry::distribution::Buckets) -> BTreeMap<i32, u64> {
    b.iter().filter(|&(_, c)| c > 0).collect()
}

proptest! {
    #![proptest_config(support::proptest_config(256))]

    #[test]
    fn counts_sum_extremes_and_every_bucket_are_exact(
        values in vec(finite(), 0..200),
        max_size in max_size(),
    ) {
        let mut d = Distribution::with_max_size(max_size).unwrap();
        let mut accepted = Vec::new();
        let mut running = 0.0f64;
        for &v in &values {
            let result = d.record(v);
            if (running + v).is_finite() {
                prop_assert_eq!(result, Ok(()));
                running += v;
                accepted.push(v);
            } else {
                prop_assert_eq!(result, Err(DistributionError::SumOverflow { sum: running, added: v }));
            }
        }
        let n = accepted.len() as u64;
        prop_assert_eq!(d.count(), n);
        prop_assert_eq!(d.is_empty(), n == 0);

        // Sum: within rounding of the exact sum.
        let magnitude: f64 = accepted.iter().map(|v| v.abs()).sum();
        if magnitude.is_finite() {
            let exact = compensated_sum(&accepted);
            prop_assert!((d.sum() - exact).abs() <= magnitude * 1e-12, "{} vs {}", d.sum(), exact);
        }
        prop_assert!(d.sum().is_finite());

        // Min and max: exact.
        let min = accepted.iter().copied().reduce(f64::min);
        let max = accepted.iter().copied().reduce(f64::max);
        prop_assert_eq!((d.min(), d.max()), (min, max));

        // Counts add up, and stay within max_size.
        let zeros = accepted.iter().filter(|&&v| v == 0.0).count() as u64;
        prop_assert_eq!(d.zero_count(), zeros);
        prop_assert_eq!(d.zero_count() + d.positive().total() + d.negative().total(), n);
        prop_assert!((MIN_SCALE..=MAX_SCALE).contains(&d.scale()));
        prop_assert!(d.held_bytes() <= 2 * 8 * max_size);
        for side in [d.positive(), d.negative()] {
            prop_assert!(side.len() <= max_size);
            if let (Some(first), Some(last)) = (side.counts().first(), side.counts().last()) {
                prop_assert!(*first > 0 && *last > 0, "a range ends in an empty bucket");
            } else {
                prop_assert_eq!(side.offset(), 0);
            }
        }

        // Every value in its bucket at the final scale.
        let [positive, negative] = expected_buckets(&d, &accepted);
        prop_assert_eq!(non_empty(d.positive()), positive);
        prop_assert_eq!(non_empty(d.negative()), negative);
        for &v in accepted.iter().filter(|&&v| v != 0.0) {
            let index = d.bucket_index(v).unwrap();
            prop_assert!(holds(d.scale(), index, v), "{:e} is not in bucket {} at scale {}", v, index, d.scale());
        }

        // The scale is the highest at which the values fit: one finer, some
        // side would span more than max_size buckets.
        if d.scale() < MAX_SCALE {
            let mut spans = Vec::new();
            for negative in [false, true] {
                let side: Vec<f64> = accepted
                    .iter()
                    .filter(|&&v| v != 0.0 && (v < 0.0) == negative)
                    .map(|v| v.abs())
                    .collect();
                let (Some(lo), Some(hi)) = (side.iter().copied().reduce(f64::min), side.iter().copied().reduce(f64::max)) else {
                    continue;
                };
                let finer = |v: f64| index_one_finer(d.scale(), d.bucket_index(v).unwrap(), v);
                spans.push(finer(lo).zip(finer(hi)).map(|(lo, hi)| (hi - lo + 1) as usize));
            }
            if spans.iter().all(Option::is_some) {
                prop_assert!(
                    spans.iter().flatten().any(|&span| span > max_size),
                    "scale {} was not needed: spans {:?} one finer", d.scale(), spans
                );
            }
        }

        // Quantiles lie in the bucket of the exact quantile.
        let mut sorted = accepted.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
            let estimate = d.quantile(q);
            if sorted.is_empty() {
                prop_assert_eq!(estimate, None);
                continue;
            }
            let exact = sorted[rank(q, sorted.len())];
            let estimate = estimate.unwrap();
            prop_assert!(min.is_some_and(|m| m <= estimate) && max.is_some_and(|m| estimate <= m));
            if exact == 0.0 {
                prop_assert_eq!(estimate, 0.0);
            } else {
                prop_assert_eq!(estimate.is_sign_negative(), exact.is_sign_negative());
                prop_assert_eq!(d.bucket_index(estimate), d.bucket_index(exact), "q {} exact {:e} estimate {:e}", q, exact, estimate);
            }
        }
        prop_assert_eq!(d.quantile(1.5), None);
        prop_assert_eq!(d.quantile(f64::NAN), None);
    }

    #[test]
    fn merging_equals_recording_both_into_one(
        a_values in vec(bounded(), 0..120),
        b_values in vec(bounded(), 0..120),
        max_size in max_size(),
    ) {
        let mut a = Distribution::with_max_size(max_size).unwrap();
        let mut b = Distribution::with_max_size(max_size).unwrap();
        let mut one = Distribution::with_max_size(max_size).unwrap();
        for &v in &a_values {
            a.record(v).unwrap();
            one.record(v).unwrap();
        }
        for &v in &b_values {
            b.record(v).unwrap();
            one.record(v).unwrap();
        }
        let mut ab = a.clone();
        ab.merge(&b).unwrap();
        let mut ba = b.clone();
        ba.merge(&a).unwrap();
        let mut into_empty = Distribution::with_max_size(max_size).unwrap();
        into_empty.merge(&a).unwrap();
        prop_assert_eq!(&into_empty, &a);
        for merged in [&ab, &ba] {
            prop_assert_eq!(merged.scale(), one.scale());
            prop_assert_eq!(merged.positive(), one.positive());
            prop_assert_eq!(merged.negative(), one.negative());
            prop_assert_eq!(merged.zero_count(), one.zero_count());
            prop_assert_eq!(merged.count(), one.count());
            prop_assert_eq!((merged.min(), merged.max()), (one.min(), one.max()));
            let magnitude: f64 = a_values.iter().chain(&b_values).map(|v| v.abs()).sum();
            prop_assert!((merged.sum() - one.sum()).abs() <= magnitude * 1e-12);
        }
    }
}
