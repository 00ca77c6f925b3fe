//! The TLS side of the `healthcheck` subcommand: a probe of the service's
//! own port trusts exactly the certificate in `grpc.tls.cert_file` (the one
//! that port presents; no CA or server name needed), and under mutual TLS
//! presents that certificate and key as its own — so the server's
//! certificate must also be one its `client_ca_file` accepts, usable for
//! client authentication (no extended key usage, or both `serverAuth` and
//! `clientAuth`).

use std::sync::Arc;

use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _},
};

use crate::config::GrpcTlsConfig;

/// Accepts one certificate only (the service's own), and verifies the
/// handshake signatures with it as usual.
#[derive(Debug)]
struct Pinned {
    certificate: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the port presents another certificate than grpc.tls.cert_file".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The probe's TLS client for a port configured with `tls`.
///
/// # Errors
/// A file that cannot be read or used, naming the key.
pub fn client_config(tls: &GrpcTlsConfig) -> Result<Arc<ClientConfig>, String> {
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        return Err("grpc.tls.cert_file and grpc.tls.key_file are not both set".into());
    };
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("{key} ({}): {e}", path.display()))
    };
    let chain = CertificateDer::pem_slice_iter(&read("grpc.tls.cert_file", cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("grpc.tls.cert_file: {e}"))?;
    let certificate = chain
        .first()
        .cloned()
        .ok_or("grpc.tls.cert_file holds no certificate")?;
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            certificate,
            provider,
        }));
    let mut config = if tls.client_ca_file.is_some() {
        let key = PrivateKeyDer::from_pem_slice(&read("grpc.tls.key_file", key_file)?)
            .map_err(|e| format!("grpc.tls.key_file: {e}"))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("grpc.tls.key_file: {e}"))?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
