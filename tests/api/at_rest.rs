//! Encryption at rest, attacked as a thief who copied the data directory:
//! after writing distinctive note text, tags and emails (and a failed
//! login for an email with no account), no file of the directory holds any
//! of them, nor a signing key; and a server given another master key
//! refuses to start rather than serve what it cannot open.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, spawn_app, spawn_app_in};

const SECRETS: [&str; 6] = [
    "zanzibar-quokka@example.org",
    "phantom-ledger@example.org",
    "Aubergine Protocol",
    "the vault code is 8841-KESTREL",
    "tagmarmoset",
    "plaid otter",
];

/// Every file under `dir` (recursively) that holds `needle`.
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

/// Builds the server on `dir` with the master key `key`; its refusal if
/// it refuses.
async fn refusal(dir: &str, key: &str) -> String {
    let settings = notesd::Settings::from_args(["--data-dir", dir, "--master-key-file", key]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    notesd::Application::build(settings, listener)
        .await
        .err()
        .expect("refused")
        .to_string()
}

#[tokio::test]
async fn a_copied_data_directory_shows_no_note_text_tag_email_or_key() {
    let mut app = spawn_app().await;
    let signup = app.signup(SECRETS[0], PASSWORD).await;
    assert_eq!(signup.status(), StatusCode::CREATED);
    let body: serde_json::Value = signup.json().await.unwrap();
    let access = body["tokens"]["access_token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let created = app
            .create_note(
                &access,
                &json!({"title": SECRETS[2], "content": SECRETS[3], "tags": [SECRETS[4]]}),
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    // A failed login for an email with no account (a stored counter).
    assert_eq!(
        app.login(SECRETS[1], "wrong password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The tag filter and search still work over sealed values.
    let tagged: serde_json::Value = app
        .list_notes(&access, &format!("tag={}", SECRETS[4]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tagged["items"].as_array().unwrap().len(), 3);
    let found: serde_json::Value = app.list_notes(&access, "q=kestrel").await.json().await.unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 3);

    app.stop().await;
    for secret in SECRETS {
        assert_eq!(
            files_holding(&app.data_dir, secret.as_bytes()),
            Vec::<String>::new(),
            "{secret}"
        );
    }
    for key_material in ["k4.secret", "$argon2id$"] {
        assert_eq!(
            files_holding(&app.data_dir, key_material.as_bytes()),
            Vec::<String>::new(),
            "{key_material}"
        );
    }
}

#[tokio::test]
async fn a_start_with_another_master_key_is_refused_with_one_clear_line() {
    let mut app = spawn_app().await;
    app.new_user().await;
    app.stop().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let other = elsewhere.path().join("other.key");
    notesd::masterkey::MasterKeys::create(&other).unwrap();
    let dir = app.data_dir.to_str().unwrap().to_owned();
    for key in [
        other.to_str().unwrap(),
        elsewhere.path().join("missing/none.key").to_str().unwrap(),
    ] {
        let line = refusal(&dir, key).await;
        assert!(!line.contains('\n') && line.contains("master key"), "{line}");
    }
    // A key file inside the data directory is refused too.
    let inside = app.data_dir.join("master.key");
    let refused = refusal(&dir, inside.to_str().unwrap()).await;
    assert!(refused.contains("inside the data directory"), "{refused}");
    // With its own key it starts as before.
    let again = spawn_app_in(app.dir.take().unwrap()).await;
    assert_eq!(
        again.login("nobody@example.org", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn two_first_starts_at_once_leave_one_key_ring_that_opens_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let key = crate::helpers::master_key_file();
    let build = || {
        let settings = notesd::Settings::from_args([
            "--data-dir",
            data.as_str(),
            "--listen",
            "127.0.0.1:0",
            "--master-key-file",
            key.to_str().unwrap(),
        ])
        .unwrap();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            notesd::Application::build(settings, listener).await
        }
    };
    let (a, b) = tokio::join!(build(), build());
    let (started, refused): (Vec<_>, Vec<_>) = [a, b].into_iter().partition(Result::is_ok);
    assert_eq!((started.len(), refused.len()), (1, 1), "one start, one refused");
    let line = refused.into_iter().next().unwrap().err().unwrap().to_string();
    assert!(line.contains("already running"), "{line}");
    drop(started);
    // The ring left behind opens the data written with it.
    let mut app = spawn_app_in(dir).await;
    let user = app.new_user().await;
    app.create_note(&user.access, &json!({"title": "after the race"}))
        .await;
    app.stop().await;
    let again = spawn_app_in(app.dir.take().unwrap()).await;
    let login: serde_json::Value = again.login(&user.email, PASSWORD).await.json().await.unwrap();
    let page: serde_json::Value = again
        .list_notes(login["access_token"].as_str().unwrap(), "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["title"], "after the race");
}

#[tokio::test]
async fn a_database_without_its_key_ring_is_refused_and_nothing_is_made() {
    let mut app = spawn_app().await;
    app.new_user().await;
    app.stop().await;
    std::fs::remove_file(app.data_dir.join("keyring.json")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let key = elsewhere.path().join("new.key");
    let dir = app.data_dir.to_str().unwrap().to_owned();
    let refused = refusal(&dir, key.to_str().unwrap()).await;
    assert!(refused.contains("no keyring.json"), "{refused}");
    assert!(!app.data_dir.join("keyring.json").exists(), "no new ring made");
    assert!(!key.exists(), "no master key made");
}
