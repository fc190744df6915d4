//! Regressions: request content chosen to hurt. Field names echoed back,
//! ids in several spellings, bodies shaped to cost CPU, and searches that
//! read more than their budget.

use std::fmt::Write;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, assert_problem, spawn_app, spawn_app_with};
use crate::raw;

#[tokio::test]
async fn regression_unknown_field_names_are_not_echoed() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let resp = app
        .request(Method::POST, "/api/v1/notes", Some(&user.access))
        .header("Content-Type", "application/json")
        .body(r#"{"title":"x","<script>alert(1)</script>":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("<script>") && !text.contains("alert"),
        "the client's field name comes back: {text}"
    );
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        problem["errors"][0]["field"], "body",
        "the error names the body, not the field: {problem}"
    );
}

#[tokio::test]
async fn regression_a_note_id_is_accepted_only_in_its_canonical_form() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let note = app.new_note(&user, "canonical", &[]).await;
    let id = note["id"].as_str().unwrap();
    assert_eq!(app.get_note(&user.access, id).await.status(), StatusCode::OK);
    let simple = uuid::Uuid::parse_str(id).unwrap().simple().to_string();
    for (form, why) in [
        (format!("urn:uuid:{id}"), "a URN"),
        (simple, "32 hex digits without dashes"),
        (id.to_uppercase(), "upper case"),
    ] {
        assert_problem(
            app.get_note(&user.access, &form).await,
            StatusCode::BAD_REQUEST,
            &format!("{why}: {form}"),
        )
        .await;
    }
}

/// CPU a request may cost in this debug build.
const CPU_BUDGET: Duration = Duration::from_secs(1);

/// Sends `req`, reads the whole answer, and returns its status and the
/// CPU time the process (server included) spent meanwhile.
async fn priced(req: RequestBuilder) -> (StatusCode, Duration) {
    let before = raw::process_cpu_time();
    let resp = req.send().await.unwrap();
    let status = resp.status();
    resp.bytes().await.unwrap();
    (status, raw::process_cpu_time().saturating_sub(before))
}

#[tokio::test]
async fn regression_a_maximal_tags_array_is_refused_cheaply() {
    let _meter = raw::CPU_METER.lock().await;
    let app = spawn_app().await;
    let user = app.new_user().await;
    let note = app.new_note(&user, "target", &[]).await;
    let path = format!("/api/v1/notes/{}", note["id"].as_str().unwrap());
    // 250 000 tags: just under the 1 MiB body limit.
    let body = format!(
        r#"{{"title":"x","tags":[{}]}}"#,
        vec![r#""a""#; 250_000].join(",")
    );
    assert!(body.len() < 1024 * 1024);
    for (method, path) in [
        (Method::POST, "/api/v1/notes"),
        (Method::PUT, path.as_str()),
        (Method::PATCH, path.as_str()),
    ] {
        let req = app
            .request(method.clone(), path, Some(&user.access))
            .header("Content-Type", "application/json")
            .body(body.clone());
        let (status, cpu) = priced(req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} with 250 000 tags");
        assert!(cpu < CPU_BUDGET, "{method} with 250 000 tags cost {cpu:?} of CPU");
    }
}

#[tokio::test]
async fn regression_other_maximal_bodies_are_refused_cheaply() {
    let _meter = raw::CPU_METER.lock().await;
    let app = spawn_app().await;
    let user = app.new_user().await;
    let huge = "a".repeat(1_000_000);
    let mut unknown_fields = String::new();
    for i in 0..50_000 {
        write!(unknown_fields, r#","u{i}":1"#).unwrap();
    }
    let bad = [StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE];
    let bad_or_unauthorized = [
        StatusCode::BAD_REQUEST,
        StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::UNAUTHORIZED,
    ];
    let long_email = format!("{huge}@example.com");
    let cases: [(&str, String, &[StatusCode], &str); 8] = [
        (
            "/api/v1/notes",
            json!({"title": huge}).to_string(),
            &bad,
            "a 1 MB title",
        ),
        (
            "/api/v1/notes",
            format!(r#"{{"title":"x"{unknown_fields}}}"#),
            &bad,
            "50 000 unknown fields",
        ),
        (
            "/api/v1/auth/signup",
            json!({"email": long_email, "password": PASSWORD}).to_string(),
            &bad,
            "signup with a 1 MB email",
        ),
        (
            "/api/v1/auth/signup",
            json!({"email": "big@example.com", "password": huge}).to_string(),
            &bad,
            "signup with a 1 MB password",
        ),
        (
            "/api/v1/auth/login",
            json!({"email": long_email, "password": PASSWORD}).to_string(),
            &bad_or_unauthorized,
            "login with a 1 MB email",
        ),
        (
            "/api/v1/auth/login",
            json!({"email": user.email, "password": huge}).to_string(),
            &bad_or_unauthorized,
            "login with a 1 MB password",
        ),
        (
            "/api/v1/auth/refresh",
            json!({"refresh_token": huge}).to_string(),
            &bad_or_unauthorized,
            "refresh with a 1 MB token",
        ),
        (
            "/api/v1/auth/refresh",
            format!(r#"{{"refresh_token":"x"{unknown_fields}}}"#),
            &bad_or_unauthorized,
            "refresh with 50 000 unknown fields",
        ),
    ];
    for (path, body, statuses, why) in cases {
        assert!(body.len() < 1024 * 1024, "{why}: under the body limit");
        let req = app
            .request(Method::POST, path, Some(&user.access))
            .header("Content-Type", "application/json")
            .body(body);
        let (status, cpu) = priced(req).await;
        assert!(statuses.contains(&status), "{why}: got {status}");
        assert!(cpu < CPU_BUDGET, "{why} cost {cpu:?} of CPU");
    }

    let query = format!("/api/v1/notes?tag={}", "a".repeat(8000));
    let (status, cpu) = priced(app.request(Method::GET, &query, Some(&user.access))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an 8000-character tag filter");
    assert!(cpu < CPU_BUDGET, "an 8000-character tag filter cost {cpu:?}");
}

#[tokio::test]
async fn regression_a_search_stops_at_its_scan_budget() {
    let app = spawn_app_with(&["--search-scan-bytes", "100000"]).await;
    let user = app.new_user().await;
    // 100 000 bytes of UTF-8 each: the budget covers about one note.
    raw::create_notes(&app, &user, 10, &"é".repeat(50_000)).await;

    let mut query = "q=zzz&limit=100".to_owned();
    let mut pages = 0;
    loop {
        let resp = app.list_notes(&user.access, &query).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let page: Value = resp.json().await.unwrap();
        assert_eq!(page["items"], json!([]), "nothing matches zzz");
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("q=zzz&limit=100&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 30, "the cursors never end");
    }
    assert!(
        pages >= 3,
        "1 MB of notes under a 100 000-byte scan budget took {pages} page(s)"
    );
}
