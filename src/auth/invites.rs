//! Invite codes: `niv_` + base64url(invite id ‖ 32-byte secret). Only a
//! BLAKE2b-256 hash of the secret is stored, so a copy of the database
//! holds no usable code; the secret's 256 bits leave nothing to guess.

use base64ct::{Base64UrlUnpadded, Encoding};
use blake2::{Blake2b, Digest, digest::consts::U32};

use crate::domain::InviteId;

const PREFIX: &str = "niv_";

/// A freshly made code and the hash to store.
pub struct NewInvite {
    pub id: InviteId,
    pub code: String,
    pub hash: [u8; 32],
}

pub fn new_invite() -> Result<NewInvite, getrandom::Error> {
    let id = InviteId::generate();
    let mut raw = [0u8; 48];
    raw[..16].copy_from_slice(id.0.as_bytes());
    getrandom::fill(&mut raw[16..])?;
    Ok(NewInvite {
        id,
        code: format!("{PREFIX}{}", Base64UrlUnpadded::encode_string(&raw)),
        hash: hash_secret(&raw[16..]),
    })
}

/// The invite a code names and the hash of its secret; `None` for
/// anything that is not a code of this form.
pub fn parse_invite(code: &str) -> Option<(InviteId, [u8; 32])> {
    let body = code.strip_prefix(PREFIX)?;
    let mut raw = [0u8; 48];
    let decoded = Base64UrlUnpadded::decode(body, &mut raw).ok()?;
    if decoded.len() != 48 {
        return None;
    }
    let id = uuid::Uuid::from_slice(&raw[..16]).ok()?;
    Some((InviteId(id), hash_secret(&raw[16..])))
}

/// Whether `claim` may use `invite`: the secret's hash matches (compared
/// in constant time), it is unused and has not expired.
pub fn admits(invite: &crate::storage::InviteRecord, claim: &crate::storage::InviteClaim) -> bool {
    use subtle::ConstantTimeEq;
    let matches: bool = invite.hash.ct_eq(&claim.hash).into();
    matches && invite.used_by.is_none() && claim.at < invite.expires_at
}

fn hash_secret(secret: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_parses_back_to_its_id_and_hash_and_nothing_else_does() {
        let invite = new_invite().unwrap();
        assert_eq!(parse_invite(&invite.code), Some((invite.id, invite.hash)));
        let mut other = invite.code.clone();
        other.pop();
        other.push(if invite.code.ends_with('A') { 'B' } else { 'A' });
        assert_ne!(
            parse_invite(&other).map(|p| p.1),
            Some(invite.hash),
            "another secret"
        );
        for junk in ["", "niv_", "niv_!!!!", "nrt_AAAA", &invite.code[..20]] {
            assert_eq!(parse_invite(junk), None, "{junk}");
        }
    }
}
