//! Device tokens: proof that a client has logged in to an account before.
//!
//! `ndv_` + base64url(32 random bytes), handed out with every successful
//! login and signup; only its BLAKE2b-256 hash is stored, among the
//! account's known clients. Presented at login (`device_token`), it gives
//! the attempt a failure counter of its own (see `auth::backoff`). It is
//! not a credential: the password is checked as always.

use base64ct::{Base64UrlUnpadded, Encoding};
use blake2::{Blake2b, Digest, digest::consts::U32};
use subtle::ConstantTimeEq;

use crate::client::ClientKey;
use crate::storage::{KnownClient, KnownKind};

const PREFIX: &str = "ndv_";

pub struct DeviceToken {
    pub token: String,
    pub hash: [u8; 32],
}

pub fn new_device_token() -> Result<DeviceToken, getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    Ok(DeviceToken {
        token: format!("{PREFIX}{}", Base64UrlUnpadded::encode_string(&secret)),
        hash: hash(&secret),
    })
}

/// The hash of a presented device token, if it has the right shape.
pub fn parse_device_token(token: &str) -> Option<[u8; 32]> {
    let body = token.strip_prefix(PREFIX)?;
    let mut secret = [0u8; 32];
    let decoded = Base64UrlUnpadded::decode(body, &mut secret).ok()?;
    (decoded.len() == 32).then(|| hash(&secret))
}

fn hash(secret: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(secret).into()
}

/// Which failure counter a login attempt draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientClass {
    /// A client the account has never seen: the account's shared counter.
    Unknown,
    /// A device holding one of the account's device tokens (its hash).
    Device([u8; 32]),
    /// An address the account has logged in from.
    Address(ClientKey),
}

impl ClientClass {
    /// Classifies an attempt against the account's known clients. Token
    /// hashes are compared in constant time.
    pub fn of(known: &[KnownClient], device: Option<[u8; 32]>, client: Option<ClientKey>) -> Self {
        if let Some(device) = device {
            let held = known
                .iter()
                .filter(|k| k.kind == KnownKind::Device)
                .fold(subtle::Choice::from(0), |acc, k| acc | k.id.ct_eq(&device));
            if bool::from(held) {
                return ClientClass::Device(device);
            }
        }
        if let Some(client) = client {
            let id = client.to_bytes();
            if known.iter().any(|k| k.kind == KnownKind::Address && k.id == id) {
                return ClientClass::Address(client);
            }
        }
        ClientClass::Unknown
    }

    /// The key of this class's failure counter for `email`, a normalised
    /// email (as [`crate::domain::Email`] gives it, or as stored with an account). Emails
    /// hold no control characters, so the separator cannot be forged.
    pub fn counter_key(&self, email: &str) -> String {
        match self {
            ClientClass::Unknown => email.to_owned(),
            ClientClass::Device(hash) => {
                let short = Base64UrlUnpadded::encode_string(&hash[..12]);
                format!("{email}\n#device:{short}")
            }
            ClientClass::Address(client) => format!("{email}\n#address:{client}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Email;

    #[test]
    fn device_tokens_round_trip_and_classify_only_for_their_account() {
        let device = new_device_token().unwrap();
        assert!(device.token.starts_with("ndv_"));
        assert_eq!(parse_device_token(&device.token), Some(device.hash));
        for bad in [
            "",
            "ndv_",
            "ndv_!!",
            "nrt_AAAA",
            &device.token[..device.token.len() - 1],
        ] {
            assert_eq!(parse_device_token(bad), None, "{bad:?}");
        }
        let now = time::OffsetDateTime::now_utc();
        let known = [KnownClient {
            kind: KnownKind::Device,
            id: device.hash,
            last_seen: now,
            proven: true,
        }];
        assert_eq!(
            ClientClass::of(&known, Some(device.hash), None),
            ClientClass::Device(device.hash)
        );
        let other = new_device_token().unwrap();
        assert_eq!(
            ClientClass::of(&known, Some(other.hash), None),
            ClientClass::Unknown
        );
        let email = Email::parse("a@x.org").unwrap();
        assert_ne!(
            ClientClass::Device(device.hash).counter_key(email.as_str()),
            ClientClass::Unknown.counter_key(email.as_str())
        );
    }
}
