//! Regressions: connections held open for nothing (one client's share,
//! idle and silent HTTP/2 peers, request heads dribbled in).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with};
use crate::raw::{self, h2};

#[tokio::test]
async fn regression_one_client_cannot_hold_more_than_its_share_of_connections() {
    let app = spawn_app_with(&["--max-connections-per-client", "4"]).await;
    let healthz = raw::get_request("/healthz", "");
    let mut held = Vec::new();
    for i in 0..4 {
        let mut stream = raw::connect_from(&app, Ipv4Addr::LOCALHOST).await;
        stream.write_all(&healthz).await.unwrap();
        let resp = raw::read_one_response(&mut stream).await;
        assert_eq!(resp.status, 200, "connection {i} of the client is served");
        held.push(stream);
    }

    let mut fifth = raw::connect_from(&app, Ipv4Addr::LOCALHOST).await;
    let _ = fifth
        .write_all(&raw::get_request("/healthz", "Connection: close\r\n"))
        .await;
    let answer = raw::read_until_closed(&mut fifth, raw::PATIENCE).await;
    assert!(
        answer.is_empty(),
        "a fifth connection from 127.0.0.1 is closed without an answer, got {:?}",
        String::from_utf8_lossy(&answer)
    );

    let mut other = raw::connect_from(&app, Ipv4Addr::new(127, 0, 0, 2)).await;
    other.write_all(&healthz).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), raw::read_one_response(&mut other))
        .await
        .expect("another client is served within 5 s");
    assert_eq!(resp.status, 200);
    drop(held);
}

/// An HTTP/2 (prior knowledge) connection that has sent its preface and
/// an empty SETTINGS frame.
async fn h2c_connection(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(raw::server_addr(app)).await.unwrap();
    stream.write_all(h2::PREFACE).await.unwrap();
    stream.write_all(&h2::EMPTY_SETTINGS).await.unwrap();
    stream
}

#[tokio::test]
async fn regression_an_idle_http2_connection_is_closed() {
    let app = spawn_app_with(&["--idle-timeout", "1s"]).await;
    let mut stream = h2c_connection(&app).await;
    // Then nothing: no SETTINGS ACK, no PING ACK, no stream. A GOAWAY may
    // come first; the connection must end.
    raw::read_until_closed(&mut stream, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn regression_an_http2_client_that_never_answers_pings_is_closed() {
    let app = spawn_app_with(&[
        "--http2-keepalive-interval",
        "1s",
        "--http2-keepalive-timeout",
        "1s",
        "--idle-timeout",
        "60s",
    ])
    .await;
    let mut stream = h2c_connection(&app).await;
    let mut pinged = false;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        // A well-behaved peer in every way but one: it acknowledges
        // SETTINGS and never answers PING.
        while let Some(frame) = h2::read_frame(&mut stream).await {
            if frame.kind == h2::SETTINGS && frame.flags & h2::ACK == 0 {
                let _ = stream.write_all(&h2::SETTINGS_ACK).await;
            }
            if frame.kind == h2::PING && frame.flags & h2::ACK == 0 {
                pinged = true;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a peer that never answers PING is closed within 10 s (pinged: {pinged})"
    );
    assert!(pinged, "the server asked with a PING before closing");
}

/// Sends `opening`, then `dribble` one byte every 500 ms; returns how long
/// after connecting the server closed the connection, or `None` if it was
/// still open after 6 s.
async fn closed_while_dribbling(app: &TestApp, opening: &[u8], dribble: &[u8]) -> Option<Duration> {
    let started = Instant::now();
    let stream = TcpStream::connect(raw::server_addr(app)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(opening).await.unwrap();
    let dribbling = async {
        for byte in dribble {
            // The attack itself: bytes slow enough to hold the connection.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    let mut received = Vec::new();
    tokio::select! {
        () = raw::drain(&mut reader, &mut received) => Some(started.elapsed()),
        () = dribbling => None,
        () = tokio::time::sleep(Duration::from_secs(6)) => None,
    }
}

#[tokio::test]
async fn regression_a_head_dribbled_after_blank_lines_is_closed_within_the_header_timeout() {
    let app = spawn_app_with(&["--header-timeout", "2s"]).await;
    // Empty lines before a request line are skipped by HTTP/1.1 parsers,
    // but they end with the same `\r\n\r\n` as a complete head.
    let closed = closed_while_dribbling(
        &app,
        b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n\r\n",
    )
    .await;
    assert!(
        closed.is_some_and(|after| after < Duration::from_secs(5)),
        "closed after {closed:?}; --header-timeout is 2 s"
    );
}

#[tokio::test]
async fn regression_a_dribbled_http2_settings_frame_is_closed_within_the_header_timeout() {
    let app = spawn_app_with(&["--header-timeout", "2s"]).await;
    // SETTINGS with one entry (MAX_CONCURRENT_STREAMS = 100), then a PING:
    // 32 bytes, 16 s at two bytes a second.
    let mut frames = vec![0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
    frames.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let closed = closed_while_dribbling(&app, h2::PREFACE, &frames).await;
    assert!(
        closed.is_some_and(|after| after < Duration::from_secs(5)),
        "closed after {closed:?}; --header-timeout is 2 s"
    );
}
