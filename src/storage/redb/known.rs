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

use redb::{ReadTransaction, WriteTransaction};

use super::get_row;
use super::rows::{KnownKindRow, KnownRow, encode};
use super::tables::USER_TO_KNOWN_CLIENTS;
use crate::domain::UserId;
use crate::storage::{ADDRESSES_MAX, DEVICES_MAX, KnownClient, Result};

/// Adds or refreshes `seen` in the account's list.
pub fn remember(txn: &WriteTransaction, user: UserId, seen: &[KnownClient]) -> Result<()> {
    if seen.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(USER_TO_KNOWN_CLIENTS)?;
    let mut known: Vec<KnownRow> = get_row(&table, user.as_u128())?.unwrap_or_default();
    for client in seen.iter().map(KnownRow::from) {
        match known
            .iter_mut()
            .find(|k| k.kind == client.kind && k.id == client.id)
        {
            Some(k) => {
                k.last_seen = client.last_seen;
                k.proven |= client.proven;
            }
            None => known.push(client),
        }
    }
    // Proven first, then the most recently seen; each kind to its own cap.
    known.sort_by_key(|k| std::cmp::Reverse((k.proven, k.last_seen)));
    let (mut devices, mut addresses) = (0, 0);
    known.retain(|k| {
        let (count, max) = match k.kind {
            KnownKindRow::Device => (&mut devices, DEVICES_MAX),
            KnownKindRow::Address => (&mut addresses, ADDRESSES_MAX),
        };
        *count += 1;
        *count <= max
    });
    let bytes = encode(&USER_TO_KNOWN_CLIENTS, &known)?;
    table.insert(user.as_u128(), bytes.as_slice())?;
    Ok(())
}

pub fn get(txn: &ReadTransaction, user: UserId) -> Result<Vec<KnownClient>> {
    let table = txn.open_table(USER_TO_KNOWN_CLIENTS)?;
    let rows: Vec<KnownRow> = get_row(&table, user.as_u128())?.unwrap_or_default();
    Ok(rows.into_iter().map(KnownClient::from).collect())
}
