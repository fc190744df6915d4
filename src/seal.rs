//! Encryption at rest.
//!
//! The hierarchy, from the outside in:
//! - The **master key** (see [`crate::masterkey`]) lives in a file outside
//!   the data directory. It seals one thing: the key ring file
//!   (`keyring.json`), which holds every other secret.
//! - The key ring's **data key** derives, per account, the AES-256-GCM key
//!   that seals that account's note text and account row, and the keys of
//!   the blind indexes (emails, login counters, tags).
//!
//! A sealed value is `version ‖ nonce ‖ ciphertext ‖ tag`, with a fresh
//! random 96-bit nonce from the OS generator. Its associated data names
//! what it is and where it belongs (the field, the owner, the note), so a
//! value copied to another row or another field does not open. Per-account
//! keys keep each key's message count far below the bound random nonces
//! allow.

use std::sync::Arc;

use blake2::digest::{FixedOutput, KeyInit, Update};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

type Mac = blake2::Blake2bMac<blake2::digest::consts::U32>;

/// First byte of every sealed value: the format, for a future change.
const FORMAT: u8 = 1;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The value was not sealed with this key, for this place, or it was
    /// altered.
    #[error("a sealed value does not open (wrong key, moved or altered)")]
    Open,
    #[error("the system random generator failed: {0}")]
    Random(String),
}

/// A keyed BLAKE2b-256 over `parts`, each length-prefixed so that no two
/// different lists of parts give the same input.
pub fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // A 32-byte key is always a valid BLAKE2b key.
    let mut mac = <Mac as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        Update::update(&mut mac, &(part.len() as u64).to_le_bytes());
        Update::update(&mut mac, part);
    }
    mac.finalize_fixed().into()
}

fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    // AES-256 takes exactly 32 bytes.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!()))
}

/// Seals `plain` under `key`, bound to `ad`.
pub fn seal(key: &[u8; 32], ad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
    seal_with(&aead_key(key), ad, plain)
}

/// Opens a value [`seal`] made with the same key and `ad`.
pub fn open(key: &[u8; 32], ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    open_with(&aead_key(key), ad, sealed)
}

fn seal_with(key: &LessSafeKey, ad: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + TAG_LEN);
    out.push(FORMAT);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let mut body = out.split_off(1 + NONCE_LEN);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(ad), &mut body)
        .map_err(|_| SealError::Open)?;
    out.append(&mut body);
    Ok(out)
}

fn open_with(key: &LessSafeKey, ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut plain = Vec::new();
    open_into_with(key, ad, sealed, &mut plain)?;
    Ok(plain)
}

/// Opens `sealed` into `plain`, which is cleared first (and left empty
/// when the value does not open).
fn open_into_with(key: &LessSafeKey, ad: &[u8], sealed: &[u8], plain: &mut Vec<u8>) -> Result<(), SealError> {
    plain.clear();
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != FORMAT {
        return Err(SealError::Open);
    }
    let nonce = Nonce::try_assume_unique_for_key(&sealed[1..=NONCE_LEN]).map_err(|_| SealError::Open)?;
    plain.extend_from_slice(&sealed[1 + NONCE_LEN..]);
    if let Ok(opened) = key.open_in_place(nonce, Aad::from(ad), plain) {
        let len = opened.len();
        plain.truncate(len);
        Ok(())
    } else {
        plain.clear();
        Err(SealError::Open)
    }
}

/// What a sealed value holds; part of its associated data.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// A note's title, content and tags, sealed together.
    NoteBody,
    /// An account's email and password hash.
    Account,
    /// An account's second factor: its TOTP secret and recovery-code
    /// hashes.
    Mfa,
    /// The database's check value (see `storage::redb::tables::SEAL_CHECK`).
    Check,
}

impl Field {
    fn label(self) -> &'static [u8] {
        match self {
            Field::NoteBody => b"note body",
            Field::Account => b"account",
            Field::Check => b"check",
            Field::Mfa => b"mfa",
        }
    }
}

/// Seals and opens the database's values, and computes its blind indexes;
/// all from the key ring's data key.
pub struct Sealer {
    /// Derives each account's sealing key.
    accounts: [u8; 32],
    /// Keys the email and login-counter indexes.
    emails: [u8; 32],
    /// Derives each account's tag-index key.
    tags: [u8; 32],
    /// The keys of the accounts used lately: deriving one (a keyed
    /// BLAKE2b and an AES key schedule) costs more than the note read's
    /// decryption.
    keys: quick_cache::sync::Cache<u128, Arc<AccountKeys>>,
}

/// One account's keys.
struct AccountKeys {
    aead: LessSafeKey,
    tags: [u8; 32],
}

/// Accounts whose keys stay derived.
const KEY_CACHE: usize = 4096;

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    pub fn new(data_key: &[u8; 32]) -> Self {
        Self {
            accounts: mac(data_key, &[b"notesd account keys"]),
            emails: mac(data_key, &[b"notesd email index"]),
            tags: mac(data_key, &[b"notesd tag index"]),
            keys: quick_cache::sync::Cache::new(KEY_CACHE),
        }
    }

    fn account(&self, owner: u128) -> Arc<AccountKeys> {
        if let Some(keys) = self.keys.get(&owner) {
            return keys;
        }
        let keys = Arc::new(AccountKeys {
            aead: aead_key(&mac(&self.accounts, &[&owner.to_be_bytes()])),
            tags: mac(&self.tags, &[&owner.to_be_bytes()]),
        });
        self.keys.insert(owner, keys.clone());
        keys
    }

    /// Seals `plain` as `field` of the row (`owner`, `row`).
    pub fn seal(&self, field: Field, owner: u128, row: u128, plain: &[u8]) -> Result<Vec<u8>, SealError> {
        seal_with(&self.account(owner).aead, &ad(field, owner, row), plain)
    }

    /// Opens what [`Sealer::seal`] sealed for the same field and row.
    pub fn open(&self, field: Field, owner: u128, row: u128, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        open_with(&self.account(owner).aead, &ad(field, owner, row), sealed)
    }

    /// `owner`'s key, looked up once to open many rows (a page of notes).
    pub fn opener(&self, owner: u128) -> Opener {
        Opener {
            owner,
            keys: self.account(owner),
        }
    }

    /// The blind index of a normalised email (or any key derived from
    /// one, such as a login counter's): equal inputs give equal indexes,
    /// and nothing about the input can be read from it without the key.
    pub fn email_index(&self, email: &str) -> String {
        hex(&mac(&self.emails, &[email.as_bytes()])[..20])
    }

    /// The blind index of one of `owner`'s tags; the same tag of two
    /// accounts gives unrelated indexes.
    pub fn tag_index(&self, owner: u128, tag: &str) -> String {
        hex(&mac(&self.account(owner).tags, &[tag.as_bytes()])[..16])
    }
}

/// Opens the values of one account's rows with its key, looked up once.
pub struct Opener {
    owner: u128,
    keys: Arc<AccountKeys>,
}

impl Opener {
    pub fn owner(&self) -> u128 {
        self.owner
    }

    /// As [`Sealer::open`], into `plain` (cleared first): the rows of a
    /// page share one buffer instead of allocating one each.
    pub fn open_into(
        &self,
        field: Field,
        row: u128,
        sealed: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        open_into_with(&self.keys.aead, &ad(field, self.owner, row), sealed, plain)
    }
}

/// The associated data of a value: its field's label, padded, then owner
/// and row.
fn ad(field: Field, owner: u128, row: u128) -> [u8; 48] {
    let mut ad = [0u8; 48];
    let label = field.label();
    ad[..label.len()].copy_from_slice(label);
    ad[16..32].copy_from_slice(&owner.to_be_bytes());
    ad[32..].copy_from_slice(&row.to_be_bytes());
    ad
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Random bytes from the OS generator.
pub fn random_key() -> Result<[u8; 32], SealError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_in_its_own_place() {
        let sealer = Sealer::new(&[7; 32]);
        let value = sealer.seal(Field::NoteBody, 1, 2, b"secret text").unwrap();
        assert!(!value.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            sealer.open(Field::NoteBody, 1, 2, &value).unwrap(),
            b"secret text"
        );
        assert!(
            sealer.open(Field::NoteBody, 1, 3, &value).is_err(),
            "another note"
        );
        assert!(
            sealer.open(Field::NoteBody, 9, 2, &value).is_err(),
            "another owner"
        );
        assert!(
            sealer.open(Field::Account, 1, 2, &value).is_err(),
            "another field"
        );
        assert!(
            Sealer::new(&[8; 32]).open(Field::NoteBody, 1, 2, &value).is_err(),
            "another key"
        );
        let mut altered = value.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(Field::NoteBody, 1, 2, &altered).is_err());
        assert!(sealer.open(Field::NoteBody, 1, 2, &value[..10]).is_err());
    }

    #[test]
    fn an_opener_opens_its_owners_rows_into_one_buffer_and_only_those() {
        let sealer = Sealer::new(&[7; 32]);
        let (first, second) = (
            sealer
                .seal(Field::NoteBody, 1, 2, b"a longer first text")
                .unwrap(),
            sealer.seal(Field::NoteBody, 1, 3, b"short").unwrap(),
        );
        let opener = sealer.opener(1);
        let mut plain = Vec::new();
        opener.open_into(Field::NoteBody, 2, &first, &mut plain).unwrap();
        assert_eq!(plain, b"a longer first text");
        opener.open_into(Field::NoteBody, 3, &second, &mut plain).unwrap();
        assert_eq!(plain, b"short", "the buffer is cleared between rows");
        assert!(
            opener.open_into(Field::NoteBody, 2, &second, &mut plain).is_err(),
            "another row"
        );
        assert!(plain.is_empty(), "nothing is left of a value that did not open");
        assert!(
            sealer
                .opener(9)
                .open_into(Field::NoteBody, 2, &first, &mut plain)
                .is_err(),
            "another owner"
        );
        assert!(
            opener.open_into(Field::Account, 2, &first, &mut plain).is_err(),
            "another field"
        );
        let mut altered = first.clone();
        altered[20] ^= 1;
        assert!(
            opener
                .open_into(Field::NoteBody, 2, &altered, &mut plain)
                .is_err()
        );
        assert!(plain.is_empty());
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let sealer = Sealer::new(&[7; 32]);
        let a = sealer.seal(Field::NoteBody, 1, 2, b"same").unwrap();
        let b = sealer.seal(Field::NoteBody, 1, 2, b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn blind_indexes_are_stable_keyed_and_per_owner() {
        let sealer = Sealer::new(&[7; 32]);
        assert_eq!(sealer.email_index("a@b.c"), sealer.email_index("a@b.c"));
        assert_ne!(
            sealer.email_index("a@b.c"),
            Sealer::new(&[8; 32]).email_index("a@b.c")
        );
        assert_ne!(sealer.tag_index(1, "work"), sealer.tag_index(2, "work"));
        assert_eq!(sealer.tag_index(1, "work"), sealer.tag_index(1, "work"));
    }
}
