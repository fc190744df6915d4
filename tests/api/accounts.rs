//! Signup policies and invites, deleting one's own account, and signing
//! key rotation while serving.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, assert_problem, spawn_app, spawn_app_with};

async fn signup_with(app: &TestApp, email: &str, code: Option<&str>) -> reqwest::Response {
    let mut body = json!({ "email": email, "password": PASSWORD });
    if let Some(code) = code {
        body["invite_code"] = code.into();
    }
    app.client
        .post(app.url("/api/v1/auth/signup"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn invite(app: &TestApp, admin: &str, expires_in: Option<&str>) -> String {
    let body = expires_in.map_or_else(|| json!({}), |e| json!({ "expires_in": e }));
    let resp = app
        .request(Method::POST, "/api/v1/admin/invites", Some(admin))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let issued: Value = resp.json().await.unwrap();
    issued["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn closed_signup_refuses_everyone_and_tells_nothing_about_emails() {
    let app = spawn_app_with(&["--signup", "closed"]).await;
    let (ok, _, err) = app
        .cli(
            &[
                "user",
                "create",
                "--email",
                "taken@example.com",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await;
    assert!(ok, "the operator still creates accounts: {err}");
    for email in ["taken@example.com", "free@example.com"] {
        let problem =
            assert_problem(signup_with(&app, email, None).await, StatusCode::FORBIDDEN, email).await;
        assert_eq!(problem["type"], "urn:notesd:problem:signup-refused");
    }
    assert_eq!(
        app.login("taken@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_invite_is_used_once_and_only_before_it_expires() {
    let app = spawn_app_with(&["--signup", "invite"]).await;
    let (ok, out, err) = app.cli(&["invite", "create"], "").await;
    assert!(ok, "{err}");
    let code = out.lines().next().unwrap().trim().to_owned();
    assert!(code.starts_with("niv_"), "{out}");
    for (given, why) in [(None, "no code"), (Some("niv_forged"), "a forged code")] {
        assert_problem(
            signup_with(&app, "eve@example.com", given).await,
            StatusCode::FORBIDDEN,
            why,
        )
        .await;
    }
    let mut wrong_secret = code.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == 'A' { 'B' } else { 'A' });
    assert_problem(
        signup_with(&app, "eve@example.com", Some(&wrong_secret)).await,
        StatusCode::FORBIDDEN,
        "the right id with another secret",
    )
    .await;

    assert_eq!(
        signup_with(&app, "ada@example.com", Some(&code)).await.status(),
        StatusCode::CREATED
    );
    assert_problem(
        signup_with(&app, "bob@example.com", Some(&code)).await,
        StatusCode::FORBIDDEN,
        "used",
    )
    .await;

    // A taken email with a good code: 409, and the code stays usable.
    let admin = app.new_admin_by_cli().await;
    let code = invite(&app, &admin, None).await;
    assert_problem(
        signup_with(&app, "ada@example.com", Some(&code)).await,
        StatusCode::CONFLICT,
        "taken",
    )
    .await;
    assert_eq!(
        signup_with(&app, "cy@example.com", Some(&code)).await.status(),
        StatusCode::CREATED
    );

    let code = invite(&app, &admin, Some("1h")).await;
    let listed: Value = app
        .request(Method::GET, "/api/v1/admin/invites", Some(&admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
    assert!(
        !listed.to_string().contains("niv_"),
        "codes are never shown again"
    );
    app.advance_clock(Duration::from_secs(3601));
    assert_problem(
        signup_with(&app, "late@example.com", Some(&code)).await,
        StatusCode::FORBIDDEN,
        "expired",
    )
    .await;
}

#[tokio::test]
async fn of_concurrent_signups_with_one_invite_exactly_one_succeeds() {
    let app = spawn_app_with(&["--signup", "invite", "--auth-rate-limit", "1000"]).await;
    let admin = app.new_admin_by_cli().await;
    let code = invite(&app, &admin, None).await;
    let mut signups = tokio::task::JoinSet::new();
    for i in 0..12 {
        let req = app.client.post(app.url("/api/v1/auth/signup")).json(
            &json!({ "email": format!("racer{i}@example.com"), "password": PASSWORD, "invite_code": code }),
        );
        signups.spawn(async move { req.send().await.unwrap().status() });
    }
    let mut created = 0;
    while let Some(status) = signups.join_next().await {
        let status = status.unwrap();
        assert!(
            matches!(status, StatusCode::CREATED | StatusCode::FORBIDDEN),
            "{status}"
        );
        created += usize::from(status == StatusCode::CREATED);
    }
    assert_eq!(created, 1);
}

#[tokio::test]
async fn deleting_ones_account_takes_everything_and_needs_the_password() {
    let app = spawn_app_with(&["--login-free-failures", "1"]).await;
    let owner = app.new_user().await;
    let other_session: Value = app.login(&owner.email, PASSWORD).await.json().await.unwrap();
    let other_access = other_session["access_token"].as_str().unwrap().to_owned();
    app.new_note(&owner, "to be forgotten", &["gone"]).await;
    let delete = |password: &str| {
        let req = app
            .request(Method::DELETE, "/api/v1/me", Some(&owner.access))
            .json(&json!({ "password": password }));
        async move { req.send().await.unwrap() }
    };
    let mut wrong = 0;
    loop {
        let resp = delete("not the password").await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "wrong password").await;
        assert_eq!(crate::helpers::problem_fields(&problem), ["password"]);
        wrong += 1;
        assert!(wrong <= 2, "wrong passwords meet the login backoff");
    }
    assert_problem(
        delete(PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "backing off, even with the right one",
    )
    .await;
    app.advance_clock(Duration::from_secs(120));
    assert_eq!(
        app.me(&owner.access).await.status(),
        StatusCode::OK,
        "nothing deleted yet"
    );

    assert_eq!(delete(PASSWORD).await.status(), StatusCode::NO_CONTENT);
    for token in [&owner.access, &other_access] {
        assert_eq!(
            app.me(token).await.status(),
            StatusCode::UNAUTHORIZED,
            "every session ends"
        );
    }
    assert_eq!(
        app.refresh(&owner.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&owner.email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let app = app.restart().await;
    assert_eq!(
        app.me(&owner.access).await.status(),
        StatusCode::UNAUTHORIZED,
        "after a restart"
    );
    let again = app.signup(&owner.email, PASSWORD).await;
    assert_eq!(again.status(), StatusCode::CREATED, "the email is free");
    let again: Value = again.json().await.unwrap();
    let access = again["tokens"]["access_token"].as_str().unwrap();
    let notes: Value = app.list_notes(access, "").await.json().await.unwrap();
    assert_eq!(
        notes["items"].as_array().unwrap().len(),
        0,
        "a new account, empty"
    );
    let notes: Value = app.list_notes(access, "?tag=gone").await.json().await.unwrap();
    assert_eq!(
        notes["items"].as_array().unwrap().len(),
        0,
        "and its tag index too"
    );
}

/// The key id in a PASETO token's footer.
fn kid(token: &str) -> String {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let footer = token.rsplit('.').next().unwrap();
    let footer: Value = serde_json::from_slice(&Base64UrlUnpadded::decode_vec(footer).unwrap()).unwrap();
    footer["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_rotated_key_signs_at_once_and_the_old_one_verifies_until_its_tokens_expire() {
    let app = spawn_app().await;
    let before = app.new_user().await;
    let old_kid = kid(&before.access);
    let (ok, out, err) = app.cli(&["keys", "rotate"], "").await;
    assert!(ok, "{err}");
    let after = app.new_user().await;
    let new_kid = kid(&after.access);
    assert_ne!(old_kid, new_kid);
    assert!(out.contains(&new_kid), "{out}");
    assert_eq!(
        app.me(&before.access).await.status(),
        StatusCode::OK,
        "old tokens stay valid"
    );
    assert_eq!(app.me(&after.access).await.status(), StatusCode::OK);
    let published = |keys: &Value| -> Vec<String> {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(published(&app.keys().await), [old_kid.clone(), new_kid.clone()]);
    let (_, listed, _) = app.cli(&["keys", "list"], "").await;
    assert!(
        listed.contains(&format!("{old_kid}\tverifying")) && listed.contains(&format!("{new_kid}\tsigning")),
        "{listed}"
    );

    // Past the old key's last token's life (15 min, and a minute's slack).
    app.advance_clock(Duration::from_secs(17 * 60));
    assert_eq!(published(&app.keys().await), std::slice::from_ref(&new_kid));
    let app = app.restart().await;
    assert_eq!(app.refresh(&after.refresh).await.status(), StatusCode::OK);
    assert_eq!(published(&app.keys().await), [new_kid]);
}

#[tokio::test]
async fn the_control_socket_answers_sixteen_peers_at_once_and_no_more() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let socket = app.data_dir.join("control.sock");
    // Sixteen peers that connect and say nothing hold every slot.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(tokio::net::UnixStream::connect(&socket).await.unwrap());
    }
    let mut extra = tokio::net::UnixStream::connect(&socket).await.unwrap();
    extra.write_all(b"{\"op\":\"keys-list\"}\n").await.unwrap();
    let mut answer = Vec::new();
    // Closed unanswered at once (a reset or an empty read, never a reply).
    let read = extra.read_to_end(&mut answer).await;
    assert!(read.is_err() || answer.is_empty(), "a 17th peer was answered");
    drop(idle);
    // The slots come back when those peers go (the server sees them go
    // as it reads: a command started right after may still find them
    // held, so it may take a second one).
    let mut last = String::new();
    for _ in 0..5 {
        let (ok, out, err) = app.cli(&["keys", "list"], "").await;
        if ok && out.contains("signing") {
            return;
        }
        last = err;
    }
    panic!("the slots never came back: {last}");
}
