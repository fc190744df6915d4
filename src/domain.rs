//! Validated values of the domain: an email, a password, a note's title,
//! content and tags, and the ids. Each has a fallible constructor, so a value
//! of one of these types has already passed its checks ("parse, don't
//! validate"); the same limits sit on the API objects so the spec shows them.

use std::fmt;

use uuid::Uuid;

use crate::error::FieldError;

/// Longest email accepted (RFC 5321 path limit).
pub const EMAIL_MAX: usize = 254;
/// Password length limits, in characters. No composition rules (NIST 800-63B).
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 1024;
/// Note title length, in characters.
pub const TITLE_MAX: usize = 200;
/// Note content length, in characters.
pub const CONTENT_MAX: usize = 100_000;
/// Tags per note, and characters per tag.
pub const TAGS_MAX: usize = 20;
pub const TAG_MAX: usize = 32;

/// A normalised email address, so that one mailbox has one account however
/// it is typed: trimmed, NFKC-normalised (fullwidth `ａ` is `a`, ligatures
/// are split), case-folded (`ALICE` and `alice`, `ß` and `ss`) and
/// normalised again, as Unicode's NFKC_Casefold does; ideographic full
/// stops (`。`, `｡`) are dots, as IDNA reads them. What remains may hold
/// letters and digits of any script and the ASCII punctuation RFC 5322
/// allows; anything else (invisible formatting characters, symbols,
/// unassigned code points) is refused: those make look-alikes too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let too_long = || FieldError::new("email", "must be at most 254 characters");
        let raw = raw.trim();
        // Normalising can lengthen text; bound the work before doing it.
        if raw.len() > 4 * EMAIL_MAX {
            return Err(too_long());
        }
        let email = fold_email(raw);
        let invalid = || FieldError::new("email", "must be an email address");
        if email.chars().count() > EMAIL_MAX {
            return Err(too_long());
        }
        if !email.chars().all(is_email_char) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        // RFC 5321's dot-atom local part (atoms joined by single dots) and
        // a domain of DNS labels (letters and digits of any script, inner
        // hyphens, at most 63 characters each): what an `idn-email` is,
        // but for quoted local parts and address literals, refused.
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.chars().count() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        let well_formed = local.split('.').all(|atom| !atom.is_empty())
            && domain.split('.').all(label_ok)
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if !well_formed {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text folded as emails are (NFKC, case folding, NFKC again, ideographic
/// full stops as dots), without the checks: for matching a prefix of the
/// stored, normalised emails.
pub fn fold_email(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let compatible: String = raw.trim().nfkc().collect();
    caseless::default_case_fold_str(&compatible)
        .nfkc()
        .map(|c| if c == '\u{3002}' { '.' } else { c })
        .collect()
}

/// A letter or digit of any script (marks that belong to letters
/// included), or ASCII punctuation an address may hold (RFC 5322 `atext`,
/// the dot and `@`). This refuses by construction what renders as nothing
/// or as something else: format characters, symbols, unassigned code
/// points.
fn is_email_char(c: char) -> bool {
    c.is_alphanumeric() || (c.is_ascii_punctuation() && !"\"(),:;<>[\\]".contains(c))
}

/// A password that meets the length policy. Its `Debug` never shows it.
/// Strength (guessability) is judged separately, off the async workers,
/// because the estimator costs milliseconds on long input.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, FieldError> {
        let chars = raw.chars().count();
        if chars < PASSWORD_MIN {
            return Err(FieldError::new("password", "must be at least 8 characters"));
        }
        if chars > PASSWORD_MAX {
            return Err(FieldError::new("password", "must be at most 1024 characters"));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A note title: 1 to 200 characters, not only white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub fn parse(raw: String) -> Result<Self, FieldError> {
        if raw.trim().is_empty() {
            return Err(FieldError::new("title", "must not be empty"));
        }
        if raw.chars().count() > TITLE_MAX {
            return Err(FieldError::new("title", "must be at most 200 characters"));
        }
        Ok(Self(raw))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Note content: up to 100 000 characters, possibly empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    pub fn parse(raw: String) -> Result<Self, FieldError> {
        if raw.chars().count() > CONTENT_MAX {
            return Err(FieldError::new("content", "must be at most 100000 characters"));
        }
        Ok(Self(raw))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A tag: 1 to 32 characters of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty()
            && raw.len() <= TAG_MAX
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                "tags",
                "each tag must be 1-32 characters of a-z, 0-9, _ or -",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A note's tag set: at most 20 tags, duplicates removed, kept sorted so two
/// equal sets compare and store the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Vec<Tag>);

impl Tags {
    pub fn parse(raw: &[String]) -> Result<Self, FieldError> {
        if raw.len() > TAGS_MAX {
            return Err(FieldError::new("tags", "at most 20 tags"));
        }
        let mut tags = raw.iter().map(|t| Tag::parse(t)).collect::<Result<Vec<_>, _>>()?;
        tags.sort();
        tags.dedup();
        Ok(Self(tags))
    }

    pub fn into_strings(self) -> Vec<String> {
        self.0.into_iter().map(|t| t.0).collect()
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id from the OS random generator.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_u128(self) -> u128 {
                self.0.as_u128()
            }

            pub fn from_u128(v: u128) -> Self {
                Self(Uuid::from_u128(v))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Identifies an account.
    UserId
);
uuid_id!(
    /// Identifies a login session (the `sid` claim).
    SessionId
);
uuid_id!(
    /// Identifies a note; v7, so ids sort by creation time.
    NoteId
);
uuid_id!(
    /// Identifies a signup invite (its code carries a secret besides).
    InviteId
);

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        let email = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "alice@example.com");
    }

    /// Regression: `ａlice@example.com` (fullwidth a) and `alice@example.com`
    /// were two accounts.
    #[test]
    fn look_alike_emails_are_one_address() {
        let alice = Email::parse("alice@example.com").unwrap();
        for (raw, why) in [
            ("ａlice@example.com", "fullwidth a"),
            ("ＡＬＩＣＥ@ＥＸＡＭＰＬＥ.ＣＯＭ", "fullwidth capitals"),
            ("ALICE@example.com", "case"),
            ("alice@example\u{FF0E}com", "fullwidth full stop"),
        ] {
            assert_eq!(Email::parse(raw).unwrap(), alice, "{why}");
        }
        assert_eq!(
            Email::parse("STRASSE@x.org").unwrap(),
            Email::parse("straße@x.org").unwrap(),
            "full case folding"
        );
        assert_eq!(
            Email::parse("ﬁle@x.org").unwrap().as_str(),
            "file@x.org",
            "ligature"
        );
        for invisible in [
            "al\u{200B}ice@example.com",
            "alice\u{00AD}@example.com",
            "\u{202E}alice@example.com",
            // Regression (review): accepted while invisibles were a list.
            "alice\u{1D173}@example.com",
            "alice\u{FFF0}@example.com",
            "alice\u{110BD}@example.com",
            "alice\u{13430}@example.com",
            "alice\u{0600}@example.com",
            "alice\u{2800}@example.com",
        ] {
            assert!(Email::parse(invisible).is_err(), "{invisible:?}");
        }
        assert_eq!(
            Email::parse("alice@example\u{3002}com").unwrap(),
            alice,
            "ideographic full stop"
        );
        assert!(
            Email::parse("jos\u{e9}@b\u{fc}cher.de").is_ok(),
            "letters of any script"
        );
        assert!(
            Email::parse("o'brien+tag@example.com").is_ok(),
            "atext punctuation"
        );
        assert!(
            Email::parse(&"ﷺ".repeat(300)).is_err(),
            "bounded before normalising"
        );
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for (raw, why) in [
            ("", "empty"),
            ("alice", "no @"),
            ("@example.com", "no local part"),
            ("alice@", "no domain"),
            ("a@b@c", "two @"),
            ("al ice@example.com", "inner space"),
            ("alice@.example.com", "domain starts with a dot"),
            ("a..b@example.com", "two dots in a row"),
            (".a@example.com", "local part starts with a dot"),
            ("!@#", "a domain label of punctuation"),
            ("-@-", "a label that is a hyphen"),
            ("a@xn--", "a label ending with a hyphen"),
            ("a@example..com", "an empty label"),
            ("\"a b\"@example.com", "a quoted local part"),
            ("a@[127.0.0.1]", "an address literal"),
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} should be rejected: {why}");
        }
        assert!(
            Email::parse(&format!("{}@x.io", "a".repeat(260))).is_err(),
            "too long"
        );
        assert!(
            Email::parse(&format!("a@{}.io", "b".repeat(64))).is_err(),
            "a label over 63"
        );
        for fine in [
            "a.b+tag@example.com",
            "josé@exämple.org",
            "o'neil@x-y.example",
            "!#$%&'*+/=?^_`{|}~-@example.com",
        ] {
            assert!(Email::parse(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn password_length_is_counted_in_characters() {
        assert!(Password::parse("1234567".into()).is_err(), "7 chars is too short");
        assert!(
            Password::parse("éééééééé".into()).is_ok(),
            "8 two-byte chars is enough"
        );
        assert!(Password::parse("x".repeat(1024)).is_ok());
        assert!(
            Password::parse("x".repeat(1025)).is_err(),
            "1025 chars is too long"
        );
    }

    #[test]
    fn password_debug_is_redacted() {
        let p = Password::parse("correct horse battery".into()).unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }

    #[test]
    fn title_limits() {
        assert!(Title::parse(String::new()).is_err());
        assert!(Title::parse("   ".into()).is_err(), "white space only");
        assert!(Title::parse("t".repeat(200)).is_ok());
        assert!(Title::parse("t".repeat(201)).is_err());
    }

    #[test]
    fn content_limit() {
        assert!(Content::parse(String::new()).is_ok());
        assert!(Content::parse("c".repeat(100_000)).is_ok());
        assert!(Content::parse("c".repeat(100_001)).is_err());
    }

    #[test]
    fn tags_are_checked_sorted_and_deduplicated() {
        let tags = Tags::parse(&["b".into(), "a-1".into(), "b".into()]).unwrap();
        assert_eq!(tags.into_strings(), vec!["a-1", "b"]);
        for bad in ["", "Upper", "with space", "é", &"t".repeat(33)] {
            assert!(Tags::parse(&[bad.to_string()]).is_err(), "{bad:?} is not a tag");
        }
        let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert!(Tags::parse(&many).is_err(), "21 tags is too many");
    }
}
