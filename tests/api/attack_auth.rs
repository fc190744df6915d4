//! Regressions: who a client is (IPv6 prefixes, X-Forwarded-For forms),
//! password guessing (concurrent bursts, an attacker locking the owner
//! out), refresh races and look-alike email addresses.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::{PASSWORD, TestApp, assert_problem, spawn_app, spawn_app_with};

/// A wrong login for a fresh account name that appears (through the
/// trusted proxy) to come from `forwarded_for`: only the per-client limit
/// can answer 429, never an account's backoff.
async fn guess_via_proxy(app: &TestApp, forwarded_for: &str) -> StatusCode {
    let email = format!("nobody-{}@example.com", uuid::Uuid::now_v7().simple());
    app.request(Method::POST, "/api/v1/auth/login", None)
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({"email": email, "password": "guess guess guess"}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn regression_ipv6_clients_are_limited_per_64_prefix() {
    let app = spawn_app_with(&["--trusted-proxies", "127.0.0.1/32", "--auth-rate-limit", "3"]).await;
    for client in ["2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1::3"] {
        assert_eq!(
            guess_via_proxy(&app, client).await,
            StatusCode::UNAUTHORIZED,
            "{client}: within the /64's budget of 3"
        );
    }
    assert_eq!(
        guess_via_proxy(&app, "2001:db8:1:1::4").await,
        StatusCode::TOO_MANY_REQUESTS,
        "a fourth address of the same /64 is the same client"
    );
    assert_ne!(
        guess_via_proxy(&app, "2001:db8:1:2::1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "another /64 is another client"
    );
}

#[tokio::test]
async fn regression_an_ipv4_mapped_ipv6_address_is_the_ipv4_client() {
    let app = spawn_app_with(&["--trusted-proxies", "127.0.0.1/32", "--auth-rate-limit", "1"]).await;
    assert_eq!(guess_via_proxy(&app, "192.0.2.1").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        guess_via_proxy(&app, "::ffff:192.0.2.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "::ffff:192.0.2.1 is 192.0.2.1"
    );
}

#[tokio::test]
async fn regression_ipv6_prefix_128_makes_each_address_its_own_client() {
    let app = spawn_app_with(&[
        "--trusted-proxies",
        "127.0.0.1/32",
        "--auth-rate-limit",
        "1",
        "--ipv6-prefix",
        "128",
    ])
    .await;
    assert_eq!(
        guess_via_proxy(&app, "2001:db8:1:1::1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        guess_via_proxy(&app, "2001:db8:1:1::2").await,
        StatusCode::UNAUTHORIZED,
        "a neighbour in the same /64 is another client"
    );
    assert_eq!(
        guess_via_proxy(&app, "2001:db8:1:1::1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the first address is still limited"
    );
}

#[tokio::test]
async fn regression_forwarded_for_with_a_port_names_the_client() {
    let app = spawn_app_with(&["--trusted-proxies", "127.0.0.1/32", "--auth-rate-limit", "1"]).await;
    for (with_port, bare, neighbour) in [
        ("192.0.2.7:5555", "192.0.2.7", "192.0.2.8"),
        ("[2001:db8::7]:4711", "2001:db8::7", "2001:db8:0:1::7"),
    ] {
        assert_eq!(
            guess_via_proxy(&app, with_port).await,
            StatusCode::UNAUTHORIZED,
            "{with_port}: a client with its own budget, not garbage counted as the proxy"
        );
        assert_eq!(
            guess_via_proxy(&app, bare).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{bare} is the client {with_port} named"
        );
        assert_ne!(
            guess_via_proxy(&app, neighbour).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{neighbour} is another client"
        );
    }
}

#[tokio::test]
async fn regression_concurrent_guesses_get_no_more_than_the_free_failures() {
    let app = spawn_app_with(&["--login-free-failures", "2", "--login-backoff-max", "60s"]).await;
    let user = app.new_user().await;
    let mut guesses = JoinSet::new();
    for i in 0..12 {
        let guess = app
            .request(Method::POST, "/api/v1/auth/login", None)
            .json(&json!({"email": user.email, "password": format!("wrong guess {i}")}));
        guesses.spawn(async move { guess.send().await.unwrap().status() });
    }
    let statuses = guesses.join_all().await;
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(s)),
        "{statuses:?}"
    );
    let judged = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        judged <= 3,
        "two free failures and the one that starts the backoff, however the guesses race: {statuses:?}"
    );
}

/// A login through the trusted proxy from `client`, with `device_token`
/// if given.
async fn login_from(
    app: &TestApp,
    client: &str,
    email: &str,
    password: &str,
    device_token: Option<&str>,
) -> Response {
    let mut body = json!({"email": email, "password": password});
    if let Some(token) = device_token {
        body["device_token"] = token.into();
    }
    app.request(Method::POST, "/api/v1/auth/login", None)
        .header("X-Forwarded-For", client)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The device token a successful login from `client` hands out.
async fn device_token(app: &TestApp, client: &str, email: &str) -> String {
    let resp = login_from(app, client, email, PASSWORD, None).await;
    assert_eq!(resp.status(), StatusCode::OK, "{email} logs in from {client}");
    let body: Value = resp.json().await.unwrap();
    body["device_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a successful login hands out a device_token: {body}"))
        .to_owned()
}

/// Wrong guesses from 203.0.113.5 until the account backs off.
async fn throttle(app: &TestApp, email: &str) {
    for attempt in 0..10 {
        let resp = login_from(app, "203.0.113.5", email, &format!("wrong guess {attempt}"), None).await;
        match resp.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => return,
            other => panic!("guess {attempt}: unexpected {other}"),
        }
    }
    panic!("ten wrong guesses never brought a 429");
}

#[tokio::test]
async fn regression_an_attacker_cannot_lock_the_owner_out() {
    let app = spawn_app_with(&[
        "--trusted-proxies",
        "127.0.0.1/32",
        "--login-free-failures",
        "1",
        "--login-backoff-max",
        "60s",
    ])
    .await;
    let email = "owner@example.com";
    let resp = app.signup(email, PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let signup: Value = resp.json().await.unwrap();
    assert!(
        signup["device_token"].is_string() || signup["tokens"]["device_token"].is_string(),
        "a signup hands out a device_token: {signup}"
    );
    assert_eq!(
        app.signup("other@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let owner_device = device_token(&app, "198.51.100.10", email).await;
    let other_device = device_token(&app, "198.51.100.20", "other@example.com").await;

    throttle(&app, email).await;
    for (client, device, why) in [
        ("203.0.113.5", None, "the attacker stays throttled"),
        (
            "203.0.113.6",
            None,
            "an unknown client stays throttled, even with the right password",
        ),
        (
            "198.51.100.77",
            Some(other_device.as_str()),
            "another account's device token exempts nobody",
        ),
    ] {
        let resp = login_from(&app, client, email, PASSWORD, device).await;
        assert_problem(resp, StatusCode::TOO_MANY_REQUESTS, why).await;
    }
    let resp = login_from(&app, "198.51.100.99", email, PASSWORD, Some(&owner_device)).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the owner's device token gets through from a new address"
    );

    // Throttled again, whatever that success reset.
    throttle(&app, email).await;
    let resp = login_from(&app, "198.51.100.10", email, PASSWORD, None).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the owner's known address gets through without a device token"
    );
}

#[tokio::test]
async fn regression_a_burst_of_refreshes_with_one_token_shares_one_rotation() {
    // The default --refresh-reuse-grace (10 s) covers a burst.
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut burst = JoinSet::new();
    for _ in 0..4 {
        let refresh = app
            .request(Method::POST, "/api/v1/auth/refresh", None)
            .json(&json!({"refresh_token": user.refresh}));
        burst.spawn(async move {
            let resp = refresh.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        });
    }
    let answers = burst.join_all().await;
    for (status, body) in &answers {
        assert_eq!(
            *status,
            StatusCode::OK,
            "a burst within the grace is not theft: {body}"
        );
    }
    let (_, first) = &answers[0];
    for (_, body) in &answers {
        assert_eq!(
            body["refresh_token"], first["refresh_token"],
            "one rotation, not a fork"
        );
        assert_eq!(body["session_id"], first["session_id"]);
        let access = body["access_token"].as_str().unwrap();
        assert_eq!(app.me(access).await.status(), StatusCode::OK);
    }
    let next = first["refresh_token"].as_str().unwrap();
    assert_eq!(
        app.refresh(next).await.status(),
        StatusCode::OK,
        "the shared successor works"
    );
}

#[tokio::test]
async fn regression_a_refresh_token_reused_after_the_grace_revokes_the_session() {
    let app = spawn_app_with(&["--refresh-reuse-grace", "10s"]).await;
    let user = app.new_user().await;
    let resp = app.refresh(&user.refresh).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let pair: Value = resp.json().await.unwrap();

    app.advance_clock(Duration::from_secs(11));
    assert_problem(
        app.refresh(&user.refresh).await,
        StatusCode::UNAUTHORIZED,
        "the old token after the grace",
    )
    .await;
    assert_problem(
        app.refresh(pair["refresh_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED,
        "the reuse revoked the session: its current refresh token too",
    )
    .await;
    assert_problem(
        app.me(pair["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED,
        "and its access token",
    )
    .await;
}

#[tokio::test]
async fn regression_look_alike_emails_are_the_same_account() {
    let app = spawn_app().await;
    assert_eq!(
        app.signup("alice@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    assert_problem(
        app.signup("\u{ff41}lice@example.com", PASSWORD).await,
        StatusCode::CONFLICT,
        "a fullwidth a is the same mailbox",
    )
    .await;
    let resp = app.login("ＡＬＩＣＥ@ＥＸＡＭＰＬＥ.ＣＯＭ", PASSWORD).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "ＡＬＩＣＥ@ＥＸＡＭＰＬＥ.ＣＯＭ logs in as alice@example.com"
    );
}
