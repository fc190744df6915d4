//! A restart on the same data directory keeps users, notes, keys and
//! revocations.

use std::time::Duration;

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

/// Regression: revoked sessions are remembered for one access-token life.
/// A restart with a shorter life used to forget them while their older,
/// longer-lived tokens still verified, so logged-out tokens worked again.
#[tokio::test]
async fn shortening_the_token_life_does_not_revive_logged_out_tokens() {
    let app = crate::helpers::spawn_app_with(&["--access-token-ttl", "1h"]).await;
    let user = app.new_user().await;
    assert_eq!(app.logout(&user.access).await.status(), StatusCode::NO_CONTENT);
    app.advance_clock(Duration::from_secs(120));
    let app = app.restart_with(&["--access-token-ttl", "1s"]).await;
    assert_problem(
        app.me(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "logged out before the restart",
    )
    .await;
}
