//! Accepting connections, for the gRPC port and the metrics port alike:
//! a cap on open connections per instance and per client address, a
//! handshake deadline (a connection that has not sent its first bytes in
//! time is closed, so idle sockets cannot pile up to the file-descriptor
//! limit), and an accept loop that backs off when the process is out of
//! file descriptors instead of spinning. On a TLS port ([`crate::tls`])
//! the TLS handshake happens here too, within the same deadline, and the
//! first bytes are then read from the decrypted stream.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use fastchat_backoff::ExponentialBackoff;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::{throttle::Throttled, tls::Tls};

/// Bytes a client must send within the handshake deadline: the length of
/// the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`); any
/// HTTP/1.1 request line with its headers is longer.
pub const HANDSHAKE_BYTES: usize = 24;

/// What the accept loop enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections allowed at once; more are closed on accept.
    pub max_connections: usize,
    /// Open connections allowed from one client address.
    pub max_per_address: usize,
    /// Time a new connection has to send its first [`HANDSHAKE_BYTES`].
    pub handshake_timeout: Duration,
}

/// Accepts plaintext connections on `listener` until `cancel` fires,
/// yielding those that passed the limits and the handshake deadline. `name`
/// names the port in logs (e.g. `grpc`, `metrics`).
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
    name: &'static str,
    cancel: CancellationToken,
) -> ReceiverStream<io::Result<Conn>> {
    incoming_with(listener, limits, name, None, cancel)
}

/// As [`incoming`], over TLS if `tls` is given: each connection is
/// accepted with the TLS configuration in use when it arrives, and must
/// complete the TLS handshake and then send its first [`HANDSHAKE_BYTES`]
/// within the handshake deadline.
pub fn incoming_with(
    listener: TcpListener,
    limits: Limits,
    name: &'static str,
    tls: Option<Tls>,
    cancel: CancellationToken,
) -> ReceiverStream<io::Result<Conn>> {
    // Handshakes run in their own tasks and hand finished connections
    // over; the channel is short because the server takes them at once.
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, limits, name, tls, tx, cancel));
    ReceiverStream::new(rx)
}

/// Per-address connection counts, shared by the accept loop and every open
/// connection's [`Slot`]. A std mutex: held for a map update only, never
/// across an await.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn try_add(&self, ip: IpAddr, max: usize) -> bool {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn remove(&self, ip: IpAddr) {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// A connection's place in the limits, given back when it closes.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    per_address: Arc<PerAddress>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.per_address.remove(self.ip);
    }
}

/// Whether an accept error means the process (or system) is out of a
/// resource that only time frees: retrying at once would spin.
fn is_resource_exhaustion(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: std has no stable kinds for the
    // descriptor limits, so the raw numbers (Linux and the BSDs agree on
    // EMFILE 24 and ENFILE 23; ENOBUFS is 105 on Linux, 55 on the BSDs).
    matches!(error.raw_os_error(), Some(23 | 24 | 55 | 105))
        || error.kind() == io::ErrorKind::OutOfMemory
}

async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    name: &'static str,
    tls: Option<Tls>,
    tx: mpsc::Sender<io::Result<Conn>>,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let mut backoff =
        ExponentialBackoff::doubling(Duration::from_millis(5), Duration::from_secs(1)).stream();
    let exhausted = Throttled::new(Duration::from_secs(5));
    let refused = Throttled::new(Duration::from_secs(5));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) if is_resource_exhaustion(&e) => {
                let delay = backoff.next_delay();
                if let Some(suppressed) = exhausted.check() {
                    tracing::warn!(port = name, error = %e, ?delay, suppressed, "cannot accept connections (out of file descriptors?); pausing accepts");
                }
                metrics::counter!("fastchat_accept_errors_total", "port" => name).increment(1);
                if cancel
                    .run_until_cancelled(tokio::time::sleep(delay))
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            }
            // Errors of one connection (reset before we took it, ...).
            Err(e) => {
                tracing::debug!(port = name, error = %e, "accept failed");
                continue;
            }
        };
        let Some(slot) = admit(&permits, &per_address, peer, limits) else {
            metrics::counter!("fastchat_connections_refused_total", "port" => name).increment(1);
            if let Some(suppressed) = refused.check() {
                tracing::warn!(
                    port = name,
                    %peer,
                    suppressed,
                    max_connections = limits.max_connections,
                    max_per_address = limits.max_per_address,
                    "connection refused: too many open connections"
                );
            }
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(port = name, error = %e, "cannot set TCP_NODELAY");
        }
        let tx = tx.clone();
        let timeout = limits.handshake_timeout;
        // The configuration in use now: a certificate replaced later
        // applies to later connections.
        let acceptor = tls.as_ref().map(Tls::acceptor);
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, handshake(stream, acceptor, slot)).await {
                Ok(Ok(Some(conn))) => {
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Ok(None)) => {}
                Ok(Err(Failed::Tls(e))) => {
                    metrics::counter!("fastchat_tls_handshake_failures_total", "port" => name)
                        .increment(1);
                    tracing::debug!(port = name, %peer, error = %e, "TLS handshake failed");
                }
                Ok(Err(Failed::Io(e))) => {
                    tracing::debug!(port = name, %peer, error = %e, "handshake failed");
                }
                Err(_) => {
                    metrics::counter!("fastchat_handshake_timeouts_total", "port" => name)
                        .increment(1);
                    tracing::debug!(port = name, %peer, ?timeout, "no handshake in time; closed");
                }
            }
        });
    }
}

fn admit(
    permits: &Arc<Semaphore>,
    per_address: &Arc<PerAddress>,
    peer: SocketAddr,
    limits: Limits,
) -> Option<Slot> {
    let permit = Arc::clone(permits).try_acquire_owned().ok()?;
    let ip = peer.ip();
    if !per_address.try_add(ip, limits.max_per_address) {
        return None;
    }
    Some(Slot {
        _permit: permit,
        ip,
        per_address: Arc::clone(per_address),
    })
}

/// Why a handshake failed.
enum Failed {
    /// The TLS handshake (a plaintext client, an untrusted or missing
    /// client certificate, no common protocol version, ...).
    Tls(io::Error),
    /// Reading the first bytes.
    Io(io::Error),
}

/// Completes the TLS handshake if `tls` is given, then reads the first
/// [`HANDSHAKE_BYTES`]; `None` if the peer closed before.
async fn handshake(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    slot: Slot,
) -> Result<Option<Conn>, Failed> {
    let mut stream = match tls {
        None => Stream::Plain(stream),
        Some(acceptor) => Stream::Tls(Box::new(
            acceptor.accept(stream).await.map_err(Failed::Tls)?,
        )),
    };
    let mut prefix = [0; HANDSHAKE_BYTES];
    let mut have = 0;
    while have < HANDSHAKE_BYTES {
        let n = stream.read(&mut prefix[have..]).await.map_err(Failed::Io)?;
        if n == 0 {
            return Ok(None);
        }
        have += n;
    }
    Ok(Some(Conn {
        stream,
        prefix,
        replayed: 0,
        _slot: slot,
    }))
}

/// A connection's byte stream: the socket itself, or TLS over it (boxed:
/// a TLS session is a few kilobytes, a plaintext connection need not
/// carry that).
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

/// Forwards a poll to whichever stream it is.
macro_rules! either {
    ($stream:expr, $s:ident => $poll:expr) => {
        match $stream {
            Stream::Plain($s) => $poll,
            Stream::Tls($s) => $poll,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(self.get_mut(), s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        either!(self, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

/// An accepted connection, plaintext or TLS: replays the bytes read for
/// the handshake, then reads the stream; gives its place in the limits
/// back when dropped.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    prefix: [u8; HANDSHAKE_BYTES],
    replayed: usize,
    _slot: Slot,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < HANDSHAKE_BYTES {
            let rest = &this.prefix[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    /// The TCP peer and local address, over TLS too (the services read
    /// `remote_addr()` for fair shares).
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.tcp().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;
    use tokio_stream::StreamExt as _;

    fn limits(max_connections: usize, max_per_address: usize) -> Limits {
        Limits {
            max_connections,
            max_per_address,
            handshake_timeout: Duration::from_millis(300),
        }
    }

    async fn bound() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    #[tokio::test]
    async fn the_handshake_bytes_are_replayed_to_the_server() {
        let (listener, addr) = bound().await;
        let mut conns = incoming(listener, limits(4, 4), "test", CancellationToken::new());
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nand then some")
            .await
            .expect("write");
        let mut conn = conns.next().await.expect("a connection").expect("ok");
        let mut got = vec![0; 37];
        conn.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nand then some");
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
        let (listener, addr) = bound().await;
        let _conns = incoming(listener, limits(4, 4), "test", CancellationToken::new());
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"PRI * HTTP/2.0")
            .await
            .expect("half a preface");
        let started = tokio::time::Instant::now();
        let mut buf = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("closed within 5 s");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn connections_over_the_caps_are_closed_and_slots_come_back() {
        let (listener, addr) = bound().await;
        let mut conns = incoming(listener, limits(3, 2), "test", CancellationToken::new());
        let preface = [b'x'; HANDSHAKE_BYTES];
        let mut open = Vec::new();
        for _ in 0..2 {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            client.write_all(&preface).await.expect("write");
            open.push((client, conns.next().await.expect("conn").expect("ok")));
        }
        // A third from the same address: over max_per_address.
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let _ = third.write_all(&preface).await;
        let mut buf = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("refused at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // Closing one gives its slot back.
        drop(open.pop());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut again = TcpStream::connect(addr).await.expect("connect");
        again.write_all(&preface).await.expect("write");
        let conn = tokio::time::timeout(Duration::from_secs(5), conns.next())
            .await
            .expect("admitted again");
        assert!(conn.is_some());
    }

    #[test]
    fn out_of_descriptors_is_told_apart() {
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(24)));
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(23)));
        assert!(!is_resource_exhaustion(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
    }
}
