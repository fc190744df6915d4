//! Sessions and refresh tokens.
//!
//! A refresh token is `nrt_` + base64url(session id ‖ 32-byte secret). Only
//! a BLAKE2b-256 hash of the secret is stored (it has 256 bits of entropy,
//! so a fast hash is enough: there is nothing to brute-force). Each refresh
//! replaces it; the hashes of the last rotated tokens stay in the session,
//! so presenting one of them again is recognised as theft and revokes the
//! whole session. A token that matches nothing is simply refused, so
//! knowing a session id (it is in every access token) does not let anyone
//! revoke someone else's session.
//!
//! A client whose refresh answer was lost retries with the token it still
//! has, and a client with several tabs refreshes at once: within a short
//! grace after a rotation (`--refresh-reuse-grace`), presenting the token
//! just replaced is not theft. It yields the *same* new refresh token the
//! first refresh got, because the secret of a rotated token is derived from
//! the one it replaces with a keyed BLAKE2b (key: the key ring's rotation
//! secret, kept apart from the database). So a burst never forks the
//! session: there is still one current token, and whoever holds it was
//! given it. After the grace, reuse revokes the session as before (Auth0's
//! reuse interval works the same way).
//!
//! Revocation must reach access tokens at once, and checking it must be
//! cheap because every request does it: revoked session ids are kept in
//! memory for as long as an access token of theirs could still be unexpired
//! (the access token life), and reloaded from the database at start.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2b, Blake2bMac, Digest, digest::consts::U32};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::domain::SessionId;
use crate::storage::SessionRecord;

const PREFIX: &str = "nrt_";
/// How many rotated refresh tokens per session are remembered for reuse
/// detection. An older one is refused without revoking the session.
pub const REMEMBERED_ROTATIONS: usize = 32;

/// A freshly made refresh token and the hash to store.
pub struct NewRefresh {
    pub token: String,
    pub hash: [u8; 32],
}

pub fn new_refresh_token(session: SessionId) -> Result<NewRefresh, getrandom::Error> {
    let mut raw = [0u8; 48];
    raw[..16].copy_from_slice(session.0.as_bytes());
    getrandom::fill(&mut raw[16..])?;
    let hash = hash_secret(&raw[16..]);
    Ok(NewRefresh {
        token: format!("{PREFIX}{}", Base64UrlUnpadded::encode_string(&raw)),
        hash,
    })
}

/// A refresh token as presented.
pub struct PresentedRefresh {
    pub session: SessionId,
    secret: [u8; 32],
    pub hash: [u8; 32],
}

/// Splits a presented refresh token into its session id and secret.
pub fn parse_refresh_token(token: &str) -> Option<PresentedRefresh> {
    let body = token.strip_prefix(PREFIX)?;
    let mut raw = [0u8; 48];
    let decoded = Base64UrlUnpadded::decode(body, &mut raw).ok()?;
    if decoded.len() != 48 {
        return None;
    }
    let sid = uuid::Uuid::from_slice(&raw[..16]).ok()?;
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&raw[16..]);
    Some(PresentedRefresh {
        session: SessionId(sid),
        secret,
        hash: hash_secret(&secret),
    })
}

/// The token that replaces `presented` at a rotation: the same for every
/// rotation of that token, unpredictable without `key`.
pub fn next_refresh_token(key: &[u8; 32], presented: &PresentedRefresh) -> Option<NewRefresh> {
    let mut mac = <Blake2bMac<U32> as KeyInit>::new_from_slice(key).ok()?;
    mac.update(b"notesd refresh rotation v1");
    mac.update(presented.session.0.as_bytes());
    mac.update(&presented.secret);
    let secret: [u8; 32] = mac.finalize().into_bytes().into();
    let mut raw = [0u8; 48];
    raw[..16].copy_from_slice(presented.session.0.as_bytes());
    raw[16..].copy_from_slice(&secret);
    Some(NewRefresh {
        token: format!("{PREFIX}{}", Base64UrlUnpadded::encode_string(&raw)),
        hash: hash_secret(&secret),
    })
}

fn hash_secret(secret: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(secret).into()
}

/// Session lifetime policy.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// A session not refreshed for this long is dead.
    pub idle: Duration,
    /// A session this old is dead whatever its use.
    pub absolute: Duration,
    /// How long after a rotation the replaced token still yields the new
    /// one instead of counting as theft.
    pub reuse_grace: Duration,
}

impl SessionLimits {
    pub fn absolute_end(&self, session: &SessionRecord) -> OffsetDateTime {
        session.created_at + self.absolute
    }

    pub fn is_expired(&self, session: &SessionRecord, now: OffsetDateTime) -> bool {
        now >= self.absolute_end(session) || now >= session.last_refreshed_at + self.idle
    }
}

/// What presenting a refresh token did to its session.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was current: rotated to the new hash.
    Rotated,
    /// The token was replaced within the grace, by the very token its
    /// rotation derives: the caller gets that token again, nothing changes.
    Replayed,
    /// The token was an already-rotated one: the session is now revoked.
    ReuseDetected,
    /// Revoked, expired, or no matching token: nothing changed.
    Refused,
}

/// Applies a refresh attempt to a session. Returns the outcome and whether
/// the record changed. All comparisons of secrets are constant-time.
pub fn apply_refresh(
    session: &mut SessionRecord,
    presented: &[u8; 32],
    replacement: [u8; 32],
    limits: SessionLimits,
    now: OffsetDateTime,
) -> (RefreshOutcome, bool) {
    if session.revoked_at.is_some() {
        return (RefreshOutcome::Refused, false);
    }
    // The token just replaced, within the grace, whose rotation led to the
    // current token (not a later one): a retry or a concurrent refresh.
    let just_replaced = session
        .previous_hashes
        .last()
        .is_some_and(|last| bool::from(last.ct_eq(presented)));
    if just_replaced
        && now - session.last_refreshed_at <= limits.reuse_grace
        && bool::from(session.refresh_hash.ct_eq(&replacement))
    {
        return if limits.is_expired(session, now) {
            (RefreshOutcome::Refused, false)
        } else {
            (RefreshOutcome::Replayed, false)
        };
    }
    if bool::from(session.refresh_hash.ct_eq(presented)) {
        if limits.is_expired(session, now) {
            return (RefreshOutcome::Refused, false);
        }
        let old = std::mem::replace(&mut session.refresh_hash, replacement);
        session.previous_hashes.push(old);
        if session.previous_hashes.len() > REMEMBERED_ROTATIONS {
            session.previous_hashes.remove(0);
        }
        session.last_refreshed_at = now;
        return (RefreshOutcome::Rotated, true);
    }
    let reused = session
        .previous_hashes
        .iter()
        .fold(subtle::Choice::from(0), |acc, h| acc | h.ct_eq(presented));
    if bool::from(reused) {
        session.revoked_at = Some(now);
        return (RefreshOutcome::ReuseDetected, true);
    }
    (RefreshOutcome::Refused, false)
}

/// Session ids revoked recently enough that their access tokens may still
/// be unexpired.
pub struct RevokedSessions {
    revoked: RwLock<HashMap<SessionId, OffsetDateTime>>,
    /// The access-token life: after this, an entry can be forgotten.
    horizon: Duration,
}

impl RevokedSessions {
    pub fn new(horizon: Duration, initial: impl IntoIterator<Item = (SessionId, OffsetDateTime)>) -> Self {
        Self {
            revoked: RwLock::new(initial.into_iter().collect()),
            horizon,
        }
    }

    pub fn is_revoked(&self, sid: SessionId) -> bool {
        // A poisoned lock means a panic while writing; refuse rather than
        // risk letting a revoked session through.
        self.revoked.read().map_or(true, |set| set.contains_key(&sid))
    }

    pub fn revoke(&self, sid: SessionId, now: OffsetDateTime) {
        let mut set = match self.revoked.write() {
            Ok(set) => set,
            Err(poisoned) => poisoned.into_inner(),
        };
        set.insert(sid, now);
        // Forget entries whose tokens have all expired; amortised by only
        // sweeping when the map has grown.
        if set.len() % 1024 == 0 {
            // A token is refused from `iat + life`; `iat` may lie a few
            // seconds ahead (clock leeway), so keep a minute's margin.
            let horizon = self.horizon + Duration::from_secs(60);
            set.retain(|_, at| *at + horizon > now);
        }
    }

    pub fn len(&self) -> usize {
        self.revoked.read().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn session(hash: [u8; 32], now: OffsetDateTime) -> SessionRecord {
        SessionRecord {
            id: SessionId::generate(),
            user_id: UserId::generate(),
            refresh_hash: hash,
            previous_hashes: vec![],
            created_at: now,
            last_refreshed_at: now,
            revoked_at: None,
            client: None,
            user_agent: None,
            second_factor: false,
        }
    }

    const LIMITS: SessionLimits = SessionLimits {
        idle: Duration::from_secs(30 * 86_400),
        absolute: Duration::from_secs(90 * 86_400),
        reuse_grace: Duration::from_secs(10),
    };

    #[test]
    fn refresh_token_round_trips_and_rejects_garbage() {
        let sid = SessionId::generate();
        let fresh = new_refresh_token(sid).unwrap();
        assert!(fresh.token.starts_with("nrt_"));
        let parsed = parse_refresh_token(&fresh.token).unwrap();
        assert_eq!((parsed.session, parsed.hash), (sid, fresh.hash));
        for bad in [
            "",
            "nrt_",
            "nrt_!!!",
            "xyz_AAAA",
            &fresh.token[..fresh.token.len() - 2],
        ] {
            assert!(parse_refresh_token(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn rotation_then_reuse_revokes() {
        let now = OffsetDateTime::now_utc();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut s = session(a, now);
        assert_eq!(
            apply_refresh(&mut s, &a, b, LIMITS, now),
            (RefreshOutcome::Rotated, true)
        );
        assert_eq!(
            apply_refresh(&mut s, &a, [3; 32], LIMITS, now),
            (RefreshOutcome::ReuseDetected, true)
        );
        assert!(s.revoked_at.is_some());
        assert_eq!(
            apply_refresh(&mut s, &b, [4; 32], LIMITS, now).0,
            RefreshOutcome::Refused,
            "the whole session is dead"
        );
    }

    #[test]
    fn the_token_just_replaced_yields_the_same_successor_within_the_grace_only() {
        let key = [7u8; 32];
        let now = OffsetDateTime::now_utc();
        let first = new_refresh_token(SessionId::generate()).unwrap();
        let presented = parse_refresh_token(&first.token).unwrap();
        let next = next_refresh_token(&key, &presented).unwrap();
        assert_eq!(
            next_refresh_token(&key, &presented).unwrap().token,
            next.token,
            "derived, so every retry gets the same token"
        );
        assert_ne!(
            next_refresh_token(&[8; 32], &presented).unwrap().token,
            next.token,
            "keyed"
        );
        let mut s = session(first.hash, now);
        s.id = presented.session;
        assert_eq!(
            apply_refresh(&mut s, &first.hash, next.hash, LIMITS, now),
            (RefreshOutcome::Rotated, true)
        );
        let soon = now + Duration::from_secs(5);
        assert_eq!(
            apply_refresh(&mut s, &first.hash, next.hash, LIMITS, soon),
            (RefreshOutcome::Replayed, false),
            "a retry within the grace"
        );
        let late = now + Duration::from_secs(11);
        assert_eq!(
            apply_refresh(&mut s, &first.hash, next.hash, LIMITS, late),
            (RefreshOutcome::ReuseDetected, true),
            "after the grace it is theft"
        );
    }

    #[test]
    fn an_unknown_secret_does_not_revoke() {
        let now = OffsetDateTime::now_utc();
        let mut s = session([1; 32], now);
        assert_eq!(
            apply_refresh(&mut s, &[9; 32], [2; 32], LIMITS, now),
            (RefreshOutcome::Refused, false)
        );
        assert!(s.revoked_at.is_none());
    }

    #[test]
    fn idle_and_absolute_limits() {
        let now = OffsetDateTime::now_utc();
        let mut s = session([1; 32], now);
        let idle_end = now + LIMITS.idle;
        assert_eq!(
            apply_refresh(&mut s, &[1; 32], [2; 32], LIMITS, idle_end).0,
            RefreshOutcome::Refused
        );
        // Refreshing often keeps it alive, but not past the absolute limit.
        let mut t = now;
        let mut current = [1u8; 32];
        for i in 0..4u8 {
            t += Duration::from_secs(29 * 86_400);
            let next = [10 + i; 32];
            let outcome = apply_refresh(&mut s, &current, next, LIMITS, t).0;
            if t >= now + LIMITS.absolute {
                assert_eq!(outcome, RefreshOutcome::Refused);
            } else {
                assert_eq!(outcome, RefreshOutcome::Rotated);
                current = next;
            }
        }
    }

    #[test]
    fn revoked_set_forgets_after_the_horizon() {
        let now = OffsetDateTime::now_utc();
        let set = RevokedSessions::new(Duration::from_secs(60), []);
        let old = SessionId::generate();
        set.revoke(old, now);
        assert!(set.is_revoked(old));
        let later = now + Duration::from_secs(121);
        for _ in 0..1023 {
            set.revoke(SessionId::generate(), later);
        }
        assert!(!set.is_revoked(old), "swept once its tokens expired");
    }
}
