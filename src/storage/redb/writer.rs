//! The one writer: a thread that takes the writes queued since its last
//! commit, applies them in one write transaction, makes them durable with
//! one commit (one fsync), then answers each caller. Under load, one fsync
//! carries many writes; alone, a write waits for nothing but its own
//! commit.
//!
//! - An operation that finds nothing to do (a note not found, a version
//!   that does not match) is an answer, not a failure: it writes nothing
//!   and its neighbours commit. A batch in which nothing wrote is not
//!   committed at all, so a flood of refused writes costs no fsync.
//! - An operation that fails (a record that does not decode, a storage
//!   error) may have written part of its change: the transaction is
//!   dropped and the batch applied again without it, so neither it nor
//!   any part of it reaches the disk, and its neighbours still commit.
//! - A failed commit fails every write of the batch: none was answered
//!   before, none is acknowledged.
//! - The queue is bounded: when it is full, a write is refused at once
//!   ([`StorageError::Busy`], HTTP 503 with `Retry-After`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{Database, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::handle::Handle;
use crate::metrics::WriteStats;
use crate::storage::{Result, StorageError};

/// A write whose answer never came: its batch panicked (the writer drains
/// its queue before it stops, so a shutdown answers every write).
fn lost() -> StorageError {
    StorageError::Unavailable(Arc::new(std::io::Error::other("the write's batch failed")))
}

/// Writes applied by one transaction at most.
const MAX_BATCH: usize = 256;

/// One queued write: applied (maybe more than once, on a fresh transaction
/// each time, if a neighbour fails), then answered.
trait Pending: Send {
    /// Applies the write; `Ok(true)` if it changed anything.
    fn apply(&mut self, txn: &WriteTransaction) -> Result<bool>;
    /// Answers the caller: its outcome if the batch committed, else `err`.
    fn answer(self: Box<Self>, outcome: Result<()>);
}

/// A write as a function of the transaction, returning its outcome and
/// whether it wrote; it may run more than once, so it takes its inputs by
/// reference.
struct Job<F, T> {
    work: F,
    outcome: Option<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> Job<F, T>
where
    F: FnMut(&WriteTransaction) -> Result<(T, bool)> + Send + 'static,
    T: Send + 'static,
{
    /// The job, and where its answer will come.
    fn queued(work: F) -> (Box<dyn Pending>, oneshot::Receiver<Result<T>>) {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Self {
            work,
            outcome: None,
            reply,
        });
        (job, answer)
    }
}

impl<F, T> Pending for Job<F, T>
where
    F: FnMut(&WriteTransaction) -> Result<(T, bool)> + Send,
    T: Send,
{
    fn apply(&mut self, txn: &WriteTransaction) -> Result<bool> {
        let (outcome, wrote) = (self.work)(txn)?;
        self.outcome = Some(outcome);
        Ok(wrote)
    }

    fn answer(self: Box<Self>, committed: Result<()>) {
        let Job { outcome, reply, .. } = *self;
        let answer = committed.and_then(|()| outcome.ok_or(StorageError::Stopped("write not applied")));
        // The caller may have gone (its request timed out); the write
        // stands all the same.
        let _ = reply.send(answer);
    }
}

/// The queue's sending end, held by the storage.
pub struct Writer {
    queue: mpsc::Sender<Box<dyn Pending>>,
    stats: Arc<WriteStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread for `db`, with room for `capacity` queued
    /// writes.
    pub fn start(db: Arc<Handle>, capacity: usize) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(WriteStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(&db, receiver, &thread_stats))?;
        Ok(Self {
            queue,
            stats,
            thread: Some(thread),
        })
    }

    /// Queues a write and waits until it is durable; refused at once
    /// ([`StorageError::Busy`]) when the queue is full.
    pub async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<(T, bool)> + Send + 'static,
    {
        let (job, answer) = Job::queued(work);
        // Counted before it can be taken, so the writer never counts
        // down first.
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        if let Err(refused) = self.queue.try_send(job) {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(match refused {
                mpsc::error::TrySendError::Full(_) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    StorageError::Busy
                }
                mpsc::error::TrySendError::Closed(_) => StorageError::Stopped("writer"),
            });
        }
        answer.await.unwrap_or_else(|_| Err(lost()))
    }

    /// As [`Writer::write`], but a full queue makes it wait for room
    /// instead of refusing: for writes that must not be shed under load,
    /// such as ending a session. The wait is bounded by the caller's
    /// request deadline; each waiting write is one request in flight.
    pub async fn write_unshed<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<(T, bool)> + Send + 'static,
    {
        let (job, answer) = Job::queued(work);
        let permit = self
            .queue
            .reserve()
            .await
            .map_err(|_| StorageError::Stopped("writer"))?;
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        permit.send(job);
        answer.await.unwrap_or_else(|_| Err(lost()))
    }

    pub fn stats(&self) -> Arc<WriteStats> {
        self.stats.clone()
    }

    /// Lets the queued writes finish and stops the thread. Called when the
    /// storage is dropped, so the file is closed when that returns.
    pub fn stop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the database writer panicked");
        }
    }
}

fn run(handle: &Arc<Handle>, mut queue: mpsc::Receiver<Box<dyn Pending>>, stats: &WriteStats) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        stats.waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        #[cfg(test)]
        stats.largest_batch.fetch_max(batch.len(), Ordering::Relaxed);
        let jobs = std::mem::take(&mut batch);
        match handle.get() {
            Ok((generation, db)) => {
                // A panic outside the writes themselves (in redb, say):
                // the batch's callers learn it was not written, and the
                // file is opened again; the writer goes on.
                let recover = || handle.recover(generation);
                let outcome =
                    std::panic::catch_unwind(AssertUnwindSafe(|| commit(&db, jobs, stats, recover)));
                if outcome.is_err() {
                    tracing::error!("a database commit panicked");
                    handle.recover(generation);
                }
            }
            Err(err) => {
                for job in jobs {
                    job.answer(Err(err.clone()));
                }
            }
        }
    }
}

/// Applies and commits one batch, then answers every job in it; returns
/// the error that failed the batch or one of its writes, if any.
fn commit(
    db: &Database,
    mut jobs: Vec<Box<dyn Pending>>,
    stats: &WriteStats,
    on_io_error: impl FnOnce(),
) -> Option<StorageError> {
    let mut failed: Vec<(Box<dyn Pending>, StorageError)> = Vec::new();
    let committed = loop {
        match apply_all(db, &mut jobs) {
            Ok(Applied::Committed { durable }) => {
                if durable {
                    #[allow(clippy::cast_precision_loss)] // at most MAX_BATCH
                    stats.batch.observe(jobs.len() as f64);
                }
                break Ok(());
            }
            Ok(Applied::Failed(index, err)) => {
                tracing::error!(error = %err, "a database write failed; the rest of its batch is written without it");
                failed.push((jobs.remove(index), err));
            }
            Err(err) => {
                tracing::error!(error = %err, writes = jobs.len(), "a database commit failed");
                break Err(err);
            }
        }
    };
    let first_error = committed
        .clone()
        .err()
        .or_else(|| failed.first().map(|(_, err)| err.clone()));
    // Before anyone hears of it: a caller told 503 finds the latched file
    // already being replaced, never answering its next read from it.
    if first_error.as_ref().is_some_and(super::handle::is_io) {
        on_io_error();
    }
    for job in jobs {
        job.answer(committed.clone());
    }
    for (job, err) in failed {
        job.answer(Err(err));
    }
    first_error
}

enum Applied {
    /// Committed (`durable`: something was written and fsynced), or
    /// abandoned because nothing in the batch wrote.
    Committed { durable: bool },
    /// The job at this index failed; nothing was committed.
    Failed(usize, StorageError),
}

fn apply_all(db: &Database, jobs: &mut [Box<dyn Pending>]) -> Result<Applied> {
    let txn = db.begin_write()?;
    let mut wrote = false;
    for (index, job) in jobs.iter_mut().enumerate() {
        // A bug in one operation (a panic) is that operation's failure
        // alone: its neighbours are applied again without it.
        let applied = std::panic::catch_unwind(AssertUnwindSafe(|| job.apply(&txn)))
            .unwrap_or(Err(StorageError::Stopped("a write panicked")));
        match applied {
            Ok(changed) => wrote |= changed,
            Err(err) => {
                // Whatever was applied is discarded with the transaction.
                if let Err(abort) = txn.abort() {
                    tracing::warn!(error = %abort, "aborting a failed batch");
                }
                return Ok(Applied::Failed(index, err));
            }
        }
    }
    if wrote {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(Applied::Committed { durable: wrote })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};
    use std::sync::mpsc as std_mpsc;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    type Work = Box<dyn FnMut(&WriteTransaction) -> Result<((), bool)> + Send>;

    fn database() -> (tempfile::TempDir, Arc<Database>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        (dir, Arc::new(db))
    }

    fn put(key: impl Into<String>) -> impl FnMut(&WriteTransaction) -> Result<((), bool)> + Send + 'static {
        let key = key.into();
        move |txn| {
            txn.open_table(T)?.insert(key.as_str(), 1)?;
            Ok(((), true))
        }
    }

    fn stored(db: &Database, key: &str) -> bool {
        let txn = db.begin_read().unwrap();
        txn.open_table(T).ok().and_then(|t| t.get(key).unwrap()).is_some()
    }

    /// Queues a write that holds the writer until `release` is sent to.
    fn hold(writer: &Arc<Writer>) -> (std_mpsc::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
        let (release, held) = std_mpsc::channel::<()>();
        let (started, running) = std_mpsc::channel::<()>();
        let held = std::sync::Mutex::new(held);
        let writer2 = writer.clone();
        let task = tokio::spawn(async move {
            writer2
                .write(move |_| {
                    let _ = started.send(());
                    let _ = held.lock().unwrap().recv();
                    Ok(((), false))
                })
                .await
        });
        running.recv().unwrap();
        (release, task)
    }

    /// Runs `middle` between two good writes, the three in one batch (queued
    /// behind a held write); returns the middle one's answer after checking
    /// that its neighbours were written and nothing of it was.
    async fn between_two_good_writes(
        middle: Work,
    ) -> (tempfile::TempDir, Arc<Writer>, Arc<Database>, Result<()>) {
        let (dir, db) = database();
        let writer = Arc::new(Writer::start(Handle::new(db.clone(), dir.path().join("db"), 0), 16).unwrap());
        let (release, held) = hold(&writer);
        let spawn = |work: Work| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(work).await })
        };
        let before = spawn(Box::new(put("before")));
        let middle = spawn(middle);
        let after = spawn(Box::new(put("after")));
        while writer.stats.waiting.load(Ordering::Relaxed) < 3 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert!(before.await.unwrap().is_ok() && after.await.unwrap().is_ok());
        assert!(stored(&db, "before") && stored(&db, "after"));
        assert!(!stored(&db, "half"), "nothing of the failed write");
        assert_eq!(
            writer.stats.largest_batch.load(Ordering::Relaxed),
            3,
            "the three queued behind the held write formed one batch"
        );
        (dir, writer, db, middle.await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_does_not_fail_its_batch() {
        let (_dir, _, _, failed) = between_two_good_writes(Box::new(|txn: &WriteTransaction| {
            // Half a change, then a failure: none of it may land.
            txn.open_table(T)?.insert("half", 1)?;
            Err(StorageError::Corrupt {
                table: "t".into(),
                detail: "test".into(),
            })
        }))
        .await;
        assert!(matches!(failed, Err(StorageError::Corrupt { .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let (_dir, writer, db, panicked) = between_two_good_writes(Box::new(|txn: &WriteTransaction| {
            txn.open_table(T)?.insert("half", 1)?;
            panic!("a bug")
        }))
        .await;
        assert!(matches!(panicked, Err(StorageError::Stopped(_))));
        writer.write(put("later")).await.unwrap();
        assert!(stored(&db, "later"));
    }

    /// An answer is sent only after the commit: a read right after any
    /// acknowledged write sees it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_acknowledged_write_is_committed() {
        let (dir, db) = database();
        let writer = Arc::new(Writer::start(Handle::new(db.clone(), dir.path().join("db"), 0), 256).unwrap());
        let mut acknowledged = tokio::task::JoinSet::new();
        for i in 0..200 {
            let (writer, db) = (writer.clone(), db.clone());
            acknowledged.spawn(async move {
                let key = format!("k{i}");
                writer.write(put(key.as_str())).await.unwrap();
                stored(&db, &key)
            });
        }
        while let Some(seen) = acknowledged.join_next().await {
            assert!(seen.unwrap(), "acknowledged before its commit");
        }
    }

    /// A full queue refuses a write at once, writing nothing; a write that
    /// must not be shed waits for room instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once_but_an_unshed_write_waits() {
        let (dir, db) = database();
        let writer = Arc::new(Writer::start(Handle::new(db.clone(), dir.path().join("db"), 0), 1).unwrap());
        let (release, held) = hold(&writer);
        let queued = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(put("queued")).await })
        };
        while writer.stats.waiting.load(Ordering::Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            writer.write(put("refused")).await,
            Err(StorageError::Busy)
        ));
        assert_eq!(writer.stats.refused.load(Ordering::Relaxed), 1);
        let waiting = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write_unshed(put("revocation")).await })
        };
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        queued.await.unwrap().unwrap();
        waiting.await.unwrap().unwrap();
        assert!(stored(&db, "queued") && stored(&db, "revocation") && !stored(&db, "refused"));
    }
}
