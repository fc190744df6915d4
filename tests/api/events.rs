//! `GET /api/v1/me/events`: a user sees what happened to their account,
//! from the stored audit log.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, assert_problem, spawn_app};

pub async fn my_events(app: &TestApp, access: &str, query: &str) -> Value {
    let resp = app
        .request(Method::GET, &format!("/api/v1/me/events{query}"), Some(access))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

pub fn kinds(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_user_sees_their_own_security_events_newest_first() {
    let app = spawn_app().await;
    let owner = app.new_user().await;
    let other = app.new_user().await;
    assert_eq!(
        app.login(&owner.email, "not the password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let login = app.login(&owner.email, &owner.password).await;
    let pair: Value = login.json().await.unwrap();
    let second = pair["access_token"].as_str().unwrap().to_owned();
    let refreshed = app.refresh(&owner.refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let again = app.refresh(&owner.refresh).await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "within the grace: the same pair, no event"
    );
    assert_eq!(app.logout(&second).await.status(), StatusCode::NO_CONTENT);

    let page = my_events(&app, &owner.access, "").await;
    assert_eq!(
        kinds(&page),
        ["logout", "refresh", "login", "login_failed", "signup"],
        "{page}"
    );
    let failed = &page["items"][3];
    assert_eq!(failed["client_network"], "127.0.0.0/24");
    let text = page.to_string();
    for secret in [&owner.password, &owner.refresh, &owner.access] {
        assert!(!text.contains(secret.as_str()), "no secret in events");
    }
    assert_eq!(
        kinds(&my_events(&app, &other.access, "").await),
        ["signup"],
        "only your own"
    );

    let first = my_events(&app, &owner.access, "?limit=2").await;
    assert_eq!(kinds(&first), ["logout", "refresh"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let older = my_events(&app, &owner.access, &format!("?limit=10&cursor={cursor}")).await;
    assert_eq!(kinds(&older), ["login", "login_failed", "signup"]);
    assert!(older.get("next_cursor").is_none());

    let app = app.restart().await;
    assert_eq!(
        kinds(&my_events(&app, &owner.access, "?limit=1").await),
        ["logout"],
        "stored"
    );
    let resp = app
        .request(Method::GET, "/api/v1/me/events?cursor=abc", Some(&owner.access))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "a bad cursor").await;
    let resp = app
        .request(Method::GET, "/api/v1/me/events", None)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "no token").await;
}

#[tokio::test]
async fn a_reused_refresh_token_and_a_backoff_show_in_the_events() {
    let app =
        crate::helpers::spawn_app_with(&["--refresh-reuse-grace", "0s", "--login-free-failures", "1"]).await;
    let owner = app.new_user().await;
    assert_eq!(app.refresh(&owner.refresh).await.status(), StatusCode::OK);
    assert_eq!(
        app.refresh(&owner.refresh).await.status(),
        StatusCode::UNAUTHORIZED,
        "theft detected"
    );
    for _ in 0..2 {
        app.login(&owner.email, "not the password").await;
    }
    let login = app.login(&owner.email, &owner.password).await;
    let status = login.status();
    app.advance_clock(std::time::Duration::from_secs(120));
    let pair: Value = if status == StatusCode::OK {
        login.json().await.unwrap()
    } else {
        app.login(&owner.email, &owner.password)
            .await
            .json()
            .await
            .unwrap()
    };
    let access = pair["access_token"].as_str().unwrap();
    let found = kinds(&my_events(&app, access, "").await);
    for kind in ["refresh_reuse_detected", "backoff_started", "login_failed"] {
        assert!(found.contains(&kind.to_owned()), "{kind} in {found:?}");
    }
}
