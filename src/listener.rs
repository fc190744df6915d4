//! The connection layer under HTTP: caps on open connections (in all and
//! per client), a deadline for each request head, and our own answer in
//! place of the HTTP parser's bare refusals.
//!
//! Slowloris clients open connections and send a request head one byte at
//! a time; an idle timeout never fires because bytes keep coming. So each
//! connection must deliver a complete head within `header_timeout`, or it is
//! closed:
//! - HTTP/1.1: from accept (or from the first byte of a later request on a
//!   kept-alive connection) to the blank line that ends the head. Blank
//!   lines *before* a request line do not end anything: the parser skips
//!   them, so they must not stop the clock either.
//! - HTTP/2: from accept to the first complete header block, and then for
//!   every frame once it has started and every header block once it has
//!   opened. The scanner reads frame headers only and skips payloads.
//!
//! The cap makes the acceptor wait (the kernel's backlog holds newcomers)
//! instead of letting connections exhaust file descriptors and memory; the
//! per-client cap (an IPv4 address or an IPv6 prefix, trusted proxies
//! exempt) keeps one client from taking every slot, so a newcomer from
//! elsewhere is served at once.
//!
//! hyper answers a head it cannot parse (URL too long, too many headers,
//! obs-fold, a bad `Transfer-Encoding`) by itself, with an empty body and
//! none of our headers. The stream recognises such an answer on its way
//! out (an error status without a `Content-Type`, written before any
//! response of ours) and sends our problem+json answer with the same status
//! instead.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::client::{ClientKey, ClientKeys, canonical};
use crate::server::Connection;

#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Open connections per client; 0 for no cap.
    pub max_per_client: usize,
    pub header_timeout: Duration,
    /// A head longer than this closes the connection before HTTP parsing
    /// buffers it (the front layer answers 431 well below it).
    pub max_head_bytes: usize,
    /// Body bytes one connection may hold (see [`Connection::buffer`]).
    pub connection_buffer_bytes: usize,
    /// Body bytes one client may hold over all its connections.
    pub client_buffer_bytes: usize,
    pub keys: ClientKeys,
    /// Peers exempt from the per-client cap: proxies carry many clients.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Our answers to the refusals of the HTTP/1 parser, by status.
pub type ParserAnswers = Arc<HashMap<u16, Bytes>>;

/// Open connections per client, and the body memory budget they share.
#[derive(Default)]
struct ClientCounts(Mutex<HashMap<ClientKey, (usize, Arc<Semaphore>)>>);

impl ClientCounts {
    /// A slot for one more connection of `key` (`max` 0: no cap), with the
    /// client's shared budget of `buffer` bytes.
    fn try_add(
        self: &Arc<Self>,
        key: ClientKey,
        max: usize,
        buffer: usize,
    ) -> Option<(ClientSlot, Arc<Semaphore>)> {
        let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (count, budget) = counts
            .entry(key)
            .or_insert_with(|| (0, Arc::new(Semaphore::new(buffer.min(Semaphore::MAX_PERMITS)))));
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        let slot = ClientSlot {
            counts: self.clone(),
            key,
        };
        Some((slot, budget.clone()))
    }
}

/// One connection's place in its client's count, given back on drop.
struct ClientSlot {
    counts: Arc<ClientCounts>,
    key: ClientKey,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((count, _)) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

pub struct GuardedAcceptor<A = TcpAcceptor> {
    inner: A,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    clients: Arc<ClientCounts>,
    answers: ParserAnswers,
}

impl<A> GuardedAcceptor<A> {
    /// With TLS, `inner` is the TLS acceptor: the cap then counts
    /// handshakes too, and the head deadline covers the handshake.
    pub fn new(inner: A, limits: ConnectionLimits, answers: ParserAnswers) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            clients: Arc::default(),
            answers,
        }
    }

    fn exempt(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.limits.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

impl<A: Acceptor> Acceptor for GuardedAcceptor<A> {
    type Io = GuardedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| io::Error::other("connection limiter closed"))?;
            let (io, local, remote, scheme) = self.inner.accept().await?;
            let peer = remote
                .as_socket_addr()
                .map_or(IpAddr::from([0u8; 4]), |a| canonical(a.ip()));
            // A trusted proxy carries many clients: no cap and no shared
            // budget of its own (its connections keep their own budgets).
            let (slot, client_buffer) = if self.exempt(peer) {
                (None, None)
            } else {
                let key = self.limits.keys.key(peer);
                let Some((slot, budget)) =
                    self.clients
                        .try_add(key, self.limits.max_per_client, self.limits.client_buffer_bytes)
                else {
                    // Closed at once: holding it open would spend the very
                    // slot the cap protects.
                    tracing::debug!(client = %key, "connection refused: the client holds its share");
                    drop(io);
                    continue;
                };
                (Some(slot), Some(budget))
            };
            let connection = Arc::new(Connection::new(
                peer,
                self.limits.connection_buffer_bytes,
                client_buffer,
            ));
            let io = GuardedIo::new(io, permit, slot, connection, &self.limits, self.answers.clone());
            return Ok((io, local, remote, scheme));
        }
    }
}

/// Where an HTTP/1 stream stands in reading a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Between requests: no deadline until the next byte.
    Idle,
    /// Reading a head; `started`: whether anything but CR/LF has come yet;
    /// `column`: bytes of the current line so far. An empty line (nothing,
    /// or a lone CR) ends the head, whether its line ends are CRLF or the
    /// bare LF the parser also accepts.
    Reading { started: bool, column: u32 },
    /// The head is complete and its body is being skipped: then the next
    /// head may follow at once (pipelining), and is scanned like any.
    Body(BodySkip),
    /// The head is complete and its body framing unknown: nothing more is
    /// scanned until an answer is written (the connection then closes, or
    /// the parser has read the body).
    Done,
}

/// Where a request body stands, so the scanner finds the head after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodySkip {
    /// `Content-Length`: bytes left.
    Length(u64),
    /// Chunked: the size line, its value so far.
    ChunkSize(u64),
    /// Chunked: a chunk extension, up to the end of the line.
    ChunkExtension(u64),
    /// Chunked: data bytes left in this chunk.
    ChunkData(u64),
    /// Chunked: the line end after a chunk's data.
    ChunkEnd,
    /// Chunked: trailer lines after the last chunk; `column` of this line.
    Trailer(u32),
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Enough of the preface to tell HTTP/2 from HTTP/1 (no HTTP/1 method is `PRI`).
const H2_SIGNATURE: usize = 14;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Skips what `bytes` holds of a body; returns the state after it and how
/// many bytes it took (at least one, unless the body ended with none).
fn skip_body(skip: BodySkip, bytes: &[u8]) -> (Head, usize) {
    let Some(&b) = bytes.first() else {
        return (Head::Body(skip), 0);
    };
    let hex = |n: u64, b: u8| {
        let digit = char::from(b).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(digit))
    };
    match skip {
        BodySkip::Length(left) | BodySkip::ChunkData(left) => {
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
            let left = left - take as u64;
            let next = match (skip, left) {
                (BodySkip::Length(_), 0) => Head::Idle,
                (BodySkip::Length(_), _) => Head::Body(BodySkip::Length(left)),
                (_, 0) => Head::Body(BodySkip::ChunkEnd),
                _ => Head::Body(BodySkip::ChunkData(left)),
            };
            (next, take)
        }
        BodySkip::ChunkSize(n) => match b {
            b'\n' if n == 0 => (Head::Body(BodySkip::Trailer(0)), 1),
            b'\n' => (Head::Body(BodySkip::ChunkData(n)), 1),
            b'\r' | b' ' | b'\t' => (Head::Body(skip), 1),
            b';' => (Head::Body(BodySkip::ChunkExtension(n)), 1),
            // Not a size: the parser refuses it; stop scanning.
            _ => hex(n, b).map_or((Head::Done, 1), |n| (Head::Body(BodySkip::ChunkSize(n)), 1)),
        },
        BodySkip::ChunkExtension(n) if b == b'\n' => {
            let next = if n == 0 {
                BodySkip::Trailer(0)
            } else {
                BodySkip::ChunkData(n)
            };
            (Head::Body(next), 1)
        }
        BodySkip::ChunkEnd if b == b'\n' => (Head::Body(BodySkip::ChunkSize(0)), 1),
        BodySkip::Trailer(0) if b == b'\n' => (Head::Idle, 1),
        BodySkip::Trailer(_) if b == b'\n' => (Head::Body(BodySkip::Trailer(0)), 1),
        // The rest of an extension or of a chunk's line end, or a CR.
        BodySkip::ChunkExtension(_) | BodySkip::ChunkEnd => (Head::Body(skip), 1),
        BodySkip::Trailer(_) if b == b'\r' => (Head::Body(skip), 1),
        BodySkip::Trailer(column) => (Head::Body(BodySkip::Trailer(column.saturating_add(1))), 1),
    }
}

/// Where an HTTP/2 stream stands, frame by frame.
#[derive(Debug, Default)]
struct H2Scan {
    preface_left: usize,
    header: [u8; FRAME_HEADER],
    header_have: usize,
    payload_left: usize,
    /// A HEADERS frame without END_HEADERS awaits its CONTINUATION.
    in_header_block: bool,
    /// The first header block has been completed.
    first_request: bool,
}

impl H2Scan {
    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let skip = if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                n
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                n
            } else {
                let n = (FRAME_HEADER - self.header_have).min(bytes.len());
                self.header[self.header_have..self.header_have + n].copy_from_slice(&bytes[..n]);
                self.header_have += n;
                if self.header_have == FRAME_HEADER {
                    self.header_have = 0;
                    self.frame_started();
                }
                n
            };
            bytes = &bytes[skip..];
        }
    }

    fn frame_started(&mut self) {
        let [l0, l1, l2, kind, flags, ..] = self.header;
        self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let ends = flags & END_HEADERS != 0;
        match kind {
            HEADERS => {
                self.in_header_block = !ends;
                self.first_request |= ends;
            }
            CONTINUATION if ends => {
                self.in_header_block = false;
                self.first_request = true;
            }
            _ => {}
        }
    }

    /// Something is under way that must finish within the deadline.
    fn pending(&self) -> bool {
        !self.first_request
            || self.preface_left > 0
            || self.header_have > 0
            || self.payload_left > 0
            || self.in_header_block
    }
}

/// Reads the `Content-Length` and `Transfer-Encoding` lines of a head, one
/// whole line at a time. hyper reads a head with both by the
/// Transfer-Encoding alone and drops the Content-Length before the request
/// reaches us, so this is the only place that can tell (RFC 9112 §6.3:
/// such a request is a smuggling attempt to be refused, and the connection
/// closed); and knowing how the body is framed lets the scanner find the
/// head after it.
#[derive(Debug, Default)]
struct Framing {
    seen: [bool; 2],
    /// The `Content-Length` value, if there was exactly one and it parsed.
    length: Option<u64>,
    /// The `Transfer-Encoding` value ends in `chunked`.
    chunked: bool,
}

const FRAMING_NAMES: [&[u8]; 2] = [b"content-length:", b"transfer-encoding:"];

/// The start of a header line kept to read it; longer framing lines make
/// the framing unknown (and the scanner stops).
const LINE_KEPT: usize = 96;

impl Framing {
    /// One header line (without its line end), or its first
    /// [`LINE_KEPT`] bytes when `whole` is false.
    fn line(&mut self, line: &[u8], whole: bool) {
        for (i, name) in FRAMING_NAMES.iter().enumerate() {
            let Some(value) = line
                .get(..name.len())
                .filter(|start| start.eq_ignore_ascii_case(name))
                .map(|_| line[name.len()..].trim_ascii())
            else {
                continue;
            };
            let again = self.seen[i];
            self.seen[i] = true;
            if i == 0 {
                let parsed = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                let parsed = if whole { parsed } else { None };
                // A repeated Content-Length is read as the parser reads
                // it: one value if they agree; otherwise, or unreadable,
                // unknown (and the request refused, see `ambiguous`).
                if !again || parsed != self.length {
                    self.length = if again { None } else { parsed };
                }
            } else {
                self.chunked =
                    whole && value.len() >= 7 && value[value.len() - 7..].eq_ignore_ascii_case(b"chunked");
            }
        }
    }

    /// The body is framed ambiguously: both headers, or a Content-Length
    /// that does not read as one number. Such a request is refused and its
    /// connection closed: the scanner cannot follow what comes after it.
    fn conflict(&self) -> bool {
        self.seen == [true; 2] || (self.seen[0] && self.length.is_none())
    }

    /// How the body after this head is framed, as the parser reads it
    /// (Transfer-Encoding over Content-Length).
    fn body(&self) -> Head {
        if self.seen[1] {
            if self.chunked {
                Head::Body(BodySkip::ChunkSize(0))
            } else {
                Head::Done
            }
        } else if self.seen[0] {
            match self.length {
                Some(0) => Head::Idle,
                Some(n) => Head::Body(BodySkip::Length(n)),
                None => Head::Done,
            }
        } else {
            Head::Idle
        }
    }
}

enum Protocol {
    /// The first bytes have not yet told which.
    Unknown {
        preface: usize,
    },
    Http1(Head),
    Http2(H2Scan),
}

/// Our answer being written in place of the parser's.
struct Replacement {
    answer: Bytes,
    /// Length of the parser's write we stand in for.
    claimed: usize,
}

pub struct GuardedIo<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    _slot: Option<ClientSlot>,
    connection: Arc<Connection>,
    timeout: Duration,
    protocol: Protocol,
    deadline: Pin<Box<Sleep>>,
    /// The deadline is running (something must complete before it).
    armed: bool,
    head_bytes: usize,
    max_head_bytes: usize,
    /// Which framing headers the head being read has.
    framing: Framing,
    /// The start of the current header line.
    line: [u8; LINE_KEPT],
    /// HTTP/1 request heads completed on this connection.
    heads: u64,
    answers: ParserAnswers,
    /// The head being read (or just read) has had no final answer yet: a
    /// refusal by the parser would be the next thing written.
    awaiting_answer: bool,
    replacement: Option<Replacement>,
    /// Our answer went out: swallow whatever the parser still writes.
    replaced: bool,
    /// HTTP/2: where the frames written stand, to count DATA bytes sent.
    sent: SentFrames,
}

/// Follows the HTTP/2 frames written, counting DATA payload bytes.
#[derive(Debug, Default)]
struct SentFrames {
    header: [u8; FRAME_HEADER],
    header_have: usize,
    payload_left: usize,
    data: bool,
}

impl SentFrames {
    /// Feeds written bytes; returns the DATA payload bytes among them.
    fn scan(&mut self, mut bytes: &[u8]) -> usize {
        let mut data = 0;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                if self.data {
                    data += n;
                }
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.header_have).min(bytes.len());
            self.header[self.header_have..self.header_have + n].copy_from_slice(&bytes[..n]);
            self.header_have += n;
            bytes = &bytes[n..];
            if self.header_have == FRAME_HEADER {
                self.header_have = 0;
                let [l0, l1, l2, kind, ..] = self.header;
                self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                self.data = kind == 0;
            }
        }
        data
    }
}

impl<T> GuardedIo<T> {
    fn new(
        inner: T,
        permit: OwnedSemaphorePermit,
        slot: Option<ClientSlot>,
        connection: Arc<Connection>,
        limits: &ConnectionLimits,
        answers: ParserAnswers,
    ) -> Self {
        Self {
            inner,
            _permit: permit,
            _slot: slot,
            connection,
            timeout: limits.header_timeout,
            // A fresh connection is expected to start its request at once.
            protocol: Protocol::Unknown { preface: 0 },
            deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            armed: true,
            head_bytes: 0,
            framing: Framing::default(),
            line: [0; LINE_KEPT],
            heads: 0,
            max_head_bytes: limits.max_head_bytes,
            answers,
            awaiting_answer: true,
            replacement: None,
            replaced: false,
            sent: SentFrames::default(),
        }
    }

    /// The connection's shared record.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        if let Protocol::Unknown { preface: earlier } = self.protocol {
            let mut matched = earlier;
            let mut used = 0;
            while matched < H2_SIGNATURE && used < bytes.len() && bytes[used] == H2_PREFACE[matched] {
                matched += 1;
                used += 1;
            }
            if matched == H2_SIGNATURE {
                self.connection.set_http2();
                self.protocol = Protocol::Http2(H2Scan {
                    preface_left: H2_PREFACE.len() - H2_SIGNATURE,
                    ..H2Scan::default()
                });
                bytes = &bytes[used..];
            } else if used == bytes.len() {
                // Still a prefix of the preface: wait for more.
                self.protocol = Protocol::Unknown { preface: matched };
                return;
            } else {
                // HTTP/1: what matched the preface in earlier reads belongs
                // to its head, then all of this read.
                self.protocol = Protocol::Http1(Head::Reading {
                    started: false,
                    column: 0,
                });
                self.scan_http1(&H2_PREFACE[..earlier]);
            }
        }
        match &mut self.protocol {
            Protocol::Http2(h2) => {
                h2.scan(bytes);
                let pending = h2.pending();
                self.arm(pending);
            }
            Protocol::Http1(_) => self.scan_http1(bytes),
            Protocol::Unknown { .. } => {}
        }
    }

    fn scan_http1(&mut self, bytes: &[u8]) {
        let Protocol::Http1(mut state) = self.protocol else {
            return;
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            let (started, column) = match state {
                Head::Idle => {
                    self.head_bytes = 0;
                    self.framing = Framing::default();
                    self.awaiting_answer = true;
                    (false, 0)
                }
                Head::Reading { started, column } => (started, column),
                Head::Body(skip) => {
                    let (next, used) = skip_body(skip, rest);
                    state = next;
                    rest = &rest[used..];
                    continue;
                }
                Head::Done => break,
            };
            if !started {
                // CR and LF before the request line are skipped by the
                // parser: they start nothing and end nothing.
                let blank = rest.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                self.head_bytes += blank;
                rest = &rest[blank..];
                state = Head::Reading {
                    started: !rest.is_empty(),
                    column,
                };
                continue;
            }
            // A line at a time: up to its LF, or all there is.
            let (segment, ended) = match memchr::memchr(b'\n', rest) {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            let taken = segment.len() + usize::from(ended);
            self.head_bytes += taken;
            let at = usize::try_from(column).unwrap_or(usize::MAX);
            if at < LINE_KEPT {
                let keep = segment.len().min(LINE_KEPT - at);
                self.line[at..at + keep].copy_from_slice(&segment[..keep]);
            }
            rest = &rest[taken..];
            let column = column.saturating_add(u32::try_from(segment.len()).unwrap_or(u32::MAX));
            if !ended {
                state = Head::Reading { started, column };
                continue;
            }
            let length = usize::try_from(column).unwrap_or(usize::MAX);
            let kept = &self.line[..length.min(LINE_KEPT)];
            let line = kept.strip_suffix(b"\r").unwrap_or(kept);
            state = if line.is_empty() && length <= 1 {
                if self.framing.conflict() {
                    self.connection.flag_framing_conflict(self.heads);
                }
                self.heads += 1;
                self.framing.body()
            } else {
                self.framing.line(line, length <= LINE_KEPT);
                Head::Reading { started, column: 0 }
            };
        }
        self.protocol = Protocol::Http1(state);
        self.arm(matches!(state, Head::Reading { .. }));
    }

    /// Starts the deadline when something begins that must complete, and
    /// stops it when nothing is pending.
    fn arm(&mut self, pending: bool) {
        if pending && !self.armed {
            self.deadline.as_mut().reset(Instant::now() + self.timeout);
        }
        self.armed = pending;
    }

    fn head_too_long(&self) -> bool {
        matches!(self.protocol, Protocol::Http1(Head::Reading { .. }))
            && self.head_bytes > self.max_head_bytes
    }

    /// Whether `data`, about to be written, is the HTTP/1 parser's own
    /// refusal: an error status with no `Content-Type`, before any answer of
    /// ours. Every answer of ours carries a `Content-Type` on these statuses.
    ///
    /// It must look exactly like one: no request being handled and no
    /// answer body still going out (an answer's body could start with the
    /// same bytes, and a pipelined head may already have been read), and
    /// the write is a whole head with no body (`content-length: 0`).
    fn parser_refusal(&self, data: &[u8]) -> Option<Bytes> {
        if !matches!(self.protocol, Protocol::Http1(_) | Protocol::Unknown { .. }) || self.connection.busy() {
            return None;
        }
        let status = data.strip_prefix(b"HTTP/1.")?.get(2..5)?;
        let status: u16 = std::str::from_utf8(status).ok()?.parse().ok()?;
        let answer = self.answers.get(&status)?;
        let head = data.strip_suffix(b"\r\n\r\n")?;
        let has = |name: &[u8]| {
            head.split(|&b| b == b'\n')
                .any(|line| line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name))
        };
        (has(b"content-length: 0") && !has(b"content-type:")).then(|| answer.clone())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    this.scan(new);
                }
                if this.head_too_long() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request head too long",
                    )));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.armed {
                    ready!(this.deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not received in time",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Looks at the first bytes of a write before they go out: the parser's
    /// refusal is replaced by our answer (then `Some(n)`: report `n` bytes
    /// written), and a final answer marks the head answered.
    fn poll_inspect(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        total: usize,
    ) -> Poll<io::Result<Option<usize>>> {
        if self.replaced {
            return Poll::Ready(Ok(Some(total)));
        }
        if self.replacement.is_none()
            && let Some(answer) = self.parser_refusal(first)
        {
            self.replacement = Some(Replacement {
                answer,
                claimed: first.len(),
            });
        }
        if let Some(replacement) = &mut self.replacement {
            while !replacement.answer.is_empty() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &replacement.answer))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                let _ = replacement.answer.split_to(n);
            }
            let claimed = replacement.claimed;
            self.replacement = None;
            self.replaced = true;
            return Poll::Ready(Ok(Some(claimed)));
        }
        // A final answer is going out: the next bytes read start a new
        // head. `100 Continue` is not one: the body follows it.
        let informational = first.starts_with(b"HTTP/1.1 1") || first.starts_with(b"HTTP/1.0 1");
        if self.awaiting_answer && !informational && !self.is_http2() {
            self.awaiting_answer = false;
            if let Protocol::Http1(head @ Head::Done) = &mut self.protocol {
                *head = Head::Idle;
            }
        }
        Poll::Ready(Ok(None))
    }

    fn is_http2(&self) -> bool {
        matches!(self.protocol, Protocol::Http2(_))
    }

    /// Keeps the connection's stall clock: HTTP/1 writes are answer bytes
    /// the peer took; HTTP/2 writes may be only pings and settings, so
    /// there only answer bodies taken (see `server::TrackedBody`) count.
    fn account(&mut self, written: Poll<io::Result<usize>>, bufs: &[&[u8]]) -> Poll<io::Result<usize>> {
        match &written {
            Poll::Ready(Ok(n)) => {
                let http2 = self.is_http2();
                self.connection.write_blocked(false, !http2);
                if http2 {
                    // The frames written start where the last write ended.
                    let mut left = *n;
                    let mut data = 0;
                    for buf in bufs {
                        let take = left.min(buf.len());
                        data += self.sent.scan(&buf[..take]);
                        left -= take;
                    }
                    if data > 0 {
                        self.connection.data_sent(data);
                    }
                }
            }
            Poll::Pending => self.connection.write_blocked(true, false),
            Poll::Ready(Err(_)) => {}
        }
        written
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(n) = ready!(this.poll_inspect(cx, data, data.len()))? {
            return Poll::Ready(Ok(n));
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, data);
        this.account(written, &[data])
    }

    /// Vectored writes let hyper queue an answer's pieces instead of
    /// copying them into a buffer of its own (up to ~400 KB per connection
    /// that no budget counted), and keep a head and its body in one write.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
        let total = bufs.iter().map(|b| b.len()).sum();
        if let Some(n) = ready!(this.poll_inspect(cx, first, total))? {
            return Poll::Ready(Ok(n));
        }
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let slices: Vec<&[u8]> = if this.is_http2() {
            bufs.iter().map(|b| &**b).collect()
        } else {
            Vec::new()
        };
        this.account(written, &slices)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, len: u32) -> Vec<u8> {
        let [_, l0, l1, l2] = len.to_be_bytes();
        let mut f = vec![l0, l1, l2, kind, flags, 0, 0, 0, 1];
        f.resize(FRAME_HEADER + len as usize, 0);
        f
    }

    fn framing_of(head: &[u8]) -> Framing {
        let mut framing = Framing::default();
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            framing.line(line, true);
        }
        framing
    }

    #[test]
    fn a_head_framed_twice_is_spotted_whatever_the_case_or_order() {
        let conflict = |head: &[u8]| framing_of(head).conflict();
        assert!(conflict(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(conflict(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n"
        ));
        assert!(!conflict(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"));
        assert!(
            !conflict(b"POST / HTTP/1.1\r\nX-Note: transfer-encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
            "only at the start of a line"
        );
    }

    #[test]
    fn bodies_are_skipped_so_the_next_head_is_scanned() {
        let skip_all = |mut state: Head, mut bytes: &[u8]| {
            while let Head::Body(skip) = state {
                if bytes.is_empty() {
                    break;
                }
                let (next, used) = skip_body(skip, bytes);
                state = next;
                bytes = &bytes[used..];
            }
            (state, bytes.len())
        };
        let chunked = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\nGET";
        assert_eq!(
            skip_all(Head::Body(BodySkip::ChunkSize(0)), chunked),
            (Head::Idle, 3),
            "the next head starts after the trailers"
        );
        assert_eq!(
            skip_all(Head::Body(BodySkip::Length(5)), b"helloGET"),
            (Head::Idle, 3)
        );
        assert_eq!(
            skip_all(Head::Body(BodySkip::ChunkSize(0)), b"zz\r\n"),
            (Head::Done, 3),
            "not a size: stop"
        );
        let framing = framing_of(b"POST / HTTP/1.1\r\nContent-Length:  12\r\n");
        assert_eq!(framing.body(), Head::Body(BodySkip::Length(12)));
        let framing =
            framing_of(b"POST / HTTP/1.1\r\nContent-Length: 12\r\nTransfer-Encoding: gzip, Chunked\r\n");
        assert_eq!(framing.body(), Head::Body(BodySkip::ChunkSize(0)), "chunked wins");
    }

    #[test]
    fn the_h2_scanner_waits_for_a_whole_header_block() {
        let mut h2 = H2Scan {
            preface_left: H2_PREFACE.len() - H2_SIGNATURE,
            ..H2Scan::default()
        };
        h2.scan(&H2_PREFACE[H2_SIGNATURE..]);
        h2.scan(&frame(0x4, 0, 6)); // SETTINGS
        assert!(h2.pending(), "no request yet");
        h2.scan(&frame(HEADERS, 0, 10));
        assert!(h2.pending(), "header block still open");
        let continuation = frame(CONTINUATION, END_HEADERS, 4);
        for byte in &continuation[..5] {
            h2.scan(std::slice::from_ref(byte));
        }
        assert!(h2.pending(), "a frame header trickling in");
        h2.scan(&continuation[5..]);
        assert!(!h2.pending(), "first request complete, nothing under way");
        h2.scan(&frame(0x6, 0, 8)[..12]); // a PING cut short
        assert!(h2.pending(), "a started frame must finish");
    }
}
