//! `DELETE /api/v1/me/sessions`: a user who no longer trusts a token or a
//! device ends every session but the one they are using.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, assert_problem, spawn_app};

/// Logs in once more: (access, refresh) of a new session.
async fn another_session(app: &TestApp, email: &str, password: &str) -> (String, String) {
    let resp = app.login(email, password).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let pair: Value = resp.json().await.unwrap();
    (
        pair["access_token"].as_str().unwrap().to_owned(),
        pair["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn end_others(app: &TestApp, access: Option<&str>) -> reqwest::Response {
    app.request(Method::DELETE, "/api/v1/me/sessions", access)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn ending_the_other_sessions_stops_their_tokens_at_once_and_for_good() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let mut stolen = Vec::new();
    for _ in 0..3 {
        stolen.push(another_session(&app, &owner.email, &owner.password).await);
    }
    let bystander = app.new_user().await;

    assert_eq!(
        end_others(&app, Some(&owner.access)).await.status(),
        StatusCode::NO_CONTENT
    );
    for (access, refresh) in &stolen {
        assert_problem(
            app.me(access).await,
            StatusCode::UNAUTHORIZED,
            "an ended session's access token",
        )
        .await;
        assert_eq!(
            app.refresh(refresh).await.status(),
            StatusCode::UNAUTHORIZED,
            "an ended session's refresh token"
        );
    }
    assert_eq!(
        app.me(&owner.access).await.status(),
        StatusCode::OK,
        "the caller's session goes on"
    );
    assert_eq!(
        app.me(&bystander.access).await.status(),
        StatusCode::OK,
        "another account's session"
    );
    assert_eq!(
        end_others(&app, Some(&owner.access)).await.status(),
        StatusCode::NO_CONTENT,
        "again: nothing left to end"
    );

    let app = app.restart().await;
    for (access, refresh) in &stolen {
        assert_eq!(
            app.me(access).await.status(),
            StatusCode::UNAUTHORIZED,
            "after a restart"
        );
        assert_eq!(app.refresh(refresh).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.refresh(&owner.refresh).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&bystander.refresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn ending_sessions_needs_a_valid_access_token() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    assert_problem(end_others(&app, None).await, StatusCode::UNAUTHORIZED, "no token").await;
    assert_problem(
        end_others(&app, Some("v4.public.forged")).await,
        StatusCode::UNAUTHORIZED,
        "a forged token",
    )
    .await;
    assert_eq!(app.logout(&user.access).await.status(), StatusCode::NO_CONTENT);
    assert_problem(
        end_others(&app, Some(&user.access)).await,
        StatusCode::UNAUTHORIZED,
        "a logged-out token",
    )
    .await;
}
