//! Password hashing and strength policy.
//!
//! Argon2id with configurable cost (OWASP's m = 19 456 KiB, t = 2, p = 1 by
//! default), stored as a PHC string. Hashing is deliberately expensive, so it
//! never runs on the async workers: a small pool of dedicated threads
//! (by default one fewer than the cores, so one core always stays free for
//! other requests) takes jobs from a bounded queue. When the queue is full a
//! login is refused at once with 503 instead of piling up.
//!
//! Hashing threads run at the lowest CPU priority, so hashing yields to
//! request handling whenever both want the same core.
//!
//! Each hashing thread keeps its argon2 working memory between jobs.
//! Allocating and faulting in 19 MiB per hash costs time, and freed blocks
//! that size stay cached per thread by the allocator: spread over the
//! general blocking pool they added up to more than a gigabyte of resident
//! memory under a login flood.

use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64ct::{Base64Unpadded, Encoding};
use std::sync::{Arc, OnceLock};
use subtle::ConstantTimeEq;

use crate::domain::Password;
use crate::error::{Error, FieldError};
use crate::pool::{IdlePool, PoolError};

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

/// Size of the hashing pool and its queue.
#[derive(Debug, Clone, Copy)]
pub struct HashPoolSize {
    pub threads: usize,
    pub queue: usize,
}

/// Dedicated hashing threads (see [`crate::pool`]), each keeping argon2's
/// working memory between hashes.
struct HashPool(IdlePool<Vec<Block>>);

impl HashPool {
    fn new(size: HashPoolSize) -> std::io::Result<Self> {
        IdlePool::releasing("hash", size.threads, size.queue, Some(RELEASE_AFTER)).map(Self)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        match self.0.run(work).await {
            Ok(result) => result,
            Err(PoolError::Full) => {
                tracing::warn!("password hashing queue full; refusing");
                Err(Error::Unavailable { retry_after: 1 })
            }
            Err(PoolError::Stopped) => Err(Error::internal("hashing pool stopped")),
        }
    }
}

pub struct Passwords {
    params: Params,
    pool: HashPool,
    /// The dummy hash and the baseline, made on a hashing thread: at the
    /// start (a job queued then), or by the first hash that needs them.
    /// Two hashes at the full cost would otherwise hold up the start.
    calibration: Arc<OnceLock<Calibration>>,
    min_score: u8,
}

/// What answers for a missing account and pads a cheaper old hash.
struct Calibration {
    /// A real hash of a random password, verified against when the account
    /// does not exist, so that case costs the same time as a wrong password.
    dummy_hash: String,
    /// How long verifying with the current parameters takes here; a verify
    /// against an older, cheaper hash is padded to this, so a parameter
    /// change does not make existing accounts answer faster.
    baseline: Duration,
}

/// The calibration, made now with `memory` if no thread has made it yet.
fn calibrated<'c>(
    cell: &'c OnceLock<Calibration>,
    params: &Params,
    memory: &mut Vec<Block>,
) -> Result<&'c Calibration, Error> {
    if let Some(calibration) = cell.get() {
        return Ok(calibration);
    }
    let mut dummy = [0u8; 32];
    getrandom::fill(&mut dummy).map_err(|e| Error::internal(e.to_string()))?;
    let dummy_hash = hash_with(params, &dummy, memory)?;
    let started = Instant::now();
    verify_with(&dummy_hash, &dummy, memory)?;
    let baseline = started.elapsed();
    // Two threads may both have made one: either serves.
    Ok(cell.get_or_init(|| Calibration { dummy_hash, baseline }))
}

/// How much of a password the strength estimator looks at. zxcvbn's cost
/// grows faster than linearly with length; 100 characters of anything not
/// trivially repetitive is far beyond guessable anyway.
const STRENGTH_WINDOW: usize = 100;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

impl Passwords {
    pub fn new(cost: HashCost, pool: HashPoolSize, min_score: u8) -> Result<Self, Error> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, Some(HASH_LEN))
            .map_err(|e| Error::internal(format!("invalid argon2 parameters: {e}")))?;
        let pool = HashPool::new(pool).map_err(|e| Error::internal(format!("hashing threads: {e}")))?;
        let calibration = Arc::new(OnceLock::new());
        {
            let (calibration, params) = (calibration.clone(), params.clone());
            pool.0.submit(move |memory| {
                if let Err(e) = calibrated(&calibration, &params, memory) {
                    tracing::warn!(error = %e, "could not calibrate password hashing; the first login will");
                }
            });
        }
        Ok(Self {
            params,
            pool,
            calibration,
            min_score,
        })
    }

    /// Checks the strength policy, then hashes. `context` holds words the
    /// password must not lean on (the email and its parts).
    /// The hashing queue's depth and refusals, for the metrics.
    pub fn queue_stats(&self) -> std::sync::Arc<crate::metrics::QueueStats> {
        self.pool.0.stats()
    }

    pub async fn hash_new(&self, password: Password, context: Vec<String>) -> Result<String, Error> {
        let params = self.params.clone();
        let min_score = self.min_score;
        self.pool
            .run(move |memory| {
                check_strength(&password, &context, min_score)?;
                hash_with(&params, password.expose().as_bytes(), memory)
            })
            .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when
    /// there is no account, so both paths do the same work.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<Verified, Error> {
        let exists = stored.is_some();
        let params = self.params.clone();
        let calibration = self.calibration.clone();
        let started = Instant::now();
        let (ok, current, baseline) = self
            .pool
            .run(move |memory| {
                let calibration = calibrated(&calibration, &params, memory)?;
                let phc = stored.unwrap_or_else(|| calibration.dummy_hash.clone());
                let ok = verify_with(&phc, password.expose().as_bytes(), memory)?;
                Ok((ok, uses_params(&phc, &params), calibration.baseline))
            })
            .await?;
        if !current && let Some(short) = baseline.checked_sub(started.elapsed()) {
            tokio::time::sleep(short).await;
        }
        Ok(Verified {
            ok: ok && exists,
            needs_rehash: !current && exists,
        })
    }

    /// Hashes without the strength check (rehash of an accepted password).
    pub async fn rehash(&self, password: Password) -> Result<String, Error> {
        let params = self.params.clone();
        self.pool
            .run(move |memory| hash_with(&params, password.expose().as_bytes(), memory))
            .await
    }
}

/// Grows the reusable working memory to what `params` needs.
///
/// It is reserved at no less than [`RESERVED_BLOCKS`] (33 MiB of address
/// space, of which only what the parameters use is ever touched): glibc's
/// malloc maps so large a block on its own and unmaps it when it is freed,
/// whereas after freeing a mapped block of 32 MiB or less it raises its
/// mapping threshold and serves the next one from a heap it never gives
/// back. So the 19 MiB a hash uses leave the process when the hashing
/// thread lets go of them (see [`RELEASE_AFTER`]).
fn memory_for<'m>(params: &Params, memory: &'m mut Vec<Block>) -> &'m mut [Block] {
    let blocks = params.block_count();
    if memory.len() < blocks {
        if memory.capacity() < blocks.max(RESERVED_BLOCKS) {
            *memory = Vec::with_capacity(blocks.max(RESERVED_BLOCKS));
        }
        memory.resize(blocks, Block::default());
    }
    &mut memory[..blocks]
}

/// 33 MiB of 1 KiB argon2 blocks: above glibc's largest mapping threshold.
const RESERVED_BLOCKS: usize = 33 * 1024;

/// A hashing thread with no hash to do for this long gives its working
/// memory back; the next hash maps it again.
const RELEASE_AFTER: Duration = Duration::from_secs(5);

fn hash_with(params: &Params, password: &[u8], memory: &mut Vec<Block>) -> Result<String, Error> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| Error::internal(e.to_string()))?;
    let mut out = [0u8; HASH_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, memory_for(params, memory))
        .map_err(|e| Error::internal(format!("argon2: {e}")))?;
    // The PHC string format, as the `password-hash` crate reads it.
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::internal(e.to_string()))?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        salt.as_str(),
        Base64Unpadded::encode_string(&out)
    ))
}

/// Checks `password` against a PHC string, in constant time.
fn verify_with(phc: &str, password: &[u8], memory: &mut Vec<Block>) -> Result<bool, Error> {
    let hash = PasswordHash::new(phc).map_err(|e| Error::internal(format!("stored hash: {e}")))?;
    let algorithm =
        Algorithm::try_from(hash.algorithm).map_err(|e| Error::internal(format!("stored hash: {e}")))?;
    let version = hash
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .map_err(|e| Error::internal(format!("stored hash: {e}")))?;
    let expected = hash
        .hash
        .ok_or_else(|| Error::internal("stored hash has no output"))?;
    let params = Params::try_from(&hash).map_err(|e| Error::internal(format!("stored hash: {e}")))?;
    let mut salt = [0u8; 64];
    let salt = hash
        .salt
        .ok_or_else(|| Error::internal("stored hash has no salt"))?
        .decode_b64(&mut salt)
        .map_err(|e| Error::internal(format!("stored hash salt: {e}")))?;
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(password, salt, &mut out, memory_for(&params, memory))
        .map_err(|e| Error::internal(format!("argon2: {e}")))?;
    Ok(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

/// Whether a PHC string is argon2id with exactly the configured cost.
fn uses_params(phc: &str, params: &Params) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        hash.algorithm == Algorithm::Argon2id.ident()
            && Params::try_from(&hash).is_ok_and(|p| {
                p.m_cost() == params.m_cost()
                    && p.t_cost() == params.t_cost()
                    && p.p_cost() == params.p_cost()
            })
    })
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
        Passwords::new(cost, HashPoolSize { threads: 2, queue: 8 }, 2).unwrap()
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
        let newer = Passwords::new(cost, HashPoolSize { threads: 1, queue: 8 }, 2).unwrap();
        let v = newer
            .verify(pw("plaid-otter-cathedral"), Some(old))
            .await
            .unwrap();
        assert!(v.ok && v.needs_rehash);
    }

    #[tokio::test]
    async fn our_hashes_are_standard_phc_strings() {
        use argon2::password_hash::PasswordVerifier;
        let hash = cheap()
            .hash_new(pw("plaid-otter-cathedral"), vec![])
            .await
            .unwrap();
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"plaid-otter-cathedral", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"plaid-otter-cathedrax", &parsed)
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let cost = HashCost {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        // Room for the start's calibration and a hash behind it.
        let p = Passwords::new(cost, HashPoolSize { threads: 1, queue: 2 }, 0).unwrap();
        // Occupy the only thread, and wait until it is really busy.
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        // The start's calibration first (one hash waits for it).
        p.verify(pw("whatever-it-is-123"), None).await.unwrap();
        p.pool
            .0
            .push(Box::new(move |_| {
                started_tx.send(()).unwrap();
                let _ = gate.recv();
            }))
            .unwrap();
        started.recv().unwrap();
        // Fill the queue's two slots; the second says when it has run.
        let (drained_tx, drained) = std::sync::mpsc::channel::<()>();
        assert!(p.pool.0.push(Box::new(|_| {})).is_ok());
        assert!(
            p.pool
                .0
                .push(Box::new(move |_| drained_tx.send(()).unwrap()))
                .is_ok()
        );
        let refused = p.verify(pw("whatever-it-is-123"), None).await;
        assert!(matches!(refused, Err(Error::Unavailable { retry_after: 1 })));
        release.send(()).unwrap();
        // Wait until the thread has worked through the queue.
        drained.recv().unwrap();
        let again = p.verify(pw("whatever-it-is-123"), None).await;
        assert!(again.is_ok(), "served again once drained: {:?}", again.err());
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
        assert!(
            !err.to_problem().errors.unwrap_or_default()[0]
                .message
                .contains("password1")
        );
    }
}
