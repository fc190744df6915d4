//! A database of schema version 2, as the release before the storage seam
//! wrote it (`tests/fixtures/make-fixture.sh`, through its HTTP API), is
//! upgraded to this build's schema at start and every record reads back:
//! through the storage operations, then through the API of the real server.

use notesd::domain::UserId;
use notesd::storage::{Backend, CounterOf, NoteQuery, RecordCounts, Storage, redb};
use reqwest::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;

use crate::helpers::{PASSWORD, spawn_app_in};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-v2.redb");

fn copy_of_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(FIXTURE, dir.path().join(notesd::app::DB_FILE)).unwrap();
    dir
}

#[tokio::test]
async fn a_schema_2_database_upgrades_and_reads_back_whole() {
    let dir = copy_of_fixture();
    {
        let store = Backend::open(&dir.path().join(notesd::app::DB_FILE), redb::Options::default()).unwrap();
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
                audit_records: 0,
            }
        );
        let alice = store.user_by_email("alice@example.com").await.unwrap().unwrap();
        let bob = store.user_by_email("bob@example.com").await.unwrap().unwrap();
        assert!(alice.password_hash.starts_with("$argon2id$") && !alice.disabled);

        let (notes, next) = store.list_notes(alice.id, NoteQuery::first(10)).await.unwrap();
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

    // The real server on the upgraded file.
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
}
