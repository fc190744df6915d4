//! Databases of schema versions 2 and 3, as the releases before wrote them
//! (`tests/fixtures/make-fixture.sh`, through their HTTP API), are upgraded
//! to this build's schema at start and every record reads back: through
//! the storage operations, then through the API of the real server. The
//! upgrade to 4 seals the text at rest: afterwards no email or note title
//! of the fixture is left in the data directory.

use std::path::Path;

use notesd::auth::keyring::KeyRing;
use notesd::domain::UserId;
use notesd::storage::{Backend, CounterOf, NoteQuery, RecordCounts, Storage, redb};
use reqwest::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;

use crate::helpers::{PASSWORD, master_key_file, spawn_app_in};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn copy_of_fixture(version: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = Path::new(FIXTURES);
    std::fs::copy(
        from.join(format!("schema-v{version}.redb")),
        dir.path().join(notesd::app::DB_FILE),
    )
    .unwrap();
    let ring = from.join(format!("schema-v{version}.keyring.json"));
    if ring.exists() {
        let to = dir.path().join(notesd::auth::keyring::KEYRING_FILE);
        std::fs::copy(ring, &to).unwrap();
        std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    dir
}

/// The store's options from the directory's key ring, as the server makes
/// them.
fn options_for(dir: &Path) -> redb::Options {
    let masters = notesd::masterkey::MasterKeys::create(&master_key_file()).unwrap();
    let ring = KeyRing::load_or_create(dir, &masters).unwrap();
    redb::Options::for_ring(&ring)
}

/// Whether any file of `dir` holds `text`.
fn directory_holds(dir: &Path, text: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        bytes.windows(text.len()).any(|w| w == text.as_bytes())
    })
}

#[tokio::test]
async fn a_schema_2_database_upgrades_and_reads_back_whole() {
    upgrades_and_reads_back_whole(2, 0).await;
}

#[tokio::test]
async fn a_schema_3_database_from_the_release_before_sealing_is_sealed_and_reads_back_whole() {
    let dir = copy_of_fixture(3);
    assert!(
        directory_holds(dir.path(), "alice@example.com"),
        "the fixture is plain"
    );
    assert!(directory_holds(dir.path(), "k4.secret"), "so is its key ring");
    upgrades_and_reads_back_whole_in(dir, 5).await;
}

async fn upgrades_and_reads_back_whole(version: u32, audit_records: u64) {
    upgrades_and_reads_back_whole_in(copy_of_fixture(version), audit_records).await;
}

async fn upgrades_and_reads_back_whole_in(dir: tempfile::TempDir, audit_records: u64) {
    {
        let store = Backend::open(&dir.path().join(notesd::app::DB_FILE), options_for(dir.path())).unwrap();
        assert_eq!(store.schema_version().unwrap(), redb::SCHEMA_VERSION);
        assert_eq!(
            store.record_counts().await.unwrap(),
            RecordCounts {
                users: 2,
                sessions: 2,
                notes: 4,
                tag_entries: 4,
                login_counters: 1,
                ghost_counters: 1,
                known_client_lists: 2,
                audit_records,
            }
        );
        if audit_records > 0 {
            assert!(
                matches!(
                    store.verify_audit().await.unwrap(),
                    notesd::audit::AuditVerdict::Intact { .. }
                ),
                "the chain survives the copy"
            );
        }
        let alice = store.user_by_email("alice@example.com").await.unwrap().unwrap();
        let bob = store.user_by_email("bob@example.com").await.unwrap().unwrap();
        assert!(alice.password_hash.starts_with("$argon2id$") && !alice.disabled);

        let (notes, next) = store.list_notes(alice.id, NoteQuery::first(10)).await.unwrap();
        let notes = notes.records();
        assert_eq!(next, None);
        let summary: Vec<(&str, &str, Vec<&str>, u64)> = notes
            .iter()
            .map(|n| {
                let tags = n.tags.iter().map(String::as_str).collect();
                (n.title.as_str(), n.content.as_str(), tags, n.version)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("third, edited", "three", vec![], 2),
                ("second", "two", vec!["b"], 1),
                ("first", "one", vec!["a", "b"], 1),
            ]
        );
        assert!(notes[0].updated_at > notes[0].created_at, "the edit's time");
        assert_eq!(store.usage(alice.id).await.unwrap(), (3, 38));
        let tagged = NoteQuery {
            tag: Some("b".into()),
            ..NoteQuery::first(10)
        };
        assert_eq!(store.list_notes(alice.id, tagged).await.unwrap().0.len(), 2);
        let (bobs, _) = store.list_notes(bob.id, NoteQuery::first(10)).await.unwrap();
        let bobs = bobs.records();
        assert_eq!((bobs.len(), bobs[0].title.as_str()), (1, "bob's"));
        assert_eq!(store.usage(bob.id).await.unwrap(), (1, 6));

        // Bob logged out; Alice's session was refreshed once.
        let revoked = store
            .sessions_revoked_since(OffsetDateTime::UNIX_EPOCH)
            .await
            .unwrap();
        assert_eq!(revoked.len(), 1);
        let ended = store.session(revoked[0]).await.unwrap().unwrap();
        assert_eq!(ended.user_id, bob.id);
        for user in [alice.id, bob.id] {
            let known = store.known_clients(user).await.unwrap();
            assert_eq!(known.len(), 2, "the signup's device and address");
        }
        let ghost = store
            .login_counter("ghost@example.com", CounterOf::Ghost { cap: 10 })
            .await
            .unwrap()
            .expect("the made-up email's counter");
        assert_eq!(ghost.failures, 1);
        assert!(store.user(UserId::generate()).await.unwrap().is_none());
    }

    serves_the_upgraded_file(dir).await;
}

/// The real server on the upgraded file.
async fn serves_the_upgraded_file(dir: tempfile::TempDir) {
    let app = spawn_app_in(dir).await;
    let login = app.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let token: Value = login.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    let page: Value = app.list_notes(token, "").await.json().await.unwrap();
    let titles: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["third, edited", "second", "first"]);
    assert_eq!(
        app.login("bob@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    let tagged: Value = app.list_notes(token, "tag=a").await.json().await.unwrap();
    assert_eq!(
        tagged["items"].as_array().unwrap().len(),
        1,
        "the tag index, rebuilt blind"
    );
    for text in [
        "alice@example.com",
        "bob@example.com",
        "ghost@example.com",
        "third, edited",
        "bob's",
        "k4.secret",
    ] {
        assert!(
            !directory_holds(&app.data_dir, text),
            "{text} is left in the data directory"
        );
    }
    assert!(!app.data_dir.join("notesd.sealing").exists());
}
