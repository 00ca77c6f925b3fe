//! TLS and mutual TLS on the gRPC ports (`grpc.tls`): real services, a real
//! nats-server, real sockets, certificates made at test time (a CA, a
//! server certificate for localhost and 127.0.0.1, client certificates from
//! that CA and from another one). Clients speak TLS through tokio-rustls
//! directly, so each test can see the certificate the server presented.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use fastchat_e2e::*;
use fastchat_proto::v1;
use fastchat_runtime::{config::GrpcTlsConfig, service::ServeError};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    },
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Serial numbers of the certificates made in this process, so every one
/// differs.
static SERIAL: AtomicU64 = AtomicU64::new(1);

fn serial() -> SerialNumber {
    SerialNumber::from(SERIAL.fetch_add(1, Ordering::Relaxed))
}

/// A certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Issued {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(serial());
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, names: &[&str], usage: &[ExtendedKeyUsagePurpose]) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = usage.to_vec();
        params.serial_number = Some(serial());
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &*self.issuer).expect("certificate");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn server(&self) -> Issued {
        self.issue(
            &["localhost", "127.0.0.1"],
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    /// A server certificate that may also authenticate as a client (what
    /// the healthcheck probe of a mutual-TLS port presents).
    fn server_and_client(&self) -> Issued {
        self.issue(
            &["localhost", "127.0.0.1"],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn client(&self, name: &str) -> Issued {
        self.issue(&[name], &[ExtendedKeyUsagePurpose::ClientAuth])
    }
}

/// Writes `contents` to `path` as cert-manager and kubelet do: to a
/// temporary file in the same directory, then renamed over the old one.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// TLS files in a temporary directory.
struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn new(server: &Issued, client_ca: Option<&Ca>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Self {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            ca: dir.path().join("ca.crt"),
            _dir: dir,
        };
        files.install(server);
        if let Some(ca) = client_ca {
            replace(&files.ca, &ca.pem());
        }
        files
    }

    /// A new certificate and key (the key first, as a Secret's keys may
    /// land in any order).
    fn install(&self, server: &Issued) {
        replace(&self.key, &server.key);
        replace(&self.cert, &server.cert);
    }

    fn config(&self, mutual: bool) -> GrpcTlsConfig {
        GrpcTlsConfig {
            cert_file: Some(self.cert.clone()),
            key_file: Some(self.key.clone()),
            client_ca_file: mutual.then(|| self.ca.clone()),
        }
    }
}

/// A TLS client trusting `ca`, presenting `identity` if given, offering
/// `alpn`.
fn client(ca: &Ca, identity: Option<&Issued>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).expect("CA root");
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(
                vec![identity.der.clone()],
                PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).expect("client key"),
            )
            .expect("client identity"),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

const H2: &[&[u8]] = &[b"h2"];

/// A TLS connection to `addr` as `localhost`.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(config).connect(name, tcp).await
}

/// The certificate the server at `addr` presents to a new connection.
async fn presented(addr: SocketAddr, config: Arc<ClientConfig>) -> CertificateDer<'static> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tls_connect(addr, config))
        .await
        .expect("handshake within 5 s")
        .expect("handshake");
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a certificate")
        .clone()
        .into_owned()
}

/// A gRPC channel to `addr` over TLS.
async fn channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    // The connector does TLS itself: tonic's own TLS is not built.
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = Arc::clone(&config);
        async move { tls_connect(addr, config).await.map(TokioIo::new) }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_with_connector(connector)
        .await
}

/// The health of the server at `addr` over TLS with `config`; `Err` with
/// the reason if the connection or the call fails.
async fn health(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<ServingStatus, String> {
    let call = async {
        let channel = channel(addr, config).await.map_err(|e| format!("{e:?}"))?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(response.into_inner().status())
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

/// A service running in this process over TLS, stopped on drop.
struct TlsService {
    addr: SocketAddr,
    cancel: CancellationToken,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Drop for TlsService {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TlsService {
    /// Stops it and returns how `run` ended.
    async fn stop(mut self) -> Result<(), ServeError> {
        self.cancel.cancel();
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("stops within 15 s")
            .expect("no panic")
    }
}

/// Starts a service's `run` on a free port and waits until it is SERVING
/// over TLS to `client`.
async fn start<F, Fut>(run: F, client: Arc<ClientConfig>) -> TlsService
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), ServeError>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(run(listener, cancel.clone()));
    let service = TlsService {
        addr,
        cancel,
        handle: Some(handle),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = health(addr, Arc::clone(&client)).await;
        if status == Ok(ServingStatus::Serving) {
            return service;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not SERVING over TLS after 15 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_send_tls(
    nats: &NatsServer,
    tls: GrpcTlsConfig,
    client: Arc<ClientConfig>,
) -> TlsService {
    let mut config = send_config(&nats.url());
    config.grpc.tls = tls;
    start(|l, c| send_service::run(config, l, c), client).await
}

async fn start_all_tls(
    nats: &NatsServer,
    tls: GrpcTlsConfig,
    client: Arc<ClientConfig>,
) -> TlsService {
    let mut config = all_config(&nats.url());
    config.grpc.tls = tls;
    start(|l, c| all_messages_service::run(config, l, c), client).await
}

#[tokio::test]
async fn send_and_subscribe_round_trip_over_tls() {
    let nats = NatsServer::start();
    let ca = Ca::new("test CA");
    let server = ca.server();
    let files = Files::new(&server, None);
    let tls = client(&ca, None, H2);
    let send = start_send_tls(&nats, files.config(false), Arc::clone(&tls)).await;
    let all = start_all_tls(&nats, files.config(false), Arc::clone(&tls)).await;

    // The handshake: our certificate, ALPN h2.
    let stream = tls_connect(send.addr, Arc::clone(&tls))
        .await
        .expect("handshake");
    let (_, session) = stream.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        session.peer_certificates().and_then(|c| c.first()),
        Some(&server.der)
    );
    drop(stream);

    let mut subscriber = v1::all_messages_service_client::AllMessagesServiceClient::new(
        channel(all.addr, Arc::clone(&tls)).await.expect("channel"),
    );
    let mut stream = subscriber
        .subscribe(subscribe("r", None))
        .await
        .expect("subscribe over TLS")
        .into_inner();
    let mut sender = v1::send_message_service_client::SendMessageServiceClient::new(
        channel(send.addr, Arc::clone(&tls)).await.expect("channel"),
    );
    for text in ["one", "two"] {
        sender
            .send_message(message("r", "ann", text))
            .await
            .expect("send over TLS");
    }
    let events = take(&mut stream, 2, Duration::from_secs(10)).await;
    assert_eq!(sequences(&events), [1, 2]);

    // A client that offers no ALPN at all is served too (HTTP/2 with
    // prior knowledge), and one offering only http/1.1 gets it.
    let no_alpn = client(&ca, None, &[]);
    assert_eq!(health(send.addr, no_alpn).await, Ok(ServingStatus::Serving));
    let stream = tls_connect(send.addr, client(&ca, None, &[b"http/1.1"]))
        .await
        .expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    send.stop().await.expect("send-service stops cleanly");
    all.stop()
        .await
        .expect("all-messages-service stops cleanly");
}

#[tokio::test]
async fn a_tls_port_refuses_plaintext_and_closes_stalled_handshakes() {
    let nats = NatsServer::start();
    let ca = Ca::new("test CA");
    let files = Files::new(&ca.server(), None);
    let tls = client(&ca, None, H2);
    let mut config = send_config(&nats.url());
    config.grpc.tls = files.config(false);
    config.grpc.handshake_timeout = Duration::from_millis(500);
    let send = start(|l, c| send_service::run(config, l, c), Arc::clone(&tls)).await;

    // A plaintext gRPC client gets nothing.
    let plaintext = fastchat_runtime::health::check(send.addr, Duration::from_secs(3)).await;
    assert!(plaintext.is_err(), "plaintext answered: {plaintext:?}");

    // A client that opens TCP and starts a ClientHello it never finishes
    // (a record header announcing 512 bytes) is closed at the handshake
    // deadline; one that sends nothing at all, too.
    for opening in [&b"\x16\x03\x01\x02\x00"[..], &b""[..]] {
        let mut tcp = TcpStream::connect(send.addr).await.expect("connect");
        tcp.write_all(opening).await.expect("write");
        let started = tokio::time::Instant::now();
        let mut buf = [0; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("closed within 5 s");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "closed after {:?}, before the deadline",
            started.elapsed()
        );
    }
    // The port still serves TLS clients.
    assert_eq!(health(send.addr, tls).await, Ok(ServingStatus::Serving));
}

#[tokio::test]
async fn mutual_tls_accepts_only_clients_with_a_certificate_from_the_ca() {
    let nats = NatsServer::start();
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let files = Files::new(&ca.server(), Some(&ca));
    let trusted = client(&ca, Some(&ca.client("alice")), H2);
    let send = start_send_tls(&nats, files.config(true), Arc::clone(&trusted)).await;

    let mut sender = v1::send_message_service_client::SendMessageServiceClient::new(
        channel(send.addr, Arc::clone(&trusted))
            .await
            .expect("channel"),
    );
    sender
        .send_message(message("r", "alice", "hello"))
        .await
        .expect("a client of the CA may send");

    // TLS 1.3 finishes the client's side of the handshake before the
    // server has checked the client's certificate: the refusal shows on
    // the first call.
    for (who, config, alert) in [
        (
            "no certificate",
            client(&ca, None, H2),
            "CertificateRequired",
        ),
        (
            "a certificate from another CA",
            client(&ca, Some(&other.client("mallory")), H2),
            "UnknownCA",
        ),
    ] {
        let status = health(send.addr, config).await;
        assert!(
            status.as_ref().is_err_and(|e| e.contains(alert)),
            "{who}: {status:?}"
        );
    }
    assert_eq!(health(send.addr, trusted).await, Ok(ServingStatus::Serving));
}

/// Waits until a new connection to `addr` is presented `want`.
async fn wait_presented(addr: SocketAddr, config: &Arc<ClientConfig>, want: &CertificateDer<'_>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if presented(addr, Arc::clone(config)).await == *want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still presents the old certificate after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_replaced_certificate_is_used_for_new_connections_and_open_streams_stay() {
    let nats = NatsServer::start();
    let ca = Ca::new("test CA");
    let first = ca.server();
    let files = Files::new(&first, None);
    let tls = client(&ca, None, H2);
    let send = start_send_tls(&nats, files.config(false), Arc::clone(&tls)).await;
    let all = start_all_tls(&nats, files.config(false), Arc::clone(&tls)).await;
    assert_eq!(presented(all.addr, Arc::clone(&tls)).await, first.der);

    // A subscription open over a connection made with the first
    // certificate.
    let mut subscriber = v1::all_messages_service_client::AllMessagesServiceClient::new(
        channel(all.addr, Arc::clone(&tls)).await.expect("channel"),
    );
    let mut stream = subscriber
        .subscribe(subscribe("r", None))
        .await
        .expect("subscribe")
        .into_inner();

    // cert-manager renews: a new key and certificate.
    let second = ca.server();
    assert_ne!(second.der, first.der);
    files.install(&second);
    let replaced = tokio::time::Instant::now();
    wait_presented(all.addr, &tls, &second.der).await;
    wait_presented(send.addr, &tls, &second.der).await;
    eprintln!(
        "new certificate presented {:?} after the files changed",
        replaced.elapsed()
    );

    // The open stream still delivers what is sent afterwards (through a
    // new connection, with the new certificate).
    let mut sender = v1::send_message_service_client::SendMessageServiceClient::new(
        channel(send.addr, Arc::clone(&tls)).await.expect("channel"),
    );
    sender
        .send_message(message("r", "ann", "after the renewal"))
        .await
        .expect("send");
    let events = take(&mut stream, 1, Duration::from_secs(10)).await;
    assert_eq!(sequences(&events), [1]);

    // A broken certificate file: the certificate in use stays, for new
    // connections too, and the open stream is untouched.
    replace(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(presented(all.addr, Arc::clone(&tls)).await, second.der);
    assert_eq!(presented(send.addr, Arc::clone(&tls)).await, second.der);
    // A key that does not match the certificate: the same.
    let stray = ca.server();
    replace(&files.cert, &second.cert);
    replace(&files.key, &stray.key);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(presented(all.addr, Arc::clone(&tls)).await, second.der);
    sender
        .send_message(message("r", "ann", "while the files are broken"))
        .await
        .expect("send");
    let events = take(&mut stream, 1, Duration::from_secs(10)).await;
    assert_eq!(sequences(&events), [2]);

    // Fixed: the next certificate is taken.
    let third = ca.server();
    files.install(&third);
    wait_presented(all.addr, &tls, &third.der).await;
    wait_presented(send.addr, &tls, &third.der).await;
    sender
        .send_message(message("r", "ann", "after the fix"))
        .await
        .expect("send over the connection opened before the fix");
    let events = take(&mut stream, 1, Duration::from_secs(10)).await;
    assert_eq!(sequences(&events), [3]);
}

/// Starts `send_service::run` with `tls` and returns how it ended (within
/// 10 s: it must not wait for anything).
async fn start_up_error(nats: &NatsServer, tls: GrpcTlsConfig) -> ServeError {
    let mut config = send_config(&nats.url());
    config.grpc.tls = tls;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cancel = CancellationToken::new();
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        send_service::run(config, listener, cancel.clone()),
    )
    .await;
    cancel.cancel();
    ended.expect("stops at once").expect_err("a start-up error")
}

#[tokio::test]
async fn unusable_files_at_start_up_are_configuration_errors_naming_the_key_and_path() {
    let nats = NatsServer::start();
    let ca = Ca::new("test CA");
    let files = Files::new(&ca.server(), Some(&ca));

    let missing = files.cert.with_file_name("missing.crt");
    let mut tls = files.config(true);
    tls.cert_file = Some(missing.clone());
    let err = start_up_error(&nats, tls).await;
    assert!(err.is_configuration(), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("configuration error: grpc.tls.cert_file (")
            && text.contains(&missing.display().to_string()),
        "{text}"
    );

    let mut tls = files.config(true);
    tls.client_ca_file = Some(files.key.clone());
    let err = start_up_error(&nats, tls).await;
    assert!(err.is_configuration(), "{err}");
    assert!(
        err.to_string().contains("grpc.tls.client_ca_file")
            && err.to_string().contains("no certificate"),
        "{err}"
    );

    replace(&files.key, &ca.server().key);
    let err = start_up_error(&nats, files.config(false)).await;
    assert!(err.is_configuration(), "{err}");
    assert!(
        err.to_string().contains("grpc.tls.key_file")
            && err.to_string().contains("does not match the certificate"),
        "{err}"
    );
}

/// The `healthcheck` subcommand (what container health checks and
/// Kubernetes exec probes run) speaks TLS on a TLS port, trusting exactly
/// the port's own certificate, and under mutual TLS presents it as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_subcommand_speaks_tls_on_a_tls_port() {
    let nats = NatsServer::start();
    let ca = Ca::new("test CA");
    for mutual in [false, true] {
        let files = Files::new(&ca.server_and_client(), mutual.then_some(&ca));
        let trusted = client(&ca, Some(&ca.client("probe")), H2);
        let send = start_send_tls(&nats, files.config(mutual), trusted).await;
        let probe = |service: &str, cert: &Path| {
            let mut command = std::process::Command::new(workspace_bin("send-service"));
            command
                .args(["healthcheck", "--service", service])
                .env("FASTCHAT_GRPC__LISTEN", send.addr.to_string())
                .env("FASTCHAT_GRPC__TLS__CERT_FILE", cert)
                .env("FASTCHAT_GRPC__TLS__KEY_FILE", &files.key);
            if mutual {
                command.env("FASTCHAT_GRPC__TLS__CLIENT_CA_FILE", &files.ca);
            }
            command.output().expect("run healthcheck")
        };
        let ready = tokio::task::block_in_place(|| {
            (probe("", &files.cert), probe("liveness", &files.cert))
        });
        assert!(ready.0.status.success(), "mutual {mutual}: {:?}", ready.0);
        assert!(ready.1.status.success(), "mutual {mutual}: {:?}", ready.1);
    }
    // A port that presents another certificate fails the probe.
    let files = Files::new(&ca.server(), None);
    let other = Files::new(&ca.server(), None);
    let send = start_send_tls(&nats, files.config(false), client(&ca, None, H2)).await;
    let output = tokio::task::block_in_place(|| {
        std::process::Command::new(workspace_bin("send-service"))
            .args(["healthcheck", "--timeout", "2s"])
            .env("FASTCHAT_GRPC__LISTEN", send.addr.to_string())
            .env("FASTCHAT_GRPC__TLS__CERT_FILE", &other.cert)
            .env("FASTCHAT_GRPC__TLS__KEY_FILE", &other.key)
            .output()
            .expect("run healthcheck")
    });
    assert!(!output.status.success());
}
