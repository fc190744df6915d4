//! The open database, and its recovery from an I/O error.
//!
//! redb stops using a file after one failed write (a full disk, an I/O
//! error): every later read and write of that handle fails, until it is
//! closed and the file opened again, which repairs it to its last durable
//! commit. So the first operation to meet such an error hands the handle to
//! a recovery thread, which drops it and opens the file again (retrying,
//! while the disk is still full or another reader still holds the old
//! handle). Meanwhile every operation answers [`StorageError::Unavailable`]
//! (HTTP 503); once the file is open again, reads work, and writes work as
//! soon as there is room again, with no one restarting anything. A write
//! whose commit failed was not acknowledged; redb's recovery keeps it or
//! drops it whole, never in part.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

use crate::storage::{Result, StorageError};

/// Longest wait between two attempts to open the file again.
const MAX_RETRY: Duration = Duration::from_secs(1);

pub struct Handle {
    path: PathBuf,
    cache_bytes: usize,
    slot: RwLock<Slot>,
    recovering: AtomicBool,
    closed: AtomicBool,
}

struct Slot {
    /// Counts the handles opened; tells a stale error from a fresh one.
    generation: u64,
    db: Option<Arc<Database>>,
}

/// Whether an error means the handle stopped working (and must be opened
/// again).
pub fn is_io(err: &StorageError) -> bool {
    matches!(err, StorageError::Unavailable(_))
}

impl Handle {
    pub fn new(db: Arc<Database>, path: PathBuf, cache_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            path,
            cache_bytes,
            slot: RwLock::new(Slot {
                generation: 0,
                db: Some(db),
            }),
            recovering: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// The open database and its generation; unavailable while it is being
    /// opened again.
    pub fn get(&self) -> Result<(u64, Arc<Database>)> {
        let slot = self
            .slot
            .read()
            .map_err(|_| StorageError::Stopped("database handle"))?;
        match &slot.db {
            Some(db) => Ok((slot.generation, db.clone())),
            None => Err(StorageError::Unavailable(Arc::new(std::io::Error::other(
                "the database is being opened again after an I/O error",
            )))),
        }
    }

    /// Runs `work` on the database; an I/O failure starts the recovery.
    pub fn with<T>(self: &Arc<Self>, work: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let (generation, db) = self.get()?;
        let outcome = work(&db);
        drop(db);
        if let Err(err) = &outcome
            && is_io(err)
        {
            self.recover(generation);
        }
        outcome
    }

    /// The handle of `generation` met an I/O error: unless that was dealt
    /// with already, drop it and open the file again on a thread of its
    /// own.
    pub fn recover(self: &Arc<Self>, generation: u64) {
        let old = {
            let Ok(mut slot) = self.slot.write() else {
                return;
            };
            if slot.generation != generation || slot.db.is_none() {
                return;
            }
            slot.generation += 1;
            slot.db.take()
        };
        drop(old);
        if self.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(path = %self.path.display(), "the database met an I/O error (a full disk?); opening it again");
        let handle = self.clone();
        let spawned = std::thread::Builder::new()
            .name("db-recovery".into())
            .spawn(move || handle.reopen());
        if let Err(e) = spawned {
            self.recovering.store(false, Ordering::Release);
            tracing::error!(error = %e, "could not start the database recovery thread");
        }
    }

    fn reopen(&self) {
        let started = Instant::now();
        let mut wait = Duration::from_millis(10);
        let mut logged = Instant::now();
        while !self.closed.load(Ordering::Acquire) {
            match Database::builder()
                .set_cache_size(self.cache_bytes)
                .create(&self.path)
            {
                Ok(db) => {
                    if let Ok(mut slot) = self.slot.write()
                        && !self.closed.load(Ordering::Acquire)
                    {
                        slot.db = Some(Arc::new(db));
                    }
                    self.recovering.store(false, Ordering::Release);
                    tracing::warn!(
                        ms = started.elapsed().as_millis(),
                        "the database is open again; writes resume when the disk has room"
                    );
                    return;
                }
                Err(e) => {
                    // The old handle may still be held by a reader for a
                    // moment (already open), or the disk is still failing.
                    if logged.elapsed() > Duration::from_secs(10) {
                        tracing::error!(error = %e, "the database cannot be opened again yet; retrying");
                        logged = Instant::now();
                    }
                }
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_RETRY);
        }
        self.recovering.store(false, Ordering::Release);
    }

    /// Closes the database (at shutdown): stops a recovery, if one runs,
    /// and hands back the handle to drop.
    pub fn close(&self) -> Option<Arc<Database>> {
        self.closed.store(true, Ordering::Release);
        while self.recovering.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.slot.write().ok().and_then(|mut slot| slot.db.take())
    }
}
