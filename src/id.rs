//! Random identifiers for spans (16 hex) and traces (32 hex, W3C), and
//! jitter for retries.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

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
/// and W3C Trace Context's span id (never all zeros), as a shared string
/// (spans and the tracing layer's children share it).
pub(crate) fn random_hex_id() -> Arc<str> {
    hex(u128::from(random_u64()), 16)
}

/// A random W3C trace id: 128 bits, never zero (each half is non-zero).
pub(crate) fn random_trace_id() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}

/// A trace id as 32 lowercase hex characters, its W3C form.
pub(crate) fn trace_id_hex(id: u128) -> Arc<str> {
    hex(id, 32)
}

/// The low `digits` hex digits of `value`, formatted on the stack and
/// allocated once.
fn hex(value: u128, digits: usize) -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, digit) in text[..digits].iter_mut().rev().enumerate() {
        *digit = HEX[((value >> (4 * i)) & 0xf) as usize];
    }
    let text = std::str::from_utf8(&text[..digits]).expect("hex digits are ASCII");
    Arc::from(text)
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
    fn hex_is_what_format_writes() {
        for value in [0, 1, 0xabc, u128::from(u64::MAX), u128::MAX, 1 << 127] {
            assert_eq!(&*hex(value, 32), format!("{value:032x}"));
            let low = value as u64;
            assert_eq!(&*hex(u128::from(low), 16), format!("{low:016x}"));
        }
    }

    #[test]
    fn unit_is_in_range() {
        for _ in 0..1000 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
