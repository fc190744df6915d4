//! Clients for attacks no HTTP library makes: hand-written HTTP/1.1 and
//! HTTP/2 bytes, a chosen loopback source address, a tiny receive buffer,
//! and the process's CPU time, to price what one request costs the server
//! (it runs in this process).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{TestApp, TestUser};

/// The longest a raw exchange waits for the server to close.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The server's socket address.
pub fn server_addr(app: &TestApp) -> SocketAddr {
    app.base
        .trim_start_matches("http://")
        .parse()
        .expect("the app listens on an address")
}

/// A connection to the app from `source` (any 127.0.0.0/8 address works
/// on Linux loopback), so one test can be several clients.
pub async fn connect_from(app: &TestApp, source: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    socket.connect(server_addr(app)).await.unwrap()
}

/// A connection with a receive buffer of about `bytes`: a client that then
/// stops reading stalls the server's writes as soon as the kernel's own
/// buffers are full.
pub async fn connect_with_receive_buffer(app: &TestApp, bytes: u32) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    socket.connect(server_addr(app)).await.unwrap()
}

/// Reads until the server closes (end of stream or reset) and returns
/// what arrived; panics if it has not closed within `within`.
pub async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(within, drain(stream, &mut received))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the server did not close the connection within {within:?}; received {} bytes: {:?}",
                received.len(),
                String::from_utf8_lossy(&received[..received.len().min(200)])
            )
        });
    received
}

/// Appends everything read to `into` until the end of the stream or an
/// error (a reset counts as closed).
pub async fn drain(stream: &mut (impl AsyncRead + Unpin), into: &mut Vec<u8>) {
    let mut chunk = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
        into.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `request` on a new connection and reads the answer until the
/// server closes (the request should say `Connection: close`).
pub async fn exchange(app: &TestApp, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(server_addr(app)).await.unwrap();
    // The server may answer and close before it has read everything; the
    // answer is what counts.
    let _ = stream.write_all(request).await;
    let bytes = read_until_closed(&mut stream, PATIENCE).await;
    RawResponse::parse(&bytes).unwrap_or_else(|| {
        panic!(
            "no HTTP answer in {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    })
}

/// Reads exactly one answer from a kept-alive connection.
pub async fn read_one_response(stream: &mut TcpStream) -> RawResponse {
    let mut received = Vec::new();
    let mut chunk = vec![0; 16 * 1024];
    loop {
        if let Some(resp) = RawResponse::parse(&received).filter(|r| r.complete) {
            return resp;
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("the connection stays readable");
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..n]);
    }
}

/// An HTTP/1.1 answer as it came over the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked; possibly cut short.
    pub body: Vec<u8>,
    /// Whether the whole body its framing announced arrived.
    pub complete: bool,
}

impl RawResponse {
    /// Parses the first answer in `bytes`, once its head is complete.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&bytes[..end]);
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let mut resp = Self {
            status,
            headers,
            body: Vec::new(),
            complete: false,
        };
        let after_head = &bytes[end + 4..];
        if resp
            .header("transfer-encoding")
            .is_some_and(|te| te.contains("chunked"))
        {
            (resp.body, resp.complete) = dechunk(after_head);
        } else if let Some(length) = resp.content_length() {
            resp.body = after_head[..after_head.len().min(length)].to_vec();
            resp.complete = after_head.len() >= length;
        } else {
            // Delimited by the close: whatever came is the body.
            resp.body = after_head.to_vec();
        }
        Some(resp)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.parse().ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the answer is our problem+json for its status, with
    /// `nosniff`, and returns the problem.
    pub fn assert_problem(&self, why: &str) -> Value {
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/problem+json"),
            "{why}: content type {content_type:?} ({} {:?})",
            self.status,
            self.text()
        );
        assert_eq!(
            self.header("x-content-type-options"),
            Some("nosniff"),
            "{why}: X-Content-Type-Options"
        );
        let problem: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{why}: the body is not JSON ({e}): {:?}", self.text()));
        assert_eq!(problem["status"], self.status, "{why}: status member");
        problem
    }
}

/// The data of a chunked body, and whether its last chunk arrived.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_field = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_field.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            return (body, false);
        };
        if size == 0 {
            return (body, true);
        }
        let data = &rest[line_end + 2..];
        if data.len() < size + 2 {
            body.extend_from_slice(&data[..data.len().min(size)]);
            return (body, false);
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

/// A GET on a kept-alive connection, with the headers in `extra` (each
/// ending in `\r\n`).
pub fn get_request(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").into_bytes()
}

/// HTTP/2 frames by hand (RFC 9113 §4.1): 9-byte header, then payload.
pub mod h2 {
    use tokio::io::{AsyncRead, AsyncReadExt};

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    pub const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const ACK: u8 = 1;

    #[derive(Debug)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub payload: Vec<u8>,
    }

    /// The next frame (its payload skipped), or `None` once the server
    /// has closed.
    pub async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> Option<Frame> {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            payload,
        })
    }
}

/// CPU time (user and system) this test process has used so far; the
/// server under test runs in it.
pub fn process_cpu_time() -> Duration {
    // `getconf CLK_TCK`: /proc counts in USER_HZ, 100 on Linux.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) may hold spaces and parentheses; the
    // fields after its closing parenthesis do not. utime and stime are
    // fields 14 and 15, the 12th and 13th after the name.
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 1000 / TICKS_PER_SECOND)
}

/// Held by tests that measure [`process_cpu_time`], so two of them never
/// count each other's work.
pub static CPU_METER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Creates `count` notes whose content is `content`, returning their ids.
pub async fn create_notes(app: &TestApp, user: &TestUser, count: usize, content: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let resp = app
            .create_note(
                &user.access,
                &json!({ "title": format!("note {i}"), "content": content }),
            )
            .await;
        assert_eq!(resp.status(), reqwest::StatusCode::CREATED, "note {i} is created");
        let note: Value = resp.json().await.unwrap();
        ids.push(note["id"].as_str().unwrap().to_owned());
    }
    ids
}
