//! A distribution: a base-2 exponential histogram with OpenTelemetry's
//! semantics, from which percentiles are read.
//!
//! A [`Distribution`] keeps the count, sum, minimum and maximum of the
//! values it was given and, for their magnitudes, counts in buckets whose
//! boundaries grow exponentially. At scale `s` the ratio of two neighbouring
//! boundaries is `base = 2^(2^-s)`, and bucket `i` holds the magnitudes in
//! `(base^i, base^(i+1)]` (upper boundary inclusive: an exact power of two is
//! the *upper* end of its bucket, as OpenTelemetry's data model says).
//!
//! - Positive values are counted in [`positive`](Distribution::positive)
//!   buckets, negative values by their magnitude in
//!   [`negative`](Distribution::negative) buckets, each a contiguous range
//!   of indices from an offset ([`Buckets`]).
//! - Zero (`0.0` and `-0.0`) is counted in the zero bucket
//!   ([`zero_count`](Distribution::zero_count)); the zero threshold is 0:
//!   every other finite value is counted in a positive or negative bucket.
//! - A distribution starts at [`MAX_SCALE`] (20, OpenTelemetry's default
//!   maximum). When a value would need more than `max_size` buckets
//!   ([`DEFAULT_MAX_SIZE`], 160, unless set with
//!   [`with_max_size`](Distribution::with_max_size)) on its side, the scale
//!   goes down by as many steps as needed, each step merging neighbouring
//!   bucket pairs (index `i` becomes `i >> 1`). It never goes below
//!   [`MIN_SCALE`] (-10), where any two buckets hold every finite value.
//!   The scale is always the highest at which every value recorded fits.
//! - NaN and infinities are refused ([`DistributionError::NonFiniteValue`]),
//!   and so is a value that would make the sum infinite
//!   ([`DistributionError::SumOverflow`]); a refused value changes nothing.
//! - Subnormal magnitudes (below `f64::MIN_POSITIVE`, 2^-1022) are counted
//!   in the bucket whose upper boundary is 2^-1022, the lowest bucket of the
//!   normal range, as OpenTelemetry's Go and JavaScript SDKs do.
//!
//! Indices are computed as OpenTelemetry's data model describes: from the
//! exponent bits of the value for scales <= 0, and with a logarithm of its
//! significand for scales > 0, where an exact power of two is placed in
//! its bucket exactly. Near a boundary that is not a power of two, a
//! logarithm rounded to the last bit may place a value in the neighbouring
//! bucket, which the data model accepts.
//!
//! [`quantile`](Distribution::quantile) reads a percentile from the
//! buckets: the estimate lies in the bucket that holds the exact quantile,
//! so its relative error is at most half a bucket width (about 2.2% at
//! scale 4, 0.54% at scale 6).
//!
//! ```
//! use newrelic_telemetry::distribution::Distribution;
//!
//! let mut latency = Distribution::new();
//! for ms in 1..=1000 {
//!     latency.record(f64::from(ms))?;
//! }
//! assert_eq!(latency.count(), 1000);
//! assert_eq!(latency.sum(), 500_500.0);
//! // 1 ends bucket -1 and 1000 is about 2^9.97: at scale 4 (16 buckets per
//! // power of two) that is 161 buckets, one too many; at scale 3, 81.
//! assert_eq!(latency.scale(), 3);
//! let p99 = latency.quantile(0.99).unwrap();
//! assert!((p99 - 990.0).abs() / 990.0 < 0.05, "{p99}");
//! # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
//! ```

use std::fmt;

mod point;

pub use point::DistributionPoint;

/// The highest scale, the one a new distribution starts at: 2^20 buckets
/// per power of two (OpenTelemetry's default maximum scale).
///
/// ```
/// use newrelic_telemetry::distribution::Distribution;
/// use newrelic_telemetry::distribution::MAX_SCALE;
///
/// assert_eq!(MAX_SCALE, 20);
/// assert_eq!(Distribution::new().scale(), MAX_SCALE);
/// ```
pub const MAX_SCALE: i8 = 20;

/// The lowest scale a distribution reaches: each bucket spans 2^1024, so
/// two buckets per side hold every finite value (OpenTelemetry's minimum).
///
/// ```
/// use newrelic_telemetry::distribution::Distribution;
/// use newrelic_telemetry::distribution::MIN_SCALE;
///
/// let mut d = Distribution::with_max_size(2)?;
/// d.record(f64::MAX)?;
/// d.record(f64::from_bits(1))?; // the smallest subnormal
/// d.record(1.0)?;
/// assert_eq!(d.scale(), MIN_SCALE);
/// assert_eq!(d.positive().len(), 2);
/// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
/// ```
pub const MIN_SCALE: i8 = -10;

/// The most buckets per side (positive, negative) a distribution keeps
/// unless told otherwise: 160, OpenTelemetry's default.
///
/// ```
/// use newrelic_telemetry::distribution::Distribution;
/// use newrelic_telemetry::distribution::DEFAULT_MAX_SIZE;
///
/// assert_eq!(DEFAULT_MAX_SIZE, 160);
/// assert_eq!(Distribution::new().max_size(), DEFAULT_MAX_SIZE);
/// ```
pub const DEFAULT_MAX_SIZE: usize = 160;

/// The fewest buckets per side a distribution may be limited to: 2, the
/// number that holds every finite value at [`MIN_SCALE`].
///
/// ```
/// use newrelic_telemetry::distribution::Distribution;
/// use newrelic_telemetry::distribution::MIN_MAX_SIZE;
///
/// assert!(Distribution::with_max_size(MIN_MAX_SIZE).is_ok());
/// assert!(Distribution::with_max_size(MIN_MAX_SIZE - 1).is_err());
/// ```
pub const MIN_MAX_SIZE: usize = 2;

/// The significand bits of an `f64`.
const SIGNIFICAND_MASK: u64 = (1 << 52) - 1;
/// The exponent of 1.0 in an `f64`'s biased exponent field.
const EXPONENT_BIAS: i32 = 1023;
/// The exponent of `f64::MIN_POSITIVE`, the smallest normal value.
const MIN_NORMAL_EXPONENT: i32 = -1022;

/// Why a distribution refused a value, a merge or a size.
///
/// A refused value or merge leaves the distribution as it was.
///
/// ```
/// use newrelic_telemetry::distribution::Distribution;
/// use newrelic_telemetry::distribution::DistributionError;
///
/// let mut d = Distribution::new();
/// let err = d.record(f64::NAN).unwrap_err();
/// assert!(matches!(err, DistributionError::NonFiniteValue { value } if value.is_nan()));
/// assert_eq!(err.to_string(), "a distribution records finite values only, not NaN");
/// assert_eq!(d.count(), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum DistributionError {
    /// The value given to [`record`](Distribution::record) is NaN or
    /// infinite.
    NonFiniteValue {
        /// The value.
        value: f64,
    },
    /// Adding a value (or, in [`merge`](Distribution::merge), another
    /// distribution's sum) would make the sum infinite.
    SumOverflow {
        /// The distribution's sum.
        sum: f64,
        /// What was to be added to it.
        added: f64,
    },
    /// [`with_max_size`](Distribution::with_max_size) was given fewer than
    /// [`MIN_MAX_SIZE`] buckets.
    InvalidMaxSize {
        /// The size asked for.
        requested: usize,
    },
    /// [`Distribution::from_parts`] or [`Buckets::new`] was given parts
    /// that no distribution has (a scale out of range, counts that do not
    /// add up, ...): see [`PartsError`].
    InvalidParts {
        /// What was wrong with them.
        reason: PartsError,
    },
}

impl fmt::Display for DistributionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistributionError::NonFiniteValue { value } => {
                write!(f, "a distribution records finite values only, not {value}")
            }
            DistributionError::SumOverflow { sum, added } => write!(
                f,
                "adding {added} to a distribution's sum of {sum} would overflow to infinity; nothing was added"
            ),
            DistributionError::InvalidMaxSize { requested } => write!(
                f,
                "a distribution needs a max_size of at least {MIN_MAX_SIZE} buckets per side, not {requested}"
            ),
            DistributionError::InvalidParts { reason } => {
                write!(f, "invalid distribution parts: {reason}")
            }
        }
    }
}

impl std::error::Error for DistributionError {}

/// What [`Distribution::from_parts`] or [`Buckets::new`] found wrong with
/// the parts it was given ([`DistributionError::InvalidParts`]).
///
/// ```
/// use newrelic_telemetry::distribution::Distribution;
/// use newrelic_telemetry::distribution::{DistributionError, DistributionParts, PartsError};
///
/// let parts = DistributionParts { scale: 21, ..DistributionParts::default() };
/// let err = Distribution::from_parts(parts).unwrap_err();
/// assert_eq!(err, DistributionError::InvalidParts { reason: PartsError::ScaleOutOfRange { scale: 21 } });
/// assert_eq!(
///     err.to_string(),
///     "invalid distribution parts: scale 21 is outside -10..=20"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum PartsError {
    /// The scale is outside [`MIN_SCALE`]`..=`[`MAX_SCALE`].
    ScaleOutOfRange {
        /// The scale given.
        scale: i32,
    },
    /// A bucket range reaches past the indices of finite values at the
    /// scale (or, in [`Buckets::new`], past `i32::MAX`).
    BucketsOutOfRange {
        /// The index of the range's first non-empty bucket.
        offset: i32,
        /// How many buckets the range spans, from its first non-empty
        /// bucket to its last.
        len: usize,
        /// The scale it was checked at (`None` in [`Buckets::new`], which
        /// knows no scale).
        scale: Option<i32>,
    },
    /// `count` is not `zero_count` plus the counts of both sides.
    CountMismatch {
        /// The count given.
        count: u64,
        /// What the zero bucket and the buckets hold together
        /// (`u64::MAX` if more).
        in_buckets: u64,
    },
    /// The sum is NaN or infinite.
    NonFiniteSum {
        /// The sum given.
        sum: f64,
    },
    /// The count is 0 but the sum is not.
    SumOfEmpty {
        /// The sum given.
        sum: f64,
    },
    /// The count is not 0 but the minimum or the maximum is missing.
    MissingBounds,
    /// The minimum or maximum is not finite, the minimum is above the
    /// maximum, or they contradict the buckets (negative values counted
    /// but a minimum of at least 0, positive values counted but a maximum
    /// of at most 0).
    InvalidBounds {
        /// The minimum given.
        min: f64,
        /// The maximum given.
        max: f64,
    },
}

impl fmt::Display for PartsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartsError::ScaleOutOfRange { scale } => {
                write!(f, "scale {scale} is outside {MIN_SCALE}..={MAX_SCALE}")
            }
            PartsError::BucketsOutOfRange { offset, len, scale } => {
                write!(f, "{len} buckets from index {offset} reach past ")?;
                match scale {
                    Some(scale) => write!(f, "the indices of finite values at scale {scale}"),
                    None => f.write_str("the largest index, 2^31 - 1"),
                }
            }
            PartsError::CountMismatch { count, in_buckets } => write!(
                f,
                "count is {count} but the zero bucket and the buckets hold {in_buckets}"
            ),
            PartsError::NonFiniteSum { sum } => write!(f, "the sum is {sum}, not a finite number"),
            PartsError::SumOfEmpty { sum } => {
                write!(f, "the count is 0 but the sum is {sum}, not 0")
            }
            PartsError::MissingBounds => {
                f.write_str("the count is not 0 but the minimum or the maximum is missing")
            }
            PartsError::InvalidBounds { min, max } => write!(
                f,
                "a minimum of {min} and a maximum of {max} do not bound the values counted"
            ),
        }
    }
}

impl From<PartsError> for DistributionError {
    fn from(reason: PartsError) -> Self {
        DistributionError::InvalidParts { reason }
    }
}

/// One side's buckets (positive or negative values): the count of bucket
/// `offset() + k` is `counts()[k]`.
///
/// Bucket `i` holds the magnitudes in `(base^i, base^(i+1)]` at the
/// distribution's [`scale`](Distribution::scale). The first and last counts
/// are never zero; an empty side has offset 0 and no counts.
///
/// ```
/// use newrelic_telemetry::distribution::Distribution;
///
/// let mut d = Distribution::new();
/// d.record(-1.0)?;
/// let negative = d.negative();
/// // 1 = 2^0 is the upper boundary of bucket -1, at every scale.
/// assert_eq!(negative.offset(), -1);
/// assert_eq!(negative.counts(), &[1]);
/// assert!(d.positive().is_empty());
/// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    offset: i32,
    counts: Vec<u64>,
}

impl Buckets {
    /// The index of the first bucket (`counts()[0]`); 0 when empty.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(2.0)?;
    /// // At scale 20, 2 = 2^1 is the upper boundary of bucket 2^20 - 1.
    /// assert_eq!(d.positive().offset(), (1 << 20) - 1);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// The counts of consecutive buckets from [`offset`](Self::offset).
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(1.0)?;
    /// d.record(1.0)?;
    /// assert_eq!(d.positive().counts(), &[2]);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// How many buckets the range spans (empty ones inside it included).
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(1.0)?;
    /// d.record(4.0)?;
    /// // Two powers of two apart: at scale 20, 2 * 2^20 buckets are more
    /// // than 160, so the scale went down to 6 (64 buckets per power of two).
    /// assert_eq!(d.scale(), 6);
    /// assert_eq!(d.positive().len(), 129);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no value was counted on this side.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// assert!(d.positive().is_empty());
    /// d.record(0.5)?;
    /// assert!(!d.positive().is_empty());
    /// assert!(d.negative().is_empty());
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The sum of the counts: how many values this side holds.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// for v in [-3.0, -2.0, 0.0, 5.0] {
    ///     d.record(v)?;
    /// }
    /// assert_eq!(d.negative().total(), 2);
    /// assert_eq!(d.positive().total(), 1);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// Each bucket's index and count, empty ones included, in index order.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(1.0)?;
    /// d.record(4.0)?;
    /// let used: Vec<(i32, u64)> = d.positive().iter().filter(|&(_, c)| c > 0).collect();
    /// // At scale 6: 1 = 2^0 ends bucket -1 and 4 = 2^2 ends bucket 2 * 64 - 1.
    /// assert_eq!(used, [(-1, 1), (127, 1)]);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        // An index past i32 cannot occur: every range lies within the
        // indices of finite values, which fit in an i32 at every scale.
        self.counts
            .iter()
            .enumerate()
            .map(move |(k, &count)| (self.offset + k as i32, count))
    }

    /// The index of the last bucket; the range must not be empty.
    fn end(&self) -> i32 {
        self.offset + (self.counts.len() as i32 - 1)
    }

    /// Extends the range to cover `lo..=hi` (the caller has checked that
    /// the result fits in `max_size`), growing the allocation at most to
    /// `max_size` buckets.
    fn cover(&mut self, lo: i32, hi: i32, max_size: usize) {
        let (new_lo, new_hi) = if self.counts.is_empty() {
            (lo, hi)
        } else {
            (lo.min(self.offset), hi.max(self.end()))
        };
        let new_len = (i64::from(new_hi) - i64::from(new_lo) + 1) as usize;
        let len = self.counts.len();
        if new_len == len {
            return;
        }
        if new_len > self.counts.capacity() {
            // Doubling, but never past max_size: the memory a side holds is
            // bounded by its max_size.
            let doubled = self.counts.capacity().saturating_mul(2).max(4);
            let target = new_len.max(doubled.min(max_size));
            self.counts.reserve_exact(target - len);
        }
        let front = if len == 0 {
            0
        } else {
            (i64::from(self.offset) - i64::from(new_lo)) as usize
        };
        self.counts.resize(new_len, 0);
        if front > 0 {
            self.counts.rotate_right(front);
        }
        self.offset = new_lo;
    }

    /// Adds `by` to bucket `index`, which must be within `max_size` of the
    /// range.
    fn add(&mut self, index: i32, by: u64, max_size: usize) {
        self.cover(index, index, max_size);
        let slot = &mut self.counts[(index - self.offset) as usize];
        *slot = slot.saturating_add(by);
    }

    /// Halves the resolution `by` times: bucket `i` becomes `i >> by`, in
    /// place.
    fn downscale(&mut self, by: u32) {
        if by == 0 || self.counts.is_empty() {
            return;
        }
        let end = self.end();
        let new_offset = self.offset >> by;
        for (pos, index) in (self.offset..=end).enumerate() {
            let target = ((index >> by) - new_offset) as usize;
            if target != pos {
                let count = std::mem::take(&mut self.counts[pos]);
                self.counts[target] = self.counts[target].saturating_add(count);
            }
        }
        self.counts
            .truncate(((end >> by) - new_offset + 1) as usize);
        self.offset = new_offset;
    }

    /// Adds every count of `other`, whose indices are `by` scale steps
    /// finer, into this range (the caller has checked the fit).
    fn add_all(&mut self, other: &Buckets, by: u32, max_size: usize) {
        if other.counts.is_empty() {
            return;
        }
        self.cover(other.offset >> by, other.end() >> by, max_size);
        for (index, count) in other.iter() {
            let slot = &mut self.counts[((index >> by) - self.offset) as usize];
            *slot = slot.saturating_add(count);
        }
    }

    /// The range of indices this side would span with the range `extra`
    /// added; `None` when both are empty.
    fn span_with(&self, extra: Option<(i32, i32)>) -> Option<(i32, i32)> {
        let mine = (!self.counts.is_empty()).then(|| (self.offset, self.end()));
        match (mine, extra) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (one, None) | (None, one) => one,
        }
    }
}

/// A base-2 exponential histogram of `f64` values, with OpenTelemetry's
/// semantics: count, sum, min, max, a zero bucket and positive and
/// negative bucket ranges at a scale that goes down as the values spread
/// (see the [module documentation](crate::distribution)).
///
/// Its heap memory is its two bucket vectors, at most `max_size` counts
/// (8 bytes each) per side ([`held_bytes`](Self::held_bytes)).
///
/// ```
/// use newrelic_telemetry::distribution::Distribution;
///
/// let mut d = Distribution::new();
/// for v in [-2.0, 0.0, 0.5, 3.0, 3.0] {
///     d.record(v)?;
/// }
/// assert_eq!((d.count(), d.sum(), d.min(), d.max()), (5, 4.5, Some(-2.0), Some(3.0)));
/// assert_eq!(d.zero_count(), 1);
/// assert_eq!(d.negative().total() + d.zero_count() + d.positive().total(), d.count());
/// // p50 is 0.5, read from its bucket at scale 5 (2^(1/32) apart).
/// let p50 = d.quantile(0.5).unwrap();
/// assert!((p50 - 0.5).abs() / 0.5 < 2f64.powf(1.0 / 32.0) - 1.0, "{p50}");
/// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    count: u64,
    sum: f64,
    /// `+inf` while empty.
    min: f64,
    /// `-inf` while empty.
    max: f64,
    zero_count: u64,
    scale: i8,
    max_size: usize,
    positive: Buckets,
    negative: Buckets,
}

impl Default for Distribution {
    /// The same as [`Distribution::new`].
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// assert_eq!(Distribution::default(), Distribution::new());
    /// ```
    fn default() -> Self {
        Distribution::new()
    }
}

impl Distribution {
    /// An empty distribution at [`MAX_SCALE`] keeping at most
    /// [`DEFAULT_MAX_SIZE`] (160) buckets per side. It allocates nothing
    /// until a non-zero value is recorded.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let d = Distribution::new();
    /// assert!(d.is_empty());
    /// assert_eq!((d.scale(), d.max_size(), d.held_bytes()), (20, 160, 0));
    /// ```
    pub fn new() -> Self {
        Distribution {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            zero_count: 0,
            scale: MAX_SCALE,
            max_size: DEFAULT_MAX_SIZE,
            positive: Buckets::default(),
            negative: Buckets::default(),
        }
    }

    /// An empty distribution keeping at most `max_size` buckets per side:
    /// more buckets mean a finer scale for the same spread of values, and
    /// up to 8 bytes each per side. Fewer than [`MIN_MAX_SIZE`] (2) is
    /// refused with [`DistributionError::InvalidMaxSize`].
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    /// use newrelic_telemetry::distribution::DistributionError;
    ///
    /// let mut d = Distribution::with_max_size(20)?;
    /// for ms in 1..=1000 {
    ///     d.record(f64::from(ms))?;
    /// }
    /// // 1 ends bucket -1 and 1000 is about 2^9.97: 21 buckets at scale 1,
    /// // 11 at scale 0.
    /// assert_eq!(d.scale(), 0);
    /// assert_eq!(
    ///     Distribution::with_max_size(1),
    ///     Err(DistributionError::InvalidMaxSize { requested: 1 })
    /// );
    /// # Ok::<(), DistributionError>(())
    /// ```
    pub fn with_max_size(max_size: usize) -> Result<Self, DistributionError> {
        if max_size < MIN_MAX_SIZE {
            return Err(DistributionError::InvalidMaxSize {
                requested: max_size,
            });
        }
        Ok(Distribution {
            max_size,
            ..Distribution::new()
        })
    }

    /// Records a value: the count, sum, min and max take it in, and so does
    /// its bucket (zero's bucket for `0.0` and `-0.0`, a negative bucket for
    /// a negative value), downscaling first if its bucket would make its
    /// side span more than `max_size` buckets.
    ///
    /// NaN and infinities are refused, and so is a value that would make
    /// the sum infinite; a refused value changes nothing.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    /// use newrelic_telemetry::distribution::DistributionError;
    ///
    /// let mut d = Distribution::new();
    /// d.record(-0.0)?;
    /// d.record(-7.5)?;
    /// assert_eq!((d.zero_count(), d.negative().total()), (1, 1));
    /// assert_eq!(
    ///     d.record(f64::INFINITY),
    ///     Err(DistributionError::NonFiniteValue { value: f64::INFINITY })
    /// );
    /// d.record(f64::MAX)?;
    /// // The sum, -7.5 + f64::MAX, rounds to f64::MAX.
    /// assert_eq!(
    ///     d.record(f64::MAX),
    ///     Err(DistributionError::SumOverflow { sum: f64::MAX, added: f64::MAX })
    /// );
    /// assert_eq!(d.count(), 3);
    /// # Ok::<(), DistributionError>(())
    /// ```
    pub fn record(&mut self, value: f64) -> Result<(), DistributionError> {
        self.record_n(value, 1)
    }

    /// Records `value` `n` times (`n` > 0), as `n` calls of
    /// [`record`](Self::record) would.
    pub(crate) fn record_n(&mut self, value: f64, n: u64) -> Result<(), DistributionError> {
        if !value.is_finite() {
            return Err(DistributionError::NonFiniteValue { value });
        }
        let added = value * n as f64;
        let sum = self.sum + added;
        if !sum.is_finite() {
            return Err(DistributionError::SumOverflow {
                sum: self.sum,
                added,
            });
        }
        self.count = self.count.saturating_add(n);
        self.sum = sum;
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        if value == 0.0 {
            self.zero_count = self.zero_count.saturating_add(n);
            return Ok(());
        }
        let mut index = map_to_index(self.scale, value.abs());
        let side = if value > 0.0 {
            &self.positive
        } else {
            &self.negative
        };
        let change = self.change_to_fit(side.span_with(Some((index, index))));
        if change > 0 {
            self.downscale(change);
            index >>= change;
        }
        let max_size = self.max_size;
        let side = if value > 0.0 {
            &mut self.positive
        } else {
            &mut self.negative
        };
        side.add(index, n, max_size);
        Ok(())
    }

    /// Adds another distribution's values to this one, as if they had been
    /// recorded here: both are brought to the highest scale at which the
    /// values of both fit in this distribution's `max_size` (never higher
    /// than either's scale), then their counts are added. Recording
    /// `a`'s values and `b`'s values into one distribution gives the same
    /// scale and counts as merging `b` into `a`.
    ///
    /// A merge that would make the sum infinite is refused
    /// ([`DistributionError::SumOverflow`]) and changes nothing. Merging
    /// an empty distribution changes nothing.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let (mut a, mut b, mut both) = (Distribution::new(), Distribution::new(), Distribution::new());
    /// for v in [1.0, 2.0, 3.0] {
    ///     a.record(v)?;
    ///     both.record(v)?;
    /// }
    /// for v in [-1.0, 0.0, 1000.0] {
    ///     b.record(v)?;
    ///     both.record(v)?;
    /// }
    /// a.merge(&b)?;
    /// assert_eq!((a.scale(), a.count(), a.min(), a.max()), (both.scale(), 6, Some(-1.0), Some(1000.0)));
    /// assert_eq!((a.positive(), a.negative()), (both.positive(), both.negative()));
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn merge(&mut self, other: &Distribution) -> Result<(), DistributionError> {
        if other.count == 0 {
            return Ok(());
        }
        let sum = self.sum + other.sum;
        if !sum.is_finite() {
            return Err(DistributionError::SumOverflow {
                sum: self.sum,
                added: other.sum,
            });
        }
        // Both sides' combined ranges at the lower of the two scales.
        let common = self.scale.min(other.scale);
        let mine = (self.scale - common) as u32;
        let theirs = (other.scale - common) as u32;
        let at_common =
            |b: &Buckets, by: u32| (!b.counts.is_empty()).then(|| (b.offset >> by, b.end() >> by));
        let positive = at_common(&self.positive, mine)
            .into_iter()
            .chain(at_common(&other.positive, theirs))
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)));
        let negative = at_common(&self.negative, mine)
            .into_iter()
            .chain(at_common(&other.negative, theirs))
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)));
        let change = fit_change(common, positive, self.max_size).max(fit_change(
            common,
            negative,
            self.max_size,
        ));

        self.downscale(mine + change);
        let theirs = theirs + change;
        let max_size = self.max_size;
        self.positive.add_all(&other.positive, theirs, max_size);
        self.negative.add_all(&other.negative, theirs, max_size);
        self.count = self.count.saturating_add(other.count);
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.sum = sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        Ok(())
    }

    /// An estimate of the `q`-quantile (`q` in `[0, 1]`; 0.99 is p99), read
    /// from the buckets; `None` when the distribution is empty or `q` is
    /// outside `[0, 1]` (or NaN).
    ///
    /// The quantile is the value at rank `max(⌈q·count⌉, 1)` in ascending
    /// order (the nearest-rank definition: p50 of 1..=10 is 5), so
    /// `quantile(0.0)` is [`min`](Self::min) and `quantile(1.0)` is
    /// [`max`](Self::max), exactly. For other `q`, the estimate is the
    /// midpoint in log space, `base^(i + 1/2)` (negated on the negative
    /// side), of the bucket `i` that holds the value at that rank, or 0 for
    /// the zero bucket, clamped to `[min, max]`. It therefore lies in the
    /// same bucket as the exact quantile, and its relative error is at most
    /// `sqrt(base) - 1`, half a bucket width (a bucket's width is
    /// `base - 1` of its lower boundary).
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// assert_eq!(d.quantile(0.5), None);
    /// for v in 1..=10 {
    ///     d.record(f64::from(v))?;
    /// }
    /// assert_eq!((d.quantile(0.0), d.quantile(1.0)), (Some(1.0), Some(10.0)));
    /// let p50 = d.quantile(0.5).unwrap();
    /// let half_width = 2f64.powf(2f64.powi(-i32::from(d.scale()) - 1)) - 1.0;
    /// assert!((p50 - 5.0).abs() / 5.0 <= half_width, "{p50}");
    /// assert_eq!(d.quantile(1.5), None);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        if q == 0.0 {
            return Some(self.min);
        }
        if q == 1.0 {
            return Some(self.max);
        }
        let rank = quantile_rank(q, self.count);
        let clamp = |v: f64| v.max(self.min).min(self.max);
        let mut seen = 0u64;
        // Ascending: the negative side from its largest magnitude down,
        // zero, then the positive side up.
        for (index, count) in self.negative.iter().rev() {
            seen = seen.saturating_add(count);
            if seen > rank {
                return Some(clamp(-midpoint(self.scale, index)));
            }
        }
        seen = seen.saturating_add(self.zero_count);
        if seen > rank {
            return Some(clamp(0.0));
        }
        for (index, count) in self.positive.iter() {
            seen = seen.saturating_add(count);
            if seen > rank {
                return Some(clamp(midpoint(self.scale, index)));
            }
        }
        // The buckets hold `count` values, so the rank (< count) was found;
        // the maximum is the answer for a rank past them all.
        Some(self.max)
    }

    /// How many values were recorded (zeros included).
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(0.0)?;
    /// d.record(1.0)?;
    /// let _ = d.record(f64::NAN); // refused: not counted here
    /// assert_eq!(d.count(), 2);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the values recorded (added in recording order), always
    /// finite; 0 when empty.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(1.5)?;
    /// d.record(-0.5)?;
    /// assert_eq!(d.sum(), 1.0);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// The smallest value recorded, exactly; `None` when empty.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// assert_eq!(d.min(), None);
    /// d.record(3.25)?;
    /// d.record(-1e-300)?;
    /// assert_eq!(d.min(), Some(-1e-300));
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// The largest value recorded, exactly; `None` when empty.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// assert_eq!(d.max(), None);
    /// d.record(3.25)?;
    /// d.record(-1e-300)?;
    /// assert_eq!(d.max(), Some(3.25));
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// How many values were exactly zero (`0.0` or `-0.0`).
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(0.0)?;
    /// d.record(-0.0)?;
    /// d.record(f64::from_bits(1))?; // the smallest subnormal is not zero
    /// assert_eq!(d.zero_count(), 2);
    /// assert_eq!(d.positive().total(), 1);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// The zero bucket's threshold, always 0: only `0.0` and `-0.0` are
    /// counted as zero (OTLP's `zero_threshold` field).
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// assert_eq!(Distribution::new().zero_threshold(), 0.0);
    /// ```
    pub fn zero_threshold(&self) -> f64 {
        0.0
    }

    /// The scale, from [`MAX_SCALE`] (20) down to [`MIN_SCALE`] (-10):
    /// buckets grow by `base = 2^(2^-scale)`.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(1.5)?;
    /// assert_eq!(d.scale(), 20);
    /// d.record(1000.0)?;
    /// // 1.5 to 1000 spans about 9.4 powers of two: 16 buckets per power of
    /// // two (scale 4) fit in 160, 32 do not.
    /// assert_eq!(d.scale(), 4);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn scale(&self) -> i8 {
        self.scale
    }

    /// The most buckets each side keeps.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// assert_eq!(Distribution::with_max_size(40)?.max_size(), 40);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// The buckets of the positive values.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(3.0)?;
    /// d.record(-3.0)?;
    /// assert_eq!(d.positive(), d.negative());
    /// assert_eq!(d.positive().total(), 1);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn positive(&self) -> &Buckets {
        &self.positive
    }

    /// The buckets of the negative values, by magnitude: -3.0 is counted in
    /// the bucket that holds 3.0 on the positive side.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(-3.0)?;
    /// assert_eq!(d.negative().offset(), d.bucket_index(3.0).unwrap());
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn negative(&self) -> &Buckets {
        &self.negative
    }

    /// Whether nothing was recorded.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// assert!(d.is_empty());
    /// d.record(0.0)?;
    /// assert!(!d.is_empty());
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The heap memory the distribution holds, in bytes: the capacity of
    /// its two bucket vectors. Each grows by doubling but never past
    /// `max_size` buckets, so this is at most `2 * 8 * max_size` (2,560
    /// bytes at the default 160).
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(0.0)?;
    /// assert_eq!(d.held_bytes(), 0); // zeros need no bucket
    /// for v in 1..100_000 {
    ///     d.record(f64::from(v))?;
    ///     d.record(-f64::from(v))?;
    /// }
    /// assert!(d.held_bytes() > 0 && d.held_bytes() <= 2 * 8 * 160);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn held_bytes(&self) -> usize {
        (self.positive.counts.capacity() + self.negative.counts.capacity())
            * std::mem::size_of::<u64>()
    }

    /// The index of the bucket that holds `value`'s magnitude at the
    /// current scale (on the side of its sign); `None` for zero, NaN and
    /// infinities. A subnormal magnitude gives the bucket whose upper
    /// boundary is `f64::MIN_POSITIVE`.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let d = Distribution::new();
    /// // Scale 20: 2^20 buckets per power of two; 1 ends bucket -1.
    /// assert_eq!(d.bucket_index(1.0), Some(-1));
    /// assert_eq!(d.bucket_index(-1.0), Some(-1));
    /// assert_eq!(d.bucket_index(1.000001), Some(1));
    /// assert_eq!(d.bucket_index(0.0), None);
    /// assert_eq!(d.bucket_index(f64::MAX), Some((1024 << 20) - 1));
    /// ```
    pub fn bucket_index(&self, value: f64) -> Option<i32> {
        (value != 0.0 && value.is_finite()).then(|| map_to_index(self.scale, value.abs()))
    }

    /// The boundaries `(lower, upper)` of bucket `index` at the current
    /// scale: it holds the magnitudes `m` with `lower < m <= upper`, where
    /// `lower = base^index` and `upper = base^(index + 1)`, computed to
    /// within a few units in the last place (exact for powers of two). A
    /// boundary past the range of `f64` is 0 or infinity.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// d.record(1.0)?;
    /// d.record(100.0)?;
    /// assert_eq!(d.scale(), 4); // base 2^(1/16)
    /// let i = d.bucket_index(100.0).unwrap();
    /// let (lower, upper) = d.bucket_bounds(i);
    /// assert!(lower < 100.0 && 100.0 <= upper);
    /// assert!((upper / lower - 2f64.powf(1.0 / 16.0)).abs() < 1e-12);
    /// let (lower, upper) = d.bucket_bounds(-1);
    /// assert_eq!(upper, 1.0);
    /// assert!((lower - 2f64.powf(-1.0 / 16.0)).abs() < 1e-15);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn bucket_bounds(&self, index: i32) -> (f64, f64) {
        let scale = i32::from(self.scale);
        (
            lower_boundary(scale, i64::from(index)),
            lower_boundary(scale, i64::from(index) + 1),
        )
    }

    /// How many scale steps down the distribution must go for `span` (a
    /// side's range of indices at the current scale) to fit in `max_size`.
    fn change_to_fit(&self, span: Option<(i32, i32)>) -> u32 {
        fit_change(self.scale, span, self.max_size)
    }

    /// Lowers the scale by `by` steps, merging bucket pairs on both sides.
    fn downscale(&mut self, by: u32) {
        if by == 0 {
            return;
        }
        self.scale -= by as i8;
        self.positive.downscale(by);
        self.negative.downscale(by);
    }
}

impl Buckets {
    /// A bucket range as an exporter sends it: the count of bucket
    /// `offset + k` is `counts[k]`. Empty buckets at either end are
    /// trimmed (so the first and last counts are never zero, and counts
    /// that are all zero make an empty range, offset 0). Refused with
    /// [`PartsError::BucketsOutOfRange`] when the last non-empty bucket's
    /// index is past `i32::MAX`; [`Distribution::from_parts`] checks the
    /// range against its scale.
    ///
    /// ```
    /// use newrelic_telemetry::distribution::{Buckets, DistributionError, PartsError};
    ///
    /// let b = Buckets::new(-3, vec![0, 2, 0, 5, 0])?;
    /// assert_eq!((b.offset(), b.counts()), (-2, &[2, 0, 5][..]));
    /// assert!(Buckets::new(7, vec![0, 0])?.is_empty());
    /// assert_eq!(Buckets::new(7, vec![0, 0])?.offset(), 0);
    /// assert!(matches!(
    ///     Buckets::new(i32::MAX, vec![1, 1]),
    ///     Err(DistributionError::InvalidParts { reason: PartsError::BucketsOutOfRange { .. } })
    /// ));
    /// # Ok::<(), DistributionError>(())
    /// ```
    pub fn new(offset: i32, mut counts: Vec<u64>) -> Result<Buckets, DistributionError> {
        let Some(first) = counts.iter().position(|&c| c != 0) else {
            return Ok(Buckets::default());
        };
        // `first` exists, so `last` does too.
        let last = counts.iter().rposition(|&c| c != 0).unwrap_or(first);
        counts.truncate(last + 1);
        counts.drain(..first);
        let start = i64::from(offset) + first as i64;
        let end = i64::from(offset) + last as i64;
        match (i32::try_from(start), i32::try_from(end)) {
            (Ok(offset), Ok(_)) => Ok(Buckets { offset, counts }),
            _ => Err(PartsError::BucketsOutOfRange {
                offset: i32::try_from(start).unwrap_or(i32::MAX),
                len: counts.len(),
                scale: None,
            }
            .into()),
        }
    }
}

/// The parts of a distribution as an exporter sends them (an OTLP
/// exponential histogram point's scale, zero count, bucket ranges, count,
/// sum, minimum and maximum), for [`Distribution::from_parts`] to rebuild
/// it, and as [`Distribution::to_parts`] gives them.
///
/// ```
/// use newrelic_telemetry::distribution::Distribution;
/// use newrelic_telemetry::distribution::{Buckets, DistributionParts};
///
/// let parts = DistributionParts {
///     scale: 0, // buckets (2^i, 2^(i+1)]
///     zero_count: 1,
///     positive: Buckets::new(0, vec![3, 1])?, // 3 in (1, 2], 1 in (2, 4]
///     negative: Buckets::default(),
///     count: 5,
///     sum: 8.0,
///     min: Some(0.0),
///     max: Some(3.5),
/// };
/// let d = Distribution::from_parts(parts.clone())?;
/// assert_eq!(d.to_parts(), parts);
/// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DistributionParts {
    /// The scale (OTLP's `sint32`: anything outside
    /// [`MIN_SCALE`]`..=`[`MAX_SCALE`] is refused).
    pub scale: i32,
    /// Values in the zero bucket.
    pub zero_count: u64,
    /// Buckets of the positive values.
    pub positive: Buckets,
    /// Buckets of the negative values, by magnitude.
    pub negative: Buckets,
    /// Values in all: `zero_count` plus both sides' counts.
    pub count: u64,
    /// Their sum (finite; 0 when `count` is 0).
    pub sum: f64,
    /// The smallest value: needed when `count` is not 0, ignored when it
    /// is.
    pub min: Option<f64>,
    /// The largest value: needed when `count` is not 0, ignored when it
    /// is.
    pub max: Option<f64>,
}

impl Distribution {
    /// Rebuilds a distribution from its exported parts, as a receiver of
    /// OTLP exponential histograms does to read quantiles from what
    /// arrived. The parts are checked, and refused with
    /// [`DistributionError::InvalidParts`] when:
    ///
    /// - the scale is outside [`MIN_SCALE`]`..=`[`MAX_SCALE`];
    /// - a bucket range reaches past the indices of finite values at that
    ///   scale (down to the bucket of the smallest subnormal, up to that
    ///   of `f64::MAX`);
    /// - `count` is not `zero_count` plus both sides' counts;
    /// - the sum is not finite, or not 0 when `count` is 0;
    /// - `count` is not 0 and the minimum or maximum is missing, not
    ///   finite, above the other, or contradicts the buckets (negative
    ///   values with a minimum of at least 0, positive values with a
    ///   maximum of at most 0).
    ///
    /// The distribution keeps the scale given (a sender may have stopped
    /// at a lower one than its values need), and keeps at most
    /// [`DEFAULT_MAX_SIZE`] buckets per side, or as many as the wider side
    /// spans when that is more (a sender's own limit may have been
    /// higher). Values recorded or merged into it afterwards are counted
    /// as in any distribution. The zero threshold is always 0: a sender's
    /// zero bucket is kept as zeros. `to_parts` gives back the same parts
    /// (with empty buckets at the ends of a range trimmed by
    /// [`Buckets::new`], and `min` and `max` `None` when `count` is 0).
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    /// use newrelic_telemetry::distribution::{Buckets, DistributionError, DistributionParts, PartsError};
    ///
    /// // What a sender recorded...
    /// let mut sent = Distribution::new();
    /// for ms in 1..=200 {
    ///     sent.record(f64::from(ms))?;
    /// }
    /// // ... crosses the wire as parts, and reads the same on arrival.
    /// let p = sent.to_parts();
    /// let parts = DistributionParts {
    ///     scale: p.scale,
    ///     zero_count: p.zero_count,
    ///     positive: Buckets::new(p.positive.offset(), p.positive.counts().to_vec())?,
    ///     negative: Buckets::default(),
    ///     count: p.count,
    ///     sum: p.sum,
    ///     min: p.min,
    ///     max: p.max,
    /// };
    /// let received = Distribution::from_parts(parts.clone())?;
    /// assert_eq!(received, sent);
    /// assert_eq!(received.quantile(0.99), sent.quantile(0.99));
    /// let p99 = received.quantile(0.99).unwrap();
    /// assert!((p99 - 198.0).abs() / 198.0 < 0.03, "{p99}");
    ///
    /// // Counts that do not add up are refused.
    /// let wrong = DistributionParts { count: 201, ..parts };
    /// assert_eq!(
    ///     Distribution::from_parts(wrong),
    ///     Err(DistributionError::InvalidParts {
    ///         reason: PartsError::CountMismatch { count: 201, in_buckets: 200 }
    ///     })
    /// );
    /// # Ok::<(), DistributionError>(())
    /// ```
    pub fn from_parts(parts: DistributionParts) -> Result<Distribution, DistributionError> {
        let DistributionParts {
            scale,
            zero_count,
            mut positive,
            mut negative,
            count,
            sum,
            min,
            max,
        } = parts;
        let scale = i8::try_from(scale)
            .ok()
            .filter(|s| (MIN_SCALE..=MAX_SCALE).contains(s))
            .ok_or(PartsError::ScaleOutOfRange { scale })?;
        let (lo, hi) = finite_index_range(scale);
        for side in [&positive, &negative] {
            if let Some((start, end)) = side.span_with(None) {
                if start < lo || end > hi {
                    return Err(PartsError::BucketsOutOfRange {
                        offset: start,
                        len: side.len(),
                        scale: Some(i32::from(scale)),
                    }
                    .into());
                }
            }
        }
        let in_buckets = positive
            .counts
            .iter()
            .chain(&negative.counts)
            .try_fold(zero_count, |total, &c| total.checked_add(c));
        if in_buckets != Some(count) {
            return Err(PartsError::CountMismatch {
                count,
                in_buckets: in_buckets.unwrap_or(u64::MAX),
            }
            .into());
        }
        if !sum.is_finite() {
            return Err(PartsError::NonFiniteSum { sum }.into());
        }
        let (min, max) = if count == 0 {
            if sum != 0.0 {
                return Err(PartsError::SumOfEmpty { sum }.into());
            }
            (f64::INFINITY, f64::NEG_INFINITY)
        } else {
            let (Some(min), Some(max)) = (min, max) else {
                return Err(PartsError::MissingBounds.into());
            };
            let valid = min.is_finite()
                && max.is_finite()
                && min <= max
                && (negative.is_empty() || min < 0.0)
                && (positive.is_empty() || max > 0.0);
            if !valid {
                return Err(PartsError::InvalidBounds { min, max }.into());
            }
            (min, max)
        };
        positive.counts.shrink_to_fit();
        negative.counts.shrink_to_fit();
        Ok(Distribution {
            count,
            sum,
            min,
            max,
            zero_count,
            scale,
            max_size: DEFAULT_MAX_SIZE.max(positive.len()).max(negative.len()),
            positive,
            negative,
        })
    }

    /// The distribution's parts, as an exporter sends them: the inverse of
    /// [`from_parts`](Self::from_parts).
    ///
    /// ```
    /// use newrelic_telemetry::distribution::Distribution;
    ///
    /// let mut d = Distribution::new();
    /// assert_eq!((d.to_parts().min, d.to_parts().max), (None, None));
    /// d.record(-2.0)?;
    /// d.record(0.0)?;
    /// let parts = d.to_parts();
    /// assert_eq!((parts.count, parts.zero_count, parts.sum), (2, 1, -2.0));
    /// assert_eq!((parts.min, parts.max), (Some(-2.0), Some(0.0)));
    /// assert_eq!(&parts.negative, d.negative());
    /// assert_eq!(Distribution::from_parts(parts)?, d);
    /// # Ok::<(), newrelic_telemetry::distribution::DistributionError>(())
    /// ```
    pub fn to_parts(&self) -> DistributionParts {
        DistributionParts {
            scale: i32::from(self.scale),
            zero_count: self.zero_count,
            positive: self.positive.clone(),
            negative: self.negative.clone(),
            count: self.count,
            sum: self.sum,
            min: self.min(),
            max: self.max(),
        }
    }
}

/// The indices of the buckets that can hold a finite value at `scale`:
/// from the bucket whose upper boundary is the smallest subnormal, 2^-1074
/// (lower than [`lowest_index`], where this crate counts subnormals, for
/// senders that index them), to the bucket of `f64::MAX`.
fn finite_index_range(scale: i8) -> (i32, i32) {
    const SMALLEST_SUBNORMAL_EXPONENT: i32 = -1074;
    let lo = if scale >= 0 {
        (SMALLEST_SUBNORMAL_EXPONENT << scale as u32) - 1
    } else {
        (SMALLEST_SUBNORMAL_EXPONENT - 1) >> -scale
    };
    (lo, map_to_index(scale, f64::MAX))
}

/// How many steps down from `scale` a range of indices `lo..=hi` must go
/// to span at most `max_size` buckets; never past [`MIN_SCALE`], where any
/// range spans at most 2.
pub(crate) fn fit_change(scale: i8, span: Option<(i32, i32)>, max_size: usize) -> u32 {
    let Some((lo, hi)) = span else {
        return 0;
    };
    let max_size = i64::try_from(max_size).unwrap_or(i64::MAX);
    let mut change = 0u32;
    while i64::from(hi >> change) - i64::from(lo >> change) + 1 > max_size
        && i32::from(scale) - (change as i32) > i32::from(MIN_SCALE)
    {
        change += 1;
    }
    change
}

/// The 0-based rank of the `q`-quantile among `count` values, for `q` in
/// `(0, 1)`: `max(⌈q·count⌉, 1) - 1`.
fn quantile_rank(q: f64, count: u64) -> u64 {
    let r = (q * count as f64).ceil();
    if r < 1.0 {
        0
    } else {
        // `as` saturates: a rank past u64 (impossible for q < 1) stops at
        // the last value.
        (r as u64 - 1).min(count - 1)
    }
}

/// The index of the bucket holding `magnitude` (positive and finite) at
/// `scale`, per OpenTelemetry's data model: bucket `i` holds
/// `(base^i, base^(i+1)]`.
pub(crate) fn map_to_index(scale: i8, magnitude: f64) -> i32 {
    let bits = magnitude.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let significand = bits & SIGNIFICAND_MASK;
    if biased == 0 {
        // Subnormal: the lowest bucket of the normal range, the one whose
        // upper boundary is 2^-1022.
        return lowest_index(scale);
    }
    let exponent = biased - EXPONENT_BIAS;
    if scale <= 0 {
        // An exact power of two is the upper boundary of the bucket below.
        let at_zero = if significand == 0 {
            exponent - 1
        } else {
            exponent
        };
        return at_zero >> -scale;
    }
    let shift = scale as u32;
    if significand == 0 {
        return (exponent << shift) - 1;
    }
    // The significand, in (1, 2): its logarithm gives the bucket within
    // this power of two. `exponent << shift` is exact; only this part
    // rounds.
    let fraction = f64::from_bits(significand | ((EXPONENT_BIAS as u64) << 52));
    let per_power = 1i32 << shift;
    let within =
        ((fraction.log2() * f64::from(per_power)).ceil() as i32 - 1).clamp(0, per_power - 1);
    (exponent << shift) + within
}

/// The index of the bucket whose upper boundary is 2^-1022, the smallest
/// normal value.
fn lowest_index(scale: i8) -> i32 {
    if scale <= 0 {
        (MIN_NORMAL_EXPONENT - 1) >> -scale
    } else {
        (MIN_NORMAL_EXPONENT << scale as u32) - 1
    }
}

/// `base^index` at `scale` (which may be one past [`MAX_SCALE`], for
/// midpoints): 0 below the smallest subnormal, infinity past `f64::MAX`.
pub(crate) fn lower_boundary(scale: i32, index: i64) -> f64 {
    if scale <= 0 {
        return pow2(index << -scale);
    }
    let whole = index >> scale;
    let within = index - (whole << scale);
    let fraction = (within as f64 / (1i64 << scale) as f64).exp2();
    // `fraction` is in [1, 2); two factors so that neither overflows nor
    // underflows on the way to a result that does not.
    let half = whole / 2;
    fraction * pow2(half) * pow2(whole - half)
}

/// The midpoint in log space of bucket `index` at `scale`:
/// `base^(index + 1/2)`, the lower boundary of bucket `2 * index + 1` one
/// scale finer.
fn midpoint(scale: i8, index: i32) -> f64 {
    lower_boundary(i32::from(scale) + 1, 2 * i64::from(index) + 1)
}

/// `2^exponent`, exactly: 0 below the smallest subnormal, infinity past the
/// largest power of two.
fn pow2(exponent: i64) -> f64 {
    if exponent > 1023 {
        f64::INFINITY
    } else if exponent >= i64::from(MIN_NORMAL_EXPONENT) {
        f64::from_bits(((exponent + i64::from(EXPONENT_BIAS)) as u64) << 52)
    } else if exponent >= -1074 {
        f64::from_bits(1u64 << (exponent + 1074))
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values at the edges of `f64` and of buckets.
    fn edges() -> Vec<f64> {
        let mut v = vec![
            f64::from_bits(1),
            f64::from_bits(2),
            f64::MIN_POSITIVE / 2.0,
            f64::from_bits(f64::MIN_POSITIVE.to_bits() - 1),
            f64::MIN_POSITIVE,
            f64::from_bits(f64::MIN_POSITIVE.to_bits() + 1),
            1e-300,
            0.1,
            0.5,
            1.0,
            1.0 + f64::EPSILON,
            2.0 - f64::EPSILON,
            2.0,
            std::f64::consts::SQRT_2,
            3.0,
            1000.0,
            1e300,
            f64::from_bits(f64::MAX.to_bits() - 1),
            f64::MAX,
        ];
        for e in [-1022, -1000, -3, -1, 0, 1, 7, 500, 1023] {
            v.push(pow2(e));
            v.push(f64::from_bits(pow2(e).to_bits() + 1));
            v.push(f64::from_bits(pow2(e).to_bits() - 1));
        }
        v
    }

    #[test]
    fn powers_of_two_are_the_upper_boundary_of_their_bucket_at_every_scale() {
        for scale in MIN_SCALE..=MAX_SCALE {
            for e in -1022..=1023i32 {
                let index = map_to_index(scale, pow2(i64::from(e)));
                // 2^e ends bucket (e << scale) - 1 when scale >= 0; below
                // zero, bucket (e - 1) >> -scale.
                let expected = if scale >= 0 {
                    (e << scale) - 1
                } else {
                    (e - 1) >> -scale
                };
                assert_eq!(index, expected, "2^{e} at scale {scale}");
                let above = map_to_index(scale, f64::from_bits(pow2(i64::from(e)).to_bits() + 1));
                if scale >= 0 {
                    assert_eq!(above, index + 1, "just above 2^{e} at scale {scale}");
                }
            }
        }
    }

    #[test]
    fn one_scale_down_is_index_shifted_right_by_one() {
        for v in edges() {
            for scale in (MIN_SCALE + 1)..=MAX_SCALE {
                assert_eq!(
                    map_to_index(scale - 1, v),
                    map_to_index(scale, v) >> 1,
                    "{v:e} at scale {scale}"
                );
            }
        }
    }

    #[test]
    fn each_normal_value_lies_within_its_bucket_bounds() {
        for v in edges().into_iter().filter(|v| v.is_normal()) {
            for scale in MIN_SCALE..=MAX_SCALE {
                let index = i64::from(map_to_index(scale, v));
                let lower = lower_boundary(i32::from(scale), index);
                let upper = lower_boundary(i32::from(scale), index + 1);
                // Bounds computed with exp2 may be an ulp or two off; powers
                // of two (every bound at scale <= 0) are exact.
                let slack = if scale > 0 { 4.0 * f64::EPSILON } else { 0.0 };
                assert!(
                    lower * (1.0 - slack) < v && v <= upper * (1.0 + slack),
                    "{v:e} at scale {scale}: bucket {index} is ({lower:e}, {upper:e}]"
                );
            }
        }
    }

    #[test]
    fn subnormals_share_the_lowest_normal_bucket() {
        for scale in MIN_SCALE..=MAX_SCALE {
            let lowest = map_to_index(scale, f64::MIN_POSITIVE);
            for v in [
                f64::from_bits(1),
                f64::MIN_POSITIVE / 3.0,
                f64::from_bits(f64::MIN_POSITIVE.to_bits() - 1),
            ] {
                assert_eq!(map_to_index(scale, v), lowest, "{v:e} at scale {scale}");
            }
            assert_eq!(lowest, lowest_index(scale));
        }
        assert_eq!(lowest_index(MAX_SCALE), (-1022 << 20) - 1);
        assert_eq!(lowest_index(0), -1023);
        assert_eq!(lowest_index(MIN_SCALE), -1);
    }

    #[test]
    fn the_extremes_have_indices_that_fit_and_two_buckets_hold_them_at_the_lowest_scale() {
        assert_eq!(map_to_index(MAX_SCALE, f64::MAX), (1024 << 20) - 1);
        assert_eq!(map_to_index(MIN_SCALE, f64::MAX), 0);
        assert_eq!(map_to_index(MIN_SCALE, 1.0), -1);
        assert_eq!(map_to_index(MIN_SCALE, f64::from_bits(1)), -1);
        let mut d = Distribution::with_max_size(2).unwrap();
        for v in [
            f64::MAX,
            -f64::MAX,
            f64::from_bits(1),
            -f64::from_bits(1),
            1.0,
            -1.0,
        ] {
            d.record(v).unwrap();
        }
        assert_eq!(d.scale(), MIN_SCALE);
        assert_eq!(
            (d.positive().offset(), d.positive().counts()),
            (-1, &[2u64, 1][..])
        );
        assert_eq!(
            (d.negative().offset(), d.negative().counts()),
            (-1, &[2u64, 1][..])
        );
        // Rank 2 of 6 is -(smallest subnormal), in negative bucket -1 at
        // scale -10 (all magnitudes up to 1): its midpoint is 2^-512.
        assert_eq!(d.quantile(0.5), Some(-pow2(-512)));
        // Midpoints of the top buckets are finite, bounds past f64 are inf.
        assert!(midpoint(MIN_SCALE, 0).is_finite());
        assert!(midpoint(MAX_SCALE, (1024 << 20) - 1).is_finite());
        assert_eq!(lower_boundary(20, 1024 << 20), f64::INFINITY);
        assert_eq!(lower_boundary(0, -1075), 0.0);
        assert_eq!(lower_boundary(0, -1074), f64::from_bits(1));
    }

    #[test]
    fn downscaling_merges_pairs_and_keeps_the_range_tight() {
        let mut b = Buckets::default();
        for (i, c) in (-6..=4).zip([3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) {
            b.add(i, c, 16);
        }
        b.downscale(2);
        // -6,-5 -> -2; -4..-1 -> -1; 0..3 -> 0; 4 -> 1.
        assert_eq!((b.offset(), b.counts()), (-2, &[4u64, 14, 30, 10][..]));
        b.downscale(3);
        assert_eq!((b.offset(), b.counts()), (-1, &[18u64, 40][..]));
        let mut empty = Buckets::default();
        empty.downscale(5);
        assert_eq!(empty, Buckets::default());
    }

    #[test]
    fn cover_grows_at_either_end_and_never_past_max_size() {
        let mut b = Buckets::default();
        b.add(10, 1, 8);
        b.add(7, 2, 8);
        b.add(14, 3, 8);
        assert_eq!(
            (b.offset(), b.counts()),
            (7, &[2u64, 0, 0, 1, 0, 0, 0, 3][..])
        );
        assert!(b.counts.capacity() <= 8);
    }

    #[test]
    fn recording_downscales_only_as_far_as_needed() {
        let mut d = Distribution::with_max_size(4).unwrap();
        d.record(1.5).unwrap();
        assert_eq!(d.scale(), MAX_SCALE);
        d.record(3.0).unwrap(); // one power of two up: scale 1 has 2 per power
        assert_eq!(d.scale(), 1);
        assert_eq!(d.positive().counts(), &[1, 0, 1]);
        d.record(-1e10).unwrap(); // the other side does not move the scale
        assert_eq!(d.scale(), 1);
        d.record(5.0).unwrap();
        assert_eq!(d.scale(), 1);
        assert_eq!(
            (d.positive().offset(), d.positive().counts()),
            (1, &[1u64, 0, 1, 1][..])
        );
        d.record(7.0).unwrap(); // index 5 at scale 1: span 0..=5 needs scale 0
        assert_eq!(d.scale(), 0);
        assert_eq!(
            (d.positive().offset(), d.positive().counts()),
            (0, &[1u64, 1, 2][..])
        );
    }

    #[test]
    fn refused_values_change_nothing() {
        let mut d = Distribution::new();
        d.record(2.0).unwrap();
        let before = d.clone();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                d.record(v),
                Err(DistributionError::NonFiniteValue { .. })
            ));
        }
        d.record(f64::MAX).unwrap();
        let full = d.clone();
        assert!(matches!(
            d.record(f64::MAX),
            Err(DistributionError::SumOverflow { .. })
        ));
        assert_eq!(d, full);
        assert!(matches!(
            d.merge(&full),
            Err(DistributionError::SumOverflow { .. })
        ));
        assert_eq!(d, full);
        assert_ne!(d, before);
    }

    #[test]
    fn max_size_below_two_is_refused() {
        for n in [0, 1] {
            let err = Distribution::with_max_size(n).unwrap_err();
            assert_eq!(err, DistributionError::InvalidMaxSize { requested: n });
            assert!(err.to_string().contains("at least 2"), "{err}");
        }
        assert_eq!(Distribution::with_max_size(2).unwrap().max_size(), 2);
    }

    #[test]
    fn quantiles_walk_negative_zero_then_positive() {
        let mut d = Distribution::new();
        for v in [-100.0, -1.0, 0.0, 0.0, 1.0, 100.0] {
            d.record(v).unwrap();
        }
        let near = |got: Option<f64>, want: f64| {
            let got = got.unwrap();
            // Half a bucket width at scale 4: 2^(1/32) - 1, about 2.2%.
            assert!((got - want).abs() <= want.abs() * 0.022, "{got} vs {want}");
        };
        near(d.quantile(0.1), -100.0);
        near(d.quantile(0.3), -1.0);
        assert_eq!(d.quantile(0.5), Some(0.0));
        assert_eq!(d.quantile(0.6), Some(0.0));
        near(d.quantile(0.7), 1.0);
        near(d.quantile(0.99), 100.0);
        assert_eq!(d.quantile(f64::NAN), None);
        assert_eq!(d.quantile(-0.1), None);
    }

    #[test]
    fn quantile_ranks_are_nearest_rank() {
        assert_eq!(quantile_rank(0.5, 10), 4);
        assert_eq!(quantile_rank(0.51, 10), 5);
        assert_eq!(quantile_rank(1e-9, 10), 0);
        assert_eq!(quantile_rank(0.99, 1_000_000), 989_999);
        assert_eq!(quantile_rank(0.999_999_999, 3), 2);
    }

    #[test]
    fn merge_across_scales_equals_recording_into_one() {
        let a_values = [1.0, 1.1, 1.2];
        let b_values = [1e-3, 5.0, 1e4, -2.0];
        let (mut a, mut b, mut both) = (
            Distribution::new(),
            Distribution::new(),
            Distribution::new(),
        );
        for v in a_values {
            a.record(v).unwrap();
            both.record(v).unwrap();
        }
        for v in b_values {
            b.record(v).unwrap();
            both.record(v).unwrap();
        }
        assert!(a.scale() > b.scale());
        let mut ab = a.clone();
        ab.merge(&b).unwrap();
        let mut ba = b.clone();
        ba.merge(&a).unwrap();
        for m in [&ab, &ba] {
            assert_eq!(m.scale(), both.scale());
            assert_eq!(m.positive(), both.positive());
            assert_eq!(m.negative(), both.negative());
            assert_eq!(
                (m.count(), m.min(), m.max()),
                (both.count(), both.min(), both.max())
            );
        }
        let empty = Distribution::new();
        let before = ab.clone();
        ab.merge(&empty).unwrap();
        assert_eq!(ab, before);
    }

    fn parts_error(parts: DistributionParts) -> PartsError {
        match Distribution::from_parts(parts) {
            Err(DistributionError::InvalidParts { reason }) => reason,
            other => panic!("invalid parts, not {other:?}"),
        }
    }

    #[test]
    fn parts_round_trip_with_the_same_quantiles() {
        let sets: Vec<Vec<f64>> = vec![
            vec![],
            vec![0.0, -0.0],
            vec![1.0],
            vec![-3.0, -2.0, 0.0, 5.0, 1e9],
            edges(),
            edges().into_iter().map(|v| -v).collect(),
            (1..=10_000).map(|i| f64::from(i) * 0.37).collect(),
        ];
        for values in sets {
            let mut d = Distribution::new();
            for &v in &values {
                let _ = d.record(v); // edges() may overflow the sum near f64::MAX
            }
            let rebuilt = Distribution::from_parts(d.to_parts()).unwrap();
            assert_eq!(rebuilt, d, "{values:?}");
            for q in [0.0, 0.01, 0.5, 0.9, 0.99, 1.0] {
                assert_eq!(rebuilt.quantile(q), d.quantile(q), "q {q} of {values:?}");
            }
            assert!(rebuilt.held_bytes() <= 2 * 8 * rebuilt.max_size());
        }
        let mut small = Distribution::with_max_size(4).unwrap();
        for v in [1.0, 3.0, 7.0] {
            small.record(v).unwrap();
        }
        let rebuilt = Distribution::from_parts(small.to_parts()).unwrap();
        // The sender's smaller limit is not known: the default applies.
        assert_eq!(rebuilt.max_size(), DEFAULT_MAX_SIZE);
        assert_eq!(
            (rebuilt.scale(), rebuilt.positive(), rebuilt.count()),
            (small.scale(), small.positive(), 3)
        );
    }

    #[test]
    fn a_rebuilt_distribution_records_and_merges_like_any_other() {
        let mut a = Distribution::new();
        let mut all = Distribution::new();
        for v in [1.0, 2.0, 3.0] {
            a.record(v).unwrap();
            all.record(v).unwrap();
        }
        let mut rebuilt = Distribution::from_parts(a.to_parts()).unwrap();
        for v in [-5.0, 1e6] {
            rebuilt.record(v).unwrap();
            all.record(v).unwrap();
        }
        assert_eq!(rebuilt, all);
        let mut merged = Distribution::new();
        merged.merge(&rebuilt).unwrap();
        assert_eq!(merged, all);
    }

    #[test]
    fn buckets_new_trims_the_ends_and_refuses_indices_past_i32() {
        let b = Buckets::new(10, vec![0, 0, 4, 0, 1, 0]).unwrap();
        assert_eq!((b.offset(), b.counts()), (12, &[4u64, 0, 1][..]));
        assert_eq!(Buckets::new(-5, vec![]).unwrap(), Buckets::default());
        assert_eq!(Buckets::new(-5, vec![0; 9]).unwrap(), Buckets::default());
        // Trailing zeros past i32::MAX are trimmed away, not refused.
        let top = Buckets::new(i32::MAX, vec![7, 0, 0]).unwrap();
        assert_eq!((top.offset(), top.counts()), (i32::MAX, &[7u64][..]));
        assert_eq!(top.iter().collect::<Vec<_>>(), [(i32::MAX, 7)]);
        let err = Buckets::new(i32::MAX - 1, vec![1, 0, 1]).unwrap_err();
        assert_eq!(
            err,
            DistributionError::InvalidParts {
                reason: PartsError::BucketsOutOfRange {
                    offset: i32::MAX - 1,
                    len: 3,
                    scale: None
                }
            }
        );
        assert!(err.to_string().contains("2^31 - 1"), "{err}");
        // Leading zeros below i32::MIN are trimmed too.
        let low = Buckets::new(i32::MIN, vec![0, 0, 2]).unwrap();
        assert_eq!(low.offset(), i32::MIN + 2);
    }

    #[test]
    fn bucket_ranges_must_hold_finite_values_at_their_scale() {
        for scale in MIN_SCALE..=MAX_SCALE {
            let (lo, hi) = finite_index_range(scale);
            assert_eq!(hi, map_to_index(scale, f64::MAX));
            assert!(lo <= lowest_index(scale), "scale {scale}");
            // Both extremes, on both sides.
            let edge = |offset: i32| Buckets::new(offset, vec![1]).unwrap();
            let parts = DistributionParts {
                scale: i32::from(scale),
                positive: edge(hi),
                negative: edge(lo),
                count: 2,
                sum: f64::MAX,
                min: Some(-f64::from_bits(1)),
                max: Some(f64::MAX),
                ..DistributionParts::default()
            };
            let d = Distribution::from_parts(parts.clone()).unwrap();
            assert_eq!(d.quantile(1.0), Some(f64::MAX));
            assert!(d.quantile(0.25).unwrap() <= 0.0, "scale {scale}");
            assert!(d.quantile(0.75).unwrap().is_finite(), "scale {scale}");
            for (positive, negative) in [(edge(hi + 1), edge(lo)), (edge(hi), edge(lo - 1))] {
                let bad = DistributionParts {
                    positive,
                    negative,
                    ..parts.clone()
                };
                assert!(
                    matches!(
                        parts_error(bad),
                        PartsError::BucketsOutOfRange { len: 1, scale: Some(s), .. } if s == i32::from(scale)
                    ),
                    "scale {scale}"
                );
            }
        }
        assert_eq!(finite_index_range(MIN_SCALE), (-2, 0));
        assert_eq!(finite_index_range(0), (-1075, 1023));
    }

    #[test]
    fn max_size_grows_to_the_wider_side() {
        let parts = DistributionParts {
            scale: 8,
            positive: Buckets::new(0, vec![1; 300]).unwrap(),
            negative: Buckets::new(0, vec![1; 200]).unwrap(),
            count: 500,
            sum: 1.0,
            min: Some(-4.0),
            max: Some(4.0),
            ..DistributionParts::default()
        };
        let mut d = Distribution::from_parts(parts).unwrap();
        assert_eq!(d.max_size(), 300);
        assert_eq!(d.scale(), 8);
        // A value far away downscales until both sides fit in 300 again.
        d.record(1e6).unwrap();
        assert!(d.scale() < 8);
        assert!(d.positive().len() <= 300 && d.negative().len() <= 300);
        assert_eq!(d.count(), 501);
    }

    #[test]
    fn inconsistent_parts_are_refused_with_their_reason() {
        let good = DistributionParts {
            scale: 3,
            zero_count: 2,
            positive: Buckets::new(4, vec![1, 0, 3]).unwrap(),
            negative: Buckets::new(-2, vec![5]).unwrap(),
            count: 11,
            sum: 7.5,
            min: Some(-1.0),
            max: Some(2.0),
        };
        assert!(Distribution::from_parts(good.clone()).is_ok());
        let with = |f: &dyn Fn(&mut DistributionParts)| {
            let mut p = good.clone();
            f(&mut p);
            parts_error(p)
        };
        assert_eq!(
            with(&|p| p.scale = -11),
            PartsError::ScaleOutOfRange { scale: -11 }
        );
        assert_eq!(
            with(&|p| p.scale = i32::MAX),
            PartsError::ScaleOutOfRange { scale: i32::MAX }
        );
        assert_eq!(
            with(&|p| p.count = 10),
            PartsError::CountMismatch {
                count: 10,
                in_buckets: 11
            }
        );
        assert_eq!(
            with(&|p| p.zero_count = u64::MAX),
            PartsError::CountMismatch {
                count: 11,
                in_buckets: u64::MAX
            }
        );
        for sum in [f64::NAN, f64::INFINITY] {
            assert!(matches!(
                with(&|p| p.sum = sum),
                PartsError::NonFiniteSum { .. }
            ));
        }
        assert_eq!(with(&|p| p.min = None), PartsError::MissingBounds);
        assert_eq!(with(&|p| p.max = None), PartsError::MissingBounds);
        for (min, max) in [
            (3.0, 2.0),      // above the maximum
            (f64::NAN, 2.0), // not finite
            (-1.0, f64::INFINITY),
            (0.0, 2.0),  // negative values counted
            (-1.0, 0.0), // positive values counted
        ] {
            assert!(
                matches!(
                    with(&|p| (p.min, p.max) = (Some(min), Some(max))),
                    PartsError::InvalidBounds { .. }
                ),
                "{min} {max}"
            );
        }
        // Empty: the sum must be 0; min and max are ignored.
        let empty = DistributionParts {
            scale: 5,
            min: Some(9.0),
            max: Some(-9.0),
            ..DistributionParts::default()
        };
        let d = Distribution::from_parts(empty.clone()).unwrap();
        assert!(d.is_empty());
        assert_eq!(
            (d.scale(), d.min(), d.max(), d.quantile(0.5)),
            (5, None, None, None)
        );
        assert_eq!(
            parts_error(DistributionParts { sum: 1.0, ..empty }),
            PartsError::SumOfEmpty { sum: 1.0 }
        );
        let err = Distribution::from_parts(DistributionParts { count: 1, ..good }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid distribution parts: count is 1 but the zero bucket and the buckets hold 11"
        );
    }
}
