//! One pattern for every set of counters the crate keeps (what a batch
//! refused, what a client sent and dropped, what the tracing layer saw): a
//! public snapshot of plain numbers, and a crate-private twin of atomics that
//! the hot and rare paths add to without a lock.
//!
//! Names follow one scheme, `<unit>_<outcome>[_<reason>]`: `items_sent`,
//! `items_dropped_queue_full`, `values_truncated`, `spans_recorded`.

/// Declares a snapshot struct `$stats` of `u64` counters and its atomic twin
/// `$atomic`, with `add` and `snapshot`.
macro_rules! counters {
    (
        $(#[$meta:meta])*
        pub struct $stats:ident / $atomic:ident {
            $( $(#[$field_meta:meta])* $field:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $stats {
            $( $(#[$field_meta])* pub $field: u64, )*
        }

        /// The atomic counters behind the snapshot of the same fields.
        #[derive(Debug, Default)]
        pub(crate) struct $atomic {
            $( pub(crate) $field: std::sync::atomic::AtomicU64, )*
        }

        impl $atomic {
            /// Adds `n` to `counter` (one of this set's fields).
            #[allow(dead_code)]
            pub(crate) fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
                if n > 0 {
                    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            }

            /// The counts now.
            pub(crate) fn snapshot(&self) -> $stats {
                $stats {
                    $( $field: self.$field.load(std::sync::atomic::Ordering::Relaxed), )*
                }
            }
        }
    };
}

pub(crate) use counters;
