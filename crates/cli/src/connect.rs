//! gRPC channels to the services and what every call carries: connecting is
//! bounded, `https://` addresses use TLS ([`Tls`]), a failure names the
//! service and address it was for (with advice when a certificate is the
//! problem), and calls carry the [`Bearer`] token.

use std::{
    borrow::Cow,
    error::Error as StdError,
    fmt, fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{
    addr::{ServiceAddr, Target},
    error::{CliError, ErrorKind, Unreachable},
};

/// The environment variable for the token (`--token`).
pub const TOKEN_ENV: &str = "FASTCHAT_TOKEN";
/// The environment variable for `--ca-file`.
pub const CA_FILE_ENV: &str = "FASTCHAT_CA_FILE";
/// The environment variable for `--cert-file`.
pub const CERT_FILE_ENV: &str = "FASTCHAT_CERT_FILE";
/// The environment variable for `--key-file`.
pub const KEY_FILE_ENV: &str = "FASTCHAT_KEY_FILE";

/// How a channel will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Request/answer calls, each bounded by the timeout.
    Unary,
    /// A long-lived stream: no request deadline, but HTTP/2 keep-alive pings
    /// so a silently dead connection is noticed and `tail` can reconnect.
    Stream,
}

/// How connections to `https://` addresses are secured: which certificate
/// authorities to trust (the system's, or those of `--ca-file`) and, for
/// mutual TLS, the client's certificate and key (`--cert-file`,
/// `--key-file`). `http://` addresses are plaintext and use none of it.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// `--ca-file` and its certificates: trusted instead of the system's.
    ca: Option<(PathBuf, Certificate)>,
    /// `--cert-file` and `--key-file`, read.
    identity: Option<Identity>,
}

impl Tls {
    /// Reads the files the command line names: `ca_file` (PEM certificates
    /// to trust instead of the system's roots), and `cert_file` with
    /// `key_file` (PEM client certificate chain and private key).
    ///
    /// # Errors
    /// [`ErrorKind::Usage`] naming the flag and the file when one cannot be
    /// read, holds no PEM certificate (or key), or the key is not the
    /// certificate's; or when only one of `cert_file` and `key_file` is given.
    pub fn load(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<Self, CliError> {
        let ca = match ca_file {
            Some(path) => {
                let pem = read_pem(path, "--ca-file", "CERTIFICATE")?;
                Some((path.to_owned(), Certificate::from_pem(pem)))
            }
            None => None,
        };
        let identity = match (cert_file, key_file) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read_pem(cert, "--cert-file", "CERTIFICATE")?,
                read_pem(key, "--key-file", "PRIVATE KEY")?,
            )),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(CliError::new(
                    ErrorKind::Usage,
                    "--cert-file and --key-file go together: give both for mutual TLS, or neither",
                ));
            }
        };
        let tls = Self { ca, identity };
        // Let rustls parse what was read now, so a broken file is a usage
        // error before any connection (the system's roots, which only
        // `https://` addresses need, are left out of this check).
        if tls.ca.is_some() || tls.identity.is_some() {
            Endpoint::from_static("https://fastchat.invalid")
                .tls_config(tls.client_config(false))
                .map_err(|e| {
                    CliError::new(
                        ErrorKind::Usage,
                        format!(
                            "the TLS files cannot be used ({}): {}",
                            tls.files_named(),
                            crate::error::error_chain(&e)
                        ),
                    )
                })?;
        }
        Ok(tls)
    }

    /// The TLS settings for an `https://` address; `system_roots` adds the
    /// system's roots when no `--ca-file` is given.
    fn client_config(&self, system_roots: bool) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some((_, ca)) => config.ca_certificate(ca.clone()),
            None if system_roots => config.with_native_roots(),
            None => config,
        };
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        config
    }

    /// The flags given, for messages: `--ca-file x.pem, --cert-file …`.
    fn files_named(&self) -> &'static str {
        match (self.ca.is_some(), self.identity.is_some()) {
            (true, true) => "--ca-file, --cert-file, --key-file",
            (true, false) => "--ca-file",
            (false, _) => "--cert-file, --key-file",
        }
    }

    /// Advice for a call to `addr` that failed with `status`, when how the
    /// connection is secured is the likely cause: a TLS error behind the
    /// status, or, without a client certificate, the connection lost under
    /// the call. With TLS 1.3 a server that requires a client certificate
    /// finishes the handshake, then sends an alert and closes the
    /// connection; the call sees the alert, a broken pipe or a closed
    /// connection, whichever comes first.
    #[must_use]
    pub fn call_hint(&self, addr: &ServiceAddr, status: &Status) -> Option<String> {
        if !addr.is_tls() {
            return None;
        }
        if let Some(hint) = self.hint(status) {
            return Some(hint);
        }
        // A status made from a transport failure, not one a server sent.
        let lost = status
            .source()
            .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
        (self.identity.is_none() && lost).then(|| {
            "the server closed the connection; if it requires a client certificate, \
             pass --cert-file and --key-file"
                .to_owned()
        })
    }

    /// Advice for a connection that failed with `e`, when TLS is why.
    fn hint(&self, e: &(dyn StdError + 'static)) -> Option<String> {
        use rustls::{AlertDescription, CertificateError, Error as TlsError};
        let tls_error = rustls_error(e)?;
        let hint = match tls_error {
            TlsError::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => match &self.ca {
                None => "the server's certificate is not signed by a CA this system trusts; \
                         pass --ca-file FILE with the CA certificate that signed it"
                    .to_owned(),
                Some((path, _)) => format!(
                    "the server's certificate is not signed by the CA in --ca-file {}",
                    path.display()
                ),
            },
            TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => "the server's certificate is not for the host in the address; \
                  use a host name the certificate names"
                .to_owned(),
            TlsError::AlertReceived(
                AlertDescription::CertificateRequired
                | AlertDescription::HandshakeFailure
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA,
            ) if self.identity.is_none() => {
                "the server may require a client certificate: pass --cert-file and --key-file"
                    .to_owned()
            }
            TlsError::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown,
            ) => "the server did not accept the client certificate of --cert-file".to_owned(),
            _ => return None,
        };
        Some(hint)
    }
}

/// The first rustls error in `e`'s chain, including inside an
/// [`io::Error`] (whose `source` skips the error it wraps).
fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// Reads the PEM file given as `flag`, which must hold a `-----BEGIN
/// …{label}-----` block.
fn read_pem(path: &Path, flag: &str, label: &str) -> Result<Vec<u8>, CliError> {
    let pem = fs::read(path).map_err(|e| {
        CliError::new(
            ErrorKind::Usage,
            format!("{flag}: cannot read {}: {e}", path.display()),
        )
    })?;
    let begins = String::from_utf8_lossy(&pem).lines().any(|line| {
        line.starts_with("-----BEGIN ") && line.trim_end().ends_with(&format!("{label}-----"))
    });
    if !begins {
        return Err(CliError::new(
            ErrorKind::Usage,
            format!(
                "{flag}: {} holds no PEM {} (a -----BEGIN …{label}----- block)",
                path.display(),
                label.to_ascii_lowercase()
            ),
        ));
    }
    Ok(pem)
}

/// The bearer token every call carries as `authorization: Bearer <token>`.
///
/// Never shown: `Debug` prints `Bearer(<redacted>)`, errors about it do not
/// quote it, and the header is marked sensitive (not indexed by HTTP/2
/// header compression).
#[derive(Clone)]
pub struct Bearer {
    token: String,
    header: AsciiMetadataValue,
}

impl Bearer {
    /// A token from `from` (`--token`, `FASTCHAT_TOKEN`, `--token-file
    /// FILE`), spaces and newlines around it dropped.
    ///
    /// # Errors
    /// [`ErrorKind::Usage`] when it is empty or holds characters a header
    /// cannot carry (spaces, control or non-ASCII characters); the message
    /// names `from`, never the token.
    pub fn new(token: &str, from: &str) -> Result<Self, CliError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(CliError::new(
                ErrorKind::Usage,
                format!("the token of {from} is empty (did `fastchat token` fail?)"),
            ));
        }
        // What a JWT (base64url and dots) or any other bearer token is
        // made of; header values could carry more, but not safely.
        let header = if token.bytes().all(|b| b.is_ascii_graphic()) {
            MetadataValue::try_from(format!("Bearer {token}")).ok()
        } else {
            None
        };
        let Some(header) = header else {
            return Err(CliError::new(
                ErrorKind::Usage,
                format!(
                    "the token of {from} is not one: it holds spaces or characters \
                     other than printable ASCII"
                ),
            ));
        };
        let mut header: AsciiMetadataValue = header;
        header.set_sensitive(true);
        Ok(Self {
            token: token.to_owned(),
            header,
        })
    }

    /// `text` with the token replaced by `<redacted>`, for anything printed
    /// that quotes a server (which might quote the token back).
    #[must_use]
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if text.contains(&self.token) {
            Cow::Owned(text.replace(&self.token, "<redacted>"))
        } else {
            Cow::Borrowed(text)
        }
    }

    /// The token, for [`CliError::redact`].
    #[must_use]
    pub fn secret(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

/// `message` as a request carrying `bearer`, if there is one.
pub fn request<T>(message: T, bearer: Option<&Bearer>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(bearer) = bearer {
        request
            .metadata_mut()
            .insert("authorization", bearer.header.clone());
    }
    request
}

/// Connects to `target` at `addr`, with TLS for an `https://` address,
/// failing after `timeout`.
///
/// # Errors
/// [`Unreachable`] when no connection could be made in time, with advice
/// when the TLS handshake failed over a certificate.
pub async fn connect(
    target: Target,
    addr: &ServiceAddr,
    timeout: Duration,
    usage: Use,
    tls: &Tls,
) -> Result<Channel, Unreachable> {
    let mut endpoint = Endpoint::from_shared(addr.as_str().to_owned())
        .map_err(|e| Unreachable::new(target, addr, &e))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    if addr.is_tls() {
        endpoint = endpoint.tls_config(tls.client_config(true)).map_err(|e| {
            let unreachable = Unreachable::new(target, addr, &e);
            if tls.ca.is_none() {
                // Most likely no system roots to be found.
                unreachable.with_hint("pass --ca-file FILE with the CA certificate to trust")
            } else {
                unreachable
            }
        })?;
    }
    let endpoint = match usage {
        Use::Unary => endpoint.timeout(timeout),
        Use::Stream => endpoint
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true),
    };
    // `connect_timeout` bounds the TCP connect only; the outer timeout also
    // covers the TLS and HTTP/2 handshakes with a peer that accepts but never
    // answers.
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => {
            let unreachable = Unreachable::new(target, addr, &e);
            Err(match tls.hint(&e) {
                Some(hint) => unreachable.with_hint(&hint),
                None => unreachable,
            })
        }
        Err(elapsed) => Err(Unreachable::new(target, addr, &elapsed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_header_carries_the_token_and_debug_hides_it() {
        let bearer = Bearer::new(" abc.def.ghi\n", "--token").expect("a token");
        let request = request((), Some(&bearer));
        let header = request
            .metadata()
            .get("authorization")
            .expect("authorization");
        assert_eq!(header.to_str().ok(), Some("Bearer abc.def.ghi"));
        assert!(header.is_sensitive());
        assert_eq!(format!("{bearer:?}"), "Bearer(<redacted>)");
        assert!(!format!("{request:?}").contains("abc.def.ghi"));
        assert!(super::request((), None).metadata().is_empty());
        assert_eq!(
            bearer.redact("bad token abc.def.ghi!"),
            "bad token <redacted>!"
        );
        assert_eq!(bearer.redact("nothing"), "nothing");
    }

    #[test]
    fn unusable_tokens_are_refused_without_quoting_them() {
        for token in [
            "",
            "  \n",
            "two words",
            "tab\there",
            "caf\u{e9}",
            "ctrl\u{7}",
        ] {
            let e = Bearer::new(token, "FASTCHAT_TOKEN").expect_err(token);
            assert_eq!(e.kind(), ErrorKind::Usage, "{token:?}");
            assert!(e.to_string().contains("FASTCHAT_TOKEN"), "{e}");
            if !token.trim().is_empty() {
                assert!(!e.to_string().contains(token.trim()), "{e}");
            }
        }
    }

    #[test]
    fn tls_files_must_be_readable_pem() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let e = Tls::load(Some(&missing), None, None).expect_err("missing");
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(e.to_string().starts_with("--ca-file: cannot read "), "{e}");

        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "not a certificate\n").expect("write");
        let e = Tls::load(Some(&junk), None, None).expect_err("junk");
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");

        let e = Tls::load(None, Some(&junk), None).expect_err("cert alone");
        assert!(e.to_string().contains("go together"), "{e}");

        let broken = dir.path().join("broken.pem");
        fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = Tls::load(Some(&broken), None, None).expect_err("broken");
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(
            e.to_string()
                .starts_with("the TLS files cannot be used (--ca-file)"),
            "{e}"
        );

        assert!(Tls::load(None, None, None).is_ok());
    }
}
