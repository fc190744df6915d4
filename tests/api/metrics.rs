//! `--metrics-listen`: Prometheus metrics on their own listener.

use reqwest::{Method, StatusCode};

use crate::helpers::{PASSWORD, TestApp, spawn_app, spawn_app_with};

pub async fn scrape(app: &TestApp) -> String {
    let url = format!("{}/metrics", app.metrics.as_deref().expect("a metrics listener"));
    let resp = app.client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let body = resp.text().await.unwrap();
    assert!(body.ends_with("# EOF\n"), "a complete exposition");
    body
}

/// The value of the sample `name{labels}` (labels as written, in order).
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

#[tokio::test]
async fn requests_auth_events_and_storage_are_counted() {
    let app = spawn_app_with(&["--metrics-listen", "127.0.0.1:0"]).await;
    let user = app.new_user().await;
    assert_eq!(app.login(&user.email, "not the password").await.status(), 401);
    let refreshed = app.refresh(&user.refresh).await;
    assert_eq!(refreshed.status(), 200);
    // The replaced refresh token, after its grace: reuse.
    app.advance_clock(std::time::Duration::from_secs(60));
    assert_eq!(app.refresh(&user.refresh).await.status(), 401);
    let resp = app
        .request(Method::GET, "/api/v1/notes", Some("v4.public.forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = app.request(Method::GET, "/nope", None).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    let body = scrape(&app).await;
    let requests = |method: &str, route: &str, status: &str| {
        sample(
            &body,
            &format!(
                "notesd_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(
        requests("POST", "/api/v1/auth/signup", "2xx"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(requests("POST", "/api/v1/auth/login", "4xx"), Some(1.0));
    assert_eq!(requests("POST", "/api/v1/auth/refresh", "2xx"), Some(1.0));
    assert_eq!(requests("POST", "/api/v1/auth/refresh", "4xx"), Some(1.0));
    assert_eq!(requests("GET", "/api/v1/notes", "4xx"), Some(1.0));
    assert_eq!(requests("*", "other", "4xx"), Some(1.0), "an unknown route");
    assert_eq!(
        sample(
            &body,
            "notesd_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/auth/signup\"}"
        ),
        Some(1.0)
    );
    let event = |name: &str| sample(&body, &format!("notesd_auth_events_total{{event=\"{name}\"}}"));
    assert_eq!(event("signup"), Some(1.0));
    assert_eq!(event("login_failed"), Some(1.0));
    assert_eq!(event("refresh_succeeded"), Some(1.0));
    assert_eq!(event("refresh_reused"), Some(1.0));
    assert_eq!(event("token_rejected"), Some(1.0));
    assert_eq!(sample(&body, "notesd_hash_queue_depth"), Some(0.0));
    assert_eq!(sample(&body, "notesd_db_write_queue_depth"), Some(0.0));
    assert_eq!(sample(&body, "notesd_db_writes_refused_total"), Some(0.0));
    assert!(sample(&body, "notesd_db_commit_batch_size_count").unwrap_or(0.0) >= 2.0);
    assert!(sample(&body, "notesd_db_size_bytes").unwrap_or(0.0) > 0.0);
    assert_eq!(sample(&body, "notesd_sessions"), Some(1.0));
    // No certificate on plain HTTP.
    assert!(!body.contains("tls_certificate_expiry"));
}

#[tokio::test]
async fn backed_off_logins_are_counted() {
    let app = spawn_app_with(&["--metrics-listen", "127.0.0.1:0", "--login-free-failures", "1"]).await;
    let user = app.new_user().await;
    let mut backed_off = 0;
    for _ in 0..5 {
        if app.login(&user.email, "not the password").await.status() == 429 {
            backed_off += 1;
        }
    }
    assert!(backed_off > 0, "the account backs off");
    let body = scrape(&app).await;
    assert_eq!(
        sample(&body, "notesd_auth_events_total{event=\"login_backed_off\"}"),
        Some(f64::from(backed_off)),
        "{body}"
    );
    assert_eq!(
        sample(&body, "notesd_rate_limited_total{scope=\"auth\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn throttled_requests_are_counted() {
    let app = spawn_app_with(&["--metrics-listen", "127.0.0.1:0", "--auth-rate-limit", "1"]).await;
    let user = app.new_user().await;
    // The signup spent the one request a minute.
    assert_eq!(app.login(&user.email, PASSWORD).await.status(), 429);
    let body = scrape(&app).await;
    assert_eq!(
        sample(&body, "notesd_rate_limited_total{scope=\"auth\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "notesd_rate_limited_total{scope=\"api\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, "notesd_auth_events_total{event=\"login_backed_off\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn metrics_are_not_on_the_api_listener_and_only_at_their_path() {
    let app = spawn_app_with(&["--metrics-listen", "127.0.0.1:0"]).await;
    let resp = app.request(Method::GET, "/metrics", None).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let metrics = app.metrics.clone().unwrap();
    let resp = app.client.get(format!("{metrics}/other")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app
        .client
        .post(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert!(spawn_app().await.metrics.is_none(), "off by default");
}

/// The metrics listener holds 8 connections at most, whatever
/// `--max-connections` says: a ninth waits until one of them ends.
#[tokio::test]
async fn the_metrics_listener_holds_a_few_connections() {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&["--metrics-listen", "127.0.0.1:0"]).await;
    let addr: SocketAddr = app
        .metrics
        .as_deref()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let connect = |last: u8| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0))
            .unwrap();
        socket.connect(addr).await.unwrap()
    };
    let scrape = crate::raw::get_request("/metrics", "");
    let mut held = Vec::new();
    for i in 0..8 {
        let mut stream = connect(10 + i).await;
        stream.write_all(&scrape).await.unwrap();
        assert_eq!(crate::raw::read_one_response(&mut stream).await.status, 200);
        held.push(stream);
    }
    let mut ninth = connect(30).await;
    ninth.write_all(&scrape).await.unwrap();
    // Served at once if the cap did not hold; waiting in the backlog if it does.
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(std::time::Duration::from_secs(1), ninth.read(&mut byte)).await;
    assert!(early.is_err(), "a ninth connection waits while 8 are open");
    held.pop();
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        crate::raw::read_one_response(&mut ninth),
    )
    .await
    .expect("served once a connection ends");
    assert_eq!(resp.status, 200);
}

/// An HTTP/2 client of the metrics listener may have two scrapes in flight
/// per connection (so 8 connections hold 16 answers at most), whatever
/// `--http2-max-streams` allows on the API.
#[tokio::test]
async fn the_metrics_listener_allows_two_streams_per_connection() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(&["--metrics-listen", "127.0.0.1:0"]).await;
    let addr = app.metrics.as_deref().unwrap().trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(crate::raw::h2::PREFACE).await.unwrap();
    stream.write_all(&crate::raw::h2::EMPTY_SETTINGS).await.unwrap();
    let settings = crate::raw::h2::read_frame(&mut stream)
        .await
        .expect("the server's SETTINGS");
    assert_eq!(settings.kind, crate::raw::h2::SETTINGS);
    // Entries of 6 bytes: identifier (3 is MAX_CONCURRENT_STREAMS), value.
    let max_streams = settings.payload.chunks_exact(6).find_map(|entry| {
        (entry[..2] == [0, 3]).then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
    });
    assert_eq!(max_streams, Some(2));
}
