//! Regressions: memory an account or a slow reader could make the server
//! hold (pages built whole, unbounded accounts, answers stuck in flight).

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::helpers::{TestApp, TestUser, assert_problem, spawn_app_with};
use crate::raw::{self, RawResponse};

/// One page of `GET /api/v1/notes`, as received.
struct Page {
    bytes: usize,
    ids: Vec<String>,
}

/// Follows `next_cursor` from the first page of `query` to the last.
async fn every_page(app: &TestApp, user: &TestUser, query: &str) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let full = match &cursor {
            Some(c) => format!("{query}&cursor={c}"),
            None => query.to_owned(),
        };
        let resp = app.list_notes(&user.access, &full).await;
        assert_eq!(resp.status(), StatusCode::OK, "page {}", pages.len());
        let body = resp.bytes().await.unwrap();
        let page: Value = serde_json::from_slice(&body).unwrap();
        let ids = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect();
        pages.push(Page {
            bytes: body.len(),
            ids,
        });
        assert!(pages.len() <= 50, "the cursors never end");
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return pages,
        }
    }
}

/// Asserts that `pages` hold every one of `ids` exactly once.
fn assert_each_once(pages: &[Page], ids: &[String]) {
    let listed: Vec<&String> = pages.iter().flat_map(|p| &p.ids).collect();
    let distinct: HashSet<&String> = listed.iter().copied().collect();
    assert_eq!(listed.len(), distinct.len(), "no note twice");
    assert_eq!(
        distinct,
        ids.iter().collect::<HashSet<_>>(),
        "every note, following the cursors"
    );
}

#[tokio::test]
async fn regression_a_page_of_notes_stays_within_max_page_bytes() {
    let app = spawn_app_with(&["--max-page-bytes", "300000"]).await;
    let user = app.new_user().await;
    // 20 000 control characters: 120 000 bytes once JSON-escaped, so ten
    // notes make a 1.2 MB page unless the server cuts it.
    let ids = raw::create_notes(&app, &user, 10, &"\u{1}".repeat(20_000)).await;

    let pages = every_page(&app, &user, "limit=100").await;
    for (i, page) in pages.iter().enumerate() {
        assert!(
            page.bytes <= 300_000 || page.ids.len() == 1,
            "page {i} is {} bytes with {} notes, over --max-page-bytes 300000",
            page.bytes,
            page.ids.len()
        );
    }
    assert!(pages.len() > 1, "1.2 MB of notes cannot fit one page");
    assert_each_once(&pages, &ids);

    // A budget smaller than one note: each page carries exactly that note.
    let app = app.restart_with(&["--max-page-bytes", "100000"]).await;
    let pages = every_page(&app, &user, "limit=100").await;
    for (i, page) in pages.iter().enumerate() {
        assert!(
            page.ids.len() == 1 || (page.ids.is_empty() && i == pages.len() - 1),
            "page {i} holds {} notes of 120 000 bytes under a budget of 100 000",
            page.ids.len()
        );
    }
    assert_each_once(&pages, &ids);
}

#[tokio::test]
async fn regression_the_notes_per_account_quota_refuses_creates_with_403() {
    let app = spawn_app_with(&["--max-notes-per-account", "3"]).await;
    let user = app.new_user().await;
    let ids = raw::create_notes(&app, &user, 3, "").await;

    let resp = app.create_note(&user.access, &json!({"title": "fourth"})).await;
    let problem = assert_problem(resp, StatusCode::FORBIDDEN, "a fourth note over a quota of 3").await;
    assert_eq!(problem["type"], "urn:notesd:problem:quota-exceeded");

    let resp = app
        .write_note(Method::DELETE, &user.access, &ids[0], None, None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = app.create_note(&user.access, &json!({"title": "fourth"})).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "a delete makes room again");
    let other = app.new_user().await;
    assert_eq!(
        app.create_note(&other.access, &json!({"title": "mine"}))
            .await
            .status(),
        StatusCode::CREATED,
        "the quota is per account"
    );
}

#[tokio::test]
async fn regression_the_bytes_per_account_quota_refuses_creates_and_growth() {
    let app = spawn_app_with(&["--max-bytes-per-account", "1000"]).await;
    let user = app.new_user().await;
    let big = "x".repeat(2000);

    let resp = app
        .create_note(&user.access, &json!({"title": "big", "content": big}))
        .await;
    let problem = assert_problem(resp, StatusCode::FORBIDDEN, "2000 bytes over a quota of 1000").await;
    assert_eq!(problem["type"], "urn:notesd:problem:quota-exceeded");

    let resp = app
        .create_note(
            &user.access,
            &json!({"title": "small", "content": "x".repeat(100)}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED, "100 bytes fit");
    let before: Value = resp.json().await.unwrap();
    let id = before["id"].as_str().unwrap();

    let put = json!({"title": "small", "content": big});
    let patch = json!({"content": big});
    for (method, body) in [(Method::PUT, &put), (Method::PATCH, &patch)] {
        let resp = app
            .write_note(method.clone(), &user.access, id, None, Some(body))
            .await;
        let problem = assert_problem(
            resp,
            StatusCode::FORBIDDEN,
            &format!("{method} growing the note to 2000 bytes"),
        )
        .await;
        assert_eq!(problem["type"], "urn:notesd:problem:quota-exceeded");
        let resp = app.get_note(&user.access, id).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let now: Value = resp.json().await.unwrap();
        assert_eq!(now, before, "{method}: the refused write changed nothing");
    }
}

#[tokio::test]
async fn regression_a_stalled_http1_reader_is_cut_off_by_the_write_timeout() {
    // The page must outgrow what loopback's socket buffers absorb (the
    // kernel grows a send buffer to ~4 MB): twelve notes of 600 000 bytes
    // once escaped, 7 MB, in one page.
    let app = spawn_app_with(&["--write-timeout", "1s", "--max-page-bytes", "16777216"]).await;
    let user = app.new_user().await;
    raw::create_notes(&app, &user, 12, &"\u{1}".repeat(100_000)).await;

    let mut stream = raw::connect_with_receive_buffer(&app, 4096).await;
    let auth = format!("Authorization: Bearer {}\r\nConnection: close\r\n", user.access);
    stream
        .write_all(&raw::get_request("/api/v1/notes?limit=100", &auth))
        .await
        .unwrap();
    // The attack itself: a client that stops reading.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = raw::read_until_closed(&mut stream, raw::PATIENCE).await;
    let resp = RawResponse::parse(&received).expect("the head was sent before the stall");
    assert_eq!(resp.status, 200);
    assert!(
        !resp.complete,
        "received all {} bytes of a {:?}-byte answer: the server kept the stalled connection",
        resp.body.len(),
        resp.content_length()
    );
}

/// Asks for a page of maximal notes over HTTP/2 with a stream window of 0
/// (the answer's head can arrive, its body never) and says how reading the
/// body ended within 10 s (`None`: it had not ended).
async fn read_through_a_closed_window(flags: &[&str]) -> Option<Result<bytes::Bytes, reqwest::Error>> {
    let app = spawn_app_with(flags).await;
    let user = app.new_user().await;
    raw::create_notes(&app, &user, 2, &"\u{1}".repeat(100_000)).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(0)
        .build()
        .unwrap();
    let resp = client
        .get(app.url("/api/v1/notes?limit=100"))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(10), resp.bytes())
        .await
        .ok()
}

#[tokio::test]
async fn regression_a_stalled_http2_stream_is_cut_off_by_the_write_timeout() {
    let body = read_through_a_closed_window(&["--write-timeout", "1s"])
        .await
        .expect("the server gives up on the stalled stream within 10 s");
    assert!(
        body.is_err(),
        "a body cannot arrive through a window of 0: {body:?}"
    );
}

/// Regression (review): any write counted as progress, so the server's own
/// keep-alive pings (and their acks) kept a stalled HTTP/2 stream, and
/// the memory it held, alive for ever at the default settings.
#[tokio::test]
async fn regression_pings_do_not_keep_a_stalled_http2_stream_alive() {
    let body =
        read_through_a_closed_window(&["--write-timeout", "1s", "--http2-keepalive-interval", "200ms"])
            .await
            .expect("pings (answered by the client) do not count as progress");
    assert!(body.is_err(), "{body:?}");
}

/// Regression (second review): hyper takes a small answer whole into the
/// stream's send buffer, so with a window of one byte nothing was owed any
/// more as far as the stall check could see: the answer (and its memory)
/// stayed until the idle timeout, past every budget. A hand-made HTTP/2
/// client that never opens its window (reqwest would, as it reads).
#[tokio::test]
async fn regression_a_small_answer_behind_a_one_byte_window_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(&["--write-timeout", "1s", "--idle-timeout", "60s"]).await;
    let mut stream = tokio::net::TcpStream::connect(raw::server_addr(&app))
        .await
        .unwrap();
    // SETTINGS: INITIAL_WINDOW_SIZE (0x4) = 1.
    let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1];
    // HEADERS on stream 1, END_STREAM | END_HEADERS, HPACK by hand:
    // :method GET, :scheme http, :path /healthz, :authority localhost.
    let mut block = vec![0x82, 0x86, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x41, 9]);
    block.extend_from_slice(b"localhost");
    let mut headers = vec![0, 0, u8::try_from(block.len()).unwrap(), 1, 5, 0, 0, 0, 1];
    headers.extend_from_slice(&block);
    stream.write_all(raw::h2::PREFACE).await.unwrap();
    stream.write_all(&settings).await.unwrap();
    stream.write_all(&headers).await.unwrap();
    // Closed at the write timeout, not the idle timeout (this panics
    // after 10 s).
    let received = raw::read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(!received.is_empty(), "the server answered before giving up");
}

/// Regression (second review): a body was counted at its declared length
/// before a byte arrived, so a few clients announcing 1 MiB bodies and
/// sending one byte held the whole server budget, and everyone else's API
/// requests got 503. A body now holds what has been sent.
#[tokio::test]
async fn regression_announced_bodies_hold_nothing_until_sent() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(&[
        "--max-buffered-bytes",
        "4194304",
        "--client-buffer-bytes",
        "2097152",
        "--connection-buffer-bytes",
        "1048576",
    ])
    .await;
    let mut announcers = Vec::new();
    for client in 2..=5u8 {
        for _ in 0..2 {
            let mut stream = raw::connect_from(&app, std::net::Ipv4Addr::new(127, 0, 0, client)).await;
            let head = "POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                        Content-Length: 1048576\r\n\r\n{";
            stream.write_all(head.as_bytes()).await.unwrap();
            announcers.push(stream);
        }
    }
    // Eight announced megabytes against a 4 MiB server budget.
    let resp = app.login("someone@example.com", "not the password").await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "an ordinary login is judged, not refused for room"
    );
    drop(announcers);
}
