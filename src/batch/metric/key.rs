//! The identity of a metric series: its type, name and attribute set (in any
//! order), hashed and compared straight from the caller's borrowed pairs, so
//! that finding an existing series allocates nothing.
//!
//! The hash is random per batch and built for short strings. A string of up
//! to 16 bytes is read as at most two overlapping words which, with its
//! length, determine it, then mixed with a folded multiply (as foldhash
//! does); longer strings are folded 16 bytes at a time. A set's hash is the
//! wrapping sum of its pairs' hashes, so the order of the pairs does not
//! matter. Equality is always checked after a hash matches.

use std::hash::BuildHasher;

use crate::attributes::{AsAttributes, Attributes, Value, ValueRef};
use crate::metric::MetricKind;

/// The random state a batch draws its seeds (and its interners' hasher) from.
pub(super) type HashBuilder = foldhash::fast::RandomState;

/// The per-batch seeds of the series hash.
#[derive(Clone, Copy)]
pub(super) struct Seeds([u64; 6]);

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn word8(s: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]))
}

#[inline(always)]
fn word4(s: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]))
}

impl Seeds {
    pub(super) fn new(random: &HashBuilder) -> Self {
        // Odd multipliers keep the folded multiply from losing bits.
        Seeds(std::array::from_fn(|i| random.hash_one(i as u64) | 1))
    }

    /// The two words a string of up to 16 bytes is read as (which, with its
    /// length, determine it); `None` for a longer one.
    #[inline(always)]
    fn words(b: &[u8]) -> Option<(u64, u64)> {
        let n = b.len();
        Some(match n {
            0 => (0, 0),
            1..=3 => (
                u64::from(b[0]) << 16 | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]),
                0,
            ),
            4..=7 => (u64::from(word4(b, 0)), u64::from(word4(b, n - 4))),
            8..=16 => (word8(b, 0), word8(b, n - 8)),
            _ => return None,
        })
    }

    #[inline(always)]
    fn str(self, seed: u64, s: &str) -> u64 {
        let b = s.as_bytes();
        match Seeds::words(b) {
            Some((lo, hi)) => fold(lo ^ seed, hi ^ self.0[5] ^ (b.len() as u64).rotate_left(32)),
            None => self.long_str(seed, b),
        }
    }

    #[inline(never)]
    fn long_str(self, seed: u64, b: &[u8]) -> u64 {
        let n = b.len();
        let mut acc = seed ^ (n as u64).wrapping_mul(MUL);
        let mut chunks = b.chunks_exact(16);
        for c in &mut chunks {
            acc = fold(acc ^ word8(c, 0), word8(c, 8) ^ self.0[5]);
        }
        // The last 16 bytes (overlapping what the loop read) cover the rest.
        if !chunks.remainder().is_empty() {
            acc = fold(acc ^ word8(b, n - 16), word8(b, n - 8) ^ self.0[4]);
        }
        acc
    }

    /// A pair's hash: the key's hash, folded once with the value's words (a
    /// short string's two words and length, a number's bits and its type);
    /// a longer string value is hashed on its own first.
    #[inline(always)]
    pub(super) fn pair(self, k: &str, v: ValueRef<'_>) -> u64 {
        let key = self.str(self.0[0], k);
        let (lo, hi) = match v {
            ValueRef::Str(x) => match Seeds::words(x.as_bytes()) {
                Some((lo, hi)) => (lo, hi ^ (x.len() as u64).rotate_left(32)),
                None => (self.long_str(self.0[1], x.as_bytes()), MUL ^ 4),
            },
            ValueRef::Int(i) => (i as u64, MUL ^ 1),
            ValueRef::Float(f) => (f.to_bits(), MUL ^ 2),
            ValueRef::Bool(b) => (u64::from(b), MUL ^ 3),
        };
        fold(key ^ lo ^ self.0[2], hi ^ self.0[1])
    }

    /// The order-free hash of an attribute set: the wrapping sum of its
    /// pairs' hashes.
    #[inline]
    pub(super) fn set(self, attrs: &(impl AsAttributes + ?Sized)) -> u64 {
        let mut sum = 0u64;
        attrs.for_each_attribute(|k, v| sum = sum.wrapping_add(self.pair(k, v)));
        sum
    }

    /// The hash of a series from its type, name and its set's hash.
    #[inline(always)]
    pub(super) fn series(self, kind: MetricKind, name: &str, set_hash: u64) -> u64 {
        let seed = self.0[3] ^ (kind as u64 + 1).wrapping_mul(MUL);
        fold(self.str(seed, name) ^ set_hash, self.0[4])
    }
}

/// Byte-string equality for the short strings of names and attributes,
/// without a call into `memcmp`: lengths first, then at most two overlapping
/// word-sized loads per side.
#[inline(always)]
pub(super) fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        8..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        _ => a == b,
    }
}

/// Identity of a stored value and a borrowed one (floats by bit pattern).
#[inline(always)]
pub(super) fn value_eq(stored: &Value, v: ValueRef<'_>) -> bool {
    match (stored, v) {
        (Value::String(a), ValueRef::Str(b)) => str_eq(a, b),
        (stored, v) => stored.as_value_ref().same_as(v),
    }
}

/// Whether borrowed pairs name exactly the stored (sorted, unique-key) set, in
/// any order, each stored pair matched once. Small sets are scanned linearly,
/// comparing key lengths first; larger ones are binary-searched. A metric's
/// set has at most 100 pairs (validated on insertion), so one `u128` marks
/// the pairs already matched.
#[inline]
pub(super) fn same_attributes(stored: &Attributes, source: &(impl AsAttributes + ?Sized)) -> bool {
    let pairs = stored.pairs();
    if pairs.len() != source.attribute_count() || pairs.len() > 128 {
        return false;
    }
    let position = |k: &str| {
        if pairs.len() <= 16 {
            pairs.iter().position(|(key, _)| str_eq(key, k))
        } else {
            stored.position(k)
        }
    };
    let mut seen = 0u128;
    let mut same = true;
    source.for_each_attribute(|k, v| {
        if !same {
            return;
        }
        same = match position(k) {
            Some(i) if seen & (1 << i) == 0 && value_eq(&pairs[i].1, v) => {
                seen |= 1 << i;
                true
            }
            _ => false,
        };
    });
    same
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds() -> Seeds {
        Seeds::new(&HashBuilder::default())
    }

    #[test]
    fn same_set_detects_duplicates_and_differences() {
        let stored = Attributes::from([("a", 1), ("b", 2)]);
        assert!(same_attributes(&stored, &[("b", 2), ("a", 1)]));
        assert!(!same_attributes(&stored, &[("a", 1), ("a", 1)]));
        assert!(!same_attributes(&stored, &[("a", 1), ("b", 3)]));
        assert!(!same_attributes(&stored, &[("a", 1)]));
        assert!(!same_attributes(
            &stored,
            &[("a", Value::from(1.0)), ("b", 2.into())]
        ));
    }

    #[test]
    fn large_sets_compare_by_binary_search() {
        let pairs: Vec<(String, i64)> = (0..20).map(|i| (format!("k{i:02}"), i)).collect();
        let stored = Attributes::from_source(&pairs);
        let mut reversed = pairs.clone();
        reversed.reverse();
        assert!(same_attributes(&stored, &reversed));
        let mut duplicated = pairs.clone();
        duplicated[19] = duplicated[0].clone();
        assert!(!same_attributes(&stored, &duplicated));
        let mut changed = pairs.clone();
        changed[7].1 = 70;
        assert!(!same_attributes(&stored, &changed));
    }

    #[test]
    fn the_set_hash_ignores_order() {
        let s = seeds();
        let a = [("host", "web-1"), ("env", "prod"), ("region", "us-east-1")];
        let b = [("region", "us-east-1"), ("host", "web-1"), ("env", "prod")];
        assert_eq!(s.set(&a), s.set(&b));
        assert_eq!(s.set(&a), s.set(&Attributes::from_source(&a)));
        // Keys and values are not interchangeable.
        assert_ne!(s.set(&[("a", "b")]), s.set(&[("b", "a")]));
        assert_ne!(s.set(&[("a", "b")]), s.set(&[("a", "c")]));
    }

    #[test]
    fn types_and_lengths_are_told_apart() {
        let s = seeds();
        // The same number as an integer, a float, a string and a bool.
        let hashes = [
            s.set(&[("k", Value::from(1))]),
            s.set(&[("k", Value::from(1.0))]),
            s.set(&[("k", Value::from("1"))]),
            s.set(&[("k", Value::from(true))]),
        ];
        for (i, a) in hashes.iter().enumerate() {
            for b in &hashes[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Strings that share their overlapping words but not their length.
        let lengths: Vec<u64> = (0..40)
            .map(|n| s.series(MetricKind::Count, &"a".repeat(n), 0))
            .collect();
        for (i, a) in lengths.iter().enumerate() {
            for b in &lengths[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The metric type is part of the identity.
        let set = s.set(&[("k", "v")]);
        assert_ne!(
            s.series(MetricKind::Count, "m", set),
            s.series(MetricKind::Gauge, "m", set)
        );
        assert_ne!(
            s.series(MetricKind::Gauge, "m", set),
            s.series(MetricKind::Summary, "m", set)
        );
    }

    #[test]
    fn string_equality_matches_the_standard_one() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghijklmnopqrstuvwxyz0123",
            "abXd",
            "aXc",
            "abcdefgX",
            "Xbcdefghijklmnop",
            "abcdefghijklmnoX",
        ];
        for a in words {
            for b in words {
                assert_eq!(str_eq(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
        // The middle byte of a 3-byte string and the inner bytes of longer
        // ones are covered by the overlapping loads.
        assert!(!str_eq("aXc", "abc"));
        assert!(!str_eq("abcdeXghij", "abcdefghij"));
    }

    #[test]
    fn large_sets_hash_and_compare_in_any_order() {
        let s = seeds();
        let pairs: Vec<(String, String)> = (0..100)
            .map(|i| (format!("key.{i}"), format!("value-{}", "x".repeat(i))))
            .collect();
        let stored = Attributes::from_source(&pairs);
        let mut shuffled = pairs.clone();
        shuffled.rotate_left(37);
        shuffled.swap(3, 90);
        assert_eq!(s.set(&pairs), s.set(&shuffled));
        assert!(same_attributes(&stored, &shuffled));
        let mut one_off = shuffled.clone();
        one_off[50].1.push('!');
        assert_ne!(s.set(&pairs), s.set(&one_off));
        assert!(!same_attributes(&stored, &one_off));
    }

    #[test]
    fn duplicates_never_match_a_set_of_distinct_keys() {
        let stored = Attributes::from([("a", 1), ("b", 1)]);
        // Same count of pairs, but one stored pair matched twice.
        assert!(!same_attributes(&stored, &[("a", 1), ("a", 1)]));
        assert!(!same_attributes(&stored, &[("b", 1), ("b", 1)]));
        // The sum hash of a duplicated pair differs from the distinct set's.
        let s = seeds();
        assert_ne!(s.set(&[("a", 1), ("a", 1)]), s.set(&[("a", 1), ("b", 1)]));
    }
}
