//! How async code reaches the store.
//!
//! - [`Db::read`]: short point reads, on the calling worker. They take a
//!   few microseconds from redb's cache, less than the two thread switches
//!   a trip through the blocking pool costs (moving the note read inline
//!   took authenticated reads from about 20 k to about 33 k requests per
//!   second in `make bench`). The price: a read that misses the cache waits
//!   for one short `pread` on an async worker.
//! - [`Db::write`]: writes, on the blocking pool, one at a time. redb runs
//!   one write transaction at a time anyway (and each commit waits for
//!   fsync); letting every waiting writer hold a blocking thread only cost
//!   threads and memory under load.
//! - [`Db::scan`]: long reads (searches), on their own idle-priority
//!   threads (one fewer than the cores, at least one; see [`crate::pool`]),
//!   so a flood of searches takes only the CPU time reads leave. A full
//!   queue answers 503 at once.
//!
//! The caller's tracing span is carried across.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::error::Error;
use crate::metrics::WriteStats;
use crate::pool::{IdlePool, PoolError};
use crate::store::{Store, StoreError};

/// Searches allowed to wait for a scanning thread.
const SCAN_QUEUE: usize = 64;

#[derive(Clone)]
pub struct Db {
    store: Arc<Store>,
    writer: Arc<Semaphore>,
    scanners: Arc<IdlePool<()>>,
    writes: Arc<WriteStats>,
}

impl Db {
    pub fn new(store: Store) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            store: Arc::new(store),
            writer: Arc::new(Semaphore::new(1)),
            scanners: Arc::new(IdlePool::new("scan", cores.saturating_sub(1).max(1), SCAN_QUEUE)?),
            writes: Arc::default(),
        })
    }

    /// Runs a short read on the current thread.
    pub fn read<T>(&self, work: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T, Error> {
        work(&self.store).map_err(Error::from)
    }

    /// Runs a write on the blocking pool, after the writes queued before it.
    pub async fn write<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.blocking(&self.writer, work).await
    }

    /// Runs a long read on a scanning thread.
    pub async fn scan<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        match self.scanners.run(move |()| work(&store)).await {
            Ok(result) => result.map_err(Error::from),
            Err(PoolError::Full) => Err(Error::Unavailable { retry_after: 1 }),
            Err(PoolError::Stopped) => Err(Error::internal("scanning pool stopped")),
        }
    }

    async fn blocking<T, F>(&self, permits: &Semaphore, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = {
            // Counted down however the wait ends (a request can be dropped
            // at its deadline while it waits).
            let _waiting = Waiting::enter(&self.writes.waiting);
            permits.acquire().await
        };
        let _permit = permit.map_err(|e| Error::internal(format!("store queue closed: {e}")))?;
        let store = self.store.clone();
        let span = tracing::Span::current();
        let done = tokio::task::spawn_blocking(move || span.in_scope(|| work(&store)))
            .await
            .map_err(|e| Error::internal(format!("store task failed: {e}")))?
            .map_err(Error::from)?;
        // One write per durable commit, for now.
        self.writes.batch.observe(1.0);
        Ok(done)
    }

    /// Writes waiting and commit sizes, for the metrics.
    pub fn write_stats(&self) -> Arc<WriteStats> {
        self.writes.clone()
    }

    /// Direct access for start-up and command-line work, off any runtime.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// One write waiting for the writer, for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
