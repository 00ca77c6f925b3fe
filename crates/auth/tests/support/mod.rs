//! What the integration tests share: keys made at test time (Ed25519,
//! P-256, HMAC) or read from the TEST-ONLY RSA fixture, tokens signed with
//! them, and an `auth` configuration whose key files live in a temporary
//! directory.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use fastchat_auth::{AuthConfig, AuthError, Authenticator, Caller, JwtConfig};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// TEST-ONLY: a 2048-bit RSA key committed so that debug builds need not
/// generate one (see tests/keys/README.md).
pub const RSA_PRIVATE_PEM: &[u8] = include_bytes!("../keys/TEST-ONLY-rsa-2048-private.pem");
/// The public half of [`RSA_PRIVATE_PEM`], as a PEM file (SPKI).
pub const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../keys/TEST-ONLY-rsa-2048-public.pem");

/// A signing key and the public JWK a service would verify it with.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

impl TestKey {
    /// The RSA fixture, for RS256.
    pub fn rsa(kid: &str) -> Self {
        let encoding = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM).expect("the RSA fixture");
        Self::new(Algorithm::RS256, kid, encoding)
    }

    /// A fresh Ed25519 key, for EdDSA.
    pub fn ed25519(kid: &str) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
        let pem = key
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .expect("PKCS#8 PEM");
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes()).expect("an Ed25519 key");
        // jsonwebtoken's `Jwk::from_encoding_key` takes only PKCS#8 v1 Ed25519
        // keys; ed25519-dalek writes v2 (with the public key), so the JWK
        // is built from the public key here.
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
        Self {
            alg: Algorithm::EdDSA,
            kid: kid.to_owned(),
            encoding,
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "kid": kid}),
        }
    }

    /// A fresh P-256 key, for ES256.
    pub fn p256(kid: &str) -> Self {
        use p256::pkcs8::EncodePrivateKey as _;
        let key = loop {
            // Nearly every 32 random bytes are a valid scalar.
            if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let pem = key
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .expect("PKCS#8 PEM");
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).expect("a P-256 key");
        Self::new(Algorithm::ES256, kid, encoding)
    }

    fn new(alg: Algorithm, kid: &str, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("a public JWK");
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            alg,
            kid: kid.to_owned(),
            encoding,
            jwk: serde_json::to_value(jwk).expect("a JWK serializes"),
        }
    }

    /// A token with these claims, signed with this key, naming its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signs")
    }
}

/// A JWK set of these keys' public halves.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A fresh HMAC secret (48 bytes).
pub fn hmac_secret() -> Vec<u8> {
    let mut secret = rand::random::<[u8; 48]>().to_vec();
    // A key file's one trailing newline is not part of the key: a random
    // key ending in `\n` (1 in 256) would not survive being written as
    // the file's whole content.
    if let Some(last) = secret.last_mut()
        && matches!(*last, b'\n' | b'\r')
    {
        *last = b'k';
    }
    secret
}

/// A token signed with an HMAC secret.
pub fn sign_hmac(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret).expect("a secret"),
    )
    .expect("signs")
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims for `sub`, expiring in five minutes.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 300})
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The reason of an error, or `OK`.
pub fn reason<T>(result: &Result<T, AuthError>) -> &'static str {
    result.as_ref().map_or_else(AuthError::reason, |_| "OK")
}

/// An `auth` configuration with key files in a temporary directory.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: AuthConfig,
}

impl Setup {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            config: AuthConfig {
                jwt: JwtConfig::default(),
                ..AuthConfig::default()
            },
        }
    }

    /// Writes `contents` as the HMAC secret file.
    pub fn hmac_file(mut self, contents: &[u8]) -> Self {
        let path = self.dir.path().join("hmac-secret");
        fs::write(&path, contents).expect("writes the secret");
        self.config.jwt.hmac_secret_file = Some(path);
        self
    }

    /// The HMAC secret file holding `secret` and a newline, as `echo` or an
    /// editor would leave it.
    pub fn hmac(self, secret: &[u8]) -> Self {
        let mut contents = secret.to_vec();
        contents.push(b'\n');
        self.hmac_file(&contents)
    }

    /// Writes `contents` as the JWK set file.
    pub fn jwks(mut self, contents: &str) -> Self {
        let path = self.jwks_path();
        fs::write(&path, contents).expect("writes the JWK set");
        self.config.jwt.jwks_file = Some(path);
        self
    }

    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.config.jwt.leeway = leeway;
        self
    }

    pub fn authenticator(&self) -> Authenticator {
        Authenticator::new(&self.config).expect("a valid configuration")
    }
}

/// Authenticates `token` as a bearer token.
pub fn authenticate(auth: &Authenticator, token: &str) -> Result<Caller, AuthError> {
    auth.authenticate(Some(&bearer(token)))
}
