//! Signup, login, refresh rotation, reuse detection and logout.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{PASSWORD, assert_problem, problem_fields, spawn_app};

#[tokio::test]
async fn signup_returns_the_user_and_a_token_pair() {
    let app = spawn_app().await;
    let resp = app.signup("  Ada@Example.COM ", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["user"]["email"], "ada@example.com", "email is normalised");
    assert_eq!(body["user"]["role"], "user");
    assert!(
        body["user"].get("password_hash").is_none(),
        "the hash never leaves the server"
    );
    let tokens = &body["tokens"];
    assert!(tokens["access_token"].as_str().unwrap().starts_with("v4.public."));
    assert!(tokens["refresh_token"].as_str().unwrap().starts_with("nrt_"));
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900, "default access life is 15 minutes");

    let me: Value = app
        .me(tokens["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "ada@example.com");
}

#[tokio::test]
async fn a_second_signup_with_the_same_email_is_refused_without_detail() {
    let app = spawn_app().await;
    assert_eq!(
        app.signup("bob@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let again = app.signup("BOB@example.com", "another fine passphrase").await;
    let problem = assert_problem(again, StatusCode::CONFLICT, "same mailbox, other case").await;
    let text = problem.to_string();
    assert!(
        !text.contains("bob@example.com"),
        "the email is not echoed: {text}"
    );
}

#[tokio::test]
async fn weak_or_out_of_policy_passwords_are_rejected_naming_the_field() {
    let app = spawn_app().await;
    for (password, why) in [
        ("short", "under 8 characters"),
        ("password", "a top common password"),
        ("12345678", "digits in a row"),
        ("carolcarol", "built from the email"),
    ] {
        let resp = app.signup("carol@example.com", password).await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, why).await;
        assert_eq!(problem_fields(&problem), vec!["password"], "{why}");
        if password != "password" {
            assert!(
                !problem.to_string().contains(password),
                "{why}: the password is never echoed"
            );
        }
    }
    let long = "x".repeat(1025);
    let problem = assert_problem(
        app.signup("carol@example.com", &long).await,
        StatusCode::BAD_REQUEST,
        "1025 chars",
    )
    .await;
    assert_eq!(problem_fields(&problem), vec!["password"]);
}

#[tokio::test]
async fn bad_credentials_get_one_answer_whether_or_not_the_account_exists() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let wrong_password = app.login(&user.email, "not the right passphrase").await;
    let unknown_email = app.login("nobody@example.com", PASSWORD).await;
    let malformed_email = app.login("not-an-email", PASSWORD).await;
    let a = assert_problem(wrong_password, StatusCode::UNAUTHORIZED, "wrong password").await;
    let b = assert_problem(unknown_email, StatusCode::UNAUTHORIZED, "unknown email").await;
    let c = assert_problem(malformed_email, StatusCode::UNAUTHORIZED, "malformed email").await;
    assert_eq!(a, b, "same body for a wrong password and an unknown account");
    assert_eq!(a, c, "same body for a malformed email");

    let ok = app.login(&user.email.to_uppercase(), PASSWORD).await;
    assert_eq!(ok.status(), StatusCode::OK, "login ignores email case");
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_session() {
    let app = spawn_app().await;
    let user = app.new_user().await;

    let first = app.refresh(&user.refresh).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let rotated = first["refresh_token"].as_str().unwrap().to_owned();
    let access = first["access_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, user.refresh, "a new refresh token every time");
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);

    // The thief (or a confused client) presents the old token again, once
    // the grace for a retried refresh (10 s by default) has passed.
    app.advance_clock(std::time::Duration::from_secs(11));
    let replay = app.refresh(&user.refresh).await;
    assert_problem(replay, StatusCode::UNAUTHORIZED, "replayed refresh token").await;

    // The whole session is gone: the current refresh token and access token too.
    assert_problem(
        app.refresh(&rotated).await,
        StatusCode::UNAUTHORIZED,
        "session revoked",
    )
    .await;
    assert_problem(
        app.me(&access).await,
        StatusCode::UNAUTHORIZED,
        "access token of revoked session",
    )
    .await;
    assert_problem(
        app.me(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "first access token too",
    )
    .await;

    // Other sessions of the same user are untouched.
    let other: Value = app.login(&user.email, PASSWORD).await.json().await.unwrap();
    assert_eq!(
        app.me(other["access_token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_forged_refresh_token_for_a_real_session_does_not_revoke_it() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    // Keep the session id part, change the secret part.
    let mut forged = user.refresh.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_problem(
        app.refresh(&forged).await,
        StatusCode::UNAUTHORIZED,
        "forged secret",
    )
    .await;
    assert_eq!(
        app.refresh(&user.refresh).await.status(),
        StatusCode::OK,
        "the real token still works"
    );
}

#[tokio::test]
async fn garbage_refresh_tokens_are_401() {
    let app = spawn_app().await;
    for token in ["", "nrt_", "nrt_%%%", "v4.public.abc", &"A".repeat(128)] {
        assert_problem(app.refresh(token).await, StatusCode::UNAUTHORIZED, token).await;
    }
}

#[tokio::test]
async fn logout_stops_the_access_token_at_once() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    assert_eq!(app.me(&user.access).await.status(), StatusCode::OK);
    assert_eq!(app.logout(&user.access).await.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.me(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "access after logout",
    )
    .await;
    assert_problem(
        app.refresh(&user.refresh).await,
        StatusCode::UNAUTHORIZED,
        "refresh after logout",
    )
    .await;
    assert_problem(
        app.logout(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "logout twice",
    )
    .await;
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    app.advance_clock(Duration::from_secs(31 * 86_400));
    assert_problem(
        app.refresh(&user.refresh).await,
        StatusCode::UNAUTHORIZED,
        "idle 31 days",
    )
    .await;
}

#[tokio::test]
async fn a_busy_session_still_ends_at_the_absolute_limit() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut refresh = user.refresh.clone();
    for _ in 0..3 {
        app.advance_clock(Duration::from_secs(29 * 86_400));
        let resp = app.refresh(&refresh).await;
        assert_eq!(resp.status(), StatusCode::OK, "refreshed within the idle limit");
        let body: Value = resp.json().await.unwrap();
        refresh = body["refresh_token"].as_str().unwrap().to_owned();
        let expires_at = body["expires_at"].as_str().unwrap().to_owned();
        assert!(!expires_at.is_empty());
    }
    app.advance_clock(Duration::from_secs(4 * 86_400)); // day 91
    assert_problem(
        app.refresh(&refresh).await,
        StatusCode::UNAUTHORIZED,
        "past 90 days",
    )
    .await;
}
