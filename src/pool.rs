//! Dedicated worker threads for CPU-heavy work a client can ask for
//! (password hashing, searches), fed by a bounded queue.
//!
//! The threads run in Linux's `SCHED_IDLE` class: they get the CPU time
//! nothing else wants, and a request handler that wakes up preempts them at
//! once. When a flood of such work and note reads compete for a core, the
//! reads win. Measured on one core with 1.5 k logins/s offered: read p99
//! under the flood was 3.3× the p99 without it at nice 19, 2.0× in
//! `SCHED_IDLE` (at normal priority and an unthrottled flood it had been
//! 7.7×). A full queue refuses at once (503 + `Retry-After`) rather than
//! letting waiting work pile up.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::QueueStats;

pub(crate) type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the queue is full")]
    Full,
    #[error("the pool has stopped")]
    Stopped,
}

/// Threads that each keep a reusable `S` (working memory) between jobs.
pub struct IdlePool<S> {
    jobs: SyncSender<Job<S>>,
    stats: Arc<QueueStats>,
}

impl<S: Default + 'static> IdlePool<S> {
    pub fn new(name: &str, threads: usize, queue: usize) -> std::io::Result<Self> {
        Self::releasing(name, threads, queue, None)
    }

    /// As [`IdlePool::new`]; with `release_after`, a thread that has had
    /// no job for that long drops its `S` (its working memory goes back to
    /// the system) and makes a new one for its next job.
    pub fn releasing(
        name: &str,
        threads: usize,
        queue: usize,
        release_after: Option<Duration>,
    ) -> std::io::Result<Self> {
        let (jobs, receiver) = mpsc::sync_channel::<Job<S>>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let queue_stats = Arc::new(QueueStats::default());
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
            let queue_stats = queue_stats.clone();
            std::thread::Builder::new()
                .name(format!("notesd-{name}-{i}"))
                .spawn(move || {
                    lower_priority();
                    let mut state = S::default();
                    // Whether `state` may hold memory a job left in it.
                    let mut used = false;
                    loop {
                        // Hold the lock only while waiting for a job.
                        let job = match (receiver.lock(), release_after) {
                            (Ok(rx), Some(after)) if used => rx.recv_timeout(after),
                            (Ok(rx), _) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                            (Err(_), _) => return,
                        };
                        match job {
                            Err(RecvTimeoutError::Timeout) => {
                                state = S::default();
                                used = false;
                            }
                            Ok(job) => {
                                used = true;
                                let _ = queue_stats.waiting.fetch_update(
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                    |w| Some(w.saturating_sub(1)),
                                );
                                job(&mut state);
                            }
                            Err(RecvTimeoutError::Disconnected) => return, // the pool was dropped
                        }
                    }
                })?;
        }
        Ok(Self {
            jobs,
            stats: queue_stats,
        })
    }

    /// Jobs waiting for a thread, and jobs refused because the queue was
    /// full.
    pub fn stats(&self) -> Arc<QueueStats> {
        self.stats.clone()
    }

    /// The queue itself, for tests that fill it.
    #[cfg(test)]
    pub(crate) fn queue(&self) -> &SyncSender<Job<S>> {
        &self.jobs
    }

    /// Queues `work` for a pool thread without waiting for it; dropped if
    /// the queue is full.
    pub fn submit(&self, work: impl FnOnce(&mut S) + Send + 'static) {
        // Counted before the send, as in `run`.
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        if self.jobs.try_send(Box::new(work)).is_err() {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Runs `work` on a pool thread, with the caller's tracing span.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let job: Job<S> = Box::new(move |state| {
            let _ = done.send(span.in_scope(|| work(state)));
        });
        // Counted before the send: a thread may take the job at once.
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let sent = self.jobs.try_send(job);
        if sent.is_err() {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::Full);
            }
            Err(TrySendError::Disconnected(_)) => return Err(PoolError::Stopped),
        }
        result.await.map_err(|_| PoolError::Stopped)
    }
}

fn lower_priority() {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let result = thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Min,
        idle,
    );
    if let Err(e) = result {
        tracing::warn!(error = ?e, "could not lower a worker thread's priority");
    }
}
