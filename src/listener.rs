//! The connection layer under HTTP: a cap on open connections and a
//! deadline for each request head.
//!
//! Slowloris clients open connections and send a request head one byte at
//! a time; an idle timeout never fires because bytes keep coming. So each
//! connection must deliver a complete head (up to the blank line) within
//! `header_timeout` of its first byte, or it is closed. The cap makes the
//! acceptor wait (the kernel's backlog holds newcomers) instead of letting
//! connections exhaust file descriptors and memory.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// A head longer than this closes the connection before HTTP parsing
    /// buffers it (the front layer answers 431 well below it).
    pub max_head_bytes: usize,
}

pub struct GuardedAcceptor<A = TcpAcceptor> {
    inner: A,
    permits: Arc<Semaphore>,
    header_timeout: Duration,
    max_head_bytes: usize,
}

impl<A> GuardedAcceptor<A> {
    /// With TLS, `inner` is the TLS acceptor: the cap then counts
    /// handshakes too, and the head deadline covers the handshake.
    pub fn new(inner: A, limits: ConnectionLimits) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            header_timeout: limits.header_timeout,
            max_head_bytes: limits.max_head_bytes,
        }
    }
}

impl<A: Acceptor> Acceptor for GuardedAcceptor<A> {
    type Io = GuardedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("connection limiter closed"))?;
        let (io, local, remote, scheme) = self.inner.accept().await?;
        let io = GuardedIo::new(io, permit, self.header_timeout, self.max_head_bytes);
        Ok((io, local, remote, scheme))
    }
}

/// Where the stream stands in reading a request head.
enum Head {
    /// Between requests: no deadline until the next byte.
    Idle,
    /// Reading a head; `matched` counts the bytes of `\r\n\r\n` seen so far.
    Reading { matched: u8 },
    /// The head is complete; the body and the response follow.
    Done,
    /// HTTP/2 (prior knowledge): frames, not heads; hyper polices those.
    Http2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

pub struct GuardedIo<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    timeout: Duration,
    head: Head,
    deadline: Pin<Box<Sleep>>,
    /// How many leading bytes matched the HTTP/2 preface so far.
    preface: usize,
    head_bytes: usize,
    max_head_bytes: usize,
}

impl<T> GuardedIo<T> {
    fn new(inner: T, permit: OwnedSemaphorePermit, timeout: Duration, max_head_bytes: usize) -> Self {
        Self {
            inner,
            _permit: permit,
            timeout,
            // A fresh connection is expected to start its request at once.
            head: Head::Reading { matched: 0 },
            deadline: Box::pin(tokio::time::sleep(timeout)),
            preface: 0,
            head_bytes: 0,
            max_head_bytes,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.preface < H2_PREFACE.len() {
                self.preface = if H2_PREFACE[self.preface] == b {
                    self.preface + 1
                } else {
                    usize::MAX
                };
                if self.preface == H2_PREFACE.len() {
                    self.head = Head::Http2;
                }
            }
            let matched = match self.head {
                Head::Idle => {
                    self.deadline.as_mut().reset(Instant::now() + self.timeout);
                    self.head_bytes = 0;
                    0
                }
                Head::Reading { matched } => matched,
                Head::Done | Head::Http2 => return,
            };
            let expected = b"\r\n\r\n"[usize::from(matched)];
            // On a mismatch, a `\r` may still start the terminator.
            let matched = if b == expected {
                matched + 1
            } else {
                u8::from(b == b'\r')
            };
            self.head_bytes += 1;
            self.head = if matched == 4 {
                Head::Done
            } else {
                Head::Reading { matched }
            };
        }
    }

    fn head_too_long(&self) -> bool {
        matches!(self.head, Head::Reading { .. }) && self.head_bytes > self.max_head_bytes
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.scan(&buf.filled()[before..]);
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
                if matches!(this.head, Head::Reading { .. }) {
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

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A response is going out: the next bytes read start a new head.
        if matches!(this.head, Head::Done) {
            this.head = Head::Idle;
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
