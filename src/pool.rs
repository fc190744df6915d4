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

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
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

/// The bounded queue the threads take jobs from. A condition variable, not
/// a channel: every idle thread waits on it at once (a channel's receiver
/// would be held by one thread at a time), so each can time out on its own
/// and let go of its working memory.
struct Queue<S> {
    state: Mutex<Pending<S>>,
    ready: Condvar,
    capacity: usize,
}

struct Pending<S> {
    jobs: VecDeque<Job<S>>,
    /// The pool was dropped: threads finish what is queued, then end.
    closed: bool,
}

/// What a thread does next.
enum Next<S> {
    Run(Job<S>),
    /// Nothing came for the release delay: drop the working memory.
    Release,
    Stop,
}

impl<S> Queue<S> {
    fn push(&self, job: Job<S>) -> Result<(), PoolError> {
        let mut pending = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.closed {
            return Err(PoolError::Stopped);
        }
        if pending.jobs.len() >= self.capacity {
            return Err(PoolError::Full);
        }
        pending.jobs.push_back(job);
        drop(pending);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job; with `release_after` (and memory to release), gives
    /// up after that long without one.
    fn next(&self, release_after: Option<Duration>) -> Next<S> {
        let mut pending = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(job) = pending.jobs.pop_front() {
                return Next::Run(job);
            }
            if pending.closed {
                return Next::Stop;
            }
            pending = match release_after {
                Some(after) => {
                    let (guard, waited) = self
                        .ready
                        .wait_timeout(pending, after)
                        .unwrap_or_else(PoisonError::into_inner);
                    if waited.timed_out() && guard.jobs.is_empty() && !guard.closed {
                        return Next::Release;
                    }
                    guard
                }
                None => self.ready.wait(pending).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

/// Threads that each keep a reusable `S` (working memory) between jobs.
pub struct IdlePool<S> {
    queue: Arc<Queue<S>>,
    stats: Arc<QueueStats>,
}

impl<S> Drop for IdlePool<S> {
    fn drop(&mut self) {
        self.queue
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.queue.ready.notify_all();
    }
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
        let shared = Arc::new(Queue {
            state: Mutex::new(Pending {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: queue.max(1),
        });
        let queue_stats = Arc::new(QueueStats::default());
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            let queue_stats = queue_stats.clone();
            std::thread::Builder::new()
                .name(format!("notesd-{name}-{i}"))
                .spawn(move || {
                    lower_priority();
                    let mut state = S::default();
                    // Whether `state` may hold memory a job left in it.
                    let mut used = false;
                    loop {
                        match shared.next(release_after.filter(|_| used)) {
                            Next::Run(job) => {
                                let _ = queue_stats.waiting.fetch_update(
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                    |w| Some(w.saturating_sub(1)),
                                );
                                used = true;
                                job(&mut state);
                            }
                            Next::Release => {
                                state = S::default();
                                used = false;
                            }
                            Next::Stop => return,
                        }
                    }
                })?;
        }
        Ok(Self {
            queue: shared,
            stats: queue_stats,
        })
    }

    /// Jobs waiting for a thread, and jobs refused because the queue was
    /// full.
    pub fn stats(&self) -> Arc<QueueStats> {
        self.stats.clone()
    }

    /// Queues a job as it is, for tests that fill the queue.
    #[cfg(test)]
    pub(crate) fn push(&self, job: Job<S>) -> Result<(), PoolError> {
        self.queue.push(job)
    }

    /// Queues `work` for a pool thread without waiting for it; dropped if
    /// the queue is full.
    pub fn submit(&self, work: impl FnOnce(&mut S) + Send + 'static) {
        // Counted before the push, as in `run`.
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        if self.queue.push(Box::new(work)).is_err() {
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
        // Counted before the push: a thread may take the job at once.
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let pushed = self.queue.push(job);
        if let Err(e) = pushed {
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            if e == PoolError::Full {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static RELEASED: AtomicUsize = AtomicUsize::new(0);

    /// Working memory that says when it is let go of after use.
    #[derive(Default)]
    struct Memory(bool);

    impl Drop for Memory {
        fn drop(&mut self) {
            if self.0 {
                RELEASED.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[tokio::test]
    async fn idle_threads_let_go_of_their_working_memory() {
        let pool = IdlePool::<Memory>::releasing("test", 2, 8, Some(Duration::from_millis(20))).unwrap();
        // Both threads busy at once, so both hold used memory.
        let (a, b) = tokio::join!(
            pool.run(|m| {
                m.0 = true;
                std::thread::sleep(Duration::from_millis(50));
            }),
            pool.run(|m| {
                m.0 = true;
                std::thread::sleep(Duration::from_millis(50));
            })
        );
        a.unwrap();
        b.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while RELEASED.load(Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "both threads let go within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // And the next job gets fresh memory.
        let fresh = pool.run(|m| !m.0).await.unwrap();
        assert!(fresh);
    }
}
