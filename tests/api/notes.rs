//! Notes: the CRUD cycle, isolation between users, conditional writes,
//! pagination, filters and field limits.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{assert_problem, problem_fields, spawn_app};

#[tokio::test]
async fn create_read_update_delete() {
    let app = spawn_app().await;
    let user = app.new_user().await;

    let resp = app
        .create_note(
            &user.access,
            &json!({"title": "Groceries", "content": "oat milk", "tags": ["home", "a-1", "home"]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(resp.headers()["etag"], "\"1\"");
    let note: Value = resp.json().await.unwrap();
    let id = note["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/notes/{id}"));
    assert_eq!(note["tags"], json!(["a-1", "home"]), "sorted, without duplicates");
    assert_eq!(note["version"], 1);
    assert_eq!(
        uuid::Uuid::parse_str(id).unwrap().get_version_num(),
        7,
        "UUIDv7 ids"
    );

    let resp = app.get_note(&user.access, id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["etag"], "\"1\"");
    let read: Value = resp.json().await.unwrap();
    assert_eq!(read, note);

    let put = json!({"title": "Groceries!", "content": "oat milk, lemons", "tags": []});
    let resp = app
        .write_note(Method::PUT, &user.access, id, Some("\"1\""), Some(&put))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["etag"], "\"2\"");
    let replaced: Value = resp.json().await.unwrap();
    assert_eq!(replaced["content"], "oat milk, lemons");
    assert_eq!(replaced["created_at"], note["created_at"]);

    let patch = json!({"tags": ["errand"]});
    let resp = app
        .write_note(Method::PATCH, &user.access, id, None, Some(&patch))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "If-Match is optional");
    let patched: Value = resp.json().await.unwrap();
    assert_eq!(
        (patched["title"].as_str(), patched["version"].as_u64()),
        (Some("Groceries!"), Some(3))
    );
    assert_eq!(patched["tags"], json!(["errand"]));

    let resp = app
        .write_note(Method::DELETE, &user.access, id, Some("\"3\""), None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.get_note(&user.access, id).await,
        StatusCode::NOT_FOUND,
        "deleted",
    )
    .await;
}

#[tokio::test]
async fn another_users_note_is_not_found_for_every_operation() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let mallory = app.new_user().await;
    let note = app.new_note(&alice, "alice's secret plan", &["private"]).await;
    let id = note["id"].as_str().unwrap();

    let missing_id = uuid::Uuid::now_v7().to_string();
    let not_found_body = assert_problem(
        app.get_note(&mallory.access, &missing_id).await,
        StatusCode::NOT_FOUND,
        "a missing note",
    )
    .await;

    let body = json!({"title": "pwned"});
    let attempts = [
        (app.get_note(&mallory.access, id).await, "read"),
        (
            app.write_note(Method::PUT, &mallory.access, id, None, Some(&body))
                .await,
            "replace",
        ),
        (
            app.write_note(Method::PATCH, &mallory.access, id, None, Some(&body))
                .await,
            "patch",
        ),
        (
            app.write_note(Method::PATCH, &mallory.access, id, Some("\"1\""), Some(&body))
                .await,
            "patch with the right version",
        ),
        (
            app.write_note(Method::DELETE, &mallory.access, id, None, None)
                .await,
            "delete",
        ),
    ];
    for (resp, what) in attempts {
        let problem = assert_problem(resp, StatusCode::NOT_FOUND, what).await;
        assert_eq!(
            problem, not_found_body,
            "{what}: indistinguishable from a missing note"
        );
    }

    for query in ["limit=100", "tag=private", "q=secret"] {
        let page: Value = app.list_notes(&mallory.access, query).await.json().await.unwrap();
        assert_eq!(
            page["items"],
            json!([]),
            "mallory's list with {query} shows nothing of alice's"
        );
    }

    let still: Value = app.get_note(&alice.access, id).await.json().await.unwrap();
    assert_eq!(still, note, "alice's note is unchanged");
}

#[tokio::test]
async fn stale_if_match_gives_412_and_changes_nothing() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let note = app.new_note(&user, "v1", &[]).await;
    let id = note["id"].as_str().unwrap();
    let bump = json!({"title": "v2"});
    assert_eq!(
        app.write_note(Method::PATCH, &user.access, id, Some("\"1\""), Some(&bump))
            .await
            .status(),
        StatusCode::OK
    );

    let stale = json!({"title": "lost update"});
    for (method, body, tag) in [
        (Method::PUT, Some(&stale), "\"1\""),
        (Method::PATCH, Some(&stale), "\"1\""),
        (Method::DELETE, None, "\"1\""),
        (Method::PATCH, Some(&stale), "W/\"2\""),
        (Method::PATCH, Some(&stale), "garbage"),
    ] {
        let resp = app
            .write_note(method.clone(), &user.access, id, Some(tag), body)
            .await;
        assert_problem(
            resp,
            StatusCode::PRECONDITION_FAILED,
            &format!("{method} with If-Match {tag}"),
        )
        .await;
    }
    let current: Value = app.get_note(&user.access, id).await.json().await.unwrap();
    assert_eq!(
        (current["title"].as_str(), current["version"].as_u64()),
        (Some("v2"), Some(2))
    );

    let any = app
        .write_note(Method::PATCH, &user.access, id, Some("*"), Some(&stale))
        .await;
    assert_eq!(
        any.status(),
        StatusCode::OK,
        "If-Match: * matches any current version"
    );
    let list = app
        .write_note(Method::DELETE, &user.access, id, Some("\"7\", \"3\""), None)
        .await;
    assert_eq!(
        list.status(),
        StatusCode::NO_CONTENT,
        "a list matches if one entry does"
    );
}

#[tokio::test]
async fn pagination_over_250_notes_has_no_gap_or_duplicate() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other = app.new_user().await;
    app.new_note(&other, "not mine", &[]).await;
    let mut created = Vec::new();
    for i in 0..250 {
        let note = app.new_note(&user, &format!("note {i}"), &[]).await;
        created.push(note["id"].as_str().unwrap().to_owned());
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=100&cursor={c}"),
            None => "limit=100".to_owned(),
        };
        let page: Value = app.list_notes(&user.access, &query).await.json().await.unwrap();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination terminates");
    }
    assert_eq!(pages, 3, "100 + 100 + 50");
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    created.reverse();
    assert_eq!(seen, created, "every note exactly once, newest first");
}

#[tokio::test]
async fn tag_filter_and_case_insensitive_search() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    app.new_note(&user, "Trip to Lisbon", &["travel"]).await;
    app.new_note(&user, "Lisbon restaurants", &["food", "travel"])
        .await;
    let resp = app
        .create_note(
            &user.access,
            &json!({"title": "Budget", "content": "flights to LISBON", "tags": ["money"]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    let titles = |page: Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_tag = titles(
        app.list_notes(&user.access, "tag=travel")
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(by_tag, vec!["Lisbon restaurants", "Trip to Lisbon"]);
    let search = titles(
        app.list_notes(&user.access, "q=lisbon")
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(search.len(), 3, "title and content, any case: {search:?}");
    let both = titles(
        app.list_notes(&user.access, "q=RESTAURANT&tag=travel")
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(both, vec!["Lisbon restaurants"]);
    let page: Value = app
        .list_notes(&user.access, "tag=travel&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert!(page["next_cursor"].is_string(), "filters paginate too");
}

#[tokio::test]
async fn field_limits_give_400_naming_the_field() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let many_tags: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    let cases = [
        (
            json!({"title": "t".repeat(201)}),
            "title",
            "title over 200 characters",
        ),
        (json!({"title": ""}), "title", "empty title"),
        (json!({"title": "   "}), "title", "blank title"),
        (json!({"content": "x"}), "title", "title missing"),
        (json!({"title": 5}), "title", "title of the wrong type"),
        (json!({"title": ["a"]}), "title", "title as an array"),
        (
            json!({"title": "ok", "content": "c".repeat(100_001)}),
            "content",
            "content over 100 000 characters",
        ),
        (json!({"title": "ok", "tags": many_tags}), "tags", "21 tags"),
        (
            json!({"title": "ok", "tags": ["Upper"]}),
            "tags",
            "tag with upper case",
        ),
        (
            json!({"title": "ok", "tags": ["t".repeat(33)]}),
            "tags",
            "tag over 32 characters",
        ),
        (json!({"title": "ok", "tags": "home"}), "tags", "tags not a list"),
        (
            json!({"title": "ok", "id": "0193c9b4-0000-7000-8000-000000000000"}),
            "body",
            "no mass assignment of id (the key is never echoed)",
        ),
        (
            json!({"title": "ok", "owner": "someone"}),
            "body",
            "no mass assignment of owner (the key is never echoed)",
        ),
        (
            json!({"title": "ok", "version": 99}),
            "body",
            "no mass assignment of version (the key is never echoed)",
        ),
    ];
    for (body, field, why) in cases {
        let resp = app.create_note(&user.access, &body).await;
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, why).await;
        assert_eq!(problem_fields(&problem), vec![field], "{why}: {problem}");
    }
    let at_limit = json!({"title": "é".repeat(200), "content": "é".repeat(100_000)});
    assert_eq!(
        app.create_note(&user.access, &at_limit).await.status(),
        StatusCode::CREATED,
        "limits count characters, not bytes"
    );
    let page: Value = app.list_notes(&user.access, "").await.json().await.unwrap();
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "no invalid note was half-written"
    );
}

#[tokio::test]
async fn bad_ids_and_query_parameters_are_400_naming_them() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let problem = assert_problem(
        app.get_note(&user.access, "not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "bad id",
    )
    .await;
    assert_eq!(problem_fields(&problem), vec!["id"]);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=zzz", "cursor"),
        ("tag=Bad%20Tag", "tag"),
        ("q=", "q"),
    ] {
        let problem = assert_problem(
            app.list_notes(&user.access, query).await,
            StatusCode::BAD_REQUEST,
            query,
        )
        .await;
        assert_eq!(problem_fields(&problem), vec![field], "{query}");
    }
}
