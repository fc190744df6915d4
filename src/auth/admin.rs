//! Account administration, by an admin over the API or by the operator on
//! the command line (the same methods either way), and the deletion of an
//! account by its owner. Every change is one storage write that carries
//! its audit event; a change that ends sessions refuses their tokens in
//! memory at once, so it reaches tokens already issued on the very next
//! request.

use time::OffsetDateTime;

use super::{Auth, AuthUser, invites, password};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditQuery, AuditRecord};
use crate::client::ClientKey;
use crate::domain::{Email, InviteId, Password, Role, SessionId, UserId};
use crate::error::{Error, FieldError};
use crate::storage::{AccountChange, CounterOf, Created, InviteRecord, Storage, UserRecord};

/// An invite as made: the code is shown once, never stored.
pub struct IssuedInvite {
    pub code: String,
    pub invite: InviteRecord,
}

const ADMIN_NEEDS_MFA: &str = "Admin operations on this server need a login with a second factor: \
     turn on two-factor login (POST /api/v1/me/mfa/totp), then log in again.";

const LAST_ADMIN: &str = "This would leave no enabled admin: make another admin first.";

impl Auth {
    /// The caller's account, if it is an enabled admin now (read from the
    /// store, not the token, so a demotion or a promotion counts on the
    /// very next request); else `Forbidden`.
    pub async fn require_admin(&self, caller: AuthUser) -> Result<UserRecord, Error> {
        match self.db.user(caller.user_id).await? {
            Some(user) if user.role == Role::Admin && !user.disabled => {
                // The token says how its session began; the store says
                // whether that still stands (a reset or disabled factor
                // takes it back at once, not at the token's expiry).
                if self.mfa.admins_need_it
                    && !(caller.second_factor
                        && self
                            .db
                            .session(caller.session_id)
                            .await?
                            .is_some_and(|s| s.second_factor))
                {
                    return Err(Error::Http {
                        status: poem::http::StatusCode::FORBIDDEN,
                        detail: ADMIN_NEEDS_MFA.to_owned(),
                    });
                }
                Ok(user)
            }
            Some(_) => Err(Error::Forbidden),
            None => Err(Error::Unauthorized),
        }
    }

    /// Refuses at once the tokens of sessions a change ended.
    fn refuse_all(&self, ended: &[SessionId], now: OffsetDateTime) {
        for sid in ended {
            self.revoked.revoke(*sid, now);
        }
    }

    /// Applies what an account change found: `Done` is emitted and its
    /// ended sessions refused, the rest become their errors.
    fn settle<T>(
        &self,
        outcome: AccountChange<T>,
        event: &AuditEvent,
        ended: impl FnOnce(&T) -> &[SessionId],
        now: OffsetDateTime,
    ) -> Result<T, Error> {
        match outcome {
            AccountChange::Done(value) => {
                self.refuse_all(ended(&value), now);
                event.emit();
                Ok(value)
            }
            AccountChange::NotFound => Err(Error::NotFound),
            AccountChange::LastAdmin => Err(Error::Conflict(LAST_ADMIN)),
            AccountChange::Stale => Err(Error::Conflict(
                "The password changed meanwhile; try again with the current one.",
            )),
        }
    }

    /// Deletes the caller's account and everything it holds, after the
    /// password is re-entered. The password is checked like a login from
    /// this client (a wrong one counts toward the backoff).
    pub async fn delete_own_account(
        &self,
        caller: AuthUser,
        password: Password,
        client: Option<ClientKey>,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let Some(user) = self.db.user(caller.user_id).await?.filter(|u| !u.disabled) else {
            return Err(Error::Unauthorized);
        };
        if self.revoked.is_revoked(caller.session_id) {
            return Err(Error::Unauthorized);
        }
        self.check_password_again(&user, caller.session_id, password, client, "password")
            .await?;
        let event = AuditEvent::new(AuditKind::AccountDeleted, now)
            .user(user.id)
            .session(caller.session_id)
            .client(client.map(ClientKey::coarse))
            .detail("by the owner");
        let outcome = self
            .db
            .delete_account(user.id, Some(user.password_hash.clone()), now, event.clone())
            .await?;
        self.settle(outcome, &event, Vec::as_slice, now)?;
        // The caller's session was among those ended; in memory too, even
        // if it had been ended just before.
        self.revoked.revoke(caller.session_id, now);
        Ok(())
    }

    /// Checks a re-entered password like a login attempt: admitted by the
    /// backoff, a failure counted and recorded, a wrong one reported
    /// against the request member `field`.
    /// Checks `password` against `hash` for an attempt its counter
    /// admitted; a hash that could not be computed (a full queue) does not
    /// count as an attempt.
    pub(super) async fn verify_admitted<'a>(
        &'a self,
        ticket: super::backoff::Ticket<'a>,
        password: Password,
        hash: String,
    ) -> Result<(super::backoff::Ticket<'a>, bool), Error> {
        match self.passwords.verify(password, Some(hash)).await {
            Ok(verified) => Ok((ticket, verified.ok)),
            Err(e) => {
                ticket.released();
                Err(e)
            }
        }
    }

    pub(super) async fn check_password_again(
        &self,
        user: &UserRecord,
        session: SessionId,
        password: Password,
        client: Option<ClientKey>,
        field: &'static str,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let known = self.db.known_clients(user.id).await?;
        let class = super::devices::ClientClass::of(&known, None, client);
        let of = CounterOf::Account;
        let ticket = self
            .admit_attempt(
                class.counter_key(&user.email),
                of,
                now,
                class != super::devices::ClientClass::Unknown,
            )
            .await?;
        let (ticket, right) = self
            .verify_admitted(ticket, password, user.password_hash.clone())
            .await?;
        if !right {
            let failed = AuditEvent::new(AuditKind::LoginFailed, now)
                .user(user.id)
                .session(session)
                .client(client.map(ClientKey::coarse))
                .detail(format!("wrong `{field}` re-entered"));
            self.count_failure(ticket, of, now, failed).await;
            return Err(FieldError::new(field, "is not the account's password").into());
        }
        // With a second factor on, failures may be wrong codes: only a
        // right code clears them, never the password alone.
        let factor_on = match self.mfa_enabled(user.id).await {
            Ok(on) => on,
            Err(e) => {
                ticket.released();
                return Err(e);
            }
        };
        if factor_on {
            ticket.released();
            return Ok(());
        }
        let (had_failures, key) = (ticket.had_failures, ticket.key().to_owned());
        ticket.succeeded();
        if had_failures {
            self.db.clear_failures(key).await?;
        }
        Ok(())
    }

    /// Creates an account without a session (an admin, or the operator's
    /// `notesd user create`); the password meets the signup rules.
    pub async fn create_user(
        &self,
        actor: Actor,
        email: Email,
        password: Password,
        role: Role,
    ) -> Result<UserRecord, Error> {
        let user = self.new_account(&email, password, role).await?;
        let now = user.created_at;
        let event = AuditEvent::new(AuditKind::UserCreated, now)
            .user(user.id)
            .actor(actor)
            .detail(format!("role {}", role.as_str()));
        match self
            .db
            .create_account(user.clone(), None, Vec::new(), None, vec![event.clone()])
            .await?
        {
            Created::Created => {
                event.emit();
                Ok(user)
            }
            Created::EmailTaken | Created::InviteRefused => {
                Err(Error::Conflict("An account with this email exists."))
            }
        }
    }

    pub async fn set_role(&self, actor: Actor, target: UserId, role: Role) -> Result<UserRecord, Error> {
        let now = self.clock.now();
        let event = AuditEvent::new(AuditKind::RoleChanged, now)
            .user(target)
            .actor(actor)
            .detail(format!("role {}", role.as_str()));
        let outcome = self.db.set_role(target, role, event.clone()).await?;
        self.settle(outcome, &event, |_| &[], now)
    }

    pub async fn set_disabled(&self, actor: Actor, target: UserId, disabled: bool) -> Result<usize, Error> {
        let now = self.clock.now();
        let kind = if disabled {
            AuditKind::UserDisabled
        } else {
            AuditKind::UserEnabled
        };
        let event = AuditEvent::new(kind, now).user(target).actor(actor);
        let outcome = self.db.set_disabled(target, disabled, now, event.clone()).await?;
        self.settle(outcome, &event, Vec::as_slice, now).map(|e| e.len())
    }

    /// Ends every session of an account.
    pub async fn end_user_sessions(&self, actor: Actor, target: UserId) -> Result<usize, Error> {
        let now = self.clock.now();
        let event = AuditEvent::new(AuditKind::SessionsEnded, now)
            .user(target)
            .actor(actor)
            .detail("every session");
        let outcome = self.db.end_user_sessions(target, now, event.clone()).await?;
        self.settle(outcome, &event, Vec::as_slice, now).map(|e| e.len())
    }

    /// Sets a new password (meeting the signup rules) and ends every
    /// session of the account.
    pub async fn reset_password(
        &self,
        actor: Actor,
        target: UserId,
        password: Password,
    ) -> Result<usize, Error> {
        let Some(user) = self.db.user(target).await? else {
            return Err(Error::NotFound);
        };
        let hash = self
            .passwords
            .hash_new(password, password::context_words(&user.email))
            .await?;
        let now = self.clock.now();
        let event = AuditEvent::new(AuditKind::PasswordReset, now)
            .user(target)
            .actor(actor);
        let outcome = self.db.reset_password(target, hash, now, event.clone()).await?;
        self.settle(outcome, &event, Vec::as_slice, now).map(|e| e.len())
    }

    pub async fn delete_user(&self, actor: Actor, target: UserId) -> Result<(), Error> {
        let now = self.clock.now();
        let event = AuditEvent::new(AuditKind::AccountDeleted, now)
            .user(target)
            .actor(actor);
        let outcome = self.db.delete_account(target, None, now, event.clone()).await?;
        self.settle(outcome, &event, Vec::as_slice, now).map(|_| ())
    }

    pub async fn user_by_email(&self, email: &str) -> Result<UserRecord, Error> {
        let email = Email::parse(email).map_err(|_| Error::NotFound)?;
        self.db
            .user_by_email(email.as_str())
            .await?
            .ok_or(Error::NotFound)
    }

    /// Makes a one-time signup code valid for `ttl` (the configured life
    /// when `None`).
    pub async fn create_invite(
        &self,
        actor: Actor,
        ttl: Option<std::time::Duration>,
    ) -> Result<IssuedInvite, Error> {
        let now = self.clock.now();
        let made = invites::new_invite().map_err(|e| Error::internal(e.to_string()))?;
        let invite = InviteRecord {
            id: made.id,
            hash: made.hash,
            created_at: now,
            expires_at: now + ttl.unwrap_or(self.invite_ttl),
            created_by: actor,
            used_by: None,
            used_at: None,
        };
        let event = AuditEvent::new(AuditKind::InviteCreated, now)
            .actor(actor)
            .detail(format!("invite {}", invite.id));
        self.db.create_invite(invite.clone(), event.clone()).await?;
        event.emit();
        Ok(IssuedInvite {
            code: made.code,
            invite,
        })
    }

    pub async fn delete_invite(&self, actor: Actor, id: InviteId) -> Result<(), Error> {
        let now = self.clock.now();
        let event = AuditEvent::new(AuditKind::InviteDeleted, now)
            .actor(actor)
            .detail(format!("invite {id}"));
        if !self.db.delete_invite(id, event.clone()).await? {
            return Err(Error::NotFound);
        }
        event.emit();
        Ok(())
    }

    pub async fn audit_events(&self, query: AuditQuery) -> Result<(Vec<AuditRecord>, Option<u64>), Error> {
        Ok(self.db.audit_events(query).await?)
    }
}
