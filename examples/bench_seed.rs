//! Seeds a data directory for `make bench`: users with known passwords and
//! their notes, written straight through the store in large transactions
//! (seeding 100 000 notes one HTTP request and one fsync at a time would
//! take minutes). Usage: `bench_seed DATA_DIR EMAIL:COUNT[:KIND]...`, where
//! KIND is the notes' content: `typical` (the default: a short note),
//! `escaped` (100 000 characters of U+0001, which JSON escapes six-fold: the
//! largest page a list can return) or `accented` (50 000 characters of "é",
//! two bytes each and case-folded by a search: the costliest scan).

use notesd::auth::password::{HashCost, HashPoolSize, Passwords};
use notesd::domain::{NoteId, Password, Role, SessionId, UserId};
use notesd::storage::{Backend, NoteRecord, SessionRecord, Storage, UserRecord, redb::Options};
use time::OffsetDateTime;

pub const PASSWORD: &str = "bench otter cathedral";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .ok_or("usage: bench_seed DATA_DIR EMAIL:COUNT[:KIND]...")?,
    );
    std::fs::create_dir_all(&dir)?;
    // The key ring the server will open, sealed with its master key.
    let settings = notesd::Settings::from_args(["--data-dir", dir.to_str().ok_or("a UTF-8 path")?])?;
    let masters = notesd::app::open_master_keys(&settings)?;
    let ring = notesd::auth::keyring::KeyRing::load_or_create(&dir, &masters)?;
    let store = Backend::open(&dir.join(notesd::app::DB_FILE), Options::for_ring(&ring))?;
    let passwords = Passwords::new(HashCost::default(), HashPoolSize { threads: 1, queue: 4 }, 0)?;
    for spec in args {
        let mut fields = spec.split(':');
        let (Some(email), Some(count)) = (fields.next(), fields.next()) else {
            return Err("EMAIL:COUNT[:KIND]".into());
        };
        let count: usize = count.parse()?;
        let content = match fields.next().unwrap_or("typical") {
            "typical" => "Some text of a typical short note, a few lines long. ".repeat(4),
            "escaped" => "\u{1}".repeat(100_000),
            "accented" => "é".repeat(50_000),
            other => return Err(format!("unknown KIND {other}: typical, escaped or accented").into()),
        };
        let password = Password::parse(PASSWORD.to_owned()).map_err(|e| e.message)?;
        let started = std::time::Instant::now();
        let hash = passwords.hash_new(password, vec![]).await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        println!("argon2id hash at the default cost, strength check included: {ms:.1} ms");
        let now = OffsetDateTime::now_utc();
        let user = UserRecord {
            id: UserId::generate(),
            email: email.to_owned(),
            password_hash: hash,
            role: Role::User,
            disabled: false,
            created_at: now,
        };
        // Its first session, as a signup leaves it (never used here).
        let session = SessionRecord {
            id: SessionId::generate(),
            user_id: user.id,
            refresh_hash: [0; 32],
            previous_hashes: Vec::new(),
            created_at: now,
            last_refreshed_at: now,
            revoked_at: None,
            client: None,
            user_agent: None,
            second_factor: false,
        };
        store
            .create_account(user.clone(), Some(session), Vec::new(), None, Vec::new())
            .await?;
        // Batches of about 64 MiB of content, so large notes do not all sit
        // in memory at once.
        let batch = ((64 << 20) / content.len().max(1)).max(1);
        for start in (0..count).step_by(batch) {
            let notes: Vec<NoteRecord> = (start..count.min(start + batch))
                .map(|i| {
                    let now = OffsetDateTime::now_utc();
                    NoteRecord {
                        id: NoteId::generate(),
                        title: format!("Note number {i}"),
                        content: content.clone(),
                        tags: vec![format!("t{}", i % 10)],
                        created_at: now,
                        updated_at: now,
                        version: 1,
                    }
                })
                .collect();
            store.import_notes(user.id, notes).await?;
        }
        println!("{email}: {count} notes");
    }
    Ok(())
}
