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

async fn list_sessions(app: &TestApp, access: &str, query: &str) -> Value {
    let resp = app
        .request(Method::GET, &format!("/api/v1/me/sessions{query}"), Some(access))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

async fn end_session(app: &TestApp, access: &str, id: &str) -> reqwest::Response {
    app.request(Method::DELETE, &format!("/api/v1/me/sessions/{id}"), Some(access))
        .send()
        .await
        .unwrap()
}

/// The `sid` claim of an access token, read from its (unverified) payload.
fn session_id(access: &str) -> String {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let body = access
        .strip_prefix("v4.public.")
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    let raw = Base64UrlUnpadded::decode_vec(body).unwrap();
    // The payload is the claims' JSON followed by a 64-byte signature.
    let claims: Value = serde_json::from_slice(&raw[..raw.len() - 64]).unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_user_sees_their_live_sessions_with_where_they_came_from() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let resp = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("user-agent", "Phone\tNotes/2.1")
        .json(&serde_json::json!({ "email": owner.email, "password": owner.password }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let phone: Value = resp.json().await.unwrap();
    let phone_access = phone["access_token"].as_str().unwrap();
    let stranger = app.new_user().await;

    let page = list_sessions(&app, phone_access, "").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["id"], session_id(phone_access), "newest first");
    assert_eq!(items[0]["current"], true);
    assert_eq!(
        items[0]["user_agent"], "PhoneNotes/2.1",
        "control characters dropped"
    );
    assert_eq!(items[0]["client_network"], "127.0.0.0/24", "only the network");
    assert_eq!(items[1]["id"], session_id(&owner.access));
    assert_eq!(items[1]["current"], false);
    for field in ["created_at", "last_used_at"] {
        assert!(items[0][field].is_string(), "{field}");
    }
    let text = page.to_string();
    assert!(
        !text.contains(&owner.refresh) && !text.contains(phone_access),
        "no secrets"
    );
    assert!(
        !text.contains(&session_id(&stranger.access)),
        "only the caller's account"
    );

    let first = list_sessions(&app, phone_access, "?limit=1").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = list_sessions(&app, phone_access, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(second["items"][0]["id"], session_id(&owner.access));
    assert!(second.get("next_cursor").is_none(), "{second}");
}

#[tokio::test]
async fn ending_one_session_stops_it_and_nothing_else() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let (thief_access, thief_refresh) = another_session(&app, &owner.email, &owner.password).await;
    let resp = end_session(&app, &owner.access, &session_id(&thief_access)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me(&thief_access).await.status(),
        StatusCode::UNAUTHORIZED,
        "at once"
    );
    assert_eq!(
        app.refresh(&thief_refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me(&owner.access).await.status(), StatusCode::OK);
    let listed = list_sessions(&app, &owner.access, "").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_problem(
        end_session(&app, &owner.access, &session_id(&thief_access)).await,
        StatusCode::NOT_FOUND,
        "already ended",
    )
    .await;

    let app = app.restart().await;
    assert_eq!(
        app.me(&thief_access).await.status(),
        StatusCode::UNAUTHORIZED,
        "after a restart"
    );
    let resp = end_session(&app, &owner.access, &session_id(&owner.access)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "its own session: a logout");
    assert_eq!(app.me(&owner.access).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_accounts_session_cannot_be_ended_or_seen() {
    let app = spawn_app().await;
    let attacker = app.new_user().await;
    let victim = app.new_user().await;
    assert_problem(
        end_session(&app, &attacker.access, &session_id(&victim.access)).await,
        StatusCode::NOT_FOUND,
        "another account's session id, like another's note",
    )
    .await;
    assert_eq!(app.me(&victim.access).await.status(), StatusCode::OK, "untouched");
    assert_eq!(app.refresh(&victim.refresh).await.status(), StatusCode::OK);
    assert_problem(
        end_session(&app, &attacker.access, "not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "a malformed id",
    )
    .await;
    let resp = app
        .request(
            Method::GET,
            "/api/v1/me/sessions?cursor=zzz",
            Some(&attacker.access),
        )
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "a bad cursor").await;
    for (method, path) in [
        (Method::GET, "/api/v1/me/sessions".to_owned()),
        (
            Method::DELETE,
            format!("/api/v1/me/sessions/{}", session_id(&victim.access)),
        ),
    ] {
        let resp = app.request(method, &path, None).send().await.unwrap();
        assert_problem(resp, StatusCode::UNAUTHORIZED, "no token").await;
    }
}
