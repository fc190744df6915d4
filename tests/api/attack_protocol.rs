//! Regressions: HTTP itself, abused. Refusals made by the HTTP parser keep
//! our problem+json contract, ambiguous requests are refused rather than
//! read one way here and another way by a proxy, and the plain-HTTP
//! redirect goes nowhere it was not meant to.

use std::fmt::Write;

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
