//! Bad requests of every kind get a problem+json 4xx, never a 500.

use reqwest::{Method, StatusCode};

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, assert_problem, spawn_app};

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    for (body, why) in [
        ("{\"title\":", "truncated"),
        ("not json", "not JSON at all"),
        ("", "empty body"),
        ("[]", "an array, not an object"),
        ("null", "null"),
        ("{\"title\":\"a\",\"title\":\"b\"", "truncated after duplicate"),
    ] {
        let resp = app
            .request(Method::POST, "/api/v1/notes", Some(&user.access))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(resp, StatusCode::BAD_REQUEST, why).await;
    }
}

#[tokio::test]
async fn a_json_body_with_another_content_type_is_415() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        None,
    ] {
        let mut req = app
            .request(Method::POST, "/api/v1/notes", Some(&user.access))
            .body(r#"{"title":"hello"}"#);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        assert_problem(
            req.send().await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("{content_type:?}"),
        )
        .await;
    }
    let resp = app
        .request(Method::POST, "/api/v1/auth/login", None)
        .header("Content-Type", "text/plain")
        .body(r#"{"email":"a@b.c","password":"whatever-it-is"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE, "login with text/plain").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let resp = app
        .request(Method::GET, "/api/v1/nope", None)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::NOT_FOUND, "unknown route").await;
    let resp = app
        .request(Method::DELETE, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::METHOD_NOT_ALLOWED, "wrong method").await;
    let resp = app
        .request(Method::GET, "/api/v1/auth/login", None)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::METHOD_NOT_ALLOWED, "GET on a POST route").await;
}

#[tokio::test]
async fn a_wrongly_typed_password_is_not_echoed() {
    let app = spawn_app().await;
    let resp = app
        .request(Method::POST, "/api/v1/auth/signup", None)
        .json(&serde_json::json!({"email": "x@example.com", "password": 987_654_321_123_u64}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "number for a password").await;
    assert!(!problem.to_string().contains("987654321123"), "{problem}");
}

#[tokio::test]
async fn an_oversized_body_is_413_before_it_is_read() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let big = format!(r#"{{"title":"big","content":"{}"}}"#, "x".repeat(2 * 1024 * 1024));

    let declared = app
        .request(Method::POST, "/api/v1/notes", Some(&user.access))
        .header("Content-Type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_problem(
        declared,
        StatusCode::PAYLOAD_TOO_LARGE,
        "2 MiB with Content-Length",
    )
    .await;

    // Without a length (chunked), the limit applies while streaming.
    let chunks = futures_chunks(big.into_bytes());
    let streamed = app
        .request(Method::POST, "/api/v1/notes", Some(&user.access))
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_problem(streamed, StatusCode::PAYLOAD_TOO_LARGE, "2 MiB chunked").await;

    let unauthenticated = app
        .request(Method::POST, "/api/v1/auth/login", None)
        .header("Content-Type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_problem(
        unauthenticated,
        StatusCode::PAYLOAD_TOO_LARGE,
        "no login needed to be refused",
    )
    .await;
}

fn futures_chunks(bytes: Vec<u8>) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn unauthorized_answers_name_the_scheme_and_api_answers_are_not_cached() {
    let app = spawn_app().await;
    let resp = app.request(Method::GET, "/api/v1/me", None).send().await.unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let user = app.new_user().await;
    let resp = app.me(&user.access).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["cache-control"],
        "no-store",
        "user data is never cached"
    );
    let resp = app.refresh(&user.refresh).await;
    assert_eq!(
        resp.headers()["cache-control"],
        "no-store",
        "tokens are never cached"
    );
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_within_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = crate::helpers::spawn_app_with(&["--header-timeout", "1s"]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // One header byte every 100 ms: finishing the head would take 20 s.
    let mut closed = false;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(std::time::Duration::from_millis(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!("no response is due to an incomplete head, got {n} bytes"),
            Err(_) => {}
        }
    }
    let elapsed = started.elapsed();
    assert!(closed, "the server must close the connection");
    assert!(
        elapsed < std::time::Duration::from_secs(4),
        "closed after {elapsed:?}, header timeout 1 s"
    );

    // A normal client on a kept-alive connection is not affected.
    let user = app.new_user().await;
    for _ in 0..3 {
        assert_eq!(app.me(&user.access).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn oversized_headers_and_deep_json_are_4xx() {
    let app = spawn_app().await;
    let resp = app
        .request(Method::GET, "/api/v1/auth/keys", None)
        .header("X-Big", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_problem(
        resp,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "20 KiB of headers",
    )
    .await;
    let resp = app
        .request(Method::GET, "/healthz", None)
        .header("X-Big", "a".repeat(200 * 1024))
        .send()
        .await;
    match resp {
        Ok(resp) => assert!(
            resp.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                || resp.status() == StatusCode::BAD_REQUEST,
            "got {}",
            resp.status()
        ),
        // hyper may answer 431 and close before the client finishes writing.
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    let user = app.new_user().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let resp = app
        .request(Method::POST, "/api/v1/notes", Some(&user.access))
        .header("Content-Type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "100 000 nested arrays").await;
}

/// RFC 9110 §15.5.6: a 405 says which methods the resource answers.
#[tokio::test]
async fn a_wrong_method_is_told_the_allowed_ones() {
    let app = spawn_app().await;
    let cases = [
        (Method::DELETE, "/healthz", "GET, HEAD"),
        (Method::GET, "/api/v1/auth/login", "POST"),
        (Method::PUT, "/api/v1/notes", "POST, GET, HEAD"),
        (
            Method::POST,
            "/api/v1/notes/0190d9a1-1111-7000-8000-000000000000",
            "GET, PUT, PATCH, DELETE, HEAD",
        ),
        (Method::TRACE, "/api/v1/me", "GET, DELETE, HEAD"),
        (Method::POST, "/openapi.json", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let resp = app.request(method.clone(), path, None).send().await.unwrap();
        let header = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header.as_deref(), Some(allow), "{method} {path}");
        assert_problem(resp, StatusCode::METHOD_NOT_ALLOWED, path).await;
    }
}

/// The document declares no member nullable: `null` is refused, never read
/// as "absent" (a PATCH `{"content": null}` meant as "clear" must not pass as
/// "keep").
#[tokio::test]
async fn null_is_never_a_value() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let note = app.new_note(&user, "kept", &["a"]).await;
    let id = note["id"].as_str().unwrap();
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/notes".to_owned(),
            json!({"title": "x", "content": null}),
        ),
        (
            Method::POST,
            "/api/v1/notes".to_owned(),
            json!({"title": "x", "tags": null}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/notes/{id}"),
            json!({"tags": null}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/notes/{id}"),
            json!({"content": null}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/notes/{id}"),
            json!({"title": null}),
        ),
    ] {
        let resp = app
            .request(method.clone(), &path, Some(&user.access))
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, &body.to_string()).await;
        assert!(problem.to_string().contains("must not be null"), "{problem}");
    }
    let resp = app
        .request(Method::POST, "/api/v1/auth/login", None)
        .json(&json!({"email": user.email, "password": PASSWORD, "device_token": null}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "a null device_token").await;
    let unchanged = app
        .get_note(&user.access, id)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(unchanged["version"], 1, "nothing was written");
}

/// What the document says about bodies is what the server does: the last
/// page has no `next_cursor` member (not `null`), a title of white space
/// only breaks the title's pattern and is refused, and every request body
/// schema is closed (`additionalProperties: false`), as the server refuses
/// unknown members.
#[tokio::test]
async fn bodies_match_the_document() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let page: Value = app.list_notes(&user.access, "").await.json().await.unwrap();
    assert!(page.as_object().unwrap().get("next_cursor").is_none(), "{page}");

    let spec: Value = app.spec().await;
    let schemas = &spec["components"]["schemas"];
    let pattern = schemas["NoteInput"]["properties"]["title"]["pattern"]
        .as_str()
        .unwrap();
    for title in [" ", "\t\n", "\u{3000}\u{a0}", "\u{85}\u{2028}"] {
        assert!(title.chars().all(char::is_whitespace));
        let resp = app.create_note(&user.access, &json!({ "title": title })).await;
        assert_problem(resp, StatusCode::BAD_REQUEST, "a blank title").await;
    }
    assert!(
        pattern.contains(r"\u3000") && pattern.starts_with("[^"),
        "{pattern}"
    );
    for name in [
        "SignupRequest",
        "LoginRequest",
        "RefreshRequest",
        "NoteInput",
        "NotePatch",
    ] {
        assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
    }
    assert_eq!(
        schemas["SignupRequest"]["properties"]["email"]["format"],
        "idn-email"
    );
    // Header names as RFC 9110 spells them, as generated clients show them.
    let created = &spec["paths"]["/api/v1/notes"]["post"]["responses"]["201"]["headers"];
    assert!(
        created["ETag"].is_object() && created["Location"].is_object(),
        "{created}"
    );
    assert!(
        !schemas["Problem"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("errors"))
    );
}

/// The body limit holds the largest note the document allows, written in
/// the longest JSON it can take: every character a surrogate-pair escape.
#[tokio::test]
async fn the_largest_valid_note_fits_the_default_body_limit() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let emoji = r"\ud83d\ude00";
    let tags: Vec<String> = (0..20).map(|i| format!("\"{}{i:02}\"", "t".repeat(30))).collect();
    let body = format!(
        r#"{{"title":"{}","content":"{}","tags":[{}]}}"#,
        emoji.repeat(200),
        emoji.repeat(100_000),
        tags.join(",")
    );
    assert!(body.len() > 1_200_000, "{}", body.len());
    let resp = app
        .request(Method::POST, "/api/v1/notes", Some(&user.access))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

/// The document declares `application/json; charset=utf-8` for every body:
/// JSON labelled as another type or another charset is refused, not read
/// as UTF-8 JSON anyway.
#[tokio::test]
async fn json_under_another_label_is_415() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let create_as = |content_type: &'static str| {
        app.request(Method::POST, "/api/v1/notes", Some(&user.access))
            .header("content-type", content_type)
            .body(r#"{"title":"x"}"#)
            .send()
    };
    for content_type in [
        "application/problem+json",
        "application/merge-patch+json",
        "application/json; charset=utf-16",
        "application/json; charset=latin1",
    ] {
        let resp = create_as(content_type).await.unwrap();
        assert_problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE, content_type).await;
    }
    for content_type in [
        "application/json",
        "application/json; charset=UTF-8",
        "Application/JSON;charset=\"utf-8\"",
    ] {
        let resp = create_as(content_type).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{content_type}");
    }
}
