//! Second factors: one sealed row per account (see [`MfaRow`]). Every
//! check of a proof and the change it allows happen in one write
//! transaction, on the one writer: of two requests with the same code, or
//! the same recovery code, exactly one finds it unused.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::get_row;
use super::rows::{MfaRow, encode};
use super::tables::{SESSION_TO_SECOND_FACTOR, USER_SESSION_TO_UNIT, USER_TO_MFA};
use crate::domain::UserId;
use crate::seal::Sealer;
use crate::storage::{MfaChange, MfaOutcome, MfaProof, MfaRecord, Result};

pub fn get(txn: &ReadTransaction, user: UserId, sealer: &Sealer) -> Result<Option<MfaRecord>> {
    let table = txn.open_table(USER_TO_MFA)?;
    let row: Option<MfaRow> = get_row(&table, user.as_u128())?;
    row.map(|row| row.open(user.as_u128(), sealer)).transpose()
}

/// Checks `proof` against the stored factor and applies `change`.
pub fn change(
    txn: &WriteTransaction,
    user: UserId,
    proof: &MfaProof,
    change: &MfaChange,
    sealer: &Sealer,
) -> Result<MfaOutcome> {
    let id = user.as_u128();
    let mut table = txn.open_table(USER_TO_MFA)?;
    let stored: Option<MfaRow> = get_row(&table, id)?;
    let stored = stored.map(|row| row.open(id, sealer)).transpose()?;
    let mut record = match (change, stored) {
        (MfaChange::Enrol(_), Some(current)) if current.confirmed => return Ok(MfaOutcome::Conflict),
        (MfaChange::Enrol(new), _) => {
            let bytes = encode(&USER_TO_MFA, &MfaRow::seal(new, sealer)?)?;
            table.insert(id, bytes.as_slice())?;
            return Ok(MfaOutcome::Done);
        }
        // An admin's reset needs no proof.
        (MfaChange::Remove, Some(_)) if matches!(proof, MfaProof::None) => {
            table.remove(id)?;
            drop(table);
            forget_second_factor(txn, user)?;
            return Ok(MfaOutcome::Done);
        }
        (MfaChange::Confirm(_), Some(pending)) if !pending.confirmed => pending,
        (MfaChange::Confirm(_), _) => return Ok(MfaOutcome::NoFactor),
        (_, Some(factor)) if factor.confirmed => factor,
        (_, _) => return Ok(MfaOutcome::NoFactor),
    };
    if !accept(&mut record, proof) {
        return Ok(MfaOutcome::Refused);
    }
    match change {
        MfaChange::Remove => {
            table.remove(id)?;
            drop(table);
            forget_second_factor(txn, user)?;
            return Ok(MfaOutcome::Done);
        }
        MfaChange::Confirm(codes) => {
            record.confirmed = true;
            record.recovery.clone_from(codes);
        }
        MfaChange::NewRecoveryCodes(codes) => record.recovery.clone_from(codes),
        MfaChange::Use | MfaChange::Enrol(_) => {}
    }
    let bytes = encode(&USER_TO_MFA, &MfaRow::seal(&record, sealer)?)?;
    table.insert(id, bytes.as_slice())?;
    Ok(MfaOutcome::Done)
}

/// The factor is gone: no session of the account counts as opened with it
/// any longer (their next tokens say `pwd` alone).
fn forget_second_factor(txn: &WriteTransaction, user: UserId) -> Result<()> {
    let id = user.as_u128();
    let sessions: Vec<u128> = txn
        .open_table(USER_SESSION_TO_UNIT)?
        .range((id, 0)..=(id, u128::MAX))?
        .map(|entry| entry.map(|(key, _)| key.value().1))
        .collect::<std::result::Result<_, _>>()?;
    let mut second_factors = txn.open_table(SESSION_TO_SECOND_FACTOR)?;
    for sid in sessions {
        second_factors.remove(sid)?;
    }
    Ok(())
}

/// Takes the proof if it is good, marking it used in `record`.
fn accept(record: &mut MfaRecord, proof: &MfaProof) -> bool {
    match proof {
        MfaProof::None => false,
        MfaProof::Step { step, secret } => {
            let same_secret = subtle::ConstantTimeEq::ct_eq(secret.as_slice(), record.secret.as_slice());
            if !bool::from(same_secret) || *step <= record.last_step {
                return false;
            }
            record.last_step = *step;
            true
        }
        MfaProof::Recovery(hash) => {
            let before = record.recovery.len();
            record
                .recovery
                .retain(|stored| !bool::from(subtle::ConstantTimeEq::ct_eq(&stored[..], &hash[..])));
            record.recovery.len() < before
        }
    }
}
