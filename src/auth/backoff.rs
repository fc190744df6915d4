//! Per-account exponential backoff after failed logins: a few free
//! failures, then 1 s, 2 s, 4 s … up to a cap, reset by a success. While an
//! account backs off, every attempt (even with the right password) gets 429
//! without a password check. There is no permanent lockout an attacker
//! could use against the owner: the wait never exceeds the cap, and a count
//! left alone for a day starts again from zero.

use std::time::Duration;

use time::OffsetDateTime;

use crate::store::BackoffRecord;

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

#[cfg(test)]
mod tests {
    use super::*;

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
