//! The stored audit log: records numbered 1, 2, 3..., each carrying a MAC
//! over its content and the MAC of the record before it, under the key
//! ring's audit key. Two more values close the chain at both ends, each
//! with a MAC of its own: the `head` (the last record's number and MAC), so
//! records cut from the end are found, and the `anchor` (the last record
//! the retention purged), so records cut from the start are found too.
//! Without the key nobody can make a record, a head or an anchor that
//! verifies.

use std::sync::Arc;

use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::rows::{decode, encode};
use super::tables::{AUDIT_ENDS, SEQ_TO_AUDIT, USER_SEQ_TO_UNIT};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditQuery, AuditRecord, AuditVerdict};
use crate::domain::{SessionId, UserId};
use crate::storage::{Result, StorageError};

/// A 32-byte MAC.
type Tag = [u8; 32];

const HEAD: &str = "head";
const ANCHOR: &str = "anchor";
/// Written once, when the log begins: a log removed whole (records, head
/// and anchor) is told from one that never had a record.
const GENESIS: &str = "genesis";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum ActorRow {
    Admin(u128),
    Operator,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuditRow {
    /// The kind's name (stable across builds, unlike an enum's index).
    kind: String,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    at: OffsetDateTime,
    user: Option<u128>,
    actor: Option<ActorRow>,
    session: Option<u128>,
    client: Option<String>,
    detail: Option<String>,
}

impl From<&AuditEvent> for AuditRow {
    fn from(event: &AuditEvent) -> Self {
        Self {
            kind: event.kind.as_str().to_owned(),
            at: event.at,
            user: event.user.map(UserId::as_u128),
            actor: event.actor.map(|a| match a {
                Actor::Admin(id) => ActorRow::Admin(id.as_u128()),
                Actor::Operator => ActorRow::Operator,
            }),
            session: event.session.map(SessionId::as_u128),
            client: event.client.clone(),
            detail: event.detail.clone(),
        }
    }
}

impl AuditRow {
    fn into_event(self) -> Result<AuditEvent> {
        let kind = AuditKind::parse(&self.kind).ok_or_else(|| StorageError::Corrupt {
            table: "audit".to_owned(),
            detail: format!("unknown event kind {:?}", self.kind),
        })?;
        Ok(AuditEvent {
            kind,
            at: self.at,
            user: self.user.map(UserId::from_u128),
            actor: self.actor.map(|a| match a {
                ActorRow::Admin(id) => Actor::Admin(UserId::from_u128(id)),
                ActorRow::Operator => Actor::Operator,
            }),
            session: self.session.map(SessionId::from_u128),
            client: self.client,
            detail: self.detail,
        })
    }
}

/// One end of the chain: a record's number and MAC, and a MAC of both.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct End {
    seq: u64,
    mac: Tag,
    tag: Tag,
}

fn keyed(key: &[u8; 32]) -> Blake2bMac<U32> {
    // A 32-byte key is always accepted by BLAKE2b (it takes up to 64).
    let Ok(mac) = <Blake2bMac<U32> as KeyInit>::new_from_slice(key) else {
        unreachable!("BLAKE2b takes a 32-byte key")
    };
    mac
}

fn record_mac(key: &[u8; 32], previous: &Tag, seq: u64, body: &[u8]) -> Tag {
    let mut mac = keyed(key);
    mac.update(b"notesd audit record v1");
    mac.update(previous);
    mac.update(&seq.to_be_bytes());
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn end_tag(key: &[u8; 32], which: &str, seq: u64, record: &Tag) -> Tag {
    let mut mac = keyed(key);
    mac.update(b"notesd audit end v1");
    mac.update(which.as_bytes());
    mac.update(&seq.to_be_bytes());
    mac.update(record);
    mac.finalize().into_bytes().into()
}

fn read_end(ends: &impl ReadableTable<&'static str, &'static [u8]>, which: &str) -> Result<Option<End>> {
    match ends.get(which)? {
        Some(guard) => decode(&AUDIT_ENDS, guard.value()).map(Some),
        None => Ok(None),
    }
}

fn write_end(txn: &WriteTransaction, key: &[u8; 32], which: &str, seq: u64, mac: Tag) -> Result<()> {
    let end = End {
        seq,
        mac,
        tag: end_tag(key, which, seq, &mac),
    };
    let bytes = encode(&AUDIT_ENDS, &end)?;
    txn.open_table(AUDIT_ENDS)?.insert(which, bytes.as_slice())?;
    Ok(())
}

/// Splits a stored value into the encoded event and its MAC.
fn split(value: &[u8]) -> Result<(&[u8], Tag)> {
    let at = value.len().checked_sub(32).ok_or_else(|| StorageError::Corrupt {
        table: "audit".to_owned(),
        detail: "a record shorter than its MAC".to_owned(),
    })?;
    let (body, mac) = value.split_at(at);
    let mut tag = [0; 32];
    tag.copy_from_slice(mac);
    Ok((body, tag))
}

/// Marks the start of the log in a database whose log begins now (a new
/// file, or one from before the log existed). A log that has begun keeps
/// its mark; one whose mark is gone is reported broken, never re-marked.
pub fn begin(txn: &WriteTransaction, key: &[u8; 32]) -> Result<()> {
    let ends = txn.open_table(AUDIT_ENDS)?;
    let (genesis, head) = (read_end(&ends, GENESIS)?, read_end(&ends, HEAD)?);
    drop(ends);
    if genesis.is_none() && head.is_none() {
        // A random start the first record chains to: this log's start
        // mark and empty head fit no other log, even under the same key.
        let mut start = [0u8; 32];
        getrandom::fill(&mut start)
            .map_err(|e| StorageError::Backend(Arc::new(std::io::Error::other(e.to_string()))))?;
        write_end(txn, key, GENESIS, 0, start)?;
        // The head of an empty log: from now on there is always one, so
        // removing the records and the head together is seen too.
        write_end(txn, key, HEAD, 0, start)?;
    }
    Ok(())
}

/// Stores `event` after the last record, in the caller's transaction.
pub fn append(txn: &WriteTransaction, key: &[u8; 32], event: &AuditEvent) -> Result<u64> {
    let last = read_end(&txn.open_table(AUDIT_ENDS)?, HEAD)?;
    // `begin` made a head; a log without one chains to zeros (and
    // fails verification for its missing start mark).
    let (seq, previous) = last.map_or((1, [0; 32]), |end| (end.seq + 1, end.mac));
    let mut value = encode(&SEQ_TO_AUDIT, &AuditRow::from(event))?;
    let mac = record_mac(key, &previous, seq, &value);
    value.extend_from_slice(&mac);
    txn.open_table(SEQ_TO_AUDIT)?.insert(seq, value.as_slice())?;
    if let Some(user) = event.user {
        txn.open_table(USER_SEQ_TO_UNIT)?
            .insert((user.as_u128(), seq), ())?;
    }
    write_end(txn, key, HEAD, seq, mac)?;
    Ok(seq)
}

pub fn append_all(txn: &WriteTransaction, key: &[u8; 32], events: &[AuditEvent]) -> Result<()> {
    for event in events {
        append(txn, key, event)?;
    }
    Ok(())
}

fn record(seq: u64, value: &[u8]) -> Result<AuditRecord> {
    let (body, _) = split(value)?;
    let row: AuditRow = decode(&SEQ_TO_AUDIT, body)?;
    Ok(AuditRecord {
        seq,
        event: row.into_event()?,
    })
}

/// How far out of time order records may be stored: an event carries the
/// time its request began (a failed login, before it waited for its hash),
/// so one stored later can be older than one stored before it. A `since`
/// query reads on this far past its bound.
const SINCE_SLACK: time::Duration = time::Duration::hours(1);

/// A page of records, newest first, and the cursor of the next page.
pub fn list(txn: &ReadTransaction, query: &AuditQuery) -> Result<(Vec<AuditRecord>, Option<u64>)> {
    let records = txn.open_table(SEQ_TO_AUDIT)?;
    let below = query.before_seq.unwrap_or(u64::MAX);
    let seqs: Box<dyn Iterator<Item = Result<u64>>> = match query.user {
        Some(user) => {
            let owner = user.as_u128();
            let index = txn.open_table(USER_SEQ_TO_UNIT)?;
            let range = index.range((owner, 0)..(owner, below))?.rev();
            Box::new(range.map(|entry| Ok(entry?.0.value().1)))
        }
        None => Box::new(records.range(..below)?.rev().map(|entry| Ok(entry?.0.value()))),
    };
    let mut page = Vec::new();
    for (read, seq) in seqs.enumerate() {
        let seq = seq?;
        if read == query.scan_limit {
            // The budget is spent: what matched so far, and where to go on.
            return Ok((page, Some(seq + 1)));
        }
        let Some(value) = records.get(seq)? else {
            continue;
        };
        let found = record(seq, value.value())?;
        if query
            .since
            .is_some_and(|since| found.event.at < since - SINCE_SLACK)
        {
            // Well older than the window: so is everything after it.
            return Ok((page, None));
        }
        if !query.matches(&found.event) {
            continue;
        }
        if page.len() == query.limit {
            let next = page.last().map(|r: &AuditRecord| r.seq);
            return Ok((page, next));
        }
        page.push(found);
    }
    Ok((page, None))
}

/// Walks the chain from the anchor to the head.
pub fn verify(txn: &ReadTransaction, key: &[u8; 32]) -> Result<AuditVerdict> {
    let ends = txn.open_table(AUDIT_ENDS)?;
    let broken = |seq, reason: &str| {
        Ok(AuditVerdict::Broken {
            seq,
            reason: reason.to_owned(),
        })
    };
    let start = match read_end(&ends, GENESIS)? {
        None => {
            return broken(
                0,
                "the log's start mark is missing: the log was removed or replaced",
            );
        }
        Some(end) if end.tag != end_tag(key, GENESIS, 0, &end.mac) => {
            return broken(
                0,
                "the log's start mark does not match its MAC (or this is not its key)",
            );
        }
        Some(end) => end.mac,
    };
    let anchor = read_end(&ends, ANCHOR)?;
    if let Some(end) = anchor
        && end.tag != end_tag(key, ANCHOR, end.seq, &end.mac)
    {
        return broken(
            end.seq,
            "the start of the log (the last purged record) does not match its MAC",
        );
    }
    let (mut last, mut previous) = anchor.map_or((0, start), |end| (end.seq, end.mac));
    let first = last + 1;
    let records = txn.open_table(SEQ_TO_AUDIT)?;
    let index = txn.open_table(USER_SEQ_TO_UNIT)?;
    let mut indexed = 0;
    for entry in records.range(first..)? {
        let (seq, value) = entry?;
        let seq = seq.value();
        if seq != last + 1 {
            return broken(last + 1, "this record is missing");
        }
        let (body, mac) = split(value.value())?;
        if record_mac(key, &previous, seq, body) != mac {
            return broken(
                seq,
                "this record does not match its MAC: it was changed, or one before it was",
            );
        }
        // The index that `/me/events` reads: every record of an account
        // in it, and nothing else.
        if let Some(user) = decode::<AuditRow>(&SEQ_TO_AUDIT, body)?.user {
            if index.get((user, seq))?.is_none() {
                return broken(seq, "this record is missing from its account's index");
            }
            indexed += 1;
        }
        (last, previous) = (seq, mac);
    }
    match read_end(&ends, HEAD)? {
        None => return broken(last + 1, "the end of the log (its head) is missing"),
        Some(head) => {
            if head.tag != end_tag(key, HEAD, head.seq, &head.mac) {
                return broken(head.seq, "the end of the log does not match its MAC");
            }
            if head.seq != last || head.mac != previous {
                return broken(last + 1, "records are missing from the end of the log");
            }
        }
    }
    if redb::ReadableTableMetadata::len(&index)? != indexed {
        return broken(first, "the accounts' index holds entries that no record has");
    }
    Ok(AuditVerdict::Intact {
        records: last + 1 - first,
        first,
        last,
    })
}

/// Removes up to `batch` of the oldest records from before `before` and
/// moves the anchor past them. Returns how many went.
pub fn purge(txn: &WriteTransaction, key: &[u8; 32], before: OffsetDateTime, batch: usize) -> Result<usize> {
    let mut gone = Vec::new();
    {
        let records = txn.open_table(SEQ_TO_AUDIT)?;
        for entry in records.iter()?.take(batch) {
            let (seq, value) = entry?;
            let found = record(seq.value(), value.value())?;
            if found.event.at >= before {
                break;
            }
            let (_, mac) = split(value.value())?;
            gone.push((found.seq, found.event.user, mac));
        }
    }
    let Some(&(last, _, mac)) = gone.last() else {
        return Ok(0);
    };
    let mut records = txn.open_table(SEQ_TO_AUDIT)?;
    let mut index = txn.open_table(USER_SEQ_TO_UNIT)?;
    for (seq, user, _) in &gone {
        records.remove(*seq)?;
        if let Some(user) = user {
            index.remove((user.as_u128(), *seq))?;
        }
    }
    drop((records, index));
    write_end(txn, key, ANCHOR, last, mac)?;
    Ok(gone.len())
}

/// Records stored.
pub fn count(txn: &ReadTransaction) -> Result<u64> {
    use redb::ReadableTableMetadata;
    Ok(txn.open_table(SEQ_TO_AUDIT)?.len()?)
}

#[cfg(test)]
/// Overwrites one stored record's event text, keeping its MAC: what an
/// attacker with the file but not the key can do.
pub fn tamper(txn: &WriteTransaction, seq: u64, detail: &str) -> Result<()> {
    let mut records = txn.open_table(SEQ_TO_AUDIT)?;
    let value = records.get(seq)?.map(|v| v.value().to_vec());
    let Some(value) = value else { return Ok(()) };
    let (body, mac) = split(&value)?;
    let mut row: AuditRow = decode(&SEQ_TO_AUDIT, body)?;
    row.detail = Some(detail.to_owned());
    let mut forged = encode(&SEQ_TO_AUDIT, &row)?;
    forged.extend_from_slice(&mac);
    records.insert(seq, forged.as_slice())?;
    Ok(())
}
