//! `GET /api/v1/me/export`: every own note, in one streamed document.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app_with};

#[tokio::test]
async fn the_export_holds_every_own_note_and_nothing_else() {
    let app = spawn_app_with(&["--rate-limit", "100000"]).await;
    let owner = app.new_user().await;
    let other = app.new_user().await;
    app.new_note(&other, "not yours", &[]).await;
    // More notes than a page holds, and one note of 90 000 characters
    // ("é" takes two bytes, escapes none).
    let big = "é".repeat(90_000);
    let mut ids = HashSet::new();
    for i in 0..230 {
        let body = if i == 7 {
            json!({"title": "big", "content": big, "tags": ["large"]})
        } else {
            json!({"title": format!("note {i}"), "content": "line \"one\"\nline two", "tags": ["t"]})
        };
        let resp = app.create_note(&owner.access, &body).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        ids.insert(
            resp.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    let resp = app
        .request(Method::GET, "/api/v1/me/export", Some(&owner.access))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        resp.headers().get("content-length").is_none(),
        "streamed, not built whole"
    );
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["format"], "notesd-export-1");
    assert_eq!(doc["account"]["email"], owner.email);
    let notes = doc["notes"].as_array().unwrap();
    let exported: HashSet<String> = notes
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(notes.len(), 230, "each note once");
    assert_eq!(exported, ids);
    let order: Vec<&str> = notes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    let mut newest_first = order.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(order, newest_first);
    let large = notes.iter().find(|n| n["title"] == "big").unwrap();
    assert_eq!(large["content"].as_str().unwrap(), big);
    assert_eq!(large["tags"], json!(["large"]));
    assert!(notes.iter().all(|n| n["title"] != "not yours"));
}

#[tokio::test]
async fn an_export_needs_a_live_account() {
    let app = spawn_app_with(&[]).await;
    let resp = app
        .request(Method::GET, "/api/v1/me/export", None)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "no token").await;
    let owner = app.new_user().await;
    let empty: Value = app
        .request(Method::GET, "/api/v1/me/export", Some(&owner.access))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        empty["notes"],
        json!([]),
        "an empty account exports an empty list"
    );
    let deleted = app
        .request(Method::DELETE, "/api/v1/me", Some(&owner.access))
        .json(&json!({"password": owner.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let resp = app
        .request(Method::GET, "/api/v1/me/export", Some(&owner.access))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "a deleted account").await;
}

#[tokio::test]
async fn an_export_stops_short_when_its_session_ends() {
    let app = spawn_app_with(&["--rate-limit", "100000"]).await;
    let owner = app.new_user().await;
    // 20 MB of notes: more than the socket buffers hold, so the export is
    // still being written when the session ends.
    let content = "a".repeat(100_000);
    for i in 0..200 {
        let resp = app
            .create_note(
                &owner.access,
                &json!({"title": format!("n{i}"), "content": content}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let mut resp = app
        .request(Method::GET, "/api/v1/me/export", Some(&owner.access))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
    assert_eq!(app.logout(&owner.access).await.status(), StatusCode::NO_CONTENT);
    let cut = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    let parsed = serde_json::from_slice::<Value>(&body);
    assert!(
        cut || parsed.is_err(),
        "the export ran to a complete document after its logout"
    );
    assert!(body.len() < 20_000_000, "it stopped: {} bytes", body.len());
}
