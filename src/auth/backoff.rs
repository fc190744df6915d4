//! Per-account exponential backoff after failed logins: a few free
//! failures, then 1 s, 2 s, 4 s … up to a cap, reset by a success. While a
//! counter backs off, every attempt it covers (even with the right
//! password) gets 429 without a password check.
//!
//! Two properties, each attacked in the tests:
//! - **Concurrency buys nothing.** An attempt is counted as a failure
//!   *before* its password is checked ([`Attempts::admit`], under one
//!   lock), and the count is only taken back by a success. Twelve guesses
//!   at once reach argon2 no more often than twelve one after the other.
//! - **Guesses from elsewhere cannot keep the owner out** (OWASP's device
//!   cookies, in API form). Every successful login hands out a device
//!   token and remembers the client's address (an IPv4 address or IPv6
//!   prefix). A login that presents a device token of the account, or comes
//!   from an address it has logged in from, has a counter of its own; all
//!   other clients share the account's counter. An attacker can make the
//!   shared counter back off for as long as they like, and the owner's
//!   known devices and addresses are not affected. Guessing from a known
//!   address backs off that address alone.
//!
//! Counters of existing accounts are stored (so a restart does not reset
//! them); those of emails with no account live in memory only, in a map
//! bounded by `--max-login-counters`, so made-up emails cost an attacker
//! nothing to send and us nothing to keep. The answers do not differ.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use crate::storage::BackoffRecord;

#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// Failures allowed before any wait.
    pub free_failures: u32,
    /// The longest wait.
    pub max: Duration,
}

/// A failure count older than this starts again from zero.
const STALE_AFTER: Duration = Duration::from_secs(86_400);

impl BackoffPolicy {
    /// The wait imposed after `failures` failures in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        let over = failures.saturating_sub(self.free_failures);
        if over == 0 {
            return Duration::ZERO;
        }
        // 1 s, 2 s, 4 s, … capped; the shift is bounded to stay in range.
        let secs = 1u64 << (over - 1).min(30);
        Duration::from_secs(secs).min(self.max)
    }

    /// The record after one more failure at `now`.
    pub fn after_failure(&self, previous: Option<BackoffRecord>, now: OffsetDateTime) -> BackoffRecord {
        let failures = match previous {
            Some(p) if now - p.last_failure < STALE_AFTER => p.failures.saturating_add(1),
            _ => 1,
        };
        BackoffRecord {
            failures,
            last_failure: now,
            until: now + self.delay(failures),
        }
    }

    /// Seconds left to wait at `now`, if the account is backing off.
    pub fn remaining(record: &BackoffRecord, now: OffsetDateTime) -> Option<u32> {
        let left = record.until - now;
        if left <= time::Duration::ZERO {
            return None;
        }
        let secs = left.whole_seconds() + i64::from(left.subsec_nanoseconds() > 0);
        Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX))
    }

    pub fn stale_before(now: OffsetDateTime) -> OffsetDateTime {
        now - STALE_AFTER
    }
}

/// The counters of attempts under way and of recent failures, in memory.
pub struct Attempts {
    policy: BackoffPolicy,
    live: Mutex<HashMap<String, Live>>,
    max_live: usize,
}

struct Live {
    record: BackoffRecord,
    in_flight: u32,
}

/// Whether an attempt may have its password checked.
pub enum Admission<'a> {
    /// Go ahead; the attempt already counts as a failure.
    Go(Ticket<'a>),
    /// The counter is backing off: retry after this many seconds.
    Wait(u32),
}

/// An admitted attempt; settle it with its outcome. One dropped unsettled
/// (the request was cancelled while its password was checked) is taken
/// back as if it had not been judged, so the counter's bookkeeping cannot
/// leak.
pub struct Ticket<'a> {
    attempts: &'a Attempts,
    key: String,
    /// The counter had failures before this attempt (a success clears it).
    pub had_failures: bool,
    /// The counter as this attempt found it, put back whole if the attempt
    /// is released and nothing else counted meanwhile.
    before: BackoffRecord,
    settled: bool,
}

impl Ticket<'_> {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The attempt failed: it was counted already. Returns the counter to
    /// store.
    pub fn failed(mut self) -> Option<BackoffRecord> {
        self.settled = true;
        self.attempts.failed(&self.key)
    }

    /// The attempt succeeded: the counter starts again from zero.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.attempts.succeeded(&self.key);
    }

    /// The attempt could not be judged (the server was too busy to check
    /// the password), or is not judged yet (a right password waiting for
    /// its second factor): it does not count, and leaves the counter's
    /// wait as it found it.
    pub fn released(mut self) {
        self.settled = true;
        self.attempts.released(&self.key, &self.before);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.attempts.released(&self.key, &self.before);
        }
    }
}

impl Attempts {
    pub fn new(policy: BackoffPolicy, max_live: usize) -> Self {
        Self {
            policy,
            live: Mutex::new(HashMap::new()),
            max_live: max_live.max(16),
        }
    }

    /// Admits an attempt on the counter `key`, counting it as a failure at
    /// once. `stored` reads the stored counter when memory has none.
    pub fn admit<E>(
        &self,
        key: String,
        now: OffsetDateTime,
        stored: impl FnOnce() -> Result<Option<BackoffRecord>, E>,
    ) -> Result<Admission<'_>, E> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if !live.contains_key(&key) {
            let record = stored()?.unwrap_or(BackoffRecord {
                failures: 0,
                last_failure: OffsetDateTime::UNIX_EPOCH,
                until: OffsetDateTime::UNIX_EPOCH,
            });
            if live.len() >= self.max_live {
                Self::evict(&mut live, self.max_live, now);
            }
            live.insert(key.clone(), Live { record, in_flight: 0 });
        }
        let Some(entry) = live.get_mut(&key) else {
            return Ok(Admission::Wait(1));
        };
        if let Some(wait) = BackoffPolicy::remaining(&entry.record, now) {
            return Ok(Admission::Wait(wait));
        }
        let had_failures = entry.record.failures > 0 && now - entry.record.last_failure < STALE_AFTER;
        let before = entry.record.clone();
        entry.record = self.policy.after_failure(Some(before.clone()), now);
        entry.in_flight += 1;
        Ok(Admission::Go(Ticket {
            attempts: self,
            key,
            had_failures,
            before,
            settled: false,
        }))
    }

    fn failed(&self, key: &str) -> Option<BackoffRecord> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = live.get_mut(key)?;
        entry.in_flight = entry.in_flight.saturating_sub(1);
        Some(entry.record.clone())
    }

    fn released(&self, key: &str, before: &BackoffRecord) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = live.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if self
                .policy
                .after_failure(Some(before.clone()), entry.record.last_failure)
                == entry.record
            {
                // Only this attempt counted since: the counter as it was,
                // its wait included (re-arming the wait from now would let
                // each released attempt push it on for ever).
                entry.record = before.clone();
            } else {
                // Others counted meanwhile, and their failures stand.
                entry.record.failures = entry.record.failures.saturating_sub(1);
                entry.record.until = entry.record.last_failure + self.policy.delay(entry.record.failures);
            }
        }
    }

    fn succeeded(&self, key: &str) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = live.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.record.failures = 0;
            entry.record.until = OffsetDateTime::UNIX_EPOCH;
            if entry.in_flight == 0 {
                live.remove(key);
            }
        }
    }

    /// Makes room: drops counters with nothing under way whose wait is
    /// over, then (an attacker filling the map with made-up emails) any
    /// with nothing under way, down to 90 % of the bound. A dropped counter
    /// of an existing account is read back from the store when next needed.
    fn evict(live: &mut HashMap<String, Live>, max: usize, now: OffsetDateTime) {
        live.retain(|_, e| e.in_flight > 0 || e.record.until > now);
        let target = max / 10 * 9;
        if live.len() > target {
            let excess = live.len() - target;
            let idle: Vec<String> = live
                .iter()
                .filter(|(_, e)| e.in_flight == 0)
                .map(|(k, _)| k.clone())
                .take(excess)
                .collect();
            for key in idle {
                live.remove(&key);
            }
        }
    }

    /// How many counters of emails with no account may be stored.
    pub fn stored_ghosts(&self) -> u64 {
        self.max_live as u64
    }

    /// Counters held in memory (for tests and logs).
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unnecessary_wraps)] // the shape `admit` takes
    fn none() -> Result<Option<BackoffRecord>, ()> {
        Ok(None)
    }

    #[test]
    fn concurrent_attempts_are_counted_before_they_are_judged() {
        let attempts = Attempts::new(
            BackoffPolicy {
                free_failures: 2,
                max: Duration::from_secs(60),
            },
            100,
        );
        let now = OffsetDateTime::now_utc();
        // All in flight at once: every ticket is still held.
        let tickets: Vec<Ticket<'_>> = (0..12)
            .filter_map(|_| match attempts.admit("a@x.org".into(), now, none) {
                Ok(Admission::Go(ticket)) => Some(ticket),
                _ => None,
            })
            .collect();
        assert_eq!(
            tickets.len(),
            3,
            "two free failures and the one that starts the wait"
        );
    }

    /// Regression (review): a released attempt (a right password waiting
    /// for its second factor) re-armed the wait from its own time, so
    /// password steps kept pushing the backoff past the MFA token's life
    /// and the owner could never finish a login.
    #[test]
    fn a_released_attempt_leaves_the_wait_as_it_found_it() {
        let attempts = Attempts::new(POLICY, 100);
        let start = OffsetDateTime::now_utc();
        let mut now = start;
        for _ in 0..8 {
            let Ok(Admission::Go(ticket)) = attempts.admit("a@x.org".into(), now, none) else {
                panic!("admitted");
            };
            let record = ticket.failed().unwrap();
            now = record.until;
        }
        let counted = attempts.live.lock().unwrap()["a@x.org"].record.clone();
        let later = counted.until + time::Duration::seconds(1);
        for step in 0..5 {
            let Ok(Admission::Go(ticket)) =
                attempts.admit("a@x.org".into(), later + time::Duration::seconds(step), none)
            else {
                panic!("the wait is over");
            };
            ticket.released();
        }
        let after = attempts.live.lock().unwrap()["a@x.org"].record.clone();
        assert_eq!(after, counted, "no failure added, no wait re-armed");
        assert!(matches!(
            attempts.admit("a@x.org".into(), later, none),
            Ok(Admission::Go(_))
        ));
    }

    #[test]
    fn a_success_resets_and_the_map_stays_bounded() {
        let attempts = Attempts::new(POLICY, 100);
        let now = OffsetDateTime::now_utc();
        let Ok(Admission::Go(ticket)) = attempts.admit("a@x.org".into(), now, none) else {
            panic!("admitted");
        };
        assert!(!ticket.had_failures);
        ticket.succeeded();
        assert!(attempts.is_empty(), "nothing kept after a success");
        for i in 0..1000 {
            let Ok(Admission::Go(ticket)) = attempts.admit(format!("made-up-{i}@x.org"), now, none) else {
                panic!("admitted");
            };
            ticket.failed();
        }
        assert!(attempts.len() <= 100, "bounded: {}", attempts.len());
    }

    /// Regression (review): a login cancelled while its password was being
    /// checked left its counter marked as in progress for ever, so the
    /// counter could never be evicted.
    #[test]
    fn a_dropped_attempt_is_taken_back() {
        let attempts = Attempts::new(POLICY, 100);
        let now = OffsetDateTime::now_utc();
        for _ in 0..3 {
            let Ok(Admission::Go(ticket)) = attempts.admit("a@x.org".into(), now, none) else {
                panic!("admitted");
            };
            drop(ticket);
        }
        let live = attempts.live.lock().unwrap();
        let entry = &live["a@x.org"];
        assert_eq!((entry.in_flight, entry.record.failures), (0, 0));
    }

    const POLICY: BackoffPolicy = BackoffPolicy {
        free_failures: 5,
        max: Duration::from_secs(900),
    };

    #[test]
    fn five_free_failures_then_doubling_up_to_the_cap() {
        let delays: Vec<u64> = (1..=17).map(|f| POLICY.delay(f).as_secs()).collect();
        assert_eq!(
            delays,
            [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]
        );
        assert_eq!(POLICY.delay(u32::MAX).as_secs(), 900, "no overflow, no lockout");
    }

    #[test]
    fn a_stale_count_starts_over() {
        let now = OffsetDateTime::now_utc();
        let old = BackoffRecord {
            failures: 40,
            last_failure: now - Duration::from_secs(2 * 86_400),
            until: now - Duration::from_secs(86_400),
        };
        assert_eq!(POLICY.after_failure(Some(old), now).failures, 1);
        let recent = BackoffRecord {
            failures: 5,
            last_failure: now,
            until: now,
        };
        let next = POLICY.after_failure(Some(recent), now);
        assert_eq!(
            (next.failures, BackoffPolicy::remaining(&next, now)),
            (6, Some(1))
        );
    }
}
