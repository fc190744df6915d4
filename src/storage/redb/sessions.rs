//! Sessions, and the index of each user's sessions.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};
use time::OffsetDateTime;

use super::get_row;
use super::rows::{SessionRow, SessionRowV2, decode, encode};
use super::tables::{SESSION_TO_RECORD, SESSION_TO_SECOND_FACTOR, USER_SESSION_TO_UNIT};
use crate::domain::{SessionId, UserId};
use crate::storage::{Result, SessionCutoffs, SessionRecord};

pub fn insert(txn: &WriteTransaction, session: &SessionRecord) -> Result<()> {
    let row = SessionRow::from(session);
    let bytes = encode(&SESSION_TO_RECORD, &row)?;
    txn.open_table(SESSION_TO_RECORD)?
        .insert(row.id, bytes.as_slice())?;
    txn.open_table(USER_SESSION_TO_UNIT)?
        .insert((row.user_id, row.id), ())?;
    if session.second_factor {
        txn.open_table(SESSION_TO_SECOND_FACTOR)?.insert(row.id, ())?;
    }
    Ok(())
}

pub fn get(txn: &ReadTransaction, id: SessionId) -> Result<Option<SessionRecord>> {
    let sessions = txn.open_table(SESSION_TO_RECORD)?;
    let Some(mut session) = get_row::<_, SessionRow>(&sessions, id.as_u128())?.map(SessionRecord::from)
    else {
        return Ok(None);
    };
    session.second_factor = txn
        .open_table(SESSION_TO_SECOND_FACTOR)?
        .get(id.as_u128())?
        .is_some();
    Ok(Some(session))
}

/// Stores `next` if the stored session is still `current`.
pub fn replace(txn: &WriteTransaction, current: &SessionRecord, next: &SessionRecord) -> Result<bool> {
    let mut sessions = txn.open_table(SESSION_TO_RECORD)?;
    let stored: Option<SessionRow> = get_row(&sessions, current.id.as_u128())?;
    // How the login was made never changes: only the row is compared.
    let same = |row: SessionRow| {
        SessionRecord {
            second_factor: current.second_factor,
            ..SessionRecord::from(row)
        } == *current
    };
    if stored.is_none_or(|row| !same(row)) || next.id != current.id {
        return Ok(false);
    }
    let bytes = encode(&SESSION_TO_RECORD, &SessionRow::from(next))?;
    sessions.insert(next.id.as_u128(), bytes.as_slice())?;
    Ok(true)
}

/// Marks a session of `user` revoked unless it already is.
pub fn revoke(txn: &WriteTransaction, user: UserId, id: SessionId, at: OffsetDateTime) -> Result<bool> {
    let mut sessions = txn.open_table(SESSION_TO_RECORD)?;
    let Some(mut row) = get_row::<_, SessionRow>(&sessions, id.as_u128())? else {
        return Ok(false);
    };
    if row.revoked_at.is_some() || row.user_id != user.as_u128() {
        return Ok(false);
    }
    row.revoked_at = Some(at);
    let bytes = encode(&SESSION_TO_RECORD, &row)?;
    sessions.insert(row.id, bytes.as_slice())?;
    Ok(true)
}

/// Whether `id` is a session of `user` that has not ended.
pub fn is_live(txn: &WriteTransaction, user: UserId, id: SessionId) -> Result<bool> {
    let sessions = txn.open_table(SESSION_TO_RECORD)?;
    let row: Option<SessionRow> = get_row(&sessions, id.as_u128())?;
    Ok(row.is_some_and(|row| row.user_id == user.as_u128() && row.revoked_at.is_none()))
}

/// Ends the user's sessions other than `keep` that are still live.
pub fn end_others(
    txn: &WriteTransaction,
    user: UserId,
    keep: SessionId,
    at: OffsetDateTime,
) -> Result<Vec<SessionId>> {
    let owner = user.as_u128();
    let ids: Vec<u128> = {
        let by_user = txn.open_table(USER_SESSION_TO_UNIT)?;
        let mut ids = Vec::new();
        for entry in by_user.range((owner, 0)..=(owner, u128::MAX))? {
            ids.push(entry?.0.value().1);
        }
        ids
    };
    let mut ended = Vec::new();
    for sid in ids
        .into_iter()
        .map(SessionId::from_u128)
        .filter(|&sid| sid != keep)
    {
        if revoke(txn, user, sid, at)? {
            ended.push(sid);
        }
    }
    Ok(ended)
}

/// The user's live sessions, newest first (session ids are v7), after
/// `after`; and the cursor of the next page.
pub fn of_user(
    txn: &ReadTransaction,
    user: UserId,
    after: Option<SessionId>,
    limit: usize,
    cutoffs: &SessionCutoffs,
) -> Result<(Vec<SessionRecord>, Option<SessionId>)> {
    let owner = user.as_u128();
    let by_user = txn.open_table(USER_SESSION_TO_UNIT)?;
    let sessions = txn.open_table(SESSION_TO_RECORD)?;
    let end = after.map_or(std::ops::Bound::Included((owner, u128::MAX)), |sid| {
        std::ops::Bound::Excluded((owner, sid.as_u128()))
    });
    let mut page = Vec::new();
    for entry in by_user
        .range::<(u128, u128)>((std::ops::Bound::Included((owner, 0)), end))?
        .rev()
    {
        let sid = entry?.0.value().1;
        let Some(session) = get_row::<_, SessionRow>(&sessions, sid)?.map(SessionRecord::from) else {
            continue;
        };
        if session.revoked_at.is_some() || cutoffs.is_dead(&session) {
            continue;
        }
        if page.len() == limit {
            let next = page.last().map(|s: &SessionRecord| s.id);
            return Ok((page, next));
        }
        page.push(session);
    }
    Ok((page, None))
}

/// Schema 2 → 3: every session row gains the (unknown) client and user
/// agent of its login. Returns how many rows were rewritten.
pub fn add_login_details(txn: &WriteTransaction) -> Result<usize> {
    let mut sessions = txn.open_table(SESSION_TO_RECORD)?;
    let mut rows = Vec::new();
    for entry in sessions.iter()? {
        let (_, value) = entry?;
        let old: SessionRowV2 = decode(&SESSION_TO_RECORD, value.value())?;
        rows.push(SessionRow::from(old));
    }
    for row in &rows {
        let bytes = encode(&SESSION_TO_RECORD, row)?;
        sessions.insert(row.id, bytes.as_slice())?;
    }
    Ok(rows.len())
}

/// Ends every live session of the user.
pub fn end_all(txn: &WriteTransaction, user: UserId, at: OffsetDateTime) -> Result<Vec<SessionId>> {
    // No session has the nil id.
    end_others(txn, user, SessionId::from_u128(0), at)
}

pub fn count(txn: &ReadTransaction) -> Result<u64> {
    Ok(txn.open_table(SESSION_TO_RECORD)?.len()?)
}

pub fn revoked_since(txn: &ReadTransaction, since: OffsetDateTime) -> Result<Vec<SessionId>> {
    let sessions = txn.open_table(SESSION_TO_RECORD)?;
    let mut ids = Vec::new();
    for entry in sessions.iter()? {
        let (_, value) = entry?;
        let row: SessionRow = decode(&SESSION_TO_RECORD, value.value())?;
        if row.revoked_at.is_some_and(|at| at >= since) {
            ids.push(SessionId::from_u128(row.id));
        }
    }
    Ok(ids)
}

/// Up to `batch` dead sessions after `after` (exclusive), reading at most
/// four times that many; and the last key read, to continue from.
pub fn dead_after(
    txn: &ReadTransaction,
    after: Option<u128>,
    cutoffs: &SessionCutoffs,
    batch: usize,
) -> Result<(Vec<u128>, Option<u128>)> {
    let sessions = txn.open_table(SESSION_TO_RECORD)?;
    let range = match after {
        Some(key) => sessions.range::<u128>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))?,
        None => sessions.range::<u128>(..)?,
    };
    let mut dead = Vec::new();
    let mut last = None;
    for entry in range.take(batch * 4) {
        let (key, value) = entry?;
        let row: SessionRow = decode(&SESSION_TO_RECORD, value.value())?;
        if cutoffs.is_dead(&SessionRecord::from(row)) {
            dead.push(key.value());
        }
        last = Some(key.value());
        if dead.len() == batch {
            break;
        }
    }
    Ok((dead, last))
}

/// Removes those of `ids` that are still dead.
pub fn remove_dead(txn: &WriteTransaction, ids: &[u128], cutoffs: &SessionCutoffs) -> Result<usize> {
    let mut sessions = txn.open_table(SESSION_TO_RECORD)?;
    let mut by_user = txn.open_table(USER_SESSION_TO_UNIT)?;
    let mut second_factors = txn.open_table(SESSION_TO_SECOND_FACTOR)?;
    let mut removed = 0;
    for &sid in ids {
        let current: Option<SessionRow> = get_row(&sessions, sid)?;
        if let Some(session) = current.map(SessionRecord::from).filter(|s| cutoffs.is_dead(s)) {
            sessions.remove(sid)?;
            by_user.remove((session.user_id.as_u128(), sid))?;
            second_factors.remove(sid)?;
            removed += 1;
        }
    }
    Ok(removed)
}
