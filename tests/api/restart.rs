//! A restart on the same data directory keeps users, notes, keys and
//! revocations.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn restart_keeps_users_notes_keys_and_revocations() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let note = app.new_note(&user, "survives restarts", &["durable"]).await;
    let keys_before = app.keys().await;
    let logged_out = app.new_user().await;
    assert_eq!(
        app.logout(&logged_out.access).await.status(),
        StatusCode::NO_CONTENT
    );

    let app = app.restart().await;

    assert_eq!(app.keys().await, keys_before, "same signing keys");
    let id = note["id"].as_str().unwrap();
    let read = app.get_note(&user.access, id).await;
    assert_eq!(
        read.status(),
        StatusCode::OK,
        "an access token from before the restart still verifies"
    );
    let read: Value = read.json().await.unwrap();
    assert_eq!(read, note);
    assert_eq!(
        app.login(&user.email, &user.password).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.refresh(&user.refresh).await.status(),
        StatusCode::OK,
        "sessions survive"
    );
    assert_problem(
        app.me(&logged_out.access).await,
        StatusCode::UNAUTHORIZED,
        "revocation survives",
    )
    .await;
}
