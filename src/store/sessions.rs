//! Login sessions. A session holds the hash of its current refresh token and
//! of a bounded number of already-rotated ones, so a replayed old token can
//! be recognised (and the session revoked) without keeping every token ever
//! issued.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    Result, Store, encode, get_record,
    tables::{SESSION_TO_RECORD, USER_SESSION_TO_UNIT},
};
use crate::domain::{SessionId, UserId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: u128,
    pub user_id: u128,
    /// BLAKE2b-256 of the current refresh secret.
    pub refresh_hash: [u8; 32],
    /// Hashes of rotated refresh secrets, newest last, bounded.
    pub previous_hashes: Vec<[u8; 32]>,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub last_refreshed_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl SessionRecord {
    pub fn session_id(&self) -> SessionId {
        SessionId::from_u128(self.id)
    }

    pub fn owner(&self) -> UserId {
        UserId::from_u128(self.user_id)
    }
}

pub(super) fn insert_session(txn: &WriteTransaction, session: &SessionRecord) -> Result<()> {
    let bytes = encode("sessions", session)?;
    txn.open_table(SESSION_TO_RECORD)?
        .insert(session.id, bytes.as_slice())?;
    txn.open_table(USER_SESSION_TO_UNIT)?
        .insert((session.user_id, session.id), ())?;
    Ok(())
}

impl Store {
    /// Stores a new session and remembers the clients it came from, in
    /// one transaction.
    pub fn create_session(&self, session: &SessionRecord, seen: &[super::known::KnownClient]) -> Result<()> {
        let txn = self.db.begin_write()?;
        insert_session(&txn, session)?;
        super::known::remember(&txn, session.user_id, seen)?;
        txn.commit()?;
        Ok(())
    }

    pub fn session(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        let txn = self.db.begin_read()?;
        let sessions = txn.open_table(SESSION_TO_RECORD)?;
        get_record(&sessions, "sessions", id.as_u128())
    }

    /// Reads, changes and writes back one session in a single write
    /// transaction, so two refreshes racing on one token cannot both win:
    /// redb runs write transactions one at a time. `change` returns what the
    /// caller wants to know and whether the record must be written.
    pub fn update_session<R>(
        &self,
        id: SessionId,
        change: impl FnOnce(&mut SessionRecord) -> (R, bool),
    ) -> Result<Option<R>> {
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut sessions = txn.open_table(SESSION_TO_RECORD)?;
            let current: Option<SessionRecord> = get_record(&sessions, "sessions", id.as_u128())?;
            match current {
                Some(mut session) => {
                    let (result, write) = change(&mut session);
                    if write {
                        let bytes = encode("sessions", &session)?;
                        sessions.insert(id.as_u128(), bytes.as_slice())?;
                    }
                    Some((result, write))
                }
                None => None,
            }
        };
        // Commit (and fsync) only when something changed: a flood of bogus
        // refresh tokens must not turn into a flood of disk flushes.
        match outcome {
            Some((result, true)) => {
                txn.commit()?;
                Ok(Some(result))
            }
            other => {
                txn.abort()?;
                Ok(other.map(|(result, _)| result))
            }
        }
    }

    /// Sessions stored (redb keeps the count: no scan).
    pub fn session_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(SESSION_TO_RECORD)?.len()?)
    }

    /// Ids of sessions revoked at or after `since`: the ones whose access
    /// tokens may still be unexpired, to be refused after a restart.
    pub fn sessions_revoked_since(&self, since: OffsetDateTime) -> Result<Vec<SessionId>> {
        let txn = self.db.begin_read()?;
        let sessions = txn.open_table(SESSION_TO_RECORD)?;
        let mut ids = Vec::new();
        for entry in sessions.iter()? {
            let (_, value) = entry?;
            let session: SessionRecord = super::decode("sessions", value.value())?;
            if session.revoked_at.is_some_and(|at| at >= since) {
                ids.push(session.session_id());
            }
        }
        Ok(ids)
    }

    /// Deletes sessions that can no longer be used: revoked ones whose access
    /// tokens have all expired, and ones past their idle or absolute limit.
    /// Returns how many were removed. Works a batch at a time (found by a
    /// read, removed by a short write), so the writer is never held for a
    /// scan of every session.
    pub fn purge_sessions(&self, is_dead: impl Fn(&SessionRecord) -> bool) -> Result<usize> {
        const BATCH: usize = 256;
        let mut removed = 0;
        let mut after = 0u128;
        let mut first = true;
        loop {
            let (dead, last) = {
                let txn = self.db.begin_read()?;
                let sessions = txn.open_table(SESSION_TO_RECORD)?;
                let range = if first {
                    sessions.range::<u128>(..)?
                } else {
                    sessions.range::<u128>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?
                };
                let mut dead = Vec::new();
                let mut last = None;
                for entry in range.take(BATCH * 4) {
                    let (key, value) = entry?;
                    let session: SessionRecord = super::decode("sessions", value.value())?;
                    if is_dead(&session) {
                        dead.push(key.value());
                    }
                    last = Some(key.value());
                    if dead.len() == BATCH {
                        break;
                    }
                }
                (dead, last)
            };
            if !dead.is_empty() {
                let txn = self.db.begin_write()?;
                {
                    let mut sessions = txn.open_table(SESSION_TO_RECORD)?;
                    let mut by_user = txn.open_table(USER_SESSION_TO_UNIT)?;
                    for sid in dead {
                        // Refreshed since the read: leave it.
                        let current: Option<SessionRecord> = get_record(&sessions, "sessions", sid)?;
                        if let Some(session) = current.filter(|s| is_dead(s)) {
                            sessions.remove(sid)?;
                            by_user.remove((session.user_id, sid))?;
                            removed += 1;
                        }
                    }
                }
                txn.commit()?;
            }
            match last {
                Some(key) => {
                    after = key;
                    first = false;
                }
                None => return Ok(removed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a revoked session (an `Option` timestamp) failed to
    /// decode with postcard while the timestamps used the RFC 3339 helpers.
    #[test]
    fn a_revoked_session_round_trips_and_unchanged_updates_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let now = OffsetDateTime::now_utc();
        let session = SessionRecord {
            id: SessionId::generate().as_u128(),
            user_id: UserId::generate().as_u128(),
            refresh_hash: [7; 32],
            previous_hashes: vec![[1; 32], [2; 32]],
            created_at: now,
            last_refreshed_at: now,
            revoked_at: None,
        };
        store.create_session(&session, &[]).unwrap();
        let sid = session.session_id();
        let untouched = store.update_session(sid, |_| ((), false)).unwrap();
        assert_eq!(untouched, Some(()));
        store
            .update_session(sid, |s| {
                s.revoked_at = Some(now);
                ((), true)
            })
            .unwrap();
        let read = store.session(sid).unwrap().unwrap();
        assert_eq!(read.revoked_at, Some(now));
        assert_eq!(read.previous_hashes, session.previous_hashes);
        assert_eq!(store.sessions_revoked_since(now).unwrap(), vec![sid]);
        assert_eq!(
            store
                .update_session(SessionId::generate(), |_| ((), true))
                .unwrap(),
            None
        );
    }

    #[test]
    fn dead_sessions_are_purged_in_batches_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let now = OffsetDateTime::now_utc();
        for i in 0..600u32 {
            let session = SessionRecord {
                id: SessionId::generate().as_u128(),
                user_id: UserId::generate().as_u128(),
                refresh_hash: [0; 32],
                previous_hashes: vec![],
                created_at: now,
                last_refreshed_at: now,
                revoked_at: (i % 2 == 0).then_some(now),
            };
            store.create_session(&session, &[]).unwrap();
        }
        let removed = store.purge_sessions(|s| s.revoked_at.is_some()).unwrap();
        assert_eq!(removed, 300);
        assert_eq!(store.purge_sessions(|s| s.revoked_at.is_some()).unwrap(), 0);
        assert_eq!(store.purge_sessions(|_| true).unwrap(), 300);
    }
}
