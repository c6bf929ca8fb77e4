//! Checkpoints off the run's path. In WAL mode every commit appends the pages it changed to
//! the write-ahead log, and a checkpoint copies them back into the database file and syncs it
//! to disk. SQLite does that inside the commit that takes the log past 1,000 pages: a run
//! that commits a plan or closes a batch of 500 writes then waits for a disk sync while its
//! connectors sit idle. Here a thread with a connection of its own checkpoints instead,
//! woken each time commits have added `WAKE_AT` pages to the log, while the run goes on
//! (waiting for a target's answer, most of the time).
//!
//! Nothing of what a commit stores depends on it: a checkpoint only moves committed pages
//! from one file to the other, and SQLite keeps readers, the writer and the checkpointer out
//! of each other's way. A checkpointer that cannot keep up leaves the log growing, and the
//! commit that finds it at `INLINE_AT` pages checkpoints itself, as SQLite would have; without
//! one (its thread or connection would not start), the commits that would wake it do.

use std::path::Path;
use std::sync::mpsc::{self, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

/// The log's size, in pages, at which a commit wakes the checkpointer. Smaller than SQLite's
/// 1,000 so that a run's log is copied while the run waits on its connectors, not at its end.
const WAKE_AT: i32 = 256;

/// The log's size, in pages, at which a commit checkpoints itself (40 MB of 4 KiB pages).
const INLINE_AT: i32 = 10_000;

/// The thread that checkpoints a store's log. The hook it hands the store's connection holds
/// the only way to wake it: `stop` takes the hook back, and the thread ends.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    thread: Option<JoinHandle<()>>,
    /// Held by the thread while it checkpoints, and by `hold`: SQLite refuses a checkpoint
    /// while another connection makes one, without waiting.
    checkpointing: Arc<Mutex<()>>,
}

impl Checkpointer {
    /// Starts a checkpointer for the database at `path` and hands `connection` the hook
    /// that wakes it after each commit. Without a thread (its connection would not open),
    /// the commits that would wake it checkpoint themselves.
    pub(crate) fn start(path: &Path, connection: &mut Connection) -> rusqlite::Result<Self> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let checkpointing = Arc::new(Mutex::new(()));
        let held = Arc::clone(&checkpointing);
        let thread = Connection::open(path).ok().and_then(|own| {
            std::thread::Builder::new()
                .name("fieldsync-checkpoint".into())
                .spawn(move || {
                    // Each wake-up copies what the log holds by then; those that came
                    // meanwhile count as one (the channel holds one).
                    while woken.recv().is_ok() {
                        let _held = held.lock().unwrap_or_else(PoisonError::into_inner);
                        // A busy database is left for the next wake-up or the last close.
                        let _ = own.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    }
                })
                .ok()
        });
        let wake = thread.is_some().then_some(wake);
        // The log's size when the thread was last woken: it copies the whole log, so the
        // commits after a wake-up wake it again only once they add `WAKE_AT` pages more (or
        // the log has started over).
        let mut woken_at = 0;
        connection.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
            if pages < woken_at {
                woken_at = 0;
            }
            let inline = pages >= INLINE_AT;
            if !inline && pages - woken_at < WAKE_AT {
                return Ok(());
            }
            woken_at = pages;
            // A busy thread (one wake-up waiting already) will copy these pages too.
            let woken = !inline
                && wake
                    .as_ref()
                    .is_some_and(|wake| !matches!(wake.try_send(()), Err(TrySendError::Disconnected(()))));
            if !woken {
                // The commit has landed whatever this says: a checkpoint that cannot be made
                // now is made by a later commit.
                let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
            }
            Ok(())
        }))?;
        Ok(Self { thread, checkpointing })
    }

    /// Keeps the thread from checkpointing until the guard is dropped (waiting for a
    /// checkpoint it is making to end): for a checkpoint of the store's own connection,
    /// which SQLite would refuse while the thread makes one.
    pub(crate) fn hold(&self) -> MutexGuard<'_, ()> {
        self.checkpointing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the hook back from `connection` and waits for the thread to finish the
    /// checkpoint it is making, if any: the connection's close then checkpoints the rest
    /// and removes the log.
    pub(crate) fn stop(&mut self, connection: &mut Connection) {
        let _ = connection.wal_hook(None::<fn(&mut rusqlite::hooks::Wal, i32) -> rusqlite::Result<()>>);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
