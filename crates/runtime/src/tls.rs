//! TLS on the gRPC port (`grpc.tls`): the server certificate and key, and
//! for mutual TLS the CA that signs client certificates, read from PEM files
//! and re-read when they change.
//!
//! The files are checked every [`RELOAD_INTERVAL`]: when their contents
//! change (cert-manager renewing a Secret, an operator replacing a file) a
//! fresh rustls configuration is built and swapped in, and every connection
//! accepted afterwards uses it. Connections already open keep the session
//! they negotiated, and their streams, until they close. New files that
//! cannot be used (unreadable, not PEM, a key that does not match the
//! certificate, ...) leave the configuration in use in place and are
//! reported once, as a warning, until they are fixed.
//!
//! Files are compared by content, not modification time: Kubernetes swaps a
//! mounted Secret through symlinks, `cp -p` keeps an old time, and three
//! small files a second cost nothing to read.
//!
//! The handshake itself happens in the accept loop ([`crate::listener`]),
//! within `grpc.handshake_timeout`. ALPN offers `h2`, then `http/1.1`;
//! a client that offers no ALPN at all is accepted too (tonic serves
//! HTTP/2 with prior knowledge).

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        crypto::{CryptoProvider, ring},
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::WebPkiClientVerifier,
    },
};
use tokio_util::sync::CancellationToken;

use crate::config::GrpcTlsConfig;

/// How often the files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// ALPN protocols offered, in order of preference: HTTP/2 for gRPC, then
/// HTTP/1.1 (for gRPC-web; today's server speaks HTTP/2 only).
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

const CERT_KEY: &str = "grpc.tls.cert_file";
const KEY_KEY: &str = "grpc.tls.key_file";
const CA_KEY: &str = "grpc.tls.client_ca_file";

/// A TLS file that cannot be used. Always the configuration's fault (the
/// operator must fix the file or the key naming it); at start-up the
/// service exits with status 64, later the file is not taken.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key} ({}): {reason}", path.display())]
pub struct TlsError {
    /// The configuration key naming the file.
    key: &'static str,
    /// The file.
    path: PathBuf,
    /// What is wrong with it.
    reason: String,
}

impl TlsError {
    fn new(key: &'static str, path: &Path, reason: impl Into<String>) -> Self {
        Self {
            key,
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// The configuration key naming the file at fault.
    #[must_use]
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The file at fault.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where the files are.
#[derive(Debug, Clone)]
struct Paths {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// What the files held when read. No `Debug`: it holds the private key.
#[derive(Clone, PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// The port's TLS configuration: the one every new connection takes,
/// replaced when the files change. Cloning shares it.
#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    paths: Arc<Paths>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.paths.cert)
            .field("key_file", &self.paths.key)
            .field("client_ca_file", &self.paths.client_ca)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files `config` names and builds the configuration, then
    /// re-reads them every `reload_every` (in a task of its own) until
    /// `cancel` fires; `None` if TLS is off (plaintext).
    ///
    /// # Errors
    /// [`TlsError`] naming the key and file that cannot be used.
    pub async fn load(
        config: &GrpcTlsConfig,
        reload_every: Duration,
        cancel: CancellationToken,
    ) -> Result<Option<Self>, TlsError> {
        let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let paths = Paths {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: config.client_ca_file.clone(),
        };
        let files = read(&paths).await?;
        let server = build(&paths, &files)?;
        let tls = Self {
            current: Arc::new(RwLock::new(server)),
            paths: Arc::new(paths),
        };
        let reloader = tls.clone();
        tokio::spawn(async move { reloader.reload(files, reload_every, cancel).await });
        Ok(Some(tls))
    }

    /// Whether clients must present a certificate (mutual TLS).
    #[must_use]
    pub fn mutual(&self) -> bool {
        self.paths.client_ca.is_some()
    }

    /// An acceptor with the configuration in use now.
    #[must_use]
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// The configuration in use now.
    #[must_use]
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads the files every `interval` until `cancel` fires, swapping in
    /// a new configuration when they change; `in_use` is what the current
    /// one was built from.
    async fn reload(&self, in_use: Files, interval: Duration, cancel: CancellationToken) {
        let mut watch = Watch::new(in_use);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        while cancel.run_until_cancelled(tick.tick()).await.is_some() {
            let read = read(&self.paths).await;
            match watch.check(read, |files| build(&self.paths, files)) {
                Step::Unchanged => {}
                Step::Reload(server) => {
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = server;
                    metrics::counter!("fastchat_tls_reloads_total", "result" => "ok").increment(1);
                    tracing::info!(
                        cert_file = %self.paths.cert.display(),
                        "TLS files changed; new connections use the new certificate"
                    );
                }
                Step::Recovered => tracing::info!(
                    "TLS files are usable again (as they were); keeping the certificate in use"
                ),
                Step::Failed { error, report } => {
                    if report {
                        metrics::counter!("fastchat_tls_reloads_total", "result" => "error")
                            .increment(1);
                        tracing::warn!(
                            %error,
                            "cannot reload the TLS files; keeping the certificate in use until they are fixed"
                        );
                    } else {
                        tracing::debug!(%error, "TLS files still unusable");
                    }
                }
            }
        }
    }
}

/// What one check of the files calls for.
enum Step {
    /// Same as in use (or as already refused): nothing to do.
    Unchanged,
    /// New, usable files: swap this configuration in.
    Reload(Arc<ServerConfig>),
    /// The files were unusable, and are now back to those in use.
    Recovered,
    /// Unusable (unreadable, or new contents that do not build); `report`
    /// once per spell of failures, when it has lasted two checks (so a
    /// writer replacing the files one after the other is not reported).
    Failed { error: TlsError, report: bool },
}

/// What the reloader remembers between checks.
struct Watch {
    /// The contents the configuration in use was built from.
    in_use: Files,
    /// Contents that did not build, and why: not built again until they
    /// change.
    refused: Option<(Files, TlsError)>,
    /// Consecutive failed checks.
    failures: u32,
}

impl Watch {
    fn new(in_use: Files) -> Self {
        Self {
            in_use,
            refused: None,
            failures: 0,
        }
    }

    fn check(
        &mut self,
        read: Result<Files, TlsError>,
        build: impl FnOnce(&Files) -> Result<Arc<ServerConfig>, TlsError>,
    ) -> Step {
        let files = match read {
            Ok(files) => files,
            Err(error) => return self.failed(error),
        };
        if self.in_use == files {
            self.refused = None;
            let was_failing = std::mem::take(&mut self.failures) > 0;
            return if was_failing {
                Step::Recovered
            } else {
                Step::Unchanged
            };
        }
        if let Some((refused, error)) = &self.refused
            && *refused == files
        {
            let error = error.clone();
            return match self.failed(error) {
                Step::Failed { report: false, .. } => Step::Unchanged,
                step => step,
            };
        }
        match build(&files) {
            Ok(server) => {
                self.in_use = files;
                self.refused = None;
                self.failures = 0;
                Step::Reload(server)
            }
            Err(error) => {
                self.refused = Some((files, error.clone()));
                self.failed(error)
            }
        }
    }

    fn failed(&mut self, error: TlsError) -> Step {
        self.failures = self.failures.saturating_add(1);
        Step::Failed {
            error,
            report: self.failures == 2,
        }
    }
}

async fn read_one(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| TlsError::new(key, path, format!("cannot read: {}", io_reason(&e))))
}

fn io_reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    }
}

async fn read(paths: &Paths) -> Result<Files, TlsError> {
    let cert = read_one(CERT_KEY, &paths.cert).await?;
    let key = read_one(KEY_KEY, &paths.key).await?;
    let client_ca = match &paths.client_ca {
        Some(path) => Some(read_one(CA_KEY, path).await?),
        None => None,
    };
    Ok(Files {
        cert,
        key,
        client_ca,
    })
}

fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(key, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            key,
            path,
            "no certificate in it (PEM `BEGIN CERTIFICATE`)",
        ));
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The rustls configuration `files` make.
fn build(paths: &Paths, files: &Files) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(CERT_KEY, &paths.cert, &files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in it (PEM `BEGIN PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`; encrypted keys are not supported)".to_owned()
            }
            e => format!("not valid PEM: {e}"),
        };
        TlsError::new(KEY_KEY, &paths.key, reason)
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(CERT_KEY, &paths.cert, e.to_string()))?;
    let builder = match (&paths.client_ca, &files.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for (n, ca) in certificates(CA_KEY, path, pem)?.into_iter().enumerate() {
                roots.add(ca).map_err(|e| {
                    TlsError::new(
                        CA_KEY,
                        path,
                        format!("certificate {} is not a usable CA: {e}", n + 1),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::new(CA_KEY, path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| {
        let reason = match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the key does not match the certificate in {CERT_KEY} ({})",
                paths.cert.display()
            ),
            e => format!("not a usable private key: {e}"),
        };
        TlsError::new(KEY_KEY, &paths.key, reason)
    })?;
    server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GrpcConfig;

    fn tls(cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> GrpcTlsConfig {
        GrpcTlsConfig {
            cert_file: cert.map(PathBuf::from),
            key_file: key.map(PathBuf::from),
            client_ca_file: ca.map(PathBuf::from),
        }
    }

    #[test]
    fn valid_combinations_pass_validation() {
        for config in [
            tls(None, None, None),
            tls(Some("c.pem"), Some("k.pem"), None),
            tls(Some("c.pem"), Some("k.pem"), Some("ca.pem")),
        ] {
            let mut grpc = GrpcConfig::with_port(1);
            grpc.tls = config.clone();
            assert_eq!(grpc.validate(), Ok(()), "{config:?}");
        }
        assert!(!tls(None, None, None).enabled());
        assert!(tls(Some("c"), Some("k"), None).enabled());
    }

    #[test]
    fn a_certificate_without_its_key_names_both_keys() {
        for config in [
            tls(Some("c.pem"), None, None),
            tls(None, Some("k.pem"), None),
            tls(None, Some("k.pem"), Some("ca.pem")),
        ] {
            let mut grpc = GrpcConfig::with_port(1);
            grpc.tls = config.clone();
            let err = grpc.validate().expect_err("one of the pair");
            assert!(
                err.contains("grpc.tls.cert_file") && err.contains("grpc.tls.key_file"),
                "{config:?}: {err}"
            );
        }
    }

    #[test]
    fn a_client_ca_without_a_certificate_is_refused() {
        let err = tls(None, None, Some("ca.pem"))
            .validate()
            .expect_err("mutual TLS without TLS");
        assert!(err.starts_with("grpc.tls.client_ca_file"), "{err}");
        assert!(err.contains("grpc.tls.cert_file"), "{err}");
    }

    #[test]
    fn an_empty_path_is_refused() {
        let err = tls(Some(""), Some("k.pem"), None)
            .validate()
            .expect_err("empty");
        assert!(err.starts_with("grpc.tls.cert_file is empty"), "{err}");
    }

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Sample {
        grpc: GrpcConfig,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                grpc: GrpcConfig::with_port(1),
            }
        }
    }

    impl crate::config::Validate for Sample {
        fn validate(&self) -> Result<(), String> {
            self.grpc.validate()
        }
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closures return figment::Error"
    )]
    fn keys_load_from_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", "[grpc.tls]\ncert_file = \"/tls/tls.crt\"\n")?;
            jail.set_env("FASTCHAT_GRPC__TLS__KEY_FILE", "/tls/tls.key");
            let config: Sample = crate::config::load(Some(Path::new("f.toml")))
                .expect("load")
                .config;
            assert_eq!(
                config.grpc.tls,
                tls(Some("/tls/tls.crt"), Some("/tls/tls.key"), None)
            );
            jail.set_env("FASTCHAT_GRPC__TLS__CLIENT_CA", "/tls/ca.crt");
            let err = crate::config::load::<Sample>(Some(Path::new("f.toml")))
                .expect_err("a misspelt key");
            assert!(err.to_string().contains("grpc.tls.client_ca"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", "[grpc.tls]\nkey_file = \"/tls/tls.key\"\n")?;
            let err = crate::config::load::<Sample>(Some(Path::new("f.toml")))
                .expect_err("a key without its certificate");
            assert!(err.to_string().contains("grpc.tls.cert_file"), "{err}");
            Ok(())
        });
        // No [grpc.tls] at all: plaintext.
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", "[grpc]\nreflection = false\n")?;
            let config: Sample = crate::config::load(Some(Path::new("f.toml")))
                .expect("load")
                .config;
            assert_eq!(config.grpc.tls, GrpcTlsConfig::default());
            Ok(())
        });
    }

    #[tokio::test]
    async fn an_unreadable_file_names_its_key_and_path() {
        let dir = std::env::temp_dir().join(format!("fastchat-tls-{}", std::process::id()));
        let missing = dir.join("missing.pem");
        let err = Tls::load(
            &tls(
                Some(missing.to_str().expect("utf-8")),
                Some("/nonexistent/k.pem"),
                None,
            ),
            RELOAD_INTERVAL,
            CancellationToken::new(),
        )
        .await
        .expect_err("no such file");
        assert_eq!(err.key(), "grpc.tls.cert_file");
        assert_eq!(err.path(), missing);
        let text = err.to_string();
        assert!(
            text.starts_with("grpc.tls.cert_file (") && text.contains("missing.pem"),
            "{text}"
        );
        assert!(text.ends_with("cannot read: no such file"), "{text}");
    }

    #[tokio::test]
    async fn plaintext_loads_nothing() {
        assert!(
            Tls::load(
                &GrpcTlsConfig::default(),
                RELOAD_INTERVAL,
                CancellationToken::new()
            )
            .await
            .expect("ok")
            .is_none()
        );
    }

    fn files(tag: u8) -> Files {
        Files {
            cert: vec![tag],
            key: vec![tag],
            client_ca: None,
        }
    }

    fn unreadable() -> Result<Files, TlsError> {
        Err(TlsError::new(CERT_KEY, Path::new("c"), "cannot read"))
    }

    fn some_config() -> Arc<ServerConfig> {
        Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new())),
        )
    }

    fn broken(_: &Files) -> Result<Arc<ServerConfig>, TlsError> {
        Err(TlsError::new(KEY_KEY, Path::new("k"), "broken"))
    }

    fn usable(_: &Files) -> Result<Arc<ServerConfig>, TlsError> {
        Ok(some_config())
    }

    fn never(_: &Files) -> Result<Arc<ServerConfig>, TlsError> {
        panic!("built again")
    }

    /// (reloaded, reported) for a run of steps.
    fn summary(step: &Step) -> &'static str {
        match step {
            Step::Unchanged => "unchanged",
            Step::Reload(_) => "reload",
            Step::Recovered => "recovered",
            Step::Failed { report: true, .. } => "warn",
            Step::Failed { report: false, .. } => "quiet",
        }
    }

    #[test]
    fn unchanged_files_are_not_built_again() {
        let mut watch = Watch::new(files(1));
        assert_eq!(summary(&watch.check(Ok(files(1)), never)), "unchanged");
        assert_eq!(summary(&watch.check(Ok(files(2)), usable)), "reload");
        assert_eq!(summary(&watch.check(Ok(files(2)), never)), "unchanged");
    }

    #[test]
    fn broken_files_are_reported_once_until_fixed() {
        let mut watch = Watch::new(files(1));
        let steps: Vec<_> = [
            watch.check(Ok(files(2)), broken),
            watch.check(Ok(files(2)), never),
            watch.check(Ok(files(2)), never),
            watch.check(unreadable(), never),
            watch.check(Ok(files(3)), broken),
            watch.check(Ok(files(3)), never),
            watch.check(Ok(files(4)), usable),
        ]
        .iter()
        .map(summary)
        .collect();
        assert_eq!(
            steps,
            [
                "quiet",
                "warn",
                "unchanged",
                "quiet",
                "quiet",
                "unchanged",
                "reload"
            ]
        );
        // Broken again after a fix: reported again.
        let steps: Vec<_> = [
            watch.check(unreadable(), never),
            watch.check(unreadable(), never),
            watch.check(unreadable(), never),
            watch.check(Ok(files(4)), never),
        ]
        .iter()
        .map(summary)
        .collect();
        assert_eq!(steps, ["quiet", "warn", "quiet", "recovered"]);
    }

    #[test]
    fn a_pair_replaced_one_file_at_a_time_is_not_reported() {
        let mut watch = Watch::new(files(1));
        let half = Files {
            cert: vec![2],
            key: vec![1],
            client_ca: None,
        };
        assert_eq!(summary(&watch.check(Ok(half), broken)), "quiet");
        assert_eq!(summary(&watch.check(Ok(files(2)), usable)), "reload");
    }
}
