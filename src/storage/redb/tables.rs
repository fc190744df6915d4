//! Every redb table, declared once: code names a table by its definition,
//! and error messages take the name from it. Keys put the owner first, so a range scan
//! over one owner's rows can never reach another owner's.

use redb::TableDefinition;

/// Bookkeeping such as the schema version.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// User id → user record.
pub const USER_TO_RECORD: TableDefinition<u128, &[u8]> = TableDefinition::new("users");
/// Normalised email → user id; enforces one account per email.
pub const EMAIL_TO_USER: TableDefinition<&str, u128> = TableDefinition::new("email_to_user");
/// Session id → session record.
pub const SESSION_TO_RECORD: TableDefinition<u128, &[u8]> = TableDefinition::new("sessions");
/// (user id, session id) → (); lists a user's sessions.
pub const USER_SESSION_TO_UNIT: TableDefinition<(u128, u128), ()> = TableDefinition::new("user_sessions");
/// (owner id, note id) → note record.
pub const OWNER_NOTE_TO_RECORD: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("notes");
/// Counter key (normalised email, plus the known client it is for) →
/// failed-login counter, for existing accounts only; see `auth::backoff`.
pub const EMAIL_TO_BACKOFF: TableDefinition<&str, &[u8]> = TableDefinition::new("login_backoff");
/// Normalised email with no account → failed-login counter, so a made-up
/// email backs off like a real one, even after a restart; bounded in
/// number (`--max-login-counters`).
pub const GHOST_TO_BACKOFF: TableDefinition<&str, &[u8]> = TableDefinition::new("ghost_backoff");
/// User id → the clients it has logged in from; see `store::known`.
pub const USER_TO_KNOWN_CLIENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("known_clients");
/// (owner id, tag, note id) → (); the tag filter's index.
pub const OWNER_TAG_NOTE_TO_UNIT: TableDefinition<(u128, &str, u128), ()> = TableDefinition::new("note_tags");
/// Owner id → (notes held, bytes of note text held); checked against the
/// per-account quotas in the same transaction as every note write.
pub const OWNER_TO_USAGE: TableDefinition<u128, (u64, u64)> = TableDefinition::new("owner_usage");

/// Sequence number → audit record (see [`crate::audit`]): the encoded
/// event followed by its 32-byte MAC.
pub const SEQ_TO_AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// (user id, sequence number) → (); one account's events.
pub const USER_SEQ_TO_UNIT: TableDefinition<(u128, u64), ()> = TableDefinition::new("user_audit");
/// `head` (the last record) and `anchor` (the last one purged by the
/// retention) of the audit chain, each with a MAC of its own.
pub const AUDIT_ENDS: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_ends");

/// User id → (): the accounts with role admin.
pub const ADMIN_TO_UNIT: TableDefinition<u128, ()> = TableDefinition::new("admins");
/// Invite id → invite record (the hash of its secret, expiry, use).
pub const INVITE_TO_RECORD: TableDefinition<u128, &[u8]> = TableDefinition::new("invites");

/// User id → the account's second factor (see `auth::mfa`): its TOTP
/// secret and recovery-code hashes sealed, the last time step accepted.
pub const USER_TO_MFA: TableDefinition<u128, &[u8]> = TableDefinition::new("mfa");
/// Session id → (): the sessions whose login passed a second factor, so
/// their refreshed tokens say so too. Added within schema 4.
pub const SESSION_TO_SECOND_FACTOR: TableDefinition<u128, ()> = TableDefinition::new("session_second_factor");

/// A value sealed with the data key, opened at every start: a key ring
/// that is not this database's is refused at once, not found out note by
/// note.
pub const SEAL_CHECK: TableDefinition<&str, &[u8]> = TableDefinition::new("seal_check");

/// Opens every table, creating the missing ones.
pub fn create_all(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    create_all_v3(txn)?;
    txn.open_table(SEAL_CHECK)?;
    txn.open_table(USER_TO_MFA)?;
    txn.open_table(SESSION_TO_SECOND_FACTOR)?;
    Ok(())
}

/// Opens the tables of schema 3, creating the missing ones.
pub fn create_all_v3(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(META)?;
    txn.open_table(USER_TO_RECORD)?;
    txn.open_table(EMAIL_TO_USER)?;
    txn.open_table(SESSION_TO_RECORD)?;
    txn.open_table(USER_SESSION_TO_UNIT)?;
    txn.open_table(OWNER_NOTE_TO_RECORD)?;
    txn.open_table(EMAIL_TO_BACKOFF)?;
    txn.open_table(GHOST_TO_BACKOFF)?;
    txn.open_table(USER_TO_KNOWN_CLIENTS)?;
    txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
    txn.open_table(OWNER_TO_USAGE)?;
    txn.open_table(SEQ_TO_AUDIT)?;
    txn.open_table(USER_SEQ_TO_UNIT)?;
    txn.open_table(AUDIT_ENDS)?;
    txn.open_table(ADMIN_TO_UNIT)?;
    txn.open_table(INVITE_TO_RECORD)?;
    Ok(())
}
