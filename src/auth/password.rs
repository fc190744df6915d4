//! Password hashing and strength policy.
//!
//! Argon2id with configurable cost (OWASP's m = 19 456 KiB, t = 2, p = 1 by
//! default), stored as a PHC string. Hashing is deliberately expensive, so it
//! never runs on the async workers: each hash or verify takes a permit from a
//! semaphore sized to the cores and runs on the blocking pool, which keeps a
//! flood of logins from starving every other request.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::domain::Password;
use crate::error::{Error, FieldError};

/// Argon2 cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Outcome of checking a password against a stored hash.
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses other parameters than the configured ones: hash
    /// the (correct) password again and store the new hash.
    pub needs_rehash: bool,
}

pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the account
    /// does not exist, so that case costs the same time as a wrong password.
    dummy_hash: String,
    min_score: u8,
}

/// How much of a password the strength estimator looks at. zxcvbn's cost
/// grows faster than linearly with length; 100 characters of anything not
/// trivially repetitive is far beyond guessable anyway.
const STRENGTH_WINDOW: usize = 100;

impl Passwords {
    pub fn new(cost: HashCost, concurrency: usize, min_score: u8) -> Result<Self, Error> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| Error::internal(format!("invalid argon2 parameters: {e}")))?;
        let mut dummy = [0u8; 32];
        getrandom::fill(&mut dummy).map_err(|e| Error::internal(e.to_string()))?;
        let dummy_hash = hash_with(&params, &dummy)?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash,
            min_score,
        })
    }

    /// Checks the strength policy, then hashes. `context` holds words the
    /// password must not lean on (the email and its parts).
    pub async fn hash_new(&self, password: Password, context: Vec<String>) -> Result<String, Error> {
        let params = self.params.clone();
        let min_score = self.min_score;
        self.blocking(move || {
            check_strength(&password, &context, min_score)?;
            hash_with(&params, password.expose().as_bytes())
        })
        .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when
    /// there is no account, so both paths do the same work.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<Verified, Error> {
        let exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let params = self.params.clone();
        let verified = self
            .blocking(move || {
                let hash =
                    PasswordHash::new(&phc).map_err(|e| Error::internal(format!("stored hash: {e}")))?;
                let ok = argon2_for(&params)
                    .verify_password(password.expose().as_bytes(), &hash)
                    .is_ok();
                let current = hash.algorithm == Algorithm::Argon2id.ident()
                    && Params::try_from(&hash).is_ok_and(|p| {
                        p.m_cost() == params.m_cost()
                            && p.t_cost() == params.t_cost()
                            && p.p_cost() == params.p_cost()
                    });
                Ok(Verified {
                    ok,
                    needs_rehash: !current,
                })
            })
            .await?;
        Ok(Verified {
            ok: verified.ok && exists,
            needs_rehash: verified.needs_rehash && exists,
        })
    }

    /// Hashes without the strength check (rehash of an accepted password).
    pub async fn rehash(&self, password: Password) -> Result<String, Error> {
        let params = self.params.clone();
        self.blocking(move || hash_with(&params, password.expose().as_bytes()))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::internal(e.to_string()))?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .instrument(tracing::Span::current())
            .await
            .map_err(|e| Error::internal(format!("hashing task failed: {e}")))?
    }
}

fn argon2_for(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_with(params: &Params, password: &[u8]) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::internal(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::internal(e.to_string()))?;
    argon2_for(params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("argon2: {e}")))
}

/// Rejects passwords that zxcvbn scores below `min_score` (0–4), with its
/// advice when it has some. The advice never quotes the password.
fn check_strength(password: &Password, context: &[String], min_score: u8) -> Result<(), Error> {
    let window: String = password.expose().chars().take(STRENGTH_WINDOW).collect();
    let inputs: Vec<&str> = context.iter().map(String::as_str).collect();
    let estimate = zxcvbn::zxcvbn(&window, &inputs);
    if u8::from(estimate.score()) >= min_score {
        return Ok(());
    }
    let advice = estimate
        .feedback()
        .and_then(zxcvbn::feedback::Feedback::warning)
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    Err(FieldError::new(
        "password",
        format!("is too easy to guess{advice}; a few uncommon words make a strong password"),
    )
    .into())
}

/// The words a password should not be built from: the email and its parts.
pub fn context_words(email: &str) -> Vec<String> {
    let mut words = vec![email.to_owned()];
    words.extend(
        email
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 3)
            .map(str::to_owned),
    );
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        let cost = HashCost {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        Passwords::new(cost, 2, 2).unwrap()
    }

    fn pw(s: &str) -> Password {
        Password::parse(s.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let p = cheap();
        let hash = p.hash_new(pw("plaid-otter-cathedral"), vec![]).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert!(
            p.verify(pw("plaid-otter-cathedral"), Some(hash.clone()))
                .await
                .unwrap()
                .ok
        );
        assert!(
            !p.verify(pw("plaid-otter-cathedrax"), Some(hash))
                .await
                .unwrap()
                .ok
        );
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let p = cheap();
        let v = p.verify(pw("whatever-it-is-123"), None).await.unwrap();
        assert!(!v.ok && !v.needs_rehash);
    }

    #[tokio::test]
    async fn changed_parameters_ask_for_a_rehash() {
        let old = cheap()
            .hash_new(pw("plaid-otter-cathedral"), vec![])
            .await
            .unwrap();
        let cost = HashCost {
            memory_kib: 2048,
            iterations: 1,
            parallelism: 1,
        };
        let newer = Passwords::new(cost, 1, 2).unwrap();
        let v = newer
            .verify(pw("plaid-otter-cathedral"), Some(old))
            .await
            .unwrap();
        assert!(v.ok && v.needs_rehash);
    }

    #[test]
    fn common_and_personal_passwords_are_rejected() {
        for weak in ["password", "12345678", "qwertyuiop", "iloveyou1"] {
            assert!(
                check_strength(&pw(weak), &[], 2).is_err(),
                "{weak} must be rejected"
            );
        }
        let ctx = context_words("margaret.hamilton@nasa.gov");
        assert!(
            check_strength(&pw("margarethamilton"), &ctx, 2).is_err(),
            "built from the email"
        );
        assert!(check_strength(&pw("plaid-otter-cathedral"), &[], 2).is_ok());
    }

    #[test]
    fn rejection_does_not_quote_the_password() {
        let err = check_strength(&pw("password1"), &[], 2).unwrap_err();
        assert!(!err.to_problem().errors[0].message.contains("password1"));
    }
}
