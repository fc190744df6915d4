//! Regressions: HTTP itself, abused. Refusals made by the HTTP parser keep
//! our problem+json contract, ambiguous requests are refused rather than
//! read one way here and another way by a proxy.

use std::fmt::Write;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::spawn_app;
use crate::raw;

#[tokio::test]
async fn regression_requests_the_parser_refuses_get_a_problem_answer() {
    let app = spawn_app().await;
    let close = "Host: localhost\r\nConnection: close\r\n";
    let long_url = format!("GET /healthz?{} HTTP/1.1\r\n{close}\r\n", "a".repeat(70_000));
    let mut fillers = String::new();
    for i in 0..99 {
        write!(fillers, "X-Filler-{i}: v\r\n").unwrap();
    }
    let many_headers = format!("GET /healthz HTTP/1.1\r\n{close}{fillers}\r\n");
    let folded = format!("GET /healthz HTTP/1.1\r\n{close}X-Folded: a\r\n b\r\n\r\n");
    let gzip_chunked =
        format!("GET /healthz HTTP/1.1\r\n{close}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    let chunked_and_length = format!(
        "GET /healthz HTTP/1.1\r\n{close}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    );
    let cases: [(&str, &[u16], &str); 5] = [
        (&long_url, &[414], "a 70 000-byte URL"),
        (&many_headers, &[431], "101 header lines"),
        (&folded, &[400], "an obs-fold header line"),
        (&gzip_chunked, &[400, 501], "a transfer coding other than chunked"),
        (
            &chunked_and_length,
            &[400, 501],
            "Transfer-Encoding with Content-Length",
        ),
    ];
    for (request, statuses, why) in cases {
        let resp = raw::exchange(&app, request.as_bytes()).await;
        assert!(
            statuses.contains(&resp.status),
            "{why}: expected {statuses:?}, got {} {:?}",
            resp.status,
            resp.text()
        );
        resp.assert_problem(why);
    }
}

#[tokio::test]
async fn regression_two_authorization_headers_are_400() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let bearer = format!("Authorization: Bearer {}\r\n", user.access);
    let request =
        format!("GET /api/v1/me HTTP/1.1\r\nHost: localhost\r\n{bearer}{bearer}Connection: close\r\n\r\n");
    let resp = raw::exchange(&app, request.as_bytes()).await;
    assert_eq!(
        resp.status,
        400,
        "two credentials, even equal ones, are ambiguous: {:?}",
        resp.text()
    );
    resp.assert_problem("two Authorization headers");
}

#[tokio::test]
async fn regression_an_http1_request_needs_exactly_one_host() {
    let app = spawn_app().await;
    for (hosts, why) in [
        ("", "no Host"),
        ("Host: localhost\r\nHost: evil.example\r\n", "two Host headers"),
        ("Host: localhost\r\nHost: localhost\r\n", "the same Host twice"),
    ] {
        let request = format!("GET /healthz HTTP/1.1\r\n{hosts}Connection: close\r\n\r\n");
        let resp = raw::exchange(&app, request.as_bytes()).await;
        assert_eq!(resp.status, 400, "{why} (RFC 9112 §3.2): {:?}", resp.text());
    }
}

/// Regression (review): a `100 Continue` reset the head scanner, so the body
/// that followed was read as a new request head: a 70 000-character note
/// was cut off as "head too long" and a slow upload hit the head deadline.
#[tokio::test]
async fn regression_an_upload_after_100_continue_is_a_body_not_a_head() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let body = serde_json::json!({"title": "long", "content": "x".repeat(70_000)}).to_string();
    let head = format!(
        "POST /api/v1/notes HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        user.access,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(raw::server_addr(&app))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = vec![0; 64];
    let n = stream.read(&mut interim).await.unwrap();
    assert!(
        interim[..n].starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&interim[..n])
    );
    stream.write_all(body.as_bytes()).await.unwrap();
    let received = raw::read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let resp = raw::RawResponse::parse(&received).expect("an answer");
    assert_eq!(resp.status, 201, "{}", resp.text());
}

/// Regression (review): the head scanner knew only CRLF line ends; the
/// parser also takes bare LF, so a head framed by both `Content-Length` and
/// `Transfer-Encoding` written with bare LFs slipped past the refusal.
#[tokio::test]
async fn regression_a_double_framed_head_with_bare_line_feeds_is_refused() {
    let app = spawn_app().await;
    let request = b"POST /api/v1/auth/login HTTP/1.1\nHost: localhost\nContent-Type: application/json\n\
        Content-Length: 2\nTransfer-Encoding: chunked\nConnection: close\n\n0\r\n\r\n";
    let resp = raw::exchange(&app, request).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    resp.assert_problem("both framings, bare LF");
}

/// Regression (review): only the first answer on a connection could be the
/// parser's, so a malformed second request got hyper's bare 400.
#[tokio::test]
async fn regression_a_refusal_after_a_first_answer_is_problem_json_too() {
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(raw::server_addr(&app))
        .await
        .unwrap();
    stream.write_all(&raw::get_request("/healthz", "")).await.unwrap();
    let first = raw::read_one_response(&mut stream).await;
    assert_eq!(first.status, 200);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n")
        .await
        .unwrap();
    let received = raw::read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let resp = raw::RawResponse::parse(&received).expect("an answer");
    assert_eq!(resp.status, 400);
    resp.assert_problem("obs-fold in a second request");
}

/// Regression (review): bytes read after a complete head were never
/// scanned, so a request framed by both `Content-Length` and
/// `Transfer-Encoding` pipelined behind another one was read by the parser
/// as chunked instead of being refused.
#[tokio::test]
async fn regression_a_pipelined_double_framed_request_is_refused() {
    let app = spawn_app().await;
    let body = "{}";
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let pipelined = format!(
        "POST /api/v1/auth/refresh HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}\
         POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(raw::server_addr(&app))
        .await
        .unwrap();
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let received = raw::read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let first = raw::RawResponse::parse(&received).expect("a first answer");
    assert_eq!(
        first.status,
        400,
        "the first request is only malformed: {}",
        first.text()
    );
    let second = last_of_two_answers(&received);
    assert_eq!(second.status, 400, "{}", second.text());
    assert!(
        second.text().contains("frames its body ambiguously"),
        "{}",
        second.text()
    );
}

/// Regression (second review): a head whose framing the scanner could not
/// follow (a repeated or unreadable `Content-Length`) stopped the scanning,
/// so a double-framed request behind it went through. Such a head is now
/// refused itself, and its connection closed.
#[tokio::test]
async fn regression_an_unreadable_content_length_is_refused_not_skipped() {
    let app = spawn_app().await;
    for (head, why) in [
        (
            "Content-Length: 0\r\nContent-Length: 1\r\n",
            "two different lengths",
        ),
        (
            &*format!("Content-Length: {}0\r\n", "0".repeat(100)),
            "a length line too long to read",
        ),
    ] {
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\n{head}\r\n\
             GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        let resp = raw::exchange(&app, request.as_bytes()).await;
        assert_eq!(resp.status, 400, "{why}: {}", resp.text());
        resp.assert_problem(why);
    }
    let agreeing = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(
        raw::exchange(&app, agreeing.as_bytes()).await.status,
        200,
        "repeated, agreeing lengths are one"
    );
}

/// Regression (second review): the parser's refusal of a head pipelined
/// behind a good request went out bare.
#[tokio::test]
async fn regression_a_pipelined_refusal_is_problem_json_too() {
    let app = spawn_app().await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(raw::server_addr(&app))
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let received = raw::read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let second = last_of_two_answers(&received);
    assert_eq!(second.status, 400);
    second.assert_problem("obs-fold pipelined behind a good request");
}

/// The second of two answers read back to back on one connection.
fn last_of_two_answers(received: &[u8]) -> raw::RawResponse {
    let at = received
        .windows(9)
        .rposition(|w| w == b"HTTP/1.1 ")
        .filter(|&at| at > 0)
        .expect("a second answer");
    raw::RawResponse::parse(&received[at..]).expect("a second answer")
}
