//! Random identifiers for spans (16 hex) and traces (32 hex, W3C), and
//! jitter for retries.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // std's RandomState is seeded from the OS once per thread and varied per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish() | 1
}

/// A fast, non-cryptographic random `u64` (wyrand), never zero.
pub(crate) fn random_u64() -> u64 {
    STATE.with(|s| {
        loop {
            let next = s.get().wrapping_add(0xa076_1d64_78bd_642f);
            s.set(next);
            let t = u128::from(next) * u128::from(next ^ 0xe703_7ed1_a0b4_28db);
            let r = ((t >> 64) ^ t) as u64;
            if r != 0 {
                return r;
            }
        }
    })
}

/// 16 lowercase hex characters, the id format New Relic's SDKs generate
/// and W3C Trace Context's span id (never all zeros).
pub(crate) fn random_hex_id() -> String {
    format!("{:016x}", random_u64())
}

/// A random W3C trace id: 128 bits, never zero (each half is non-zero).
pub(crate) fn random_trace_id() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}

/// A trace id as 32 lowercase hex characters, its W3C form.
pub(crate) fn trace_id_hex(id: u128) -> String {
    format!("{id:032x}")
}

/// A uniformly distributed float in `[0, 1)`.
pub(crate) fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_16_hex_and_differ() {
        let a = random_hex_id();
        let b = random_hex_id();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn trace_ids_are_32_hex_and_never_zero() {
        let a = trace_id_hex(random_trace_id());
        let b = trace_id_hex(random_trace_id());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        assert_ne!(a, b);
        assert_ne!(random_trace_id() as u64, 0);
    }

    #[test]
    fn unit_is_in_range() {
        for _ in 0..1000 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
