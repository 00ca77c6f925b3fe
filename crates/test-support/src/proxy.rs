//! A fault-injecting TCP proxy for chaos tests: listens on a free loopback
//! port, forwards every connection to one target, and is told at run time
//! what the network between the two should do ([`Fault`]), or to reset every
//! connection at once ([`FaultProxy::reset_all`]).
//!
//! It runs on the caller's tokio runtime; dropping the [`FaultProxy`] stops
//! it and closes every connection it carries.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxied network does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything at once (the default).
    Pass,
    /// Holds every chunk read, in each direction, this long before
    /// forwarding it (a slow link: at least this much one-way delay).
    Latency(Duration),
    /// Accepts new connections but connects them nowhere, and stops
    /// forwarding on the open ones (bytes read are held, not delivered):
    /// a partition, invisible to both ends until their own time-outs. When
    /// it ends ([`Fault::Pass`] again) what was held is delivered, as TCP
    /// would once the network heals.
    BlackHole,
    /// Resets every new connection as soon as it is accepted (as a host with
    /// nothing listening would); open connections carry on.
    Refuse,
}

/// Shared between the proxy's tasks.
#[derive(Debug)]
struct Control {
    fault: watch::Sender<Fault>,
    /// Bumped by [`FaultProxy::reset_all`]: connections opened before reset.
    resets: watch::Sender<u64>,
    open: AtomicUsize,
    accepted: AtomicU64,
}

/// A TCP proxy from a loopback port to one target, with faults set at run
/// time. Stopped (its connections closed) on drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    control: Arc<Control>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port, forwarding to `target`, in
    /// [`Fault::Pass`].
    ///
    /// # Errors
    /// The loopback port could not be bound.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control {
            fault: watch::channel(Fault::Pass).0,
            resets: watch::channel(0).0,
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, target, Arc::clone(&control)));
        Ok(Self {
            addr,
            target,
            control,
            task,
        })
    }

    /// Where clients connect.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `nats://` + [`FaultProxy::addr`], for a NATS client.
    #[must_use]
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Where it forwards to.
    #[must_use]
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sets what the network does from now on (open connections included).
    pub fn set(&self, fault: Fault) {
        self.control.fault.send_replace(fault);
    }

    /// The fault in force.
    #[must_use]
    pub fn fault(&self) -> Fault {
        *self.control.fault.borrow()
    }

    /// Resets (TCP RST) every connection open now, both ends; new ones are
    /// served according to the fault in force.
    pub fn reset_all(&self) {
        self.control.resets.send_modify(|n| *n += 1);
    }

    /// Connections open now (accepted and not yet closed).
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.control.open.load(Ordering::Relaxed)
    }

    /// Connections accepted since the start.
    #[must_use]
    pub fn accepted(&self) -> u64 {
        self.control.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Every connection task watches the reset counter; closing the
        // senders (dropped with the last Arc) or a final reset ends them.
        self.reset_all();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, control: Arc<Control>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or the like: try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        control.accepted.fetch_add(1, Ordering::Relaxed);
        let refuse = *control.fault.borrow() == Fault::Refuse;
        if refuse {
            reset(&client);
            continue;
        }
        control.open.fetch_add(1, Ordering::Relaxed);
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            serve(client, target, &control).await;
            control.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Closes `stream` with a RST on drop.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Carries one connection until either end closes it or it is reset.
async fn serve(mut client: TcpStream, target: SocketAddr, control: &Control) {
    let mut resets = control.resets.subscribe();
    let generation = *resets.borrow_and_update();
    let reset_requested = async move {
        // Ends on a reset after this connection opened, or when the proxy
        // is gone (the sender dropped).
        let _ = resets.wait_for(|n| *n != generation).await;
    };
    tokio::pin!(reset_requested);
    let mut fault = control.fault.subscribe();
    // A black-holed connection is accepted but goes nowhere until it ends.
    let upstream = tokio::select! {
        () = &mut reset_requested => { reset(&client); return; }
        upstream = async {
            let _ = fault.wait_for(|f| *f != Fault::BlackHole).await;
            TcpStream::connect(target).await
        } => upstream,
    };
    let Ok(mut upstream) = upstream else {
        // Nothing at the target: the client sees its connection reset.
        reset(&client);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let was_reset = tokio::select! {
        () = &mut reset_requested => true,
        _ = pump(client_read, upstream_write, control.fault.subscribe()) => false,
        _ = pump(upstream_read, client_write, control.fault.subscribe()) => false,
    };
    if was_reset {
        reset(&client);
        reset(&upstream);
    }
}

/// Forwards `from` to `to` as the fault in force says, until `from` ends or
/// either fails.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut fault: watch::Receiver<Fault>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        let current = *fault.borrow_and_update();
        if let Fault::Latency(delay) = current {
            tokio::time::sleep(delay).await;
        }
        // Held while black-holed (a closed proxy ends the wait too).
        if fault.wait_for(|f| *f != Fault::BlackHole).await.is_err() {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An echo server on loopback; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Writes `text` and reads as many bytes back, within `within`.
    async fn round_trip(
        stream: &mut TcpStream,
        text: &[u8],
        within: Duration,
    ) -> io::Result<Vec<u8>> {
        stream.write_all(text).await?;
        let mut back = vec![0u8; text.len()];
        tokio::time::timeout(within, stream.read_exact(&mut back))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo in time"))??;
        Ok(back)
    }

    #[tokio::test]
    async fn pass_forwards_both_ways_and_counts_connections() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        let back = round_trip(&mut stream, b"hello", Duration::from_secs(5))
            .await
            .expect("echo");
        assert_eq!(back, b"hello");
        assert_eq!((proxy.open_connections(), proxy.accepted()), (1, 1));
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.open_connections() != 0 {
            assert!(
                Instant::now() < deadline,
                "the closed connection is still counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut stream, b"warm", Duration::from_secs(5))
            .await
            .expect("echo");
        proxy.set(Fault::Latency(Duration::from_millis(200)));
        assert_eq!(proxy.fault(), Fault::Latency(Duration::from_millis(200)));
        let started = Instant::now();
        round_trip(&mut stream, b"slow", Duration::from_secs(5))
            .await
            .expect("echo");
        // 200 ms out, 200 ms back.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "round trip took {:?}",
            started.elapsed()
        );
        proxy.set(Fault::Pass);
        let started = Instant::now();
        round_trip(&mut stream, b"fast", Duration::from_secs(5))
            .await
            .expect("echo");
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "still slow after Pass: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn reset_all_resets_open_connections_only() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut stream, b"one", Duration::from_secs(5))
            .await
            .expect("echo");
        proxy.reset_all();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the reset arrives in time");
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "expected a reset, got {read:?}"
        );
        // A connection made after the reset works.
        let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
        let back = round_trip(&mut again, b"two", Duration::from_secs(5))
            .await
            .expect("echo after the reset");
        assert_eq!(back, b"two");
    }

    #[tokio::test]
    async fn black_hole_holds_open_and_new_connections_until_it_ends() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut open, b"before", Duration::from_secs(5))
            .await
            .expect("echo");
        proxy.set(Fault::BlackHole);
        // The open connection forwards nothing...
        open.write_all(b"held").await.expect("write");
        let mut held = [0u8; 4];
        let read =
            tokio::time::timeout(Duration::from_millis(500), open.read_exact(&mut held)).await;
        assert!(read.is_err(), "a black hole forwarded {read:?}");
        // ...and a new one is accepted (no error) but goes nowhere.
        let mut new = TcpStream::connect(proxy.addr()).await.expect("accepted");
        let read = round_trip(&mut new, b"new", Duration::from_millis(500)).await;
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::TimedOut),
            "a black-holed connection answered {read:?}"
        );
        // When it ends, what was held is delivered.
        proxy.set(Fault::Pass);
        tokio::time::timeout(Duration::from_secs(5), open.read_exact(&mut held))
            .await
            .expect("held bytes delivered")
            .expect("read");
        assert_eq!(&held, b"held");
        let mut echoed = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), new.read_exact(&mut echoed))
            .await
            .expect("the new connection is carried")
            .expect("read");
        assert_eq!(&echoed, b"new");
    }

    #[tokio::test]
    async fn refuse_resets_new_connections_and_keeps_open_ones() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        // Accepted and carried (not just in the listen backlog) before the refusal.
        round_trip(&mut open, b"first", Duration::from_secs(5))
            .await
            .expect("echo");
        proxy.set(Fault::Refuse);
        // The reset may come before connect returns, or on the first use.
        let read = match TcpStream::connect(proxy.addr()).await {
            Ok(mut refused) => round_trip(&mut refused, b"x", Duration::from_secs(5)).await,
            Err(e) => Err(e),
        };
        assert!(
            matches!(&read, Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof)),
            "a refused connection got {read:?}"
        );
        let back = round_trip(&mut open, b"still", Duration::from_secs(5))
            .await
            .expect("the open connection carries on");
        assert_eq!(back, b"still");
        proxy.set(Fault::Pass);
        let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut again, b"ok", Duration::from_secs(5))
            .await
            .expect("accepted again after Pass");
    }

    #[tokio::test]
    async fn a_dead_target_resets_the_client() {
        // A port nothing listens on.
        let target = {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
            listener.local_addr().expect("addr")
        };
        let proxy = FaultProxy::start(target).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("accepted");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "expected a reset, got {read:?}"
        );
    }
}
