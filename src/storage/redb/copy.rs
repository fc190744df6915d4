//! Copies of the database into a new file, from one read transaction: an
//! online backup (every table as it is), and the schema 4 migration (the
//! plain rows of version 3 sealed on the way). The new file is written in
//! batches of uncommitted-to-disk transactions and made durable by the
//! last commit; it is only ever renamed into place whole, so a crash
//! leaves the old file as it was. A file written fresh also holds no page
//! of the old one: after the migration, no freed page keeps plaintext.

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableTable, TableDefinition, Value, WriteTransaction,
};

use super::backoff::stored_key;
use super::rows::{NoteRow, NoteRowV3, UserRow, UserRowV3, decode, encode};
use super::tables::{
    ADMIN_TO_UNIT, AUDIT_ENDS, EMAIL_TO_BACKOFF, EMAIL_TO_USER, GHOST_TO_BACKOFF, INVITE_TO_RECORD, META,
    OWNER_NOTE_TO_RECORD, OWNER_TAG_NOTE_TO_UNIT, OWNER_TO_USAGE, SEAL_CHECK, SEQ_TO_AUDIT,
    SESSION_TO_RECORD, SESSION_TO_SECOND_FACTOR, USER_SEQ_TO_UNIT, USER_SESSION_TO_UNIT,
    USER_TO_KNOWN_CLIENTS, USER_TO_MFA, USER_TO_RECORD,
};
use crate::seal::Sealer;
use crate::storage::{NoteRecord, Result, UserRecord};

/// Rows per transaction of the copy.
const BATCH: usize = 2048;

/// Told the rows copied so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// Runs `step` in transactions until it says it is done.
fn in_batches(dst: &Database, mut step: impl FnMut(&WriteTransaction) -> Result<bool>) -> Result<()> {
    loop {
        let mut txn = dst.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| crate::storage::StorageError::Backend(std::sync::Arc::new(e)))?;
        let more = step(&txn)?;
        txn.commit()?;
        if !more {
            return Ok(());
        }
    }
}

/// Copies one table as it is; returns the rows copied.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    table: TableDefinition<K, V>,
    copied: &mut u64,
    progress: Progress<'_>,
) -> Result<u64> {
    let from = src.open_table(table)?;
    let mut rows = from.iter()?;
    let mut count = 0;
    in_batches(dst, |txn| {
        let mut to = txn.open_table(table)?;
        let mut taken = 0;
        for entry in rows.by_ref().take(BATCH) {
            let (key, value) = entry?;
            to.insert(key.value(), value.value())?;
            taken += 1;
        }
        count += taken;
        *copied += taken;
        progress(*copied);
        Ok(taken == BATCH as u64)
    })?;
    Ok(count)
}

macro_rules! copy_tables {
    ($src:expr, $dst:expr, $copied:expr, $progress:expr, [$($table:expr),* $(,)?]) => {{
        let mut rows = 0;
        $(rows += copy_table($src, $dst, $table, $copied, $progress)?;)*
        rows
    }};
}

/// Copies every table of `src` into the empty database `dst`; returns the
/// rows copied.
pub fn everything(src: &ReadTransaction, dst: &Database, progress: Progress<'_>) -> Result<u64> {
    let mut copied = 0;
    let rows = copy_tables!(
        src,
        dst,
        &mut copied,
        progress,
        [
            META,
            USER_TO_RECORD,
            EMAIL_TO_USER,
            SESSION_TO_RECORD,
            USER_SESSION_TO_UNIT,
            OWNER_NOTE_TO_RECORD,
            EMAIL_TO_BACKOFF,
            GHOST_TO_BACKOFF,
            USER_TO_KNOWN_CLIENTS,
            OWNER_TAG_NOTE_TO_UNIT,
            OWNER_TO_USAGE,
            SEQ_TO_AUDIT,
            USER_SEQ_TO_UNIT,
            AUDIT_ENDS,
            ADMIN_TO_UNIT,
            INVITE_TO_RECORD,
            SEAL_CHECK,
            USER_TO_MFA,
            SESSION_TO_SECOND_FACTOR,
        ]
    );
    // The last commit, durable: the copy is on disk when it returns.
    let txn = dst.begin_write()?;
    super::tables::create_all(&txn)?;
    super::migrations::set_current(&txn)?;
    txn.commit()?;
    Ok(rows)
}

/// Schema 3 → 4 into the empty database `dst`: accounts and notes sealed,
/// the email, counter and tag indexes rebuilt blind; every other table as
/// it is. Returns the rows written.
pub fn seal_v3(
    src: &ReadTransaction,
    dst: &Database,
    sealer: &Sealer,
    progress: Progress<'_>,
) -> Result<u64> {
    let mut copied = 0;
    let mut rows = copy_tables!(
        src,
        dst,
        &mut copied,
        progress,
        [
            META,
            SESSION_TO_RECORD,
            USER_SESSION_TO_UNIT,
            USER_TO_KNOWN_CLIENTS,
            OWNER_TO_USAGE,
            SEQ_TO_AUDIT,
            USER_SEQ_TO_UNIT,
            AUDIT_ENDS,
            ADMIN_TO_UNIT,
            INVITE_TO_RECORD,
        ]
    );

    let users = src.open_table(USER_TO_RECORD)?;
    let mut entries = users.iter()?;
    in_batches(dst, |txn| {
        let mut to = txn.open_table(USER_TO_RECORD)?;
        let mut emails = txn.open_table(EMAIL_TO_USER)?;
        let mut taken = 0;
        for entry in entries.by_ref().take(BATCH) {
            taken += 1;
            let (id, value) = entry?;
            let user: UserRecord = decode::<UserRowV3>(&USER_TO_RECORD, value.value())?.into();
            to.insert(
                id.value(),
                encode(&USER_TO_RECORD, &UserRow::seal(&user, sealer)?)?.as_slice(),
            )?;
            emails.insert(sealer.email_index(&user.email).as_str(), id.value())?;
            rows += 2;
        }
        copied += taken;
        progress(copied);
        Ok(taken == BATCH as u64)
    })?;

    let notes = src.open_table(OWNER_NOTE_TO_RECORD)?;
    let mut entries = notes.iter()?;
    in_batches(dst, |txn| {
        let mut to = txn.open_table(OWNER_NOTE_TO_RECORD)?;
        let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
        let mut taken = 0;
        for entry in entries.by_ref().take(BATCH) {
            taken += 1;
            let (key, value) = entry?;
            let (owner, id) = key.value();
            let note: NoteRecord = decode::<NoteRowV3>(&OWNER_NOTE_TO_RECORD, value.value())?.into();
            to.insert((owner, id), NoteRow::seal(&note, owner, sealer)?.as_slice())?;
            for tag in &note.tags {
                tags.insert((owner, sealer.tag_index(owner, tag).as_str(), id), ())?;
                rows += 1;
            }
            rows += 1;
        }
        copied += taken;
        progress(copied);
        Ok(taken == BATCH as u64)
    })?;

    for table in [EMAIL_TO_BACKOFF, GHOST_TO_BACKOFF] {
        let counters = src.open_table(table)?;
        let mut entries = counters.iter()?;
        in_batches(dst, |txn| {
            let mut to = txn.open_table(table)?;
            let mut taken = 0;
            for entry in entries.by_ref().take(BATCH) {
                let (key, value) = entry?;
                to.insert(stored_key(sealer, key.value()).as_str(), value.value())?;
                taken += 1;
            }
            rows += taken;
            Ok(taken == BATCH as u64)
        })?;
    }
    // The last commit, durable: the copy is on disk when it returns.
    let txn = dst.begin_write()?;
    super::tables::create_all(&txn)?;
    super::migrations::set_current(&txn)?;
    super::write_check(&txn, sealer)?;
    txn.commit()?;
    Ok(rows)
}
