//! Rate limits per client address, attacked.

use reqwest::{Method, StatusCode};

use crate::helpers::{assert_problem, spawn_app_with};

#[tokio::test]
async fn a_login_flood_from_one_address_gets_429_with_retry_after() {
    let app = spawn_app_with(&["--auth-rate-limit", "3"]).await;
    for i in 0..3 {
        let resp = app.login("victim@example.com", "guess number one").await;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {i} is only a bad login"
        );
        assert_eq!(resp.headers()["ratelimit-limit"], "3");
        let remaining: u32 = resp.headers()["ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(remaining, 2 - i, "remaining counts down");
    }
    let resp = app.login("victim@example.com", "guess number four").await;
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After in seconds: {retry}");
    assert_eq!(resp.headers()["ratelimit-remaining"], "0");
    assert_problem(resp, StatusCode::TOO_MANY_REQUESTS, "fourth login in a minute").await;
    // Signup and refresh share the stricter budget; other routes do not.
    assert_eq!(
        app.signup("new@example.com", "plaid otter cathedral")
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let health = app.request(Method::GET, "/healthz", None).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(&["--auth-rate-limit", "3"]).await;
    for i in 0..4 {
        let resp = app
            .request(Method::POST, "/api/v1/auth/login", None)
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .json(&serde_json::json!({"email": "victim@example.com", "password": "guess guess guess"}))
            .send()
            .await
            .unwrap();
        let expected = if i < 3 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(
            resp.status(),
            expected,
            "attempt {i}: a new X-Forwarded-For is not a new client"
        );
    }
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let app = spawn_app_with(&["--auth-rate-limit", "3", "--trusted-proxies", "127.0.0.0/8"]).await;
    let login = |client: &'static str| {
        app.request(Method::POST, "/api/v1/auth/login", None)
            .header("X-Forwarded-For", format!("{client}, 127.0.0.1"))
            .json(&serde_json::json!({"email": "victim@example.com", "password": "guess guess guess"}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            login("198.51.100.1").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login("198.51.100.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "that client is limited"
    );
    assert_eq!(
        login("198.51.100.2").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "another client is not"
    );
}

#[tokio::test]
async fn the_general_limit_covers_every_api_route() {
    let app = spawn_app_with(&["--rate-limit", "5"]).await;
    for _ in 0..5 {
        let resp = app
            .request(Method::GET, "/api/v1/auth/keys", None)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = app.request(Method::GET, "/api/v1/me", None).send().await.unwrap();
    assert_problem(resp, StatusCode::TOO_MANY_REQUESTS, "sixth API request").await;
}

#[tokio::test]
async fn http2_connections_announce_the_stream_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&["--http2-max-streams", "7"]).await;
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    // HTTP/2 with prior knowledge: the preface, then an empty SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    // The server's first frame is its SETTINGS.
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 4, "a SETTINGS frame: {head:?}");
    let len = usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await.unwrap();
    let max_streams = payload
        .chunks_exact(6)
        .find(|entry| entry[..2] == [0, 3])
        .map(|entry| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]));
    assert_eq!(max_streams, Some(7), "SETTINGS_MAX_CONCURRENT_STREAMS");
}

/// Writes past the writer's queue are shed at once with 503 and
/// `Retry-After`; a shed write wrote nothing, and every accepted one is
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_flood_past_the_queue_gets_503_and_writes_nothing() {
    let app = spawn_app_with(&[
        "--write-queue",
        "1",
        "--max-connections-per-client",
        "0",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .await;
    let user = app.new_user().await;
    let (mut created, mut shed) = (0, 0);
    // Rounds of 64 creates at once, until the queue of one overflows.
    for _ in 0..50 {
        let mut round = tokio::task::JoinSet::new();
        for i in 0..64 {
            let req = app
                .request(Method::POST, "/api/v1/notes", Some(&user.access))
                .json(&serde_json::json!({ "title": format!("flood {i}") }));
            round.spawn(async move { req.send().await.unwrap() });
        }
        while let Some(resp) = round.join_next().await {
            let resp = resp.unwrap();
            match resp.status() {
                StatusCode::CREATED => created += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_eq!(resp.headers()["retry-after"], "1");
                    assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "queue full").await;
                    shed += 1;
                }
                other => panic!("a create answered {other}"),
            }
        }
        if shed > 0 {
            break;
        }
    }
    assert!(shed > 0, "64 writes at once overflow a queue of one");
    let mut stored = 0;
    let mut cursor = String::new();
    loop {
        let page: serde_json::Value = app
            .list_notes(&user.access, &format!("limit=100{cursor}"))
            .await
            .json()
            .await
            .unwrap();
        stored += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(stored, created, "every 201 is stored, no 503 is");
    let metrics = crate::metrics::scrape(&app).await;
    assert_eq!(
        crate::metrics::sample(&metrics, "notesd_db_writes_refused_total"),
        Some(f64::from(shed))
    );
}

/// Ending a session is never shed: logouts, and ends of the other
/// sessions, during a write flood past the queue all take effect, in
/// memory and on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_endings_during_a_write_flood_are_not_shed() {
    let app = spawn_app_with(&["--write-queue", "1", "--max-connections-per-client", "0"]).await;
    let flooder = app.new_user().await;
    let mut users = Vec::new();
    // Half log out; the other half end their first session from a second.
    let mut second_sessions = Vec::new();
    for i in 0..8 {
        let user = app.new_user().await;
        if i % 2 == 1 {
            let pair: serde_json::Value = app.login(&user.email, &user.password).await.json().await.unwrap();
            second_sessions.push(pair["access_token"].as_str().unwrap().to_owned());
        }
        users.push(user);
    }
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..256 {
        let req = app
            .request(Method::POST, "/api/v1/notes", Some(&flooder.access))
            .json(&serde_json::json!({ "title": format!("flood {i}") }));
        flood.spawn(async move { req.send().await.unwrap().status() });
    }
    let mut logouts = tokio::task::JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let req = if i % 2 == 0 {
            app.request(Method::POST, "/api/v1/auth/logout", Some(&user.access))
        } else {
            app.request(
                Method::DELETE,
                "/api/v1/me/sessions",
                Some(&second_sessions[i / 2]),
            )
        };
        logouts.spawn(async move { req.send().await.unwrap().status() });
    }
    while let Some(status) = logouts.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::NO_CONTENT);
    }
    let mut shed = 0;
    while let Some(status) = flood.join_next().await {
        shed += usize::from(status.unwrap() == StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(shed > 0, "the flood overflowed the queue");
    let app = app.restart().await;
    for user in &users {
        assert_eq!(
            app.refresh(&user.refresh).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(app.me(&user.access).await.status(), StatusCode::UNAUTHORIZED);
    }
}
