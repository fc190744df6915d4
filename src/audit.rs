//! Security events: what happened to which account, by whom, from where.
//!
//! Each event is an [`AuditEvent`] value. The storage operation that makes
//! the change stores the event in the same transaction (see
//! [`crate::storage::Storage`]), chained to the record before it by a MAC
//! under the key ring's audit key, so an edited, inserted or removed record
//! is found by `notesd audit verify`. Once the change is durable,
//! [`AuditEvent::emit`] writes the same value as a structured log line
//! (target `audit`). An event never holds a password, a token, a key or
//! note text: only ids, a coarse client network and a short detail.

use time::OffsetDateTime;

use crate::domain::{SessionId, UserId};

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $level:ident;)*) => {
        /// What happened.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuditKind {
            $($(#[$doc])* $variant,)*
        }

        impl AuditKind {
            /// Every kind, for documentation and tests.
            pub const ALL: &'static [AuditKind] = &[$(AuditKind::$variant,)*];

            /// The kind's stable name, as stored, logged and filtered on.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditKind::$variant => $name,)*
                }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(AuditKind::$variant),)*
                    _ => None,
                }
            }

            /// Whether it is a sign of trouble (logged as a warning).
            fn is_warning(self) -> bool {
                match self {
                    $(AuditKind::$variant => kinds!(@warn $level),)*
                }
            }
        }
    };
    (@warn warn) => { true };
    (@warn info) => { false };
}

kinds! {
    /// An account was created by signing up.
    Signup = "signup", info;
    /// A login succeeded and opened a session.
    Login = "login", info;
    /// A wrong password for an existing account (at login, or as the
    /// current password of a change).
    LoginFailed = "login_failed", warn;
    /// Failures made a login counter back off.
    BackoffStarted = "backoff_started", warn;
    /// A refresh token was exchanged for a new pair.
    Refresh = "refresh", info;
    /// A rotated refresh token came back: the session was ended.
    RefreshReuseDetected = "refresh_reuse_detected", warn;
    Logout = "logout", info;
    /// The owner ended one of their sessions.
    SessionEnded = "session_ended", info;
    /// Every session but one (or all, by an admin) was ended.
    SessionsEnded = "sessions_ended", info;
    PasswordChanged = "password_changed", info;
    /// An admin, or the command line, set a new password.
    PasswordReset = "password_reset", warn;
    RoleChanged = "role_changed", warn;
    UserDisabled = "user_disabled", warn;
    UserEnabled = "user_enabled", info;
    /// An account and everything it held were deleted.
    AccountDeleted = "account_deleted", warn;
    /// An account was created by an admin or the command line.
    UserCreated = "user_created", info;
    InviteCreated = "invite_created", info;
    InviteUsed = "invite_used", info;
    /// An admin or the operator withdrew an invite.
    InviteDeleted = "invite_deleted", info;
    /// A new token signing key took over.
    KeyRotated = "key_rotated", warn;
    /// A TOTP enrolment started (pending until a code confirms it).
    MfaEnrolled = "mfa_enrolled", info;
    /// A code confirmed the enrolment: logins need a second factor.
    MfaConfirmed = "mfa_confirmed", warn;
    /// A login's second step passed.
    MfaUsed = "mfa_used", info;
    /// A wrong, replayed or malformed second-factor code.
    MfaFailed = "mfa_failed", warn;
    /// A recovery code was spent.
    RecoveryCodeUsed = "recovery_code_used", warn;
    /// New recovery codes replaced the old ones.
    RecoveryCodesRegenerated = "recovery_codes_regenerated", warn;
    /// The owner turned the second factor off.
    MfaDisabled = "mfa_disabled", warn;
    /// An admin or the operator removed an account's second factor.
    MfaReset = "mfa_reset", warn;
}

/// Who made a change to an account other than the account itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// An admin, over the API.
    Admin(UserId),
    /// Whoever runs `notesd` commands on the server.
    Operator,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Admin(id) => write!(f, "admin:{id}"),
            Actor::Operator => f.write_str("operator"),
        }
    }
}

/// One security event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub kind: AuditKind,
    pub at: OffsetDateTime,
    /// The account it happened to.
    pub user: Option<UserId>,
    /// Who did it, when not the account itself.
    pub actor: Option<Actor>,
    /// The session involved (the caller's, or the one ended).
    pub session: Option<SessionId>,
    /// The client's network (IPv4 /24, IPv6 /48), when it came over HTTP.
    pub client: Option<String>,
    /// A short fact such as the new role; never a secret.
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, at: OffsetDateTime) -> Self {
        Self {
            kind,
            at,
            user: None,
            actor: None,
            session: None,
            client: None,
            detail: None,
        }
    }

    #[must_use]
    pub fn user(mut self, user: UserId) -> Self {
        self.user = Some(user);
        self
    }

    #[must_use]
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    #[must_use]
    pub fn session(mut self, session: SessionId) -> Self {
        self.session = Some(session);
        self
    }

    #[must_use]
    pub fn client(mut self, client: Option<String>) -> Self {
        self.client = client;
        self
    }

    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Writes the event as one structured log line, target `audit`.
    pub fn emit(&self) {
        let user = self.user.map(|u| u.to_string());
        let actor = self.actor.map(|a| a.to_string());
        let session = self.session.map(|s| s.to_string());
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: "audit",
                    event = self.kind.as_str(),
                    user_id = user.as_deref(),
                    actor = actor.as_deref(),
                    session_id = session.as_deref(),
                    client = self.client.as_deref(),
                    detail = self.detail.as_deref(),
                )
            };
        }
        if self.kind.is_warning() {
            line!(warn);
        } else {
            line!(info);
        }
    }
}

/// A stored event and its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// 1, 2, 3...: the order events were stored in.
    pub seq: u64,
    pub event: AuditEvent,
}

/// Which stored events to read: newest first, filtered.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub user: Option<UserId>,
    pub kinds: Vec<AuditKind>,
    /// Only events at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Only events before this instant.
    pub until: Option<OffsetDateTime>,
    /// Continue below this sequence number (exclusive).
    pub before_seq: Option<u64>,
    pub limit: usize,
    /// Read at most this many records, then return what matched with a
    /// cursor (a filter that matches little costs a bounded amount).
    pub scan_limit: usize,
}

impl AuditQuery {
    pub fn matches(&self, event: &AuditEvent) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self.until.is_none_or(|until| event.at < until)
            && self.since.is_none_or(|since| event.at >= since)
            && self.user.is_none_or(|user| event.user == Some(user))
    }
}

/// What `notesd audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Every record from the first kept to the last is linked and intact.
    Intact { records: u64, first: u64, last: u64 },
    /// The chain breaks at this record.
    Broken { seq: u64, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_name_that_parses_back() {
        let mut names = std::collections::HashSet::new();
        for kind in AuditKind::ALL {
            assert!(names.insert(kind.as_str()), "{kind:?}");
            assert_eq!(AuditKind::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(AuditKind::parse("nonsense"), None);
    }
}
