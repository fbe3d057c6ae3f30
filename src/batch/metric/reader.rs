//! How a recording reaches its shard's current [`Table`] without a lock and
//! without writing anything another thread reads.
//!
//! Each shard publishes its table in a [`Published`]: the table behind a
//! `std::sync::Mutex`, which only its writer (replacing the table: rare)
//! and a reader refreshing its copy (rarer still) take, each for the time
//! of an `Arc` clone. Every thread keeps a small cache of the tables it
//! used last, keyed by shard, and one process-wide generation says whether
//! the cache is still good: a writer bumps it after replacing any table,
//! and a reader that sees it moved drops its whole cache and refreshes what
//! it uses. So the hot path reads one shared word that rarely changes
//! (no cache line moves between cores) and one thread-local slot.
//!
//! A reader may use a table replaced a moment ago. That is safe (the table
//! lives as long as anyone holds it) and correct: a series missing from the
//! old table is found under the shard's lock (or, if its name is at its
//! series limit, the measurement goes to the name's overflow series, which
//! keeps the name's total exact), and a write into a series the new table
//! let go of is caught by that series' retired mark (`series`).
//! A cache holds replaced tables only until its thread records again; a
//! thread that stops recording keeps at most one table per cache slot until
//! it exits.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::index::Table;

/// Bumped after any shard of any batch replaces its table.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Source of shard identities (never reused in a process).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Cache slots per thread (a power of two).
const CACHE_SLOTS: usize = 64;

/// A thread's cached tables, valid while the generation is `seen`.
struct Cache {
    seen: u64,
    slots: [Option<(u64, Arc<Table>)>; CACHE_SLOTS],
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache { seen: 0, slots: [const { None }; CACHE_SLOTS] })
    };
}

/// A shard's current table, as readers reach it.
pub(super) struct Published {
    id: u64,
    current: Mutex<Arc<Table>>,
}

impl Published {
    pub(super) fn new(table: Arc<Table>) -> Self {
        Published {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            current: Mutex::new(table),
        }
    }

    /// The current table (the writer's copy, or a fresh one for a cache).
    pub(super) fn current(&self) -> Arc<Table> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `table` current; readers move to it when they next look.
    pub(super) fn replace(&self, table: Arc<Table>) {
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(PoisonError::into_inner),
            table,
        );
        GENERATION.fetch_add(1, Ordering::Release);
        // The old table is dropped here, outside the lock, if no cache
        // holds it.
        drop(old);
    }

    /// Runs `f` on the shard's table, from this thread's cache when it is
    /// still good. Takes no lock and changes no reference count unless the
    /// cache must be refreshed.
    #[inline]
    pub(super) fn with<R>(&self, f: impl FnOnce(&Table) -> R) -> R {
        let generation = GENERATION.load(Ordering::Acquire);
        let mut f = Some(f);
        let done = CACHE.try_with(|cache| {
            let mut cache = cache.try_borrow_mut().ok()?;
            if cache.seen != generation {
                cache.slots = [const { None }; CACHE_SLOTS];
                cache.seen = generation;
            }
            let slot = &mut cache.slots[slot_of(self.id)];
            if !matches!(slot, Some((id, _)) if *id == self.id) {
                *slot = Some((self.id, self.current()));
            }
            let (_, table) = slot.as_ref()?;
            Some(f.take()?(table))
        });
        match (done, f) {
            (Ok(Some(result)), _) => result,
            // This thread's cache is gone (the thread is exiting) or in use
            // further up the stack: read the shared copy.
            (_, Some(f)) => f(&self.current()),
            (_, None) => unreachable!("f runs once: a result comes back when it ran"),
        }
    }
}

/// Drops every table this thread's cache holds (a flush that let go of
/// series, so that what they used can be freed now when no other thread
/// holds them).
pub(super) fn drop_cached_tables() {
    let _ = CACHE.try_with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut() {
            cache.slots = [const { None }; CACHE_SLOTS];
        }
    });
}

#[inline(always)]
fn slot_of(id: u64) -> usize {
    (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize & (CACHE_SLOTS - 1)
}
