//! An account under attack from many addresses backs off, and recovers.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};

use crate::helpers::{PASSWORD, TestApp, assert_problem, spawn_app_with};

/// A login that appears (through the trusted proxy) to come from `client`.
async fn login_from(app: &TestApp, client: u8, email: &str, password: &str) -> Response {
    app.request(Method::POST, "/api/v1/auth/login", None)
        .header("X-Forwarded-For", format!("198.51.100.{client}"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

fn retry_after(resp: &Response) -> u64 {
    resp.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_account_attacked_from_many_addresses_backs_off_then_recovers() {
    let app = spawn_app_with(&["--trusted-proxies", "127.0.0.0/8"]).await;
    let user = app.new_user().await;
    // Five wrong guesses, each from another address: no per-IP limit helps.
    for client in 0..5 {
        let resp = login_from(&app, client, &user.email, "wrong guess here").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "free failure {client}");
    }
    let sixth = login_from(&app, 5, &user.email, "wrong guess here").await;
    assert_eq!(
        sixth.status(),
        StatusCode::UNAUTHORIZED,
        "the sixth failure starts the backoff"
    );

    // Now even the right password is refused, from anywhere.
    let resp = login_from(&app, 99, &user.email, PASSWORD).await;
    assert_eq!(retry_after(&resp), 1);
    assert_problem(
        resp,
        StatusCode::TOO_MANY_REQUESTS,
        "right password during backoff",
    )
    .await;

    app.advance_clock(Duration::from_secs(2));
    let resp = login_from(&app, 99, &user.email, PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::OK, "accepted once the wait is over");

    // The success reset the count: five more failures are free again.
    for client in 0..5 {
        assert_eq!(
            login_from(&app, client, &user.email, "wrong guess here")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_from(&app, 7, &user.email, PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_wait_doubles_but_never_exceeds_the_cap() {
    let app = spawn_app_with(&["--trusted-proxies", "127.0.0.0/8", "--login-backoff-max", "60s"]).await;
    let user = app.new_user().await;
    let mut waits = Vec::new();
    for client in 0..=50 {
        let resp = login_from(&app, client, &user.email, "wrong guess here").await;
        match resp.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = retry_after(&resp);
                waits.push(wait);
                app.advance_clock(Duration::from_secs(wait));
            }
            other => panic!("unexpected {other}"),
        }
        if waits.len() == 9 {
            break;
        }
    }
    assert_eq!(
        waits,
        [1, 2, 4, 8, 16, 32, 60, 60, 60],
        "doubling, capped at --login-backoff-max"
    );
    assert_eq!(
        login_from(&app, 1, &user.email, PASSWORD).await.status(),
        StatusCode::OK,
        "no lockout"
    );
}

#[tokio::test]
async fn backoff_survives_a_restart_and_does_not_reveal_accounts() {
    let app = spawn_app_with(&["--trusted-proxies", "127.0.0.0/8"]).await;
    let user = app.new_user().await;
    // Nine failures, each let through by moving the clock past the wait
    // before it: a wait of 8 s at the end, so a slow restart on a busy
    // machine cannot outlast it (the 1 s wait after six sometimes was).
    for client in 0..9u8 {
        if client >= 6 {
            app.advance_clock(Duration::from_secs(1 << (client - 6)) + Duration::from_millis(100));
        }
        for email in [user.email.as_str(), "nobody@example.com"] {
            let resp = login_from(&app, client, email, "wrong guess here").await;
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "failure {client} of {email} is counted"
            );
        }
    }
    let app = app.restart_with(&["--trusted-proxies", "127.0.0.0/8"]).await;
    let real = login_from(&app, 50, &user.email, PASSWORD).await;
    let ghost = login_from(&app, 51, "nobody@example.com", PASSWORD).await;
    let real = assert_problem(
        real,
        StatusCode::TOO_MANY_REQUESTS,
        "still backing off after a restart",
    )
    .await;
    let ghost = assert_problem(
        ghost,
        StatusCode::TOO_MANY_REQUESTS,
        "a missing account backs off alike",
    )
    .await;
    assert_eq!(real, ghost, "same answer whether or not the account exists");
}
