//! Runs store calls on the blocking pool. redb calls block (a commit waits
//! for fsync), so async code reaches the store only through [`Db::run`],
//! which carries the caller's tracing span across.

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

    /// Direct access for start-up and command-line work, off any runtime.
    pub fn store(&self) -> &Store {
        &self.0
    }
}
