//! A loom model of how a metric batch lets go of a series while a recording
//! that still holds the table it was found in writes into it
//! (`Series::apply` and `retire_all` in `src/batch/metric/series.rs`,
//! `let_go` and the orphans in `src/batch/metric/drain.rs`): every write is
//! sent exactly once, by the letting go's last read or by the next flush.
//!
//! The code orders its write before its check of the retired mark with
//! `SeqCst` on both (a `SeqCst` read-modify-write, then a `SeqCst` load:
//! no fence on x86), and the flush marks with a `SeqCst` store followed by a
//! `SeqCst` fence. Loom models `SeqCst` fences but treats `SeqCst` loads and
//! stores as acquire/release (tokio-rs/loom#180), so the model puts a
//! `SeqCst` fence between the recording's write and its check: the same
//! store-buffering order, in the form loom can check. Without either fence
//! the model fails (the last test shows the model can fail).

use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// A count series: its sum and its retired mark.
#[derive(Default)]
struct Cell {
    sum: AtomicU64,
    retired: AtomicBool,
}

/// What a flush takes from a count (`CountState::take`): nothing if zero,
/// else the sum, leaving zero.
fn take(cell: &Cell) -> u64 {
    if cell.sum.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    cell.sum.swap(0, Ordering::Relaxed)
}

/// A recording into the series, found in an old table: the write, then the
/// check; a series found retired goes to the orphans.
fn record(cell: &Arc<Cell>, orphans: &Mutex<Vec<Arc<Cell>>>, fenced: bool) {
    cell.sum.fetch_add(1, Ordering::SeqCst);
    if fenced {
        fence(Ordering::SeqCst);
    }
    if cell.retired.load(Ordering::SeqCst) {
        orphans.lock().unwrap().push(cell.clone());
    }
}

/// Two recordings race with the letting go; returns what was sent by the
/// last read and by the next flush's read of the orphans.
fn race(fenced: bool) -> u64 {
    let cell = Arc::new(Cell::default());
    let orphans = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (cell, orphans) = (cell.clone(), orphans.clone());
            thread::spawn(move || record(&cell, &orphans, fenced))
        })
        .collect();
    // `let_go`: marked retired, fenced, read a last time.
    cell.retired.store(true, Ordering::SeqCst);
    if fenced {
        fence(Ordering::SeqCst);
    }
    let mut sent = take(&cell);
    for w in writers {
        w.join().unwrap();
    }
    // The next flush reads the orphans (the same series may be there twice).
    for orphan in orphans.lock().unwrap().iter() {
        sent += take(orphan);
    }
    sent
}

#[test]
fn every_write_racing_with_letting_go_is_sent_once() {
    loom::model(|| assert_eq!(race(true), 2));
}

/// Without the fences a write can land after the last read while its check
/// misses the mark: the model finds that run.
#[test]
#[should_panic(expected = "assertion `left == right` failed")]
fn without_the_fences_a_write_can_be_lost() {
    loom::model(|| assert_eq!(race(false), 2));
}
