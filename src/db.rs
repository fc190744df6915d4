//! How async code reaches the store.
//!
//! Writes and long scans go through [`Db::run`], on the blocking pool: a
//! commit waits for fsync, and a search may read thousands of notes.
//! Short point reads go through [`Db::read`], on the calling worker: they
//! take a few microseconds from redb's cache, less than the two thread
//! switches a trip through the blocking pool costs (measured: moving the
//! note read inline raised authenticated reads from about 20 k to the
//! figure in the README). The price is that a read which misses the cache
//! waits for the disk on an async worker; a note is small and its pages
//! are few, so that wait is one short `pread`.

use std::sync::Arc;

use crate::error::Error;
use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct Db(Arc<Store>);

impl Db {
    pub fn new(store: Store) -> Self {
        Self(Arc::new(store))
    }

    pub async fn run<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.0.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| work(&store)))
            .await
            .map_err(|e| Error::internal(format!("store task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Runs a short read on the current thread (see the module comment).
    pub fn read<T>(&self, work: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T, Error> {
        work(&self.0).map_err(Error::from)
    }

    /// Direct access for start-up and command-line work, off any runtime.
    pub fn store(&self) -> &Store {
        &self.0
    }
}
