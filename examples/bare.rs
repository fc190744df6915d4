//! The benchmark's ceiling: a bare poem server answering one route, built
//! with the same poem and tokio as notesd, doing no work per request.
//!
//! Usage: `bare ADDR [RESPONSE]`. With `RESPONSE`, a response as `curl -si`
//! prints it (status line, headers, blank line, body), every request to
//! `/hello` gets that status, those headers and that body: the same bytes
//! notesd sends, so the comparison is of the work, not of the size. Poem
//! adds `content-length` and `date` itself, so those two are dropped from
//! the file. Without it the answer is `hello`.

use poem::http::{HeaderName, HeaderValue, StatusCode};
use poem::web::Data;
use poem::{EndpointExt, Response, Route, Server, get, handler, listener::TcpListener};

#[derive(Clone)]
struct Canned {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: bytes::Bytes,
}

#[handler]
fn hello(canned: Data<&Canned>) -> Response {
    let mut resp = Response::builder()
        .status(canned.status)
        .body(canned.body.clone());
    let headers = resp.headers_mut();
    for (name, value) in &canned.headers {
        headers.insert(name.clone(), value.clone());
    }
    resp
}

fn canned(path: Option<String>) -> std::io::Result<Canned> {
    let Some(path) = path else {
        return Ok(Canned {
            status: StatusCode::OK,
            headers: vec![(
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            body: bytes::Bytes::from_static(b"hello"),
        });
    };
    let raw = std::fs::read(path)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no blank line after the headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("a header line without a colon"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("a bad header name"))?;
        if name == "content-length" || name == "date" {
            continue;
        }
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad("a bad header value"))?;
        headers.push((name, value));
    }
    Ok(Canned {
        status,
        headers,
        body: bytes::Bytes::copy_from_slice(&raw[split + 4..]),
    })
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let canned = canned(args.next())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(
            Server::new(TcpListener::bind(addr)).run(Route::new().at("/hello", get(hello).data(canned))),
        )
}
