//! `/api/v1/admin`: who may call it, what each change does to tokens
//! already issued, and the guard that keeps one admin.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, TestUser, assert_problem, spawn_app};

const ID: &str = "0190d9a1-1111-7000-8000-000000000000";

/// Every admin operation, with a body where it takes one.
fn admin_routes(target: &str) -> Vec<(Method, String, Option<Value>)> {
    let user = |rest: &str| format!("/api/v1/admin/users/{target}{rest}");
    vec![
        (Method::GET, "/api/v1/admin/users".to_owned(), None),
        (
            Method::POST,
            "/api/v1/admin/users".to_owned(),
            Some(json!({"email": "made@example.com", "password": PASSWORD})),
        ),
        (Method::GET, user(""), None),
        (Method::DELETE, user(""), None),
        (Method::PUT, user("/role"), Some(json!({"role": "admin"}))),
        (Method::POST, user("/disable"), None),
        (Method::POST, user("/enable"), None),
        (
            Method::PUT,
            user("/password"),
            Some(json!({"password": "saffron kettle meridian"})),
        ),
        (Method::DELETE, user("/sessions"), None),
        (Method::GET, "/api/v1/admin/audit".to_owned(), None),
        (Method::POST, "/api/v1/admin/invites".to_owned(), Some(json!({}))),
        (Method::GET, "/api/v1/admin/invites".to_owned(), None),
        (Method::DELETE, format!("/api/v1/admin/invites/{ID}"), None),
    ]
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.request(method, path, Some(token));
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

async fn user_of(app: &TestApp, admin: &TestUser, id: &str) -> Value {
    let resp = call(
        app,
        Method::GET,
        &format!("/api/v1/admin/users/{id}"),
        &admin.access,
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_user_gets_403_on_every_admin_route_and_nothing_changes() {
    let app = spawn_app().await;
    let admin = app.new_admin().await;
    let user = app.new_user().await;
    for (method, path, body) in admin_routes(&admin.id) {
        let resp = call(&app, method.clone(), &path, &user.access, body.clone()).await;
        assert_problem(resp, StatusCode::FORBIDDEN, &format!("a user: {method} {path}")).await;
        let mut anonymous = app.request(method.clone(), &path, None);
        if let Some(body) = body {
            anonymous = anonymous.json(&body);
        }
        let resp = anonymous.send().await.unwrap();
        assert_problem(
            resp,
            StatusCode::UNAUTHORIZED,
            &format!("anonymous: {method} {path}"),
        )
        .await;
    }
    let seen = user_of(&app, &admin, &admin.id).await;
    assert_eq!(
        (seen["role"].as_str(), seen["disabled"].as_bool()),
        (Some("admin"), Some(false))
    );
    assert_eq!(app.me(&admin.access).await.status(), StatusCode::OK, "still in");
}

#[tokio::test]
async fn role_changes_reach_tokens_already_issued_on_the_next_request() {
    let app = spawn_app().await;
    let admin = app.new_admin().await;
    let other = app.new_user().await;
    let users = "/api/v1/admin/users";
    // Promoted: the token it holds works at once, no new login.
    let resp = call(
        &app,
        Method::PUT,
        &format!("{users}/{}/role", other.id),
        &admin.access,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        call(&app, Method::GET, users, &other.access, None).await.status(),
        StatusCode::OK
    );
    // Demoted: its still-valid token is refused at once.
    let resp = call(
        &app,
        Method::PUT,
        &format!("{users}/{}/role", other.id),
        &admin.access,
        Some(json!({"role": "user"})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_problem(
        call(&app, Method::GET, users, &other.access, None).await,
        StatusCode::FORBIDDEN,
        "demoted",
    )
    .await;
    assert_eq!(
        app.me(&other.access).await.status(),
        StatusCode::OK,
        "still a user"
    );
    let resp = call(
        &app,
        Method::PUT,
        &format!("{users}/{}/role", other.id),
        &admin.access,
        Some(json!({"role": "root"})),
    )
    .await;
    assert_problem(resp, StatusCode::BAD_REQUEST, "no such role").await;
}

#[tokio::test]
async fn disabling_ends_every_session_at_once_and_refuses_login_until_enabled() {
    let app = spawn_app().await;
    let admin = app.new_admin().await;
    let target = app.new_user().await;
    let path = |what: &str| format!("/api/v1/admin/users/{}/{what}", target.id);
    let resp = call(&app, Method::POST, &path("disable"), &admin.access, None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.me(&target.access).await,
        StatusCode::UNAUTHORIZED,
        "a disabled user's token",
    )
    .await;
    assert_eq!(
        app.refresh(&target.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&target.email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(user_of(&app, &admin, &target.id).await["disabled"], true);

    let app = app.restart().await;
    assert_eq!(
        app.me(&target.access).await.status(),
        StatusCode::UNAUTHORIZED,
        "after a restart"
    );
    let resp = call(&app, Method::POST, &path("enable"), &admin.access, None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.login(&target.email, PASSWORD).await.status(), StatusCode::OK);
    assert_eq!(
        app.me(&target.access).await.status(),
        StatusCode::UNAUTHORIZED,
        "old sessions stay ended"
    );
}

#[tokio::test]
async fn an_admin_ends_sessions_resets_passwords_and_deletes_accounts() {
    let app = spawn_app().await;
    let admin = app.new_admin().await;
    let target = app.new_user().await;
    app.new_note(&target, "private words", &[]).await;
    let path = |what: &str| format!("/api/v1/admin/users/{}{what}", target.id);

    let seen = user_of(&app, &admin, &target.id).await;
    assert_eq!(seen["notes"], 1);
    assert!(!seen.to_string().contains("private words"), "no note content");

    let resp = call(&app, Method::DELETE, &path("/sessions"), &admin.access, None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&target.access).await.status(), StatusCode::UNAUTHORIZED);

    let login: Value = app.login(&target.email, PASSWORD).await.json().await.unwrap();
    let access = login["access_token"].as_str().unwrap().to_owned();
    let new_password = "saffron kettle meridian";
    let resp = call(
        &app,
        Method::PUT,
        &path("/password"),
        &admin.access,
        Some(json!({"password": "password"})),
    )
    .await;
    assert_problem(resp, StatusCode::BAD_REQUEST, "a weak password").await;
    let resp = call(
        &app,
        Method::PUT,
        &path("/password"),
        &admin.access,
        Some(json!({"password": new_password})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me(&access).await.status(),
        StatusCode::UNAUTHORIZED,
        "a reset ends sessions"
    );
    assert_eq!(
        app.login(&target.email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let login: Value = app.login(&target.email, new_password).await.json().await.unwrap();
    let access = login["access_token"].as_str().unwrap().to_owned();

    let resp = call(&app, Method::DELETE, &path(""), &admin.access, None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.me(&access).await.status(),
        StatusCode::UNAUTHORIZED,
        "deleted"
    );
    assert_problem(
        call(&app, Method::GET, &path(""), &admin.access, None).await,
        StatusCode::NOT_FOUND,
        "gone",
    )
    .await;
    assert_eq!(
        app.signup(&target.email, PASSWORD).await.status(),
        StatusCode::CREATED,
        "the email is free"
    );
    for (method, rest) in [
        (Method::GET, ""),
        (Method::POST, "/disable"),
        (Method::DELETE, "/sessions"),
    ] {
        let resp = call(
            &app,
            method,
            &format!("/api/v1/admin/users/{ID}{rest}"),
            &admin.access,
            None,
        )
        .await;
        assert_problem(resp, StatusCode::NOT_FOUND, "no such account").await;
    }
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted_disabled_or_deleted() {
    let app = spawn_app().await;
    let admin = app.new_admin().await;
    let base = format!("/api/v1/admin/users/{}", admin.id);
    for (method, path, body) in [
        (Method::PUT, format!("{base}/role"), Some(json!({"role": "user"}))),
        (Method::POST, format!("{base}/disable"), None),
        (Method::DELETE, base.clone(), None),
    ] {
        let resp = call(&app, method, &path, &admin.access, body).await;
        assert_problem(resp, StatusCode::CONFLICT, &path).await;
    }
    let resp = app
        .request(Method::DELETE, "/api/v1/me", Some(&admin.access))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::CONFLICT, "the last admin deleting itself").await;
    let (ok, _, err) = app.cli(&["user", "disable", "--email", &admin.email], "").await;
    assert!(!ok && err.contains("no enabled admin"), "{err}");

    // Two admins demoting each other at once: one of them stays.
    let second = app.new_admin().await;
    let demote = |by: &TestUser, whom: &TestUser| {
        let req = app
            .request(
                Method::PUT,
                &format!("/api/v1/admin/users/{}/role", whom.id),
                Some(&by.access),
            )
            .json(&json!({"role": "user"}));
        async move { req.send().await.unwrap().status() }
    };
    let (a, b) = tokio::join!(demote(&admin, &second), demote(&second, &admin));
    let statuses = [a, b];
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    let mut left = 0;
    for user in [&admin, &second] {
        let resp = call(&app, Method::GET, "/api/v1/admin/users", &user.access, None).await;
        left += usize::from(resp.status() == StatusCode::OK);
    }
    assert_eq!(left, 1, "exactly one admin is left: {statuses:?}");
}

#[tokio::test]
async fn an_admin_lists_accounts_by_email_prefix_in_pages() {
    let app = spawn_app().await;
    let admin = app.new_admin().await;
    for name in ["kim", "kit", "kiwi", "lou"] {
        assert_eq!(
            app.signup(&format!("{name}@example.com"), PASSWORD)
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let page = |query: String| {
        let req = app.request(
            Method::GET,
            &format!("/api/v1/admin/users{query}"),
            Some(&admin.access),
        );
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()
        }
    };
    let emails = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = page("?prefix=KI&limit=2".to_owned()).await;
    assert_eq!(
        emails(&first),
        ["kim@example.com", "kit@example.com"],
        "folded like emails"
    );
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = page(format!("?prefix=ki&limit=2&cursor={cursor}")).await;
    assert_eq!(emails(&second), ["kiwi@example.com"]);
    assert!(second.get("next_cursor").is_none());
    let resp = app
        .request(Method::GET, "/api/v1/admin/users?cursor=%%%", Some(&admin.access))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "a bad cursor").await;
}

#[tokio::test]
async fn the_audit_log_is_filtered_by_user_kind_and_time() {
    let app = spawn_app().await;
    let admin = app.new_admin().await;
    let user = app.new_user().await;
    app.login(&user.email, "not the password").await;
    let audit = |query: &str| {
        let req = app.request(
            Method::GET,
            &format!("/api/v1/admin/audit{query}"),
            Some(&admin.access),
        );
        async move { req.send().await.unwrap() }
    };
    let kinds = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let page: Value = audit(&format!("?user={}", user.id)).await.json().await.unwrap();
    assert_eq!(kinds(&page), ["login_failed", "signup"]);
    let page: Value = audit("?kind=role_changed").await.json().await.unwrap();
    assert_eq!(kinds(&page), ["role_changed"]);
    assert_eq!(page["items"][0]["actor"], "operator", "made on the command line");
    let page: Value = audit("?since=2999-01-01T00:00:00Z").await.json().await.unwrap();
    assert!(kinds(&page).is_empty());
    let page: Value = audit("?until=2000-01-01T00:00:00Z").await.json().await.unwrap();
    assert!(kinds(&page).is_empty());
    let text = audit("").await.text().await.unwrap();
    assert!(!text.contains(PASSWORD) && !text.contains(&user.access) && !text.contains(&user.refresh));
    for bad in ["?kind=nonsense", "?since=yesterday", "?cursor=0", "?user=nobody"] {
        assert_problem(audit(bad).await, StatusCode::BAD_REQUEST, bad).await;
    }
}

/// Logins with `password` racing an admin's `change` of the account: no
/// token a racing login got may work once the change is done.
async fn logins_racing(
    app: &TestApp,
    admin: &TestUser,
    target: &TestUser,
    method: Method,
    path: &str,
    body: Option<Value>,
) {
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let req = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": target.email, "password": PASSWORD}));
        logins.spawn(async move {
            let resp = req.send().await.unwrap();
            if resp.status() != StatusCode::OK {
                return None;
            }
            let pair: Value = resp.json().await.unwrap();
            Some(pair["access_token"].as_str().unwrap().to_owned())
        });
    }
    let change = call(app, method, path, &admin.access, body).await;
    assert!(change.status().is_success(), "{path}: {}", change.status());
    while let Some(token) = logins.join_next().await {
        if let Some(token) = token.unwrap() {
            let resp = app.list_notes(&token, "").await;
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "a login racing {path} kept a session"
            );
        }
    }
}

#[tokio::test]
async fn a_login_in_flight_does_not_outlive_a_disable_or_a_reset() {
    let app =
        crate::helpers::spawn_app_with(&["--auth-rate-limit", "1000", "--max-connections-per-client", "0"])
            .await;
    let admin = app.new_admin().await;
    let target = app.new_user().await;
    let user = |rest: &str| format!("/api/v1/admin/users/{}{rest}", target.id);
    logins_racing(&app, &admin, &target, Method::POST, &user("/disable"), None).await;
    assert_eq!(
        call(&app, Method::POST, &user("/enable"), &admin.access, None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let reset = json!({"password": "saffron kettle meridian"});
    logins_racing(
        &app,
        &admin,
        &target,
        Method::PUT,
        &user("/password"),
        Some(reset),
    )
    .await;
}
