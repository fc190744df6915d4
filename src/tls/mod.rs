//! HTTPS with rustls: certificates from files (re-read when they change) or
//! from an ACME certificate authority (rustls-acme, TLS-ALPN-01 on the TLS
//! port itself).
//!
//! The acceptor hands each TCP connection to the server at once and does
//! the handshake lazily, inside the connection's own task, on its first
//! read or write: a slow or silent client never holds up `accept`, and the
//! connection layer's head deadline (which starts at accept) bounds the
//! handshake too.

pub mod acme;
pub mod files;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// The one crypto provider: ring, with rustls' default (strong) suites.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3 with rustls' safe defaults, certificates from
/// `resolver`, HTTP/2 preferred over HTTP/1.1.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a handshake needs: the server's configuration and, with ACME, the
/// one that answers the CA's TLS-ALPN-01 validation connections.
#[derive(Clone)]
pub struct Handshake {
    pub config: Arc<ServerConfig>,
    pub acme_challenge: Option<Arc<ServerConfig>>,
}

/// Wraps an acceptor so its connections speak TLS.
pub struct TlsAcceptor<A> {
    inner: A,
    handshake: Handshake,
}

impl<A> TlsAcceptor<A> {
    pub fn new(inner: A, handshake: Handshake) -> Self {
        Self { inner, handshake }
    }
}

impl<A: Acceptor> Acceptor for TlsAcceptor<A> {
    type Io = TlsIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, _) = self.inner.accept().await?;
        let handshake = Box::pin(handshake(io, self.handshake.clone()));
        Ok((
            TlsIo {
                state: State::Handshaking(handshake),
            },
            local,
            remote,
            Scheme::HTTPS,
        ))
    }
}

/// `None`: the connection was an ACME validation and is finished.
async fn handshake<S>(io: S, handshake: Handshake) -> io::Result<Option<TlsStream<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
    if let Some(challenge) = handshake.acme_challenge
        && rustls_acme::is_tls_alpn_challenge(&start.client_hello())
    {
        start.into_stream(challenge).await?;
        tracing::info!(target: "acme", "answered a TLS-ALPN-01 validation connection");
        return Ok(None);
    }
    start.into_stream(handshake.config).await.map(Some)
}

type HandshakeFuture<S> = Pin<Box<dyn Future<Output = io::Result<Option<TlsStream<S>>>> + Send>>;

enum State<S> {
    Handshaking(HandshakeFuture<S>),
    Open(Box<TlsStream<S>>),
    Closed,
}

/// A connection whose handshake runs on first use.
pub struct TlsIo<S> {
    state: State<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsIo<S> {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let State::Handshaking(fut) = &mut self.state {
            let result = ready!(fut.as_mut().poll(cx));
            self.state = match result {
                Ok(Some(stream)) => State::Open(Box::new(stream)),
                Ok(None) => State::Closed,
                Err(e) => {
                    self.state = State::Closed;
                    // Scanners and plain-HTTP clients fail here all day.
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return Poll::Ready(Err(e));
                }
            };
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        match &mut this.state {
            State::Open(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            // End of stream.
            State::Handshaking(_) | State::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        match &mut this.state {
            State::Open(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            State::Handshaking(_) | State::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        match &mut this.state {
            State::Open(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
            State::Handshaking(_) | State::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Open(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            State::Handshaking(_) | State::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Open(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            State::Handshaking(_) | State::Closed => Poll::Ready(Ok(())),
        }
    }
}
