//! Authentication: accounts' passwords, sessions, and the tokens that prove
//! them. [`Auth`] is the one entry point the API uses.

pub mod admin;
pub mod backoff;
pub mod devices;
pub mod invites;
pub mod keyring;
pub mod mfa;
pub mod password;
pub mod sessions;
pub mod tokens;
pub mod totp;

use std::time::Duration;

use time::OffsetDateTime;
use tracing::{info, warn};

use crate::audit::{AuditEvent, AuditKind};
use crate::client::ClientKey;
use crate::clock::Clock;
use crate::domain::{Email, Password, Role, SessionId, UserId};
use crate::error::{Error, FieldError};
use crate::settings::SignupPolicy;
use crate::storage::{
    AccountChange, CounterOf, Created, Db, InviteClaim, KnownClient, KnownKind, SessionCutoffs,
    SessionRecord, Storage, UserRecord,
};
use backoff::{Admission, Attempts};
use devices::ClientClass;
use password::Passwords;
use sessions::{RefreshOutcome, RevokedSessions, SessionLimits};
use tokens::Tokens;

/// The caller of an authenticated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub role: Role,
    /// The session's login passed a second factor.
    pub second_factor: bool,
}

/// A login as the API receives it.
pub struct LoginAttempt {
    pub email: Email,
    pub password: Password,
    /// A device token from an earlier login, if the client has one.
    pub device_token: Option<String>,
    /// The client's address, as far as it can be trusted.
    pub client: Option<ClientKey>,
    /// The client's `User-Agent`, if it sent one.
    pub user_agent: Option<String>,
}

/// Where a new session comes from, as its owner will see it listed.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub client: Option<ClientKey>,
    pub user_agent: Option<String>,
}

/// Longest `User-Agent` kept with a session, in characters.
const USER_AGENT_MAX: usize = 200;

/// A `User-Agent` as it is kept: control characters dropped, at most
/// [`USER_AGENT_MAX`] characters; `None` if nothing is left.
pub fn clean_user_agent(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(USER_AGENT_MAX)
        .collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

/// The known clients a successful login adds or refreshes; `proven`: the
/// device presented its token.
fn seen_clients(
    device: Option<[u8; 32]>,
    proven: bool,
    client: Option<ClientKey>,
    now: OffsetDateTime,
) -> Vec<KnownClient> {
    let device = device.map(|id| KnownClient {
        kind: KnownKind::Device,
        id,
        last_seen: now,
        proven,
    });
    let address = client.map(|c| KnownClient {
        kind: KnownKind::Address,
        id: c.to_bytes(),
        last_seen: now,
        proven: false,
    });
    device.into_iter().chain(address).collect()
}

/// The device token a login hands back, and whether the client proved it:
/// a device that showed a token of this account keeps it; any other gets
/// a new one.
fn device_of(
    class: ClientClass,
    presented: Option<String>,
) -> Result<(Option<devices::DeviceToken>, bool), Error> {
    match class {
        ClientClass::Device(hash) => Ok((
            Some(devices::DeviceToken {
                token: presented.unwrap_or_default(),
                hash,
            }),
            true,
        )),
        _ => Ok((
            Some(devices::new_device_token().map_err(|e| Error::internal(e.to_string()))?),
            false,
        )),
    }
}

const INVITE_NEEDED: &str =
    "Signup needs a valid invite code (`invite_code`) on this server; ask an admin for one.";

/// The login counter is not in memory: read the stored one.
struct NotInMemory;

/// What login, signup and refresh hand out.
pub struct TokenPair {
    pub access_token: String,
    pub access_issued_at: OffsetDateTime,
    pub access_expires_at: OffsetDateTime,
    pub refresh_token: String,
    pub session_id: SessionId,
    /// With login and signup: the device token that marks this client as
    /// known to the account at its next login.
    pub device_token: Option<String>,
}

pub struct Auth {
    pub db: Db,
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub revoked: RevokedSessions,
    pub limits: SessionLimits,
    pub attempts: Attempts,
    pub clock: Clock,
    /// Counts of security events, for the metrics.
    pub events: std::sync::Arc<crate::metrics::AuthCounters>,
    /// How long stored audit events are kept.
    pub audit_retention: Duration,
    /// Who may sign up.
    pub signup_policy: SignupPolicy,
    /// Life of an invite code when its creator names none.
    pub invite_ttl: Duration,
    /// How second factors are offered and required.
    pub mfa: mfa::MfaPolicy,
    /// Logins waiting for their second factor.
    pub pending_logins: mfa::PendingLogins,
    /// Keys the hashes of recovery codes (from the key ring's data key).
    pub recovery_key: [u8; 32],
}

impl Auth {
    /// Creates an account and logs it in, as the signup policy allows. The
    /// password is hashed before the email is looked at, so a taken email
    /// costs the same time as a new one. Under `invite`, the invite is
    /// checked before the email: without a usable code nothing is told
    /// about the email.
    pub async fn signup(
        &self,
        email: Email,
        password: Password,
        origin: Origin,
        invite: Option<&str>,
    ) -> Result<(UserRecord, TokenPair), Error> {
        let claim = match self.signup_policy {
            SignupPolicy::Open => None,
            SignupPolicy::Closed => {
                return Err(Error::SignupRefused(
                    "Signup is closed on this server; an admin creates accounts.",
                ));
            }
            SignupPolicy::Invite => {
                let Some((id, hash)) = invite.and_then(invites::parse_invite) else {
                    return Err(Error::SignupRefused(INVITE_NEEDED));
                };
                let claim = InviteClaim {
                    id,
                    hash,
                    at: self.clock.now(),
                };
                // Checked before the password is hashed, so made-up codes
                // cost no hashing; checked again when the account is
                // written, where it is taken.
                let stored = self.db.invite(id).await?;
                if !stored.is_some_and(|invite| invites::admits(&invite, &claim)) {
                    return Err(Error::SignupRefused(INVITE_NEEDED));
                }
                Some(claim)
            }
        };
        let client = origin.client;
        let user = self.new_account(&email, password, Role::User).await?;
        let now = user.created_at;
        let (session, refresh) = Self::new_session(user.id, now, origin)?;
        let device = devices::new_device_token().map_err(|e| Error::internal(e.to_string()))?;
        let seen = seen_clients(Some(device.hash), false, client, now);
        let event = AuditEvent::new(AuditKind::Signup, now)
            .user(user.id)
            .session(session.id)
            .client(session.client.clone());
        let mut events = vec![event];
        if let Some(claim) = &claim {
            events.push(
                AuditEvent::new(AuditKind::InviteUsed, now)
                    .user(user.id)
                    .detail(format!("invite {}", claim.id)),
            );
        }
        let created = self
            .db
            .create_account(user.clone(), Some(session.clone()), seen, claim, events.clone())
            .await?;
        match created {
            Created::Created => {}
            Created::EmailTaken => {
                info!(event = "signup_refused", reason = "email taken");
                return Err(Error::Conflict("An account cannot be created with this email."));
            }
            Created::InviteRefused => return Err(Error::SignupRefused(INVITE_NEEDED)),
        }
        for event in &events {
            event.emit();
        }
        let mut pair = self.token_pair(&user, &session, refresh, now)?;
        pair.device_token = Some(device.token);
        Ok((user, pair))
    }

    /// A new account's record: the password checked against the signup
    /// rules and hashed.
    async fn new_account(&self, email: &Email, password: Password, role: Role) -> Result<UserRecord, Error> {
        let hash = self
            .passwords
            .hash_new(password, password::context_words(email.as_str()))
            .await?;
        Ok(UserRecord {
            id: UserId::generate(),
            email: email.as_str().to_owned(),
            password_hash: hash,
            role,
            disabled: false,
            created_at: self.clock.now(),
        })
    }

    /// Checks credentials and opens a session. Every failure is the same
    /// `Unauthorized`, and an unknown email costs the same argon2 work.
    ///
    /// The attempt is counted against its failure counter before the
    /// password is checked (see [`backoff`]); which counter depends on
    /// whether it comes from a client the account knows (`device_token`,
    /// or the client's address).
    pub async fn login(&self, attempt: LoginAttempt) -> Result<mfa::LoginOutcome, Error> {
        let LoginAttempt {
            email,
            password,
            device_token,
            client,
            user_agent,
        } = attempt;
        let now = self.clock.now();
        let user = self.db.user_by_email(email.as_str()).await?;
        let known = match &user {
            Some(user) => self.db.known_clients(user.id).await?,
            None => Vec::new(),
        };
        let presented = device_token.as_deref().and_then(devices::parse_device_token);
        let class = ClientClass::of(&known, presented, client);
        let key = class.counter_key(email.as_str());
        let of = if user.is_some() {
            CounterOf::Account
        } else {
            CounterOf::Ghost {
                cap: self.attempts.stored_ghosts(),
            }
        };
        let ticket = self
            .admit_attempt(key, of, now, class != ClientClass::Unknown)
            .await?;
        let verified = self
            .passwords
            .verify(password.clone(), user.as_ref().map(|u| u.password_hash.clone()))
            .await;
        let verified = match verified {
            Ok(verified) => verified,
            Err(e) => {
                ticket.released();
                return Err(e);
            }
        };
        let user = match (user, verified) {
            (Some(user), verified) if verified.ok && !user.disabled => (user, verified),
            (other, _) => {
                // Stored for existing accounts only: a record per guess at
                // a made-up email would let anyone fill the disk with
                // records that name no account.
                let failed =
                    AuditEvent::new(AuditKind::LoginFailed, now).client(client.map(ClientKey::coarse));
                let failed = match &other {
                    Some(user) if user.disabled => failed.user(user.id).detail("account disabled"),
                    Some(user) => failed.user(user.id),
                    None => failed.detail("no such account"),
                };
                self.count_failure(ticket, of, now, failed).await;
                return Err(Error::Unauthorized);
            }
        };
        let (user, verified) = user;
        let factor = match self.db.mfa(user.id).await {
            Ok(factor) => factor.filter(|f| f.confirmed).map(|f| f.enrolled_at),
            Err(e) => {
                ticket.released();
                return Err(e.into());
            }
        };
        let factor_on = factor.is_some();
        let (had_failures, key) = (ticket.had_failures, ticket.key().to_owned());
        if factor_on {
            // Neither a failure nor a success yet: the code decides.
            ticket.released();
        } else {
            ticket.succeeded();
            if had_failures {
                self.db.clear_failures(key.clone()).await?;
            }
        }
        // The hash the session is opened against: the one checked, or
        // its upgrade if that was stored.
        let mut verified_hash = user.password_hash.clone();
        if verified.needs_rehash {
            verified_hash = match self.upgrade_hash(&user, password.clone()).await {
                Some(upgraded) => upgraded,
                // Another login of this account upgraded it first: check
                // the password against what it stored (once, in that race
                // only), rather than refuse a right password.
                None => self
                    .hash_now_verified(&user, password)
                    .await?
                    .unwrap_or(verified_hash),
            };
        }
        let (device, proven) = device_of(class, device_token)?;
        let origin = Origin { client, user_agent };
        if let Some(factor_enrolled_at) = factor {
            return self.await_second_factor(mfa::PendingLogin {
                user: user.id,
                verified_hash,
                counter_key: key,
                known_client: class != ClientClass::Unknown,
                device,
                proven_device: proven,
                origin,
                factor_enrolled_at,
            });
        }
        self.open_login_session(&user, verified_hash, device, proven, origin, false)
            .await
            .map(mfa::LoginOutcome::Tokens)
    }

    /// The end of a login: a session opened against the password hash
    /// that was checked, the client remembered, the event stored.
    async fn open_login_session(
        &self,
        user: &UserRecord,
        verified_hash: String,
        device: Option<devices::DeviceToken>,
        proven: bool,
        origin: Origin,
        second_factor: bool,
    ) -> Result<TokenPair, Error> {
        let now = self.clock.now();
        let client = origin.client;
        let (mut session, refresh) = Self::new_session(user.id, now, origin)?;
        session.second_factor = second_factor;
        let seen = seen_clients(device.as_ref().map(|d| d.hash), proven, client, now);
        let event = AuditEvent::new(AuditKind::Login, now)
            .user(user.id)
            .session(session.id)
            .client(session.client.clone());
        let event = if second_factor {
            event.detail("password and second factor")
        } else {
            event
        };
        let opened = self
            .db
            .create_session(session.clone(), seen, verified_hash, event.clone())
            .await?;
        if !opened {
            // Disabled, deleted or given another password since the check.
            info!(user_id = %user.id, "login refused: the account changed while its password was checked");
            return Err(Error::Unauthorized);
        }
        event.emit();
        let mut pair = self.token_pair(user, &session, refresh, now)?;
        pair.device_token = device.map(|d| d.token);
        Ok(pair)
    }

    /// Admits a password attempt on the counter `key`, or refuses it with
    /// 429 while that counter backs off. The attempt counts as a failure
    /// until the ticket says otherwise.
    async fn admit_attempt(
        &self,
        key: String,
        of: CounterOf,
        now: OffsetDateTime,
        known_client: bool,
    ) -> Result<backoff::Ticket<'_>, Error> {
        // Memory's counter if it has one; else the stored one, read
        // outside the lock and offered again (taken only if memory still
        // has none: checking first and admitting later would let an
        // eviction in between restart the count at zero).
        let admission = if let Ok(admission) = self.attempts.admit(key.clone(), now, || Err(NotInMemory)) {
            admission
        } else {
            let stored = self.db.login_counter(&key, of).await?;
            self.attempts
                .admit(key, now, || Ok::<_, NotInMemory>(stored))
                .unwrap_or(Admission::Wait(1))
        };
        match admission {
            Admission::Go(ticket) => Ok(ticket),
            Admission::Wait(wait) => {
                warn!(
                    event = "login_backoff",
                    retry_after = wait,
                    known_client,
                    "login attempt refused while backing off"
                );
                Err(Error::TooManyRequests { retry_after: wait })
            }
        }
    }

    /// Changes the caller's password and ends every other session of the
    /// account; the caller's own session goes on. The current password is
    /// checked like a login from this client: a wrong one counts toward
    /// the same failure counter, and a counter that backs off refuses with
    /// 429. Returns how many sessions were ended.
    pub async fn change_password(
        &self,
        caller: AuthUser,
        current: Password,
        new: Password,
        client: Option<ClientKey>,
    ) -> Result<usize, Error> {
        let now = self.clock.now();
        let Some(user) = self.db.user(caller.user_id).await?.filter(|u| !u.disabled) else {
            return Err(Error::Unauthorized);
        };
        let same = current.expose() == new.expose();
        self.check_password_again(&user, caller.session_id, current, client, "current_password")
            .await?;
        if same {
            return Err(FieldError::new("new_password", "must differ from the current password").into());
        }
        let hash = self
            .passwords
            .hash_new(new, password::context_words(&user.email))
            .await
            .map_err(|e| match e {
                // The strength rules speak of `password`; here it is the new one.
                Error::Validation(errors) => Error::Validation(
                    errors
                        .into_iter()
                        .map(|e| FieldError::new("new_password", e.message))
                        .collect(),
                ),
                other => other,
            })?;
        let event = AuditEvent::new(AuditKind::PasswordChanged, now)
            .user(user.id)
            .session(caller.session_id)
            .client(client.map(ClientKey::coarse));
        let ended = self
            .db
            .change_password(
                user.id,
                user.password_hash.clone(),
                hash,
                caller.session_id,
                now,
                event.clone(),
            )
            .await?;
        let ended = match ended {
            AccountChange::Done(ended) => Some(ended),
            AccountChange::Stale => {
                return Err(Error::Conflict(
                    "The password changed meanwhile; try again with the current one.",
                ));
            }
            AccountChange::NotFound | AccountChange::LastAdmin => None,
        };
        let ended = self.refuse_ended(ended, now)?;
        event.emit();
        Ok(ended)
    }

    /// Refuses at once the tokens of the sessions a change ended; `None`
    /// (the caller's own session had ended first) is `Unauthorized`.
    fn refuse_ended(&self, ended: Option<Vec<SessionId>>, now: OffsetDateTime) -> Result<usize, Error> {
        let ended = ended.ok_or(Error::Unauthorized)?;
        for sid in &ended {
            self.revoked.revoke(*sid, now);
        }
        Ok(ended.len())
    }

    /// Stores the failure an admitted attempt already counted, with its
    /// event (and a backoff's, when it starts one). A failure of an email
    /// with no account is logged only.
    async fn count_failure(
        &self,
        ticket: backoff::Ticket<'_>,
        of: CounterOf,
        now: OffsetDateTime,
        failed: AuditEvent,
    ) {
        let key = ticket.key().to_owned();
        let mut events = vec![failed];
        let record = ticket.failed();
        if let Some(record) = &record
            && record.until > now
        {
            let seconds = (record.until - now).whole_seconds();
            let mut backoff = events[0].clone();
            backoff.kind = AuditKind::BackoffStarted;
            backoff.detail = Some(format!("{} failures, {seconds} s", record.failures));
            events.push(backoff);
        }
        for event in &events {
            event.emit();
        }
        events.retain(|e| e.user.is_some());
        let stored = match record {
            Some(record) => self.db.record_failure(key, record, of, events).await,
            // Memory had dropped the counter meanwhile: the events alone.
            None => {
                async {
                    for event in events {
                        self.db.append_audit(event).await?;
                    }
                    Ok(true)
                }
                .await
            }
        };
        if let Err(e) = stored {
            warn!(error = %e, "could not store a failed login");
        }
    }

    /// Drops stored audit events past the retention.
    pub async fn purge_old_events(&self) -> Result<usize, Error> {
        let before = self.clock.now() - self.audit_retention;
        Ok(self.db.purge_audit(before).await?)
    }

    /// Forgets failure counts nobody has added to for a day.
    pub async fn purge_stale_backoff(&self) -> Result<usize, Error> {
        let before = backoff::BackoffPolicy::stale_before(self.clock.now());
        Ok(self.db.purge_counters(before).await?)
    }

    /// Rehash failures only cost the upgrade; the login itself stands.
    /// The account's stored hash if it changed since `user` was read and
    /// `password` still verifies against it.
    async fn hash_now_verified(
        &self,
        user: &UserRecord,
        password: Password,
    ) -> Result<Option<String>, Error> {
        let Some(now) = self.db.user(user.id).await? else {
            return Ok(None);
        };
        if now.password_hash == user.password_hash {
            return Ok(None);
        }
        let verified = self
            .passwords
            .verify(password, Some(now.password_hash.clone()))
            .await?;
        Ok(verified.ok.then_some(now.password_hash))
    }

    /// Returns the new hash if it was stored: only over the hash that was
    /// checked, so a reset that came meanwhile is not undone.
    async fn upgrade_hash(&self, user: &UserRecord, password: Password) -> Option<String> {
        let result = async {
            let hash = self.passwords.rehash(password).await?;
            let stored = self
                .db
                .set_password_hash(user.id, user.password_hash.clone(), hash.clone())
                .await?;
            Ok::<_, Error>(stored.then_some(hash))
        }
        .await;
        match result {
            Ok(Some(hash)) => {
                info!(user_id = %user.id, "password hash upgraded to the current parameters");
                Some(hash)
            }
            Ok(None) => None,
            Err(e) => {
                warn!(user_id = %user.id, error = %e, "password rehash failed");
                None
            }
        }
    }

    /// Exchanges a current refresh token for a new pair. A rotated token
    /// presented again revokes the session it belonged to.
    pub async fn refresh(&self, presented: &str) -> Result<TokenPair, Error> {
        let Some(presented) = sessions::parse_refresh_token(presented) else {
            return Err(Error::Unauthorized);
        };
        let (sid, presented_hash) = (presented.session, presented.hash);
        let now = self.clock.now();
        // Ended in memory (a logout or a detected reuse) even if its store
        // did not complete: no new tokens.
        if self.revoked.is_revoked(sid) {
            return Err(Error::Unauthorized);
        }
        let key = self
            .tokens
            .rotation_secret()
            .ok_or_else(|| Error::internal("key ring unavailable"))?;
        let replacement = sessions::next_refresh_token(&key, &presented)
            .ok_or_else(|| Error::internal("refresh token derivation failed"))?;
        let (outcome, session, event) = self.rotate(sid, &presented_hash, replacement.hash, now).await?;
        match outcome {
            RefreshOutcome::Rotated => {}
            RefreshOutcome::Replayed => {
                info!(user_id = %session.user_id, session_id = %sid, "a refresh token replaced moments ago was presented again: the same new pair");
            }
            RefreshOutcome::ReuseDetected => {
                self.revoked.revoke(sid, now);
                self.events.record(crate::metrics::AuthEvent::RefreshReused);
                if let Some(event) = event {
                    event.emit();
                }
                return Err(Error::Unauthorized);
            }
            RefreshOutcome::Refused => return Err(Error::Unauthorized),
        }
        let owner = session.user_id;
        let user = self.db.user(owner).await?;
        let Some(user) = user.filter(|u| !u.disabled) else {
            return Err(Error::Unauthorized);
        };
        if let Some(event) = event {
            event.emit();
        }
        self.token_pair(&user, &session, replacement.token, now)
    }

    /// Ends a session: its refresh token and every access token stop working.
    pub async fn logout(&self, caller: AuthUser) -> Result<(), Error> {
        let now = self.clock.now();
        self.revoked.revoke(caller.session_id, now);
        let sid = caller.session_id;
        let event = AuditEvent::new(AuditKind::Logout, now)
            .user(caller.user_id)
            .session(sid);
        if self
            .db
            .revoke_session(caller.user_id, sid, now, event.clone())
            .await?
        {
            event.emit();
        }
        Ok(())
    }

    /// Ends one session of the caller's account (the caller's own too);
    /// `NotFound` if the account has no live session with that id.
    pub async fn end_session(&self, caller: AuthUser, sid: SessionId) -> Result<(), Error> {
        let now = self.clock.now();
        let event = AuditEvent::new(AuditKind::SessionEnded, now)
            .user(caller.user_id)
            .session(sid)
            .detail(format!("by session {}", caller.session_id));
        if !self
            .db
            .revoke_session(caller.user_id, sid, now, event.clone())
            .await?
        {
            return Err(Error::NotFound);
        }
        self.revoked.revoke(sid, now);
        event.emit();
        Ok(())
    }

    /// A page of the caller's live sessions, newest first.
    pub async fn sessions_of(
        &self,
        caller: AuthUser,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<(Vec<SessionRecord>, Option<SessionId>), Error> {
        let cutoffs = self.live_cutoffs(self.clock.now());
        Ok(self.db.sessions_of(caller.user_id, after, limit, cutoffs).await?)
    }

    /// What ends a session by age at `now`; revoked ones end for good
    /// once their access tokens have expired.
    fn live_cutoffs(&self, now: OffsetDateTime) -> SessionCutoffs {
        let token_life: Duration = self.tokens.ttl();
        // An expired session's access tokens have expired too: they never
        // outlive the absolute limit, and settings keep the idle limit
        // longer than the token life.
        SessionCutoffs {
            revoked_before: now - token_life - Duration::from_secs(60),
            refreshed_before: now - self.limits.idle,
            created_before: now - self.limits.absolute,
        }
    }

    /// Ends every session of the caller's account but the caller's own:
    /// their refresh tokens and access tokens stop working at once.
    /// Returns how many were ended.
    pub async fn end_other_sessions(&self, caller: AuthUser) -> Result<usize, Error> {
        let now = self.clock.now();
        let event = AuditEvent::new(AuditKind::SessionsEnded, now)
            .user(caller.user_id)
            .session(caller.session_id)
            .detail("every other session, by the owner");
        let ended = self
            .db
            .end_other_sessions(caller.user_id, caller.session_id, now, event.clone())
            .await?;
        let ended = self.refuse_ended(ended, now)?;
        if ended > 0 {
            event.emit();
        }
        Ok(ended)
    }

    /// Resolves a bearer token to its caller, or `None` for any failure
    /// (the reason goes to the debug log, never to the client).
    pub fn authenticate(&self, token: &str) -> Option<AuthUser> {
        let claims = match self.tokens.verify(token, self.clock.now()) {
            Ok(claims) => claims,
            Err(reason) => {
                tracing::debug!(%reason, "access token refused");
                self.events.record(crate::metrics::AuthEvent::TokenRejected);
                return None;
            }
        };
        if self.revoked.is_revoked(claims.session_id) {
            tracing::debug!(session_id = %claims.session_id, "access token of a revoked session");
            self.events.record(crate::metrics::AuthEvent::TokenRejected);
            return None;
        }
        Some(AuthUser {
            user_id: claims.user_id,
            session_id: claims.session_id,
            role: claims.role,
            second_factor: claims.second_factor,
        })
    }

    fn new_session(
        user: UserId,
        now: OffsetDateTime,
        origin: Origin,
    ) -> Result<(SessionRecord, String), Error> {
        let sid = SessionId::generate();
        let refresh = sessions::new_refresh_token(sid).map_err(|e| Error::internal(e.to_string()))?;
        let record = SessionRecord {
            id: sid,
            user_id: user,
            refresh_hash: refresh.hash,
            previous_hashes: Vec::new(),
            created_at: now,
            last_refreshed_at: now,
            revoked_at: None,
            client: origin.client.map(ClientKey::coarse),
            user_agent: origin.user_agent.as_deref().and_then(clean_user_agent),
            second_factor: false,
        };
        Ok((record, refresh.token))
    }

    fn token_pair(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
        refresh_token: String,
        now: OffsetDateTime,
    ) -> Result<TokenPair, Error> {
        let issued = self
            .tokens
            .issue(
                user.id,
                session.id,
                user.role,
                now,
                self.limits.absolute_end(session),
                session.second_factor,
            )
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(TokenPair {
            access_token: issued.token,
            access_issued_at: issued.issued_at,
            access_expires_at: issued.expires_at,
            refresh_token,
            session_id: session.id,
            device_token: None,
        })
    }

    /// Deletes sessions nobody can use any more. Revoked ones are kept for
    /// one access-token life so a restart still refuses their tokens.
    pub async fn purge_dead_sessions(&self) -> Result<usize, Error> {
        let cutoffs = self.live_cutoffs(self.clock.now());
        Ok(self.db.purge_sessions(cutoffs).await?)
    }

    /// Applies a refresh attempt to the stored session: compare-and-set,
    /// read again when another refresh or a logout changed it meanwhile.
    /// A session that is gone is `Unauthorized`.
    async fn rotate(
        &self,
        sid: SessionId,
        presented: &[u8; 32],
        replacement: [u8; 32],
        now: OffsetDateTime,
    ) -> Result<(RefreshOutcome, SessionRecord, Option<AuditEvent>), Error> {
        // Each retry follows a change that won; a session changes a few
        // times per refresh at most, so this bound is never met in use.
        for _ in 0..8 {
            let Some(current) = self.db.session(sid).await? else {
                return Err(Error::Unauthorized);
            };
            let mut next = current.clone();
            let (outcome, write) =
                sessions::apply_refresh(&mut next, presented, replacement, self.limits, now);
            if outcome == RefreshOutcome::ReuseDetected {
                // Refused in memory first: the session's access tokens stop
                // even if storing the revocation fails.
                self.revoked.revoke(sid, now);
            }
            let kind = match outcome {
                RefreshOutcome::Rotated => Some(AuditKind::Refresh),
                RefreshOutcome::ReuseDetected => Some(AuditKind::RefreshReuseDetected),
                RefreshOutcome::Replayed | RefreshOutcome::Refused => None,
            };
            let event = kind.map(|kind| AuditEvent::new(kind, now).user(next.user_id).session(sid));
            if !write
                || self
                    .db
                    .replace_session(current, next.clone(), event.clone())
                    .await?
            {
                return Ok((outcome, next, event.filter(|_| write)));
            }
        }
        Err(Error::Unavailable { retry_after: 1 })
    }
}
