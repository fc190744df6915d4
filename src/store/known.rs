//! The clients an account has logged in from: the devices holding one of
//! its device tokens (by the token's hash) and the client addresses (an
//! IPv4 address or IPv6 prefix). A login from one of them has its own
//! failure counter, so guesses from elsewhere cannot keep the owner out.
//! At most [`KNOWN_MAX`] per account, the least recently seen dropped.

use redb::{ReadableDatabase, WriteTransaction};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Result, Store, encode, get_record, tables::USER_TO_KNOWN_CLIENTS};
use crate::domain::UserId;

/// Known clients remembered per account.
pub const KNOWN_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KnownKind {
    /// `id` is the BLAKE2b-256 hash of a device token.
    Device,
    /// `id` holds a client key (see `client::ClientKey::to_bytes`).
    Address,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownClient {
    pub kind: KnownKind,
    pub id: [u8; 32],
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub last_seen: OffsetDateTime,
}

const NAME: &str = "known_clients";

/// Adds or refreshes `seen` in the account's list, in `txn`.
pub(super) fn remember(txn: &WriteTransaction, user: u128, seen: &[KnownClient]) -> Result<()> {
    if seen.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(USER_TO_KNOWN_CLIENTS)?;
    let mut known: Vec<KnownClient> = get_record(&table, NAME, user)?.unwrap_or_default();
    for client in seen {
        match known
            .iter_mut()
            .find(|k| k.kind == client.kind && k.id == client.id)
        {
            Some(k) => k.last_seen = client.last_seen,
            None => known.push(client.clone()),
        }
    }
    known.sort_by_key(|k| std::cmp::Reverse(k.last_seen));
    known.truncate(KNOWN_MAX);
    let bytes = encode(NAME, &known)?;
    table.insert(user, bytes.as_slice())?;
    Ok(())
}

impl Store {
    pub fn known_clients(&self, user: UserId) -> Result<Vec<KnownClient>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USER_TO_KNOWN_CLIENTS)?;
        Ok(get_record(&table, NAME, user.as_u128())?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_bounded_and_keeps_the_most_recent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let user = UserId::generate();
        let start = OffsetDateTime::now_utc();
        for i in 0..20u8 {
            let client = KnownClient {
                kind: KnownKind::Address,
                id: [i; 32],
                last_seen: start + time::Duration::seconds(i64::from(i)),
            };
            let txn = store.db.begin_write().unwrap();
            remember(&txn, user.as_u128(), &[client]).unwrap();
            txn.commit().unwrap();
        }
        let known = store.known_clients(user).unwrap();
        assert_eq!(known.len(), KNOWN_MAX);
        assert_eq!(known[0].id, [19; 32], "newest first");
        assert!(known.iter().all(|k| k.id[0] >= 4), "the oldest four dropped");
    }
}
