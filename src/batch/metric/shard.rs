//! A shard of a metric batch: its published table (read with no lock, see
//! `reader`), and behind a `tokio::sync::Mutex` what only one task at a
//! time may change: the table itself (new series, growth, series let go
//! of), the interners, and what the shard holds against the budget.

use std::sync::Arc;

use hashbrown::HashTable;
use tokio::sync::Mutex;

use super::index::{MAX_POSITIONS, SERIES_BYTES, Table};
use super::key::{HashBuilder, Seeds};
use super::reader::Published;
use super::series::{Placement, Series};
use crate::attributes::{Attributes, Value};
use crate::budget::{HeapSize, arc_str_bytes};
use crate::metric::MetricKind;

/// A shard, alone on its cache lines so that tasks working on neighbouring
/// shards do not invalidate each other's.
#[repr(align(128))]
pub(super) struct ShardLock {
    /// The table recordings read, with no lock.
    pub(super) published: Published,
    /// The table's writer and the shard's bookkeeping.
    pub(super) lock: Mutex<Shard>,
}

impl ShardLock {
    pub(super) fn new() -> Self {
        let shard = Shard::new();
        ShardLock {
            published: Published::new(shard.table.clone()),
            lock: Mutex::new(shard),
        }
    }
}

/// What a shard's lock guards.
pub(super) struct Shard {
    /// The current table (the one published).
    pub(super) table: Arc<Table>,
    /// Series in the table.
    pub(super) len: usize,
    strings: HashTable<Arc<str>>,
    sets: HashTable<(u64, Arc<Attributes>)>,
    /// What the shard's series, strings and sets hold, as counted against
    /// the budget.
    pub(super) held_bytes: usize,
    /// Series left since the last sweep of the interners.
    pub(super) sweep: bool,
}

/// What an interned string's slot in its table holds.
const STRING_SLOT_BYTES: usize = std::mem::size_of::<Arc<str>>() + 1;
/// What an interned attribute set holds besides its pairs' strings: the
/// shared allocation around it and its slot in the table.
const SET_BYTES: usize = 2 * std::mem::size_of::<usize>()
    + std::mem::size_of::<Attributes>()
    + std::mem::size_of::<(u64, Arc<Attributes>)>()
    + 1;

/// What a series holds besides its strings and set (which are interned and
/// counted apart): its cell and its place in the table.
pub(super) const fn series_bytes(kind: MetricKind, placement: Placement) -> usize {
    Series::cell_bytes(kind, placement) + SERIES_BYTES
}

/// The most a new series can add to a shard: as if its name, its set and
/// every string in it were new.
pub(super) fn new_series_bytes(
    kind: MetricKind,
    placement: Placement,
    name: &str,
    attrs: &Attributes,
) -> usize {
    series_bytes(kind, placement)
        + arc_str_bytes(name.len())
        + STRING_SLOT_BYTES
        + SET_BYTES
        + attrs.held_bytes()
        + attrs.len() * 2 * STRING_SLOT_BYTES
}

/// What a name's overflow series adds to a shard at most: its cell (alone),
/// its place, and its name if the shard has no other series of that name
/// (its attribute set is the batch's, shared by all of them).
pub(super) fn overflow_series_bytes(kind: MetricKind, name: &str) -> usize {
    series_bytes(kind, Placement::Alone) + arc_str_bytes(name.len()) + STRING_SLOT_BYTES
}

fn set_bytes(set: &Attributes) -> usize {
    SET_BYTES + std::mem::size_of_val(set.pairs())
}

impl Shard {
    pub(super) fn new() -> Self {
        Shard {
            table: Arc::new(Table::with_capacity(0)),
            len: 0,
            strings: HashTable::new(),
            sets: HashTable::new(),
            held_bytes: 0,
            sweep: false,
        }
    }

    /// Whether the shard has room for one more series.
    pub(super) fn has_room(&self) -> bool {
        self.len < MAX_POSITIONS
    }

    /// Appends a series (`hash` is its hash; the caller checked
    /// [`has_room`](Self::has_room)), growing the table first if it is full.
    pub(super) fn push(&mut self, seeds: Seeds, hash: u64, series: Series, published: &Published) {
        if self.len == self.table.capacity() {
            let grown = Arc::new(self.table.grown(self.len, seeds));
            grown.push(self.len, hash, series);
            self.len += 1;
            self.table = grown.clone();
            published.replace(grown);
        } else {
            self.table.push(self.len, hash, series);
            self.len += 1;
        }
    }

    /// Publishes a table of `kept` only.
    pub(super) fn rebuild(&mut self, kept: Vec<Series>, seeds: Seeds, published: &Published) {
        self.len = kept.len();
        let table = Arc::new(Table::from_series(kept, seeds));
        self.table = table.clone();
        published.replace(table);
    }

    /// Lets go of the interners (the shard holds no series): returns what
    /// they held, which the caller hands over with the metrics using them.
    pub(super) fn clear_interners(&mut self) -> usize {
        self.strings = HashTable::new();
        self.sets = HashTable::new();
        self.sweep = false;
        std::mem::take(&mut self.held_bytes)
    }

    /// Lets go of interned strings and sets that no series (nor anything
    /// else) uses any more; returns the bytes freed.
    pub(super) fn sweep(&mut self) -> usize {
        let mut freed = 0;
        self.sets.retain(|(_, set)| {
            let keep = Arc::strong_count(set) > 1;
            if !keep {
                freed += set_bytes(set);
            }
            keep
        });
        self.strings.retain(|s| {
            let keep = Arc::strong_count(s) > 1;
            if !keep {
                freed += arc_str_bytes(s.len()) + STRING_SLOT_BYTES;
            }
            keep
        });
        self.held_bytes -= freed;
        freed
    }

    pub(super) fn intern_str(&mut self, hasher: &HashBuilder, s: &str) -> Arc<str> {
        use std::hash::BuildHasher;
        let hash = hasher.hash_one(s);
        match self
            .strings
            .entry(hash, |t| **t == *s, |t| hasher.hash_one(&**t))
        {
            hashbrown::hash_table::Entry::Occupied(e) => e.get().clone(),
            hashbrown::hash_table::Entry::Vacant(e) => {
                self.held_bytes += arc_str_bytes(s.len()) + STRING_SLOT_BYTES;
                e.insert(Arc::from(s)).get().clone()
            }
        }
    }

    pub(super) fn intern_set(
        &mut self,
        hasher: &HashBuilder,
        set_hash: u64,
        mut attrs: Attributes,
    ) -> Arc<Attributes> {
        if let Some((_, set)) = self
            .sets
            .find(set_hash, |(h, s)| *h == set_hash && **s == attrs)
        {
            return set.clone();
        }
        for (key, value) in attrs.pairs_mut().iter_mut() {
            *key = self.intern_str(hasher, key);
            if let Value::String(s) = value {
                *s = self.intern_str(hasher, s);
            }
        }
        self.held_bytes += set_bytes(&attrs);
        let set = Arc::new(attrs);
        self.sets
            .insert_unique(set_hash, (set_hash, set.clone()), |(h, _)| *h);
        set
    }
}
