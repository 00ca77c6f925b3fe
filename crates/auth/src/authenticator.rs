//! [`Authenticator`]: from an `authorization` header to a [`Caller`].
//!
//! The order of checks is what keeps algorithm confusion out: the token's
//! `alg` chooses the kind of key (HS* the HMAC secret, RS256/ES256/EdDSA a
//! JWK set key by `kid`), the chosen key must be for exactly that
//! algorithm, and only then does jsonwebtoken verify the signature, told to
//! accept that one algorithm. A public key is never used as an HMAC secret,
//! and `none` is no algorithm at all here.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::caller::{AnonymousCaller, Caller, VerifiedCaller};
use crate::config::{AuthConfig, Mode};
use crate::error::{AuthError, ConfigError, InvalidToken};
use crate::grant::Grant;
use crate::keys::{JwksFile, PublicAlg, read_hmac_secret};
use crate::token::{self, ClaimRules};

/// Checks tokens and says who is calling. Cheap to clone (one `Arc`);
/// `Send + Sync`, so one instance serves every request.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mode,
    hmac: Option<DecodingKey>,
    jwks: Option<JwksFile>,
    rules: ClaimRules,
    /// What the configured keys accept, for messages.
    accepted: String,
    authenticated: Arc<[Grant]>,
    anonymous: Arc<[Grant]>,
}

impl fmt::Debug for Authenticator {
    // Hand-written so that key material never reaches logs: only which
    // kinds of key there are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Authenticator")
            .field("mode", &inner.mode)
            .field("hmac_secret", &inner.hmac.as_ref().map(|_| "<redacted>"))
            .field("jwks_keys", &inner.jwks.as_ref().map(JwksFile::len))
            .field("rules", &inner.rules)
            .field("authenticated", &inner.authenticated)
            .field("anonymous", &inner.anonymous)
            .finish()
    }
}

const HMAC_ALGS: [(&str, Algorithm); 3] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
];

impl Authenticator {
    /// Validates `config` and reads its key files. In mode `none` no file
    /// is read.
    ///
    /// # Errors
    /// [`ConfigError`]: the settings are invalid, or a key file is missing,
    /// unreadable or holds no usable key (the message names the setting and
    /// the path).
    pub fn new(config: &AuthConfig) -> Result<Self, ConfigError> {
        config.validate().map_err(ConfigError::Invalid)?;
        let jwt = &config.jwt;
        let (hmac, jwks) = match config.mode {
            Mode::None => (None, None),
            Mode::Jwt => {
                let hmac = match &jwt.hmac_secret_file {
                    Some(path) => {
                        let secret = read_hmac_secret(path)?;
                        // Not empty: read_hmac_secret checked its length.
                        DecodingKey::from_secret(&secret).ok()
                    }
                    None => None,
                };
                let jwks = jwt.jwks_file.as_deref().map(JwksFile::open).transpose()?;
                (hmac, jwks)
            }
        };
        let mut accepted = Vec::new();
        if hmac.is_some() {
            accepted.push("HS256, HS384, HS512 (auth.jwt.hmac_secret_file)".to_owned());
        }
        if jwks.is_some() {
            accepted.push("RS256, ES256, EdDSA (auth.jwt.jwks_file)".to_owned());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                mode: config.mode,
                hmac,
                jwks,
                rules: ClaimRules {
                    issuer: jwt.issuer.clone(),
                    audience: jwt.audience.clone(),
                    leeway: jwt.leeway,
                    user_claim: jwt.user_claim.clone(),
                },
                accepted: accepted.join(" and "),
                authenticated: config.authenticated.clone().into(),
                anonymous: config.anonymous.clone().into(),
            }),
        })
    }

    /// The mode this authenticator runs in.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Who is calling, from the raw `authorization` header value (`None`
    /// when the request has none). In mode `jwt`, no header is
    /// [`Caller::Anonymous`] and a header must hold a valid bearer token;
    /// in mode `none` every caller is [`Caller::Unchecked`], header or not.
    ///
    /// # Errors
    /// [`AuthError`] with reason `TOKEN_INVALID` or `TOKEN_EXPIRED`.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        self.authenticate_at(authorization, SystemTime::now())
    }

    /// [`Authenticator::authenticate`] as if the time were `now`.
    ///
    /// # Errors
    /// As [`Authenticator::authenticate`].
    pub fn authenticate_at(
        &self,
        authorization: Option<&str>,
        now: SystemTime,
    ) -> Result<Caller, AuthError> {
        let inner = &self.inner;
        match (inner.mode, authorization) {
            (Mode::None, _) => Ok(Caller::Unchecked),
            (Mode::Jwt, None) => Ok(Caller::Anonymous(AnonymousCaller {
                grants: Arc::clone(&inner.anonymous),
            })),
            (Mode::Jwt, Some(value)) => {
                let token = token::bearer(value)?;
                self.verify_at(token, now).map(Caller::Verified)
            }
        }
    }

    /// Verifies a bare token (without the `Bearer` scheme) at `now`.
    ///
    /// # Errors
    /// [`AuthError`] with reason `TOKEN_INVALID` or `TOKEN_EXPIRED`.
    pub fn verify_at(&self, token: &str, now: SystemTime) -> Result<VerifiedCaller, AuthError> {
        let inner = &self.inner;
        let header = token::header(token)?;
        let claims = match HMAC_ALGS.iter().find(|(name, _)| *name == header.alg) {
            Some((_, alg)) => {
                let key = inner
                    .hmac
                    .as_ref()
                    .ok_or_else(|| self.refuse_algorithm(&header.alg))?;
                decode(token, key, *alg)?
            }
            None => {
                let (Some(alg), Some(jwks)) =
                    (PublicAlg::from_name(&header.alg), inner.jwks.as_ref())
                else {
                    return Err(self.refuse_algorithm(&header.alg).into());
                };
                let kid = header.kid.ok_or(InvalidToken::NoKeyId)?;
                let key = jwks
                    .get(&kid)
                    .ok_or_else(|| InvalidToken::UnknownKey(kid.clone()))?;
                if key.alg != alg {
                    return Err(InvalidToken::KeyMismatch {
                        kid,
                        alg: header.alg,
                        key_alg: key.alg.name(),
                    }
                    .into());
                }
                decode(token, &key.key, alg.algorithm())?
            }
        };
        let checked = inner.rules.check(&claims, now)?;
        Ok(VerifiedCaller {
            identity: checked.identity,
            expires_at: checked.expires_at,
            grants: checked.grants,
            authenticated: Arc::clone(&inner.authenticated),
        })
    }

    /// Why `auth.jwt.jwks_file` as it is now is not in use (it is broken,
    /// being written, gone), if it is not; `None` when its keys are the
    /// ones in use, or there is no such file. Each problem is also logged
    /// once, as a warning.
    #[must_use]
    pub fn jwks_problem(&self) -> Option<String> {
        self.inner.jwks.as_ref().and_then(JwksFile::problem)
    }

    fn refuse_algorithm(&self, alg: &str) -> InvalidToken {
        InvalidToken::Algorithm {
            alg: alg.to_owned(),
            accepted: self.inner.accepted.clone(),
        }
    }
}

/// Verifies the signature with `key` for `alg` alone and returns the claims.
/// jsonwebtoken's own claim checks are off: [`ClaimRules`] does them.
fn decode(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Map<String, Value>, AuthError> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| {
            AuthError::TokenInvalid(match e.kind() {
                ErrorKind::InvalidSignature => InvalidToken::Signature,
                ErrorKind::Base64(_) => InvalidToken::Malformed("a part is not base64url".into()),
                ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    InvalidToken::Malformed("its header or claims are not a JSON object".into())
                }
                ErrorKind::InvalidToken => InvalidToken::Malformed(
                    "its header asks for what this service does not support (`crit`, `b64`)".into(),
                ),
                // The key was checked against the algorithm before; a key
                // the crypto provider still refuses verifies nothing.
                _ => InvalidToken::Signature,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn the_authenticator_is_shareable() {
        assert_send_sync_clone::<Authenticator>();
        assert_send_sync_clone::<Caller>();
    }

    #[test]
    fn mode_none_makes_every_caller_unchecked() {
        let auth = Authenticator::new(&AuthConfig {
            mode: Mode::None,
            ..AuthConfig::default()
        })
        .expect("mode none needs nothing");
        assert!(matches!(auth.authenticate(None), Ok(Caller::Unchecked)));
        assert!(matches!(
            auth.authenticate(Some("Basic garbage")),
            Ok(Caller::Unchecked)
        ));
    }

    #[test]
    fn an_invalid_config_is_refused_with_its_reason() {
        let err = Authenticator::new(&AuthConfig::default()).expect_err("no key");
        assert!(matches!(err, ConfigError::Invalid(_)));
        assert!(err.to_string().contains("auth.jwt.jwks_file"));
    }
}
