//! The clients an account has logged in from: the devices holding one of
//! its device tokens (by the token's hash) and the client addresses (an
//! IPv4 address or IPv6 prefix). A login from one of them has its own
//! failure counter, so guesses from elsewhere cannot keep the owner out.
//! At most [`DEVICES_MAX`] devices and [`ADDRESSES_MAX`] addresses per
//! account, kept apart so neither crowds out the other. Devices that have
//! come back with their token at least once are kept before devices that
//! never did: a client that logs in again and again without sending its
//! token (a script) mints tokens that only push out each other, not the
//! owner's phone.

use redb::{ReadableDatabase, WriteTransaction};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Result, Store, encode, get_record, tables::USER_TO_KNOWN_CLIENTS};
use crate::domain::UserId;

/// Devices remembered per account.
pub const DEVICES_MAX: usize = 32;
/// Addresses remembered per account.
pub const ADDRESSES_MAX: usize = 16;

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
    /// A device that has presented its token at a login (not only been
    /// given one).
    pub proven: bool,
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
            Some(k) => {
                k.last_seen = client.last_seen;
                k.proven |= client.proven;
            }
            None => known.push(client.clone()),
        }
    }
    // Proven first, then the most recently seen; each kind to its own cap.
    known.sort_by_key(|k| std::cmp::Reverse((k.proven, k.last_seen)));
    let (mut devices, mut addresses) = (0, 0);
    known.retain(|k| {
        let (count, max) = match k.kind {
            KnownKind::Device => (&mut devices, DEVICES_MAX),
            KnownKind::Address => (&mut addresses, ADDRESSES_MAX),
        };
        *count += 1;
        *count <= max
    });
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
    fn the_list_is_bounded_and_keeps_the_proven_and_the_recent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let user = UserId::generate();
        let start = OffsetDateTime::now_utc();
        let remember_one = |kind, i: u8, proven| {
            let client = KnownClient {
                kind,
                id: [i; 32],
                last_seen: start + time::Duration::seconds(i64::from(i)),
                proven,
            };
            let txn = store.db.begin_write().unwrap();
            remember(&txn, user.as_u128(), &[client]).unwrap();
            txn.commit().unwrap();
        };
        // The owner's phone came back with its token once...
        remember_one(KnownKind::Device, 0, true);
        // ... then a script logs in 60 times without one, from 20 addresses.
        for i in 1..=60u8 {
            remember_one(KnownKind::Device, i, false);
            remember_one(KnownKind::Address, 100 + i % 20, false);
        }
        let known = store.known_clients(user).unwrap();
        let devices: Vec<_> = known.iter().filter(|k| k.kind == KnownKind::Device).collect();
        let addresses = known.len() - devices.len();
        assert_eq!((devices.len(), addresses), (DEVICES_MAX, ADDRESSES_MAX));
        assert!(devices.iter().any(|k| k.id == [0; 32]), "the proven phone stays");
        assert!(devices.iter().any(|k| k.id == [60; 32]), "the newest stays");
        assert!(
            !devices.iter().any(|k| k.id == [1; 32]),
            "the oldest unproven goes"
        );
    }
}
