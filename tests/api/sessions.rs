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

async fn change_password(app: &TestApp, access: &str, current: &str, new: &str) -> reqwest::Response {
    app.request(Method::PUT, "/api/v1/me/password", Some(access))
        .json(&serde_json::json!({ "current_password": current, "new_password": new }))
        .send()
        .await
        .unwrap()
}

const NEW_PASSWORD: &str = "saffron kettle meridian";

#[tokio::test]
async fn a_password_change_ends_every_other_session_and_the_old_password() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let thief = another_session(&app, &owner.email, &owner.password).await;
    let bystander = app.new_user().await;

    let resp = change_password(&app, &owner.access, &owner.password, NEW_PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me(&thief.0).await.status(),
        StatusCode::UNAUTHORIZED,
        "at once"
    );
    assert_eq!(app.refresh(&thief.1).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.me(&owner.access).await.status(),
        StatusCode::OK,
        "the caller's session goes on"
    );
    assert_eq!(app.me(&bystander.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.login(&owner.email, &owner.password).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&owner.email, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );

    let app = app.restart().await;
    assert_eq!(
        app.refresh(&thief.1).await.status(),
        StatusCode::UNAUTHORIZED,
        "after a restart"
    );
    assert_eq!(app.refresh(&owner.refresh).await.status(), StatusCode::OK);
    assert_eq!(
        app.login(&owner.email, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_wrong_current_password_changes_nothing_and_meets_the_backoff() {
    let app = crate::helpers::spawn_app_with(&["--login-free-failures", "2"]).await;
    let owner = app.new_user().await;
    let other = another_session(&app, &owner.email, &owner.password).await;
    let mut wrong = 0;
    loop {
        let resp = change_password(&app, &owner.access, "not the password", NEW_PASSWORD).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "a wrong current password").await;
        assert_eq!(crate::helpers::problem_fields(&problem), ["current_password"]);
        wrong += 1;
        assert!(wrong <= 3, "the account backs off after its free failures");
    }
    let resp = change_password(&app, &owner.access, &owner.password, NEW_PASSWORD).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_problem(
        resp,
        StatusCode::TOO_MANY_REQUESTS,
        "backing off, even with the right one",
    )
    .await;
    assert_eq!(app.me(&other.0).await.status(), StatusCode::OK, "nothing ended");
    app.advance_clock(std::time::Duration::from_secs(3600));
    assert_eq!(
        app.login(&owner.email, &owner.password).await.status(),
        StatusCode::OK,
        "the password is unchanged"
    );
}

#[tokio::test]
async fn a_new_password_must_be_strong_and_new() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    for (new, why) in [
        ("password", "a common password"),
        ("short", "too short"),
        (owner.password.as_str(), "the same password"),
    ] {
        let problem = assert_problem(
            change_password(&app, &owner.access, &owner.password, new).await,
            StatusCode::BAD_REQUEST,
            why,
        )
        .await;
        assert_eq!(
            crate::helpers::problem_fields(&problem),
            ["new_password"],
            "{why}"
        );
    }
    let resp = app
        .request(Method::PUT, "/api/v1/me/password", None)
        .json(&serde_json::json!({ "current_password": owner.password, "new_password": NEW_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "no token").await;
    assert_eq!(
        app.login(&owner.email, &owner.password).await.status(),
        StatusCode::OK
    );
}

/// Two sessions changing the password at once: one wins and ends the
/// other, whose change then fails; exactly one new password works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_password_changes_exactly_one_wins() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let second = another_session(&app, &owner.email, &owner.password).await;
    let candidates = ["saffron kettle meridian", "copper lantern tundra"];
    let (a, b) = tokio::join!(
        change_password(&app, &owner.access, &owner.password, candidates[0]),
        change_password(&app, &second.0, &owner.password, candidates[1]),
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::NO_CONTENT, StatusCode::UNAUTHORIZED]);
    let winner = usize::from(b.status() == StatusCode::NO_CONTENT);
    let tokens = [&owner.access, &second.0];
    assert_eq!(app.me(tokens[winner]).await.status(), StatusCode::OK);
    assert_eq!(
        app.me(tokens[1 - winner]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&owner.email, candidates[winner]).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login(&owner.email, candidates[1 - winner]).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
