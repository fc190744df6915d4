//! Two-factor login with TOTP and recovery codes.
//!
//! - Enrolment (password re-entered) stores a pending secret; a first
//!   valid code confirms it and issues ten one-time recovery codes, kept as
//!   keyed hashes.
//! - A login of an account with the factor on stops after the password:
//!   it gets an MFA token (random, kept in memory only, single use, good
//!   for a few minutes and a few codes: `--mfa-login-tries`), which is not an
//!   access token and opens nothing but the second step.
//! - Every code, at login or with a password for a change, is admitted and
//!   counted by the same failure counter as the account's passwords (per
//!   account, split by known client), so guessing codes backs off like
//!   guessing passwords; a right password never clears failures the code
//!   has not yet made up for.
//! - A time step is accepted once per account, checked and recorded in one
//!   write transaction, so a code seen over a shoulder or replayed by two
//!   requests at once opens one login at most.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use super::devices::{ClientClass, DeviceToken};
use super::{Auth, AuthUser, Origin, TokenPair, totp};
use crate::audit::{Actor, AuditEvent, AuditKind};
use crate::client::ClientKey;
use crate::domain::{Password, SessionId, UserId};
use crate::error::{Error, FieldError};
use crate::storage::{CounterOf, MfaChange, MfaOutcome, MfaProof, MfaRecord, Storage, UserRecord};

/// Bounds of the logins waiting for their second step.
#[derive(Debug, Clone, Copy)]
pub struct PendingLimits {
    /// Waiting at once, server-wide; past it, 503.
    pub total: usize,
    /// Waiting at once per account and kind of client (its failure
    /// counter: a known device, a known address, or any other client); a
    /// new one replaces the oldest of its kind. Someone who knows the
    /// password cannot fill the server's store through one account, nor
    /// push out a login from the owner's known device.
    pub per_account: usize,
    /// Wrong codes one MFA token may be tried with before it is spent.
    pub tries: u8,
}

/// How second factors are offered and required.
#[derive(Debug, Clone)]
pub struct MfaPolicy {
    /// The issuer authenticator apps show beside the account.
    pub issuer: String,
    /// Life of an MFA token.
    pub login_ttl: Duration,
    /// Admin operations need a session that passed a second factor.
    pub admins_need_it: bool,
}

/// A login waiting for its second step: what the first step proved.
pub struct PendingLogin {
    pub user: UserId,
    /// The password hash the password was checked against; the session
    /// opens only if it is still the account's.
    pub verified_hash: String,
    /// The failure counter the password was admitted on.
    pub counter_key: String,
    pub known_client: bool,
    pub device: Option<DeviceToken>,
    pub proven_device: bool,
    pub origin: Origin,
    /// When the factor the login waits for was enrolled: a login started
    /// before the factor was replaced does not finish with the new one.
    pub factor_enrolled_at: OffsetDateTime,
}

/// A pending login as it is kept.
struct Waiting {
    login: PendingLogin,
    expires_at: OffsetDateTime,
    tries_left: u8,
    /// Order of issue: of an account's tokens, the oldest goes first.
    issued: u64,
}

/// MFA tokens waiting for their second step, in memory: a restart asks
/// for the password again. Bounded; expired ones go first.
pub struct PendingLogins {
    by_token: Mutex<HashMap<[u8; 32], Waiting>>,
    limits: PendingLimits,
    issued: std::sync::atomic::AtomicU64,
}

const TOKEN_PREFIX: &str = "mfa.";

/// The map's key for a token: its digest, so the map's comparisons never
/// run over the secret itself.
fn token_key(token: &str) -> [u8; 32] {
    crate::seal::mac(&[0; 32], &[b"notesd mfa token", token.as_bytes()])
}

impl PendingLogins {
    pub fn new(limits: PendingLimits) -> Self {
        Self {
            by_token: Mutex::new(HashMap::new()),
            limits: PendingLimits {
                total: limits.total.max(1),
                per_account: limits.per_account.max(1),
                tries: limits.tries.max(1),
            },
            issued: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Keeps `login` until `expires_at`; returns its token, or 503 when
    /// the store is full of unexpired logins.
    fn issue(
        &self,
        login: PendingLogin,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<String, Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::internal(e.to_string()))?;
        let token = format!(
            "{TOKEN_PREFIX}{}",
            <base64ct::Base64UrlUnpadded as base64ct::Encoding>::encode_string(&secret)
        );
        let mut map = self.by_token.lock().unwrap_or_else(PoisonError::into_inner);
        let mine: Vec<([u8; 32], u64)> = map
            .iter()
            .filter(|(_, w)| w.login.user == login.user && w.login.counter_key == login.counter_key)
            .map(|(k, w)| (*k, w.issued))
            .collect();
        if mine.len() >= self.limits.per_account
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, issued)| *issued)
        {
            map.remove(oldest);
        }
        if map.len() >= self.limits.total {
            map.retain(|_, pending| pending.expires_at > now);
        }
        if map.len() >= self.limits.total {
            tracing::warn!(
                capacity = self.limits.total,
                "pending two-factor logins full; refusing"
            );
            return Err(Error::Unavailable { retry_after: 1 });
        }
        let waiting = Waiting {
            login,
            expires_at,
            tries_left: self.limits.tries,
            issued: self.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        map.insert(token_key(&token), waiting);
        Ok(token)
    }

    /// Takes the login of `token` out (no other request can use it
    /// meanwhile), if it is there and unexpired.
    fn take(&self, token: &str, now: OffsetDateTime) -> Option<([u8; 32], Waiting)> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let key = token_key(token);
        let waiting = self
            .by_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)?;
        (waiting.expires_at > now).then_some((key, waiting))
    }

    /// Puts back a login whose code was refused (`spent`: it was judged
    /// wrong, which uses a try; a code refused unread while the counter
    /// backs off does not), if it has tries left.
    fn put_back(&self, key: [u8; 32], mut waiting: Waiting, spent: bool) {
        if spent {
            waiting.tries_left = waiting.tries_left.saturating_sub(1);
        }
        if waiting.tries_left > 0 {
            self.by_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, waiting);
        }
    }

    /// Logins waiting (for tests and logs).
    pub fn len(&self) -> usize {
        self.by_token.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A new enrolment, as its owner sees it once.
pub struct Enrolment {
    /// Base32, for typing into an app.
    pub secret: String,
    pub uri: String,
    pub qr_svg: String,
}

/// What a login's first step gave.
pub enum LoginOutcome {
    Tokens(TokenPair),
    /// The password was right; the second factor is next.
    SecondFactor {
        mfa_token: String,
        expires_at: OffsetDateTime,
    },
}

/// Which proof a check refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Password,
    Code,
}

/// A proof of the factor to check, with what the check counts against.
struct FactorCheck<'a> {
    user: &'a UserRecord,
    factor: &'a MfaRecord,
    /// A password re-entered with the code, checked first.
    password: Option<Password>,
    code: &'a str,
    counter_key: String,
    known_client: bool,
    session: Option<SessionId>,
    client: Option<ClientKey>,
}

impl Auth {
    /// Starts an enrolment: a new secret, pending until a code confirms it
    /// (a pending one is replaced). Refused while the factor is on.
    pub async fn enrol_totp(
        &self,
        caller: AuthUser,
        password: Password,
        client: Option<ClientKey>,
    ) -> Result<Enrolment, Error> {
        let user = self.caller_account(caller).await?;
        if self.db.mfa(user.id).await?.is_some_and(|f| f.confirmed) {
            return Err(Error::Conflict(ALREADY_ON));
        }
        self.check_password_again(&user, caller.session_id, password, client, "password")
            .await?;
        let now = self.clock.now();
        let secret = totp::new_secret().map_err(|e| Error::internal(e.to_string()))?;
        let record = MfaRecord {
            user_id: user.id,
            secret: secret.clone(),
            confirmed: false,
            last_step: 0,
            recovery: Vec::new(),
            enrolled_at: now,
        };
        let event = self.mfa_event(AuditKind::MfaEnrolled, &user, caller.session_id, client);
        match self
            .db
            .change_mfa(
                user.id,
                MfaProof::None,
                MfaChange::Enrol(record),
                vec![event.clone()],
            )
            .await?
        {
            MfaOutcome::Done => event.emit(),
            _ => return Err(Error::Conflict(ALREADY_ON)),
        }
        let uri = totp::otpauth_uri(&self.mfa.issuer, &user.email, &secret);
        let qr_svg = totp::qr_svg(&uri).map_err(|e| Error::internal(e.to_string()))?;
        Ok(Enrolment {
            secret: totp::secret_text(&secret),
            uri,
            qr_svg,
        })
    }

    /// Confirms the pending enrolment with a code from the app; returns
    /// the recovery codes, shown this once.
    pub async fn confirm_totp(
        &self,
        caller: AuthUser,
        code: &str,
        client: Option<ClientKey>,
    ) -> Result<Vec<String>, Error> {
        let user = self.caller_account(caller).await?;
        let Some(pending) = self.db.mfa(user.id).await?.filter(|f| !f.confirmed) else {
            return Err(Error::Conflict(NOTHING_PENDING));
        };
        let (codes, hashes) = self.recovery_codes(user.id)?;
        let event = self.mfa_event(AuditKind::MfaConfirmed, &user, caller.session_id, client);
        // Only a TOTP code confirms: recovery codes do not exist yet.
        if !totp::looks_like_code(code) {
            return Err(FieldError::new("code", "must be the 6-digit code the app shows").into());
        }
        let check = self
            .caller_check(&user, &pending, None, code, caller, client)
            .await?;
        self.prove_factor(check, MfaChange::Confirm(hashes), vec![event])
            .await?
            .map_err(refusal_error)?;
        Ok(codes)
    }

    /// Turns the factor off, with the password and a code (or a recovery
    /// code).
    pub async fn disable_totp(
        &self,
        caller: AuthUser,
        password: Password,
        code: &str,
        client: Option<ClientKey>,
    ) -> Result<(), Error> {
        let user = self.caller_account(caller).await?;
        let factor = self.confirmed_factor(user.id).await?;
        let event = self.mfa_event(AuditKind::MfaDisabled, &user, caller.session_id, client);
        let check = self
            .caller_check(&user, &factor, Some(password), code, caller, client)
            .await?;
        self.prove_factor(check, MfaChange::Remove, vec![event])
            .await?
            .map_err(refusal_error)
    }

    /// Replaces the recovery codes, with the password and a code (or a
    /// recovery code); returns the new ones, shown this once.
    pub async fn regenerate_recovery_codes(
        &self,
        caller: AuthUser,
        password: Password,
        code: &str,
        client: Option<ClientKey>,
    ) -> Result<Vec<String>, Error> {
        let user = self.caller_account(caller).await?;
        let factor = self.confirmed_factor(user.id).await?;
        let (codes, hashes) = self.recovery_codes(user.id)?;
        let event = self.mfa_event(
            AuditKind::RecoveryCodesRegenerated,
            &user,
            caller.session_id,
            client,
        );
        let check = self
            .caller_check(&user, &factor, Some(password), code, caller, client)
            .await?;
        self.prove_factor(check, MfaChange::NewRecoveryCodes(hashes), vec![event])
            .await?
            .map_err(refusal_error)?;
        Ok(codes)
    }

    /// Removes an account's factor (confirmed or pending) for a user who
    /// lost the device; their sessions go on, their next login needs the
    /// password only.
    pub async fn reset_mfa(&self, actor: Actor, target: UserId) -> Result<(), Error> {
        let now = self.clock.now();
        let event = AuditEvent::new(AuditKind::MfaReset, now)
            .user(target)
            .actor(actor);
        match self
            .db
            .change_mfa(target, MfaProof::None, MfaChange::Remove, vec![event.clone()])
            .await?
        {
            MfaOutcome::Done => {
                event.emit();
                Ok(())
            }
            _ => Err(Error::NotFound),
        }
    }

    /// Whether the account has the factor on.
    pub async fn mfa_enabled(&self, user: UserId) -> Result<bool, Error> {
        Ok(self.db.mfa(user).await?.is_some_and(|f| f.confirmed))
    }

    /// A right password for an account with the factor on: the login
    /// waits for its second step. The password attempt neither counts as
    /// a failure nor clears the counter; the code's outcome does.
    pub(super) fn await_second_factor(&self, login: PendingLogin) -> Result<LoginOutcome, Error> {
        let now = self.clock.now();
        let life = time::Duration::try_from(self.mfa.login_ttl).unwrap_or(time::Duration::minutes(5));
        let expires_at = now + life;
        let mfa_token = self.pending_logins.issue(login, expires_at, now)?;
        Ok(LoginOutcome::SecondFactor {
            mfa_token,
            expires_at,
        })
    }

    /// The second step of a login: the MFA token and a TOTP or recovery
    /// code. Any failure is the same 401; a wrong code leaves the token
    /// usable for its remaining tries.
    pub async fn login_second_step(&self, mfa_token: &str, code: &str) -> Result<TokenPair, Error> {
        let now = self.clock.now();
        let Some((key, waiting)) = self.pending_logins.take(mfa_token, now) else {
            return Err(Error::Unauthorized);
        };
        let login = &waiting.login;
        let Some(user) = self.db.user(login.user).await?.filter(|u| !u.disabled) else {
            return Err(Error::Unauthorized);
        };
        let Some(factor) = self
            .db
            .mfa(user.id)
            .await?
            .filter(|f| f.confirmed && f.enrolled_at == login.factor_enrolled_at)
        else {
            return Err(Error::Unauthorized);
        };
        let check = FactorCheck {
            user: &user,
            factor: &factor,
            password: None,
            code,
            counter_key: login.counter_key.clone(),
            known_client: login.known_client,
            session: None,
            client: login.origin.client,
        };
        let passed = self.mfa_event(AuditKind::MfaUsed, &user, None, login.origin.client);
        match self.prove_factor(check, MfaChange::Use, vec![passed]).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                self.pending_logins.put_back(key, waiting, true);
                return Err(Error::Unauthorized);
            }
            Err(Error::TooManyRequests { retry_after }) => {
                // Backing off: the token waits with the counter.
                self.pending_logins.put_back(key, waiting, false);
                return Err(Error::TooManyRequests { retry_after });
            }
            Err(e) => return Err(e),
        }
        let PendingLogin {
            verified_hash,
            device,
            proven_device,
            origin,
            ..
        } = waiting.login;
        self.open_login_session(&user, verified_hash, device, proven_device, origin, true)
            .await
    }

    async fn caller_account(&self, caller: AuthUser) -> Result<UserRecord, Error> {
        self.db
            .user(caller.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(Error::Unauthorized)
    }

    async fn confirmed_factor(&self, user: UserId) -> Result<MfaRecord, Error> {
        self.db
            .mfa(user)
            .await?
            .filter(|f| f.confirmed)
            .ok_or(Error::Conflict(NOT_ON))
    }

    /// A check by a logged-in caller, counted like their password
    /// re-entries (per account, split by known client).
    async fn caller_check<'a>(
        &self,
        user: &'a UserRecord,
        factor: &'a MfaRecord,
        password: Option<Password>,
        code: &'a str,
        caller: AuthUser,
        client: Option<ClientKey>,
    ) -> Result<FactorCheck<'a>, Error> {
        let known = self.db.known_clients(user.id).await?;
        let class = ClientClass::of(&known, None, client);
        Ok(FactorCheck {
            user,
            factor,
            password,
            code,
            counter_key: class.counter_key(&user.email),
            known_client: class != ClientClass::Unknown,
            session: Some(caller.session_id),
            client,
        })
    }

    /// New recovery codes and their hashes.
    fn recovery_codes(&self, user: UserId) -> Result<(Vec<String>, Vec<[u8; 32]>), Error> {
        let codes = totp::new_recovery_codes().map_err(|e| Error::internal(e.to_string()))?;
        let hashes = codes
            .iter()
            .filter_map(|c| totp::canonical_recovery_code(c))
            .map(|c| self.recovery_hash(user, &c))
            .collect();
        Ok((codes, hashes))
    }

    fn recovery_hash(&self, user: UserId, canonical: &str) -> [u8; 32] {
        crate::seal::mac(
            &self.recovery_key,
            &[&user.as_u128().to_be_bytes(), canonical.as_bytes()],
        )
    }

    fn mfa_event(
        &self,
        kind: AuditKind,
        user: &UserRecord,
        session: impl Into<Option<SessionId>>,
        client: Option<ClientKey>,
    ) -> AuditEvent {
        let event = AuditEvent::new(kind, self.clock.now())
            .user(user.id)
            .client(client.map(ClientKey::coarse));
        match session.into() {
            Some(session) => event.session(session),
            None => event,
        }
    }

    /// Admits the attempt on its counter, checks the password (if any) and
    /// the code, and applies `change` with `events` if both hold. A wrong
    /// password or code counts one failure; success clears the counter.
    async fn prove_factor(
        &self,
        check: FactorCheck<'_>,
        change: MfaChange,
        mut events: Vec<AuditEvent>,
    ) -> Result<Result<(), Refused>, Error> {
        let now = self.clock.now();
        let of = CounterOf::Account;
        let ticket = self
            .admit_attempt(check.counter_key.clone(), of, now, check.known_client)
            .await?;
        let failure = |kind: AuditKind, detail: &str| {
            let event = self.mfa_event(kind, check.user, check.session, check.client);
            event.detail(detail.to_owned())
        };
        let ticket = if let Some(password) = check.password {
            let (ticket, right) = self
                .verify_admitted(ticket, password, check.user.password_hash.clone())
                .await?;
            if !right {
                let failed = failure(AuditKind::LoginFailed, "wrong `password` re-entered");
                self.count_failure(ticket, of, now, failed).await;
                return Ok(Err(Refused::Password));
            }
            ticket
        } else {
            ticket
        };
        let proof = if totp::looks_like_code(check.code) {
            totp::matching_step(&check.factor.secret, check.code, now).map(|step| MfaProof::Step {
                step,
                secret: check.factor.secret.clone(),
            })
        } else {
            totp::canonical_recovery_code(check.code)
                .map(|c| MfaProof::Recovery(self.recovery_hash(check.user.id, &c)))
        };
        let Some(proof) = proof else {
            let failed = failure(AuditKind::MfaFailed, "wrong code");
            self.count_failure(ticket, of, now, failed).await;
            return Ok(Err(Refused::Code));
        };
        if matches!(proof, MfaProof::Recovery(_)) {
            events.push(failure(AuditKind::RecoveryCodeUsed, "recovery code"));
        }
        let outcome = match self
            .db
            .change_mfa(check.user.id, proof, change, events.clone())
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                ticket.released();
                return Err(e.into());
            }
        };
        match outcome {
            MfaOutcome::Done => {
                let (had_failures, key) = (ticket.had_failures, ticket.key().to_owned());
                ticket.succeeded();
                if had_failures {
                    self.db.clear_failures(key).await?;
                }
                for event in &events {
                    event.emit();
                }
                Ok(Ok(()))
            }
            MfaOutcome::Refused => {
                let failed = failure(AuditKind::MfaFailed, "code already used");
                self.count_failure(ticket, of, now, failed).await;
                Ok(Err(Refused::Code))
            }
            MfaOutcome::NoFactor | MfaOutcome::Conflict => {
                ticket.released();
                Err(Error::Conflict(CHANGED))
            }
        }
    }
}

const ALREADY_ON: &str = "Two-factor login is already on; turn it off first to enrol another device.";
const NOTHING_PENDING: &str = "No enrolment is waiting for a code: start one with POST /api/v1/me/mfa/totp.";
const NOT_ON: &str = "Two-factor login is not on for this account.";
const CHANGED: &str = "The second factor changed meanwhile; try again.";

fn refusal_error(refused: Refused) -> Error {
    match refused {
        Refused::Password => FieldError::new("password", "is not the account's password").into(),
        Refused::Code => FieldError::new("code", "is not a valid code, or was used already").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: UserId) -> PendingLogin {
        PendingLogin {
            user,
            verified_hash: String::new(),
            counter_key: String::new(),
            known_client: false,
            device: None,
            proven_device: false,
            origin: Origin::default(),
            factor_enrolled_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    const PER_ACCOUNT: usize = 8;

    #[test]
    fn a_token_is_spent_by_judged_codes_only() {
        let now = OffsetDateTime::now_utc();
        let store = PendingLogins::new(PendingLimits {
            total: 10,
            per_account: 8,
            tries: 3,
        });
        let token = store
            .issue(login(UserId::generate()), now + time::Duration::minutes(5), now)
            .unwrap();
        for _ in 0..10 {
            let (key, waiting) = store.take(&token, now).unwrap();
            store.put_back(key, waiting, false);
        }
        for _ in 0..2 {
            let (key, waiting) = store.take(&token, now).unwrap();
            store.put_back(key, waiting, true);
        }
        let (key, waiting) = store
            .take(&token, now)
            .expect("one try left after ten unjudged answers");
        store.put_back(key, waiting, true);
        assert!(store.take(&token, now).is_none(), "spent by the third wrong code");
    }

    #[test]
    fn one_account_cannot_fill_the_store_and_a_full_store_refuses() {
        let now = OffsetDateTime::now_utc();
        let later = now + time::Duration::minutes(5);
        let store = PendingLogins::new(PendingLimits {
            total: 20,
            per_account: PER_ACCOUNT,
            tries: 5,
        });
        let mallory = UserId::generate();
        let mut tokens = Vec::new();
        for _ in 0..50 {
            tokens.push(store.issue(login(mallory), later, now).unwrap());
        }
        assert_eq!(store.len(), PER_ACCOUNT, "the oldest give way");
        assert!(store.take(&tokens[0], now).is_none(), "the first was replaced");
        assert!(store.take(&tokens[49], now).is_some(), "the newest waits");
        for _ in 0..=(20 - PER_ACCOUNT) {
            store.issue(login(UserId::generate()), later, now).unwrap();
        }
        assert!(matches!(
            store.issue(login(UserId::generate()), later, now),
            Err(Error::Unavailable { .. })
        ));
        let after = later + time::Duration::seconds(1);
        assert!(
            store
                .issue(
                    login(UserId::generate()),
                    later + time::Duration::minutes(5),
                    after
                )
                .is_ok(),
            "expired ones make room"
        );
    }

    #[test]
    fn a_token_is_taken_once_and_not_after_it_expires() {
        let now = OffsetDateTime::now_utc();
        let store = PendingLogins::new(PendingLimits {
            total: 10,
            per_account: PER_ACCOUNT,
            tries: 5,
        });
        let token = store
            .issue(login(UserId::generate()), now + time::Duration::seconds(1), now)
            .unwrap();
        assert!(store.take("mfa.not-a-token", now).is_none());
        assert!(store.take(&token[1..], now).is_none(), "prefix checked");
        let (key, waiting) = store.take(&token, now).unwrap();
        assert!(
            store.take(&token, now).is_none(),
            "taken: no second use meanwhile"
        );
        store.put_back(key, waiting, true);
        assert!(
            store.take(&token, now + time::Duration::seconds(2)).is_none(),
            "expired"
        );
    }
}
