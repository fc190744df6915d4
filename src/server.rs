//! The connection loop under poem's endpoints: accepts connections, serves
//! each with hyper (HTTP/1.1 and HTTP/2), and ends the ones that hold the
//! server hostage.
//!
//! poem's own `Server` offers no HTTP/2 keep-alive, no per-connection state
//! and an idle timeout that only *starts* a graceful shutdown, which waits
//! for ever on a peer that does not read. Here every connection has a
//! [`Connection`] record that its requests can see, and a watchdog beside
//! hyper that closes it outright when:
//! - response bytes are owed but none has moved for `write_timeout` (a
//!   client that does not read, over HTTP/1.1 or with an HTTP/2 window of
//!   zero or one byte; nginx's `send_timeout`). Over HTTP/2 an answer's
//!   bytes stay owed until they have left as DATA frames (the connection
//!   layer counts them), since hyper takes small answers whole into its
//!   stream buffers; or
//! - no request has started or ended for `idle_timeout` and none is in
//!   progress (HTTP/2 pings and settings do not count: a connection with no
//!   stream open is idle); a graceful close is tried first, for a second.
//!
//! Response bodies travel in [`TrackedBody`]: handed to hyper in chunks of
//! at most [`CHUNK`] bytes (so HTTP/2 buffers at most one chunk per stream
//! beyond the peer's window), each chunk counting as progress, and holding
//! the [`BufferPermit`] that accounts for the body's bytes until the body is
//! done or dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use poem::listener::Acceptor;
use poem::{Endpoint, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::listener::{GuardedAcceptor, GuardedIo};

/// How long an idle connection's graceful close may take.
const IDLE_GOODBYE: Duration = Duration::from_secs(1);

/// Largest piece of a response body handed to hyper at once.
pub const CHUNK: usize = 16 * 1024;

/// Connection-level settings of the loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub shutdown_grace: Duration,
    pub http2_max_streams: u32,
    pub http2_max_header_list: u32,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
}

/// What the server knows of one open connection. Requests find it in their
/// extensions (`Arc<Connection>`).
pub struct Connection {
    /// The socket's peer (the proxy's address behind a proxy).
    pub peer: IpAddr,
    origin: Instant,
    /// Milliseconds since `origin` of the last sign that owed bytes move.
    last_progress: AtomicU64,
    /// Milliseconds since `origin` of the last request's start or end (or
    /// the connection's). Pings, settings and window updates do not count:
    /// an HTTP/2 connection with no stream open is idle however chatty.
    last_request: AtomicU64,
    /// Response bodies not yet wholly handed to hyper.
    open_bodies: AtomicUsize,
    /// Requests between arrival and their response.
    in_progress: AtomicUsize,
    /// The socket refused a write and none has gone through since.
    write_blocked: AtomicBool,
    /// 1 + the ordinal of the first HTTP/1 request head on this connection
    /// that framed its body twice (see `listener::Framing`); 0: none.
    framing_conflict: AtomicU64,
    /// Requests started on this connection (HTTP/1 answers them in order,
    /// so the n-th request is the n-th head).
    requests: AtomicU64,
    /// HTTP/2: answer bytes hyper has taken from bodies and not yet written
    /// as DATA frames. hyper takes a small answer whole into the stream's
    /// buffer, where a peer with a tiny window could leave it for ever.
    unsent: AtomicU64,
    http2: AtomicBool,
    /// Body bytes this connection may hold at once.
    pub buffer: Arc<Semaphore>,
    /// Body bytes its client may hold at once over all its connections
    /// (none for a trusted proxy, which carries many clients).
    pub client_buffer: Option<Arc<Semaphore>>,
}

impl Connection {
    pub fn new(peer: IpAddr, buffer_bytes: usize, client_buffer: Option<Arc<Semaphore>>) -> Self {
        Self {
            peer,
            origin: Instant::now(),
            last_progress: AtomicU64::new(0),
            last_request: AtomicU64::new(0),
            open_bodies: AtomicUsize::new(0),
            in_progress: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
            framing_conflict: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            unsent: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            buffer: Arc::new(Semaphore::new(buffer_bytes.min(Semaphore::MAX_PERMITS))),
            client_buffer,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The `head`-th request head (from 0) had both `Content-Length` and
    /// `Transfer-Encoding`.
    pub fn flag_framing_conflict(&self, head: u64) {
        let _ = self
            .framing_conflict
            .compare_exchange(0, head + 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the `ordinal`-th request had both framings.
    pub fn framing_conflict(&self, ordinal: u64) -> bool {
        self.framing_conflict.load(Ordering::Relaxed) == ordinal + 1
    }

    /// Owed bytes moved (written, or a body chunk taken by hyper).
    pub fn progressed(&self) {
        self.last_progress.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request started or ended.
    fn request_activity(&self) {
        self.last_request.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The socket refused a write (`blocked`), or took one; `progress`:
    /// what it took were answer bytes.
    pub fn write_blocked(&self, blocked: bool, progress: bool) {
        if blocked {
            if !self.write_blocked.swap(true, Ordering::Relaxed) {
                // The stall clock starts when the socket first refuses.
                self.progressed();
            }
        } else {
            self.write_blocked.store(false, Ordering::Relaxed);
            if progress {
                self.progressed();
            }
        }
    }

    /// The connection speaks HTTP/2.
    pub fn set_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Answer bytes taken from a body.
    fn taken(&self, bytes: usize) {
        if self.http2.load(Ordering::Relaxed) {
            self.unsent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// HTTP/2 DATA payload bytes written to the socket: the peer's window
    /// let them through, which is progress.
    pub fn data_sent(&self, bytes: usize) {
        let _ = self
            .unsent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(bytes as u64))
            });
        self.progressed();
    }

    /// A request is being handled or an answer body is still going out.
    pub fn busy(&self) -> bool {
        self.in_progress.load(Ordering::Relaxed) > 0 || self.open_bodies.load(Ordering::Relaxed) > 0
    }

    /// Response bytes are owed and none has moved for `timeout`.
    fn stalled(&self, timeout: Duration) -> bool {
        let owed = self.open_bodies.load(Ordering::Relaxed) > 0
            || self.write_blocked.load(Ordering::Relaxed)
            || self.unsent.load(Ordering::Relaxed) > 0;
        owed && self.quiet_for(&self.last_progress) > timeout
    }

    /// No request for `timeout` and nothing in progress.
    fn idle(&self, timeout: Duration) -> bool {
        self.in_progress.load(Ordering::Relaxed) == 0
            && self.open_bodies.load(Ordering::Relaxed) == 0
            && self.quiet_for(&self.last_request) > timeout
    }

    fn quiet_for(&self, since: &AtomicU64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(since.load(Ordering::Relaxed)))
    }
}

tokio::task_local! {
    /// What the front layer of a request needs from the connection loop:
    /// its connection, and a place to leave the buffer permit its answer
    /// holds. A task-local, not request and response extensions: those
    /// cost two map allocations per request on the hot path.
    pub static REQUEST: RequestContext;
}

pub struct RequestContext {
    pub connection: Arc<Connection>,
    /// This request's place on its connection, from 0.
    pub ordinal: u64,
    pub permit: std::cell::RefCell<Option<BufferPermit>>,
}

impl RequestContext {
    /// Whether the request being handled framed its body twice.
    pub fn framing_conflict() -> bool {
        REQUEST
            .try_with(|c| c.connection.framing_conflict(c.ordinal))
            .unwrap_or(false)
    }

    /// The connection of the request being handled, if any.
    pub fn connection() -> Option<Arc<Connection>> {
        REQUEST.try_with(|c| c.connection.clone()).ok()
    }

    /// Leaves the permit the answer holds for the connection loop.
    pub fn hold(permit: BufferPermit) {
        let _ = REQUEST.try_with(|c| *c.permit.borrow_mut() = Some(permit));
    }
}

/// Body bytes held on behalf of one request or response, counted against
/// its connection's buffer and the server-wide one; returned when dropped.
pub struct BufferPermit {
    connection: Option<OwnedSemaphorePermit>,
    client: Option<OwnedSemaphorePermit>,
    server: Option<OwnedSemaphorePermit>,
}

impl BufferPermit {
    /// Takes `bytes` of the connection's, its client's and the server's
    /// budgets if they are free now.
    pub fn try_acquire(connection: &Connection, server: &Arc<Semaphore>, bytes: usize) -> Option<Self> {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let held_by_connection = connection.buffer.clone().try_acquire_many_owned(n).ok()?;
        let client = match &connection.client_buffer {
            Some(client) => Some(client.clone().try_acquire_many_owned(n).ok()?),
            None => None,
        };
        let server = server.clone().try_acquire_many_owned(n).ok()?;
        Some(Self {
            connection: Some(held_by_connection),
            client,
            server: Some(server),
        })
    }

    /// Adds `more`'s bytes to these.
    pub fn merge(&mut self, more: BufferPermit) {
        let pairs = [
            (&mut self.connection, more.connection),
            (&mut self.client, more.client),
            (&mut self.server, more.server),
        ];
        for (held, extra) in pairs {
            match (held.as_mut(), extra) {
                (Some(held), Some(extra)) => held.merge(extra),
                (None, extra) => *held = extra,
                (Some(_), None) => {}
            }
        }
    }
}

/// A response body handed out in bounded chunks, counting as progress on
/// its connection, holding its buffer permit until done.
pub struct TrackedBody {
    inner: BoxBody<Bytes, std::io::Error>,
    /// The rest of a chunk larger than [`CHUNK`].
    rest: Bytes,
    connection: Arc<Connection>,
    permit: Option<BufferPermit>,
    open: bool,
}

impl TrackedBody {
    fn new(
        inner: BoxBody<Bytes, std::io::Error>,
        connection: Arc<Connection>,
        permit: Option<BufferPermit>,
    ) -> Self {
        // A new body is owed from now: its stall clock starts here, not at
        // the connection's last write (which may be long ago).
        connection.open_bodies.fetch_add(1, Ordering::Relaxed);
        connection.progressed();
        Self {
            inner,
            rest: Bytes::new(),
            connection,
            permit,
            open: true,
        }
    }

    fn close(&mut self) {
        if std::mem::take(&mut self.open) {
            self.connection.request_activity();
            self.connection.open_bodies.fetch_sub(1, Ordering::Relaxed);
            self.permit = None;
            self.rest = Bytes::new();
        }
    }

    fn take_chunk(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > CHUNK {
            self.rest = data.split_off(CHUNK);
        }
        data
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.close();
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            let rest = std::mem::take(&mut this.rest);
            let chunk = this.take_chunk(rest);
            this.connection.progressed();
            this.connection.taken(chunk.len());
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if !this.open {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.connection.progressed();
                match frame.into_data() {
                    Ok(data) => {
                        let chunk = this.take_chunk(data);
                        this.connection.taken(chunk.len());
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                }
            }
            Poll::Ready(None) => {
                this.close();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.close();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && (!self.open || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// Serves `endpoint` on `acceptor` until `shutdown` completes; then lets
/// connections finish for at most `shutdown_grace` and closes the rest.
pub async fn serve<A, E>(
    mut acceptor: GuardedAcceptor<A>,
    endpoint: E,
    shutdown: impl Future<Output = ()> + Send,
    options: ServeOptions,
) -> std::io::Result<()>
where
    A: Acceptor + 'static,
    E: Endpoint<Output = Response> + 'static,
{
    let endpoint = Arc::new(endpoint);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connection tasks as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = acceptor.accept() => match accepted {
                Ok((io, local, remote, scheme)) => {
                    let endpoint = endpoint.clone();
                    let stop = stop_rx.clone();
                    connections.spawn(async move {
                        serve_connection(io, endpoint, (local, remote, scheme), stop, options).await;
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather
                    // than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(acceptor);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            left = connections.len(),
            "closing connections still open after the grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Why the watchdog ended a connection.
#[derive(Debug)]
enum Ending {
    Stalled,
    Idle,
}

async fn serve_connection<T, E>(
    io: GuardedIo<T>,
    endpoint: Arc<E>,
    (local, remote, scheme): (
        poem::web::LocalAddr,
        poem::web::RemoteAddr,
        poem::http::uri::Scheme,
    ),
    mut stop: tokio::sync::watch::Receiver<bool>,
    options: ServeOptions,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    E: Endpoint<Output = Response> + 'static,
{
    let connection = io.connection().clone();
    let service = {
        let connection = connection.clone();
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let req: Request = (req, local.clone(), remote.clone(), scheme.clone()).into();
            let endpoint = endpoint.clone();
            let connection = connection.clone();
            async move {
                connection.in_progress.fetch_add(1, Ordering::Relaxed);
                connection.request_activity();
                let context = RequestContext {
                    connection: connection.clone(),
                    ordinal: connection.requests.fetch_add(1, Ordering::Relaxed),
                    permit: std::cell::RefCell::new(None),
                };
                // `call`, not `get_response`: that one more `async` layer
                // would hold one more copy of the request.
                let handled = REQUEST.scope(context, endpoint.call(req));
                tokio::pin!(handled);
                let resp = (&mut handled).await.unwrap_or_else(poem::Error::into_response);
                let permit = handled.as_mut().take_value().and_then(|c| c.permit.into_inner());
                connection.in_progress.fetch_sub(1, Ordering::Relaxed);
                connection.request_activity();
                // The permit the front layer left counts exactly the
                // answer's bytes (see `middleware::buffers`).
                let resp: hyper::Response<BoxBody<Bytes, std::io::Error>> = resp.into();
                Ok::<_, Infallible>(resp.map(|body| TrackedBody::new(body, connection, permit)))
            }
        })
    };

    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The connection layer enforces the head deadline; hyper's own
        // would arm a timer for every request.
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.http2_max_streams)
        .max_header_list_size(options.http2_max_header_list)
        .keep_alive_interval(options.http2_keepalive_interval)
        .keep_alive_timeout(options.http2_keepalive_timeout)
        .max_send_buf_size(CHUNK * 4);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);

    let tick = (options.write_timeout.min(options.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let watchdog = async {
        loop {
            tokio::time::sleep(tick).await;
            if connection.stalled(options.write_timeout) {
                return Ending::Stalled;
            }
            if connection.idle(options.idle_timeout) {
                return Ending::Idle;
            }
        }
    };
    tokio::pin!(watchdog);

    let ending = tokio::select! {
        _ = &mut conn => return,
        ending = &mut watchdog => Some(ending),
        _ = stop.wait_for(|stop| *stop) => None,
    };
    match ending {
        // A peer that does not read gets no courtesy: buffers go now.
        Some(Ending::Stalled) => {
            tracing::debug!(peer = %connection.peer, "closing a connection whose peer does not read");
        }
        Some(Ending::Idle) => {
            // Nothing is in flight: say goodbye (HTTP/2 GOAWAY), but do not
            // wait on the peer's courtesy for long.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(IDLE_GOODBYE.min(options.write_timeout), &mut conn).await;
        }
        None => {
            // Server shutdown: finish what is in flight; the server's grace
            // period bounds the wait.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = &mut conn => {}
                _ = &mut watchdog => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn bodies_are_bounded_per_connection_per_client_and_for_the_server() {
        let server = Arc::new(Semaphore::new(4 * MIB));
        let alice = Arc::new(Semaphore::new(2 * MIB));
        let bob = Arc::new(Semaphore::new(2 * MIB));
        let connection = |client: &Arc<Semaphore>| {
            Connection::new(IpAddr::from([127, 0, 0, 1]), MIB, Some(client.clone()))
        };
        let (a1, a2, a3) = (connection(&alice), connection(&alice), connection(&alice));
        let first = BufferPermit::try_acquire(&a1, &server, MIB).expect("room");
        assert!(
            BufferPermit::try_acquire(&a1, &server, 1).is_none(),
            "the connection's budget is spent"
        );
        let second = BufferPermit::try_acquire(&a2, &server, MIB).expect("room on another connection");
        assert!(
            BufferPermit::try_acquire(&a3, &server, 1).is_none(),
            "the client's budget is spent over its connections"
        );
        let b1 = connection(&bob);
        let third = BufferPermit::try_acquire(&b1, &server, MIB).expect("another client has its own");
        let b2 = connection(&bob);
        let fourth = BufferPermit::try_acquire(&b2, &server, MIB).expect("room");
        let carol = Arc::new(Semaphore::new(2 * MIB));
        assert!(
            BufferPermit::try_acquire(&connection(&carol), &server, 1).is_none(),
            "the server's budget is spent"
        );
        drop((first, second, third, fourth));
        assert_eq!(server.available_permits(), 4 * MIB, "all given back");
        assert_eq!(alice.available_permits(), 2 * MIB);
    }
}
