//! Access tokens: PASETO `v4.public`, signed by the key ring's current key,
//! with the key's PASERK id in the footer.
//!
//! Verifying an Ed25519 signature costs tens of microseconds, more than the
//! rest of a note read. So a token is verified in full once, and the claims
//! it proved are kept in a bounded cache keyed by the exact token bytes
//! (compared in constant time). A hit still checks `exp` and `nbf` against
//! the clock on every request, and revocation is checked by the caller on
//! every request, so the cache changes the cost and nothing else: the same
//! bytes always carry the same signature, and any other bytes miss.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::hash::{Hash, Hasher};

use pasetors::claims::Claims;
use pasetors::footer::Footer;
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use pasetors::{Public, public};
use quick_cache::Equivalent;
use quick_cache::sync::Cache;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::keyring::KeyRing;
use crate::domain::{Role, SessionId, UserId};

/// Who a valid access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub role: Role,
    pub issued_at: OffsetDateTime,
    pub not_before: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// `amr` holds `otp`: the login passed a second factor.
    pub second_factor: bool,
}

/// A signed access token and its validity period.
pub struct IssuedToken {
    pub token: String,
    /// `iat`, whole seconds.
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("wrong issuer or audience")]
    WrongParty,
    #[error("expired or not yet valid")]
    OutsideValidity,
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Tolerated clock difference for `iat`/`nbf` in the future.
const LEEWAY: time::Duration = time::Duration::seconds(5);

pub struct Tokens {
    keyring: Arc<RwLock<KeyRing>>,
    issuer: String,
    audience: String,
    ttl: Duration,
    verified: Cache<TokenKey, Arc<AccessClaims>>,
}

/// A cache key holding a whole verified token. Equality is constant-time:
/// a lookup must not reveal, through its timing, how much of a presented
/// token matches a cached one.
struct TokenKey(Box<str>);

/// The borrowed form, to look up without copying the presented token.
struct TokenRef<'a>(&'a str);

/// Constant-time equality (the length is not secret): every word of both
/// is read and folded, with no branch on the contents. Eight bytes a step,
/// where `subtle`'s byte-wise `ct_eq` fenced every byte and cost more than
/// the rest of a cached token check. Whole words are plain loads; only the
/// tail (under eight bytes) is padded, so no step calls `memcpy`.
fn same_bytes(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = |rest: &[u8]| {
        let mut bytes = [0u8; 8];
        for (to, from) in bytes.iter_mut().zip(rest) {
            *to = *from;
        }
        u64::from_ne_bytes(bytes)
    };
    let tails = tail(a_words.remainder()) ^ tail(b_words.remainder());
    let word = |chunk: &[u8]| <[u8; 8]>::try_from(chunk).map_or(0, u64::from_ne_bytes);
    let difference = a_words
        .zip(b_words)
        .fold(tails, |acc, (x, y)| acc | (word(x) ^ word(y)));
    std::hint::black_box(difference) == 0
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        same_bytes(&self.0, &other.0)
    }
}

impl Eq for TokenKey {}

impl Hash for TokenRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly as `TokenKey` does.
        self.0.hash(state);
    }
}

impl Equivalent<TokenKey> for TokenRef<'_> {
    fn equivalent(&self, key: &TokenKey) -> bool {
        same_bytes(self.0, &key.0)
    }
}

#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    aud: String,
    sub: String,
    sid: String,
    role: String,
    #[serde(with = "time::serde::rfc3339")]
    iat: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    nbf: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    exp: OffsetDateTime,
    /// How the session was authenticated (RFC 8176 names); tokens from
    /// before second factors have none, which means `pwd`.
    #[serde(default)]
    amr: Vec<String>,
}

impl Tokens {
    pub fn new(
        keyring: Arc<RwLock<KeyRing>>,
        issuer: String,
        audience: String,
        ttl: Duration,
        cache_capacity: usize,
    ) -> Self {
        Self {
            keyring,
            issuer,
            audience,
            ttl,
            verified: Cache::new(cache_capacity.max(1)),
        }
    }

    /// `(kid, k4.public PASERK, created_at)` of every verifying key.
    /// A retired key is listed until every token it signed has expired,
    /// whether or not the sweeper has dropped it from the ring yet.
    pub fn public_keys(&self, now: OffsetDateTime) -> Result<Vec<(String, String, OffsetDateTime)>, String> {
        let ring = self
            .keyring
            .read()
            .map_err(|_| "key ring lock poisoned".to_owned())?;
        Ok(ring
            .live_keys(now, self.key_life())
            .into_iter()
            .map(|k| (k.id.clone(), k.public_paserk.clone(), k.created_at))
            .collect())
    }

    /// How long a retired key keeps verifying: the token life, and a
    /// minute for clock skew.
    fn key_life(&self) -> Duration {
        self.ttl + Duration::from_secs(60)
    }

    /// Makes a new signing key and saves the ring in `dir`; new tokens
    /// carry its id at once, and the old keys keep verifying. Returns the
    /// new key's id.
    pub fn rotate_key(&self, dir: &std::path::Path, now: OffsetDateTime) -> Result<String, String> {
        let mut ring = self
            .keyring
            .write()
            .map_err(|_| "key ring lock poisoned".to_owned())?;
        let id = ring.rotate(now)?.id.clone();
        if let Err(e) = ring.save(dir) {
            // Not saved: not used either, or a restart would lose the key
            // its tokens name.
            ring.drop_newest();
            return Err(e.to_string());
        }
        Ok(id)
    }

    /// Drops the keys whose tokens have all expired (see
    /// [`KeyRing::prune`]) and saves the ring if any went.
    pub fn prune_keys(&self, dir: &std::path::Path, now: OffsetDateTime) -> Result<Vec<String>, String> {
        let mut ring = self
            .keyring
            .write()
            .map_err(|_| "key ring lock poisoned".to_owned())?;
        let dropped = ring.prune(now, self.key_life());
        if !dropped.is_empty() {
            ring.save(dir).map_err(|e| e.to_string())?;
        }
        Ok(dropped)
    }

    /// Runs `f` on the key ring (read-locked).
    pub fn with_ring<T>(&self, f: impl FnOnce(&KeyRing) -> T) -> Result<T, String> {
        let ring = self
            .keyring
            .read()
            .map_err(|_| "key ring lock poisoned".to_owned())?;
        Ok(f(&ring))
    }

    /// Runs `f` on the key ring (write-locked).
    pub fn with_ring_mut<T>(&self, f: impl FnOnce(&mut KeyRing) -> T) -> Result<T, String> {
        let mut ring = self
            .keyring
            .write()
            .map_err(|_| "key ring lock poisoned".to_owned())?;
        Ok(f(&mut ring))
    }

    /// The key ring's secret for deriving rotated refresh tokens.
    pub fn rotation_secret(&self) -> Option<[u8; 32]> {
        self.keyring.read().ok().map(|ring| *ring.rotation_secret())
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs an access token for `user` in `session`, expiring after the
    /// configured life or at `not_after`, whichever comes first.
    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        role: Role,
        now: OffsetDateTime,
        not_after: OffsetDateTime,
        second_factor: bool,
    ) -> Result<IssuedToken, TokenError> {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let exp = (now + self.ttl).min(not_after);
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).map_err(|e| TokenError::Signing(e.to_string()));
        let sign = |e: pasetors::errors::Error| TokenError::Signing(e.to_string());
        let mut claims = Claims::new().map_err(sign)?;
        claims.issuer(&self.issuer).map_err(sign)?;
        claims.audience(&self.audience).map_err(sign)?;
        claims.subject(&user.to_string()).map_err(sign)?;
        claims.issued_at(&fmt(now)?).map_err(sign)?;
        claims.not_before(&fmt(now)?).map_err(sign)?;
        claims.expiration(&fmt(exp)?).map_err(sign)?;
        claims
            .token_identifier(&uuid::Uuid::now_v7().to_string())
            .map_err(sign)?;
        claims.add_additional("sid", session.to_string()).map_err(sign)?;
        claims.add_additional("role", role.as_str()).map_err(sign)?;
        let amr: &[&str] = if second_factor { &["pwd", "otp"] } else { &["pwd"] };
        claims.add_additional("amr", amr).map_err(sign)?;

        let ring = self
            .keyring
            .read()
            .map_err(|_| TokenError::Signing("key ring lock".into()))?;
        let key = ring.current();
        let mut footer = Footer::new();
        let id = pasetors::paserk::Id::from(&key.public);
        footer.key_id(&id);
        let token = public::sign(&key.secret, &claims, Some(&footer), None).map_err(sign)?;
        Ok(IssuedToken {
            token,
            issued_at: now,
            expires_at: exp,
        })
    }

    /// Checks a token: signature by a key of the ring (named by the footer's
    /// `kid`), issuer, audience and validity period.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Arc<AccessClaims>, TokenError> {
        let claims = if let Some(claims) = self.verified.get(&TokenRef(token)) {
            claims
        } else {
            let claims = Arc::new(self.verify_signature(token)?);
            self.verified.insert(TokenKey(token.into()), claims.clone());
            claims
        };
        // Also bound the life by the *current* setting: after a restart with
        // a shorter life, older tokens must not outlive it, because revoked
        // sessions are only remembered for that long.
        if now < claims.not_before - LEEWAY || now >= claims.expires_at || now >= claims.issued_at + self.ttl
        {
            return Err(TokenError::OutsideValidity);
        }
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let untrusted = UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
        let mut footer = Footer::new();
        footer
            .parse_bytes(untrusted.untrusted_footer())
            .map_err(|_| TokenError::Malformed)?;
        let kid = footer
            .get_claim("kid")
            .and_then(|v| v.as_str())
            .ok_or(TokenError::Malformed)?;
        let trusted = {
            let ring = self.keyring.read().map_err(|_| TokenError::UnknownKey)?;
            let key = ring.find(kid).ok_or(TokenError::UnknownKey)?;
            // The footer is covered by the signature even though we do not
            // pass an expected value: a changed `kid` fails verification.
            PublicToken::verify(&key.public, &untrusted, None, None).map_err(|_| TokenError::BadSignature)?
        };
        let raw: RawClaims = serde_json::from_str(trusted.payload()).map_err(|_| TokenError::Malformed)?;
        if raw.iss != self.issuer || raw.aud != self.audience {
            return Err(TokenError::WrongParty);
        }
        let parse_id = |s: &str| uuid::Uuid::parse_str(s).map_err(|_| TokenError::Malformed);
        if raw.iat > raw.exp {
            return Err(TokenError::Malformed);
        }
        Ok(AccessClaims {
            user_id: UserId(parse_id(&raw.sub)?),
            session_id: SessionId(parse_id(&raw.sid)?),
            role: Role::parse(&raw.role).ok_or(TokenError::Malformed)?,
            issued_at: raw.iat,
            not_before: raw.nbf.max(raw.iat),
            expires_at: raw.exp,
            second_factor: raw.amr.iter().any(|m| m == "otp"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_compares_every_byte_of_any_length() {
        for len in [0usize, 1, 7, 8, 9, 300] {
            let a: String = (0..len)
                .map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap()))
                .collect();
            assert!(same_bytes(&a, &a.clone()));
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len == 0 {
                    continue;
                }
                let mut b = a.clone().into_bytes();
                b[at] ^= 1;
                assert!(
                    !same_bytes(&a, &String::from_utf8(b).unwrap()),
                    "len {len}, byte {at}"
                );
            }
            assert!(!same_bytes(&a, &format!("{a}x")));
        }
    }

    fn tokens(dir: &std::path::Path, issuer: &str) -> Tokens {
        let ring = Arc::new(RwLock::new(
            KeyRing::load_or_create(
                dir,
                &crate::masterkey::MasterKeys::create(&dir.join("master.key")).unwrap(),
            )
            .unwrap(),
        ));
        Tokens::new(
            ring,
            issuer.into(),
            "notesd".into(),
            Duration::from_secs(900),
            100,
        )
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path(), "notesd");
        let now = OffsetDateTime::now_utc();
        let (user, sid) = (UserId::generate(), SessionId::generate());
        let issued = t
            .issue(user, sid, Role::User, now, now + time::Duration::days(1), false)
            .unwrap();
        let (token, exp) = (issued.token, issued.expires_at);
        assert!(token.starts_with("v4.public."));
        let claims = t.verify(&token, now).unwrap();
        assert_eq!(
            (claims.user_id, claims.session_id, claims.role),
            (user, sid, Role::User)
        );
        // The cached claims must still honour expiry.
        assert!(matches!(t.verify(&token, exp), Err(TokenError::OutsideValidity)));
        assert!(t.verify(&token, exp - time::Duration::seconds(1)).is_ok());
    }

    #[test]
    fn expiry_is_capped_by_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path(), "notesd");
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let cap = now + time::Duration::seconds(60);
        let issued = t
            .issue(
                UserId::generate(),
                SessionId::generate(),
                Role::User,
                now,
                cap,
                false,
            )
            .unwrap();
        assert_eq!(issued.expires_at, cap);
    }

    #[test]
    fn tokens_from_another_ring_or_issuer_are_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let now = OffsetDateTime::now_utc();
        let later = now + time::Duration::days(1);
        let ours = tokens(a.path(), "notesd");
        let theirs = tokens(b.path(), "notesd");
        let token = theirs
            .issue(
                UserId::generate(),
                SessionId::generate(),
                Role::User,
                now,
                later,
                false,
            )
            .unwrap()
            .token;
        assert!(matches!(ours.verify(&token, now), Err(TokenError::UnknownKey)));

        let other_issuer = tokens(a.path(), "someone-else");
        let token = other_issuer
            .issue(
                UserId::generate(),
                SessionId::generate(),
                Role::User,
                now,
                later,
                false,
            )
            .unwrap()
            .token;
        assert!(matches!(ours.verify(&token, now), Err(TokenError::WrongParty)));
    }

    #[test]
    fn a_changed_byte_fails() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path(), "notesd");
        let now = OffsetDateTime::now_utc();
        let later = now + time::Duration::days(1);
        let token = t
            .issue(
                UserId::generate(),
                SessionId::generate(),
                Role::User,
                now,
                later,
                false,
            )
            .unwrap()
            .token;
        // Flip one character in the payload part.
        let mut bytes = token.into_bytes();
        let i = 20;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(t.verify(&tampered, now).is_err());
    }
}
