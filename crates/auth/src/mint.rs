//! Development tokens: HS256 JWTs signed with the service's HMAC secret,
//! for the CLI's `fastchat token`. Production tokens come from an identity
//! provider; this is for running FastChat locally and in tests.

use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::grant::Grant;
use crate::keys::MIN_HMAC_SECRET_LEN;

/// What a development token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintClaims {
    /// The caller's identity.
    pub identity: String,
    /// The claim it goes in: the service's `auth.jwt.user_claim`.
    pub user_claim: String,
    /// The token's `rooms` grants (none: the claim is left out).
    pub rooms: Vec<Grant>,
    /// How long the token is valid from now (`exp` = now + ttl, rounded up
    /// to the second).
    pub ttl: Duration,
    /// `iss`, for a service with `auth.jwt.issuer`.
    pub issuer: Option<String>,
    /// `aud`, for a service with `auth.jwt.audience`.
    pub audience: Option<String>,
}

impl MintClaims {
    /// A token for `identity` in `sub`, valid for `ttl`, with no grants.
    #[must_use]
    pub fn new(identity: impl Into<String>, ttl: Duration) -> Self {
        Self {
            identity: identity.into(),
            user_claim: "sub".to_owned(),
            rooms: Vec::new(),
            ttl,
            issuer: None,
            audience: None,
        }
    }
}

/// Why a development token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The identity or the claim to put it in is empty.
    #[error("a token needs an identity and a claim to put it in (`sub` by default)")]
    NoIdentity,
    /// A zero lifetime.
    #[error("a token's lifetime must be above zero")]
    ZeroTtl,
    /// A secret the service would refuse.
    #[error(
        "the HMAC secret has {0} bytes; at least {MIN_HMAC_SECRET_LEN} are needed \
         (auth.jwt.hmac_secret_file)"
    )]
    ShortSecret(usize),
    /// jsonwebtoken could not sign.
    #[error("signing the token failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// An HS256 token for `claims`, signed with `secret` (as
/// [`read_hmac_secret`](crate::read_hmac_secret) reads it), with `iat` now
/// and `exp` now + ttl.
///
/// # Errors
/// [`MintError`] for an empty identity, a zero lifetime or a short secret.
pub fn mint_hs256(secret: &[u8], claims: &MintClaims) -> Result<String, MintError> {
    mint_hs256_at(secret, claims, SystemTime::now())
}

/// [`mint_hs256`] as if the time were `now`.
///
/// # Errors
/// As [`mint_hs256`].
pub fn mint_hs256_at(
    secret: &[u8],
    claims: &MintClaims,
    now: SystemTime,
) -> Result<String, MintError> {
    if claims.identity.is_empty() || claims.user_claim.is_empty() {
        return Err(MintError::NoIdentity);
    }
    if claims.ttl.is_zero() {
        return Err(MintError::ZeroTtl);
    }
    if secret.len() < MIN_HMAC_SECRET_LEN {
        return Err(MintError::ShortSecret(secret.len()));
    }
    let iat = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ttl = claims.ttl.as_secs() + u64::from(claims.ttl.subsec_nanos() > 0);
    let mut body = Map::new();
    body.insert(
        claims.user_claim.clone(),
        Value::from(claims.identity.clone()),
    );
    body.insert("iat".into(), Value::from(iat));
    body.insert("exp".into(), Value::from(iat.saturating_add(ttl)));
    if let Some(iss) = &claims.issuer {
        body.insert("iss".into(), Value::from(iss.clone()));
    }
    if let Some(aud) = &claims.audience {
        body.insert("aud".into(), Value::from(aud.clone()));
    }
    if !claims.rooms.is_empty() {
        body.insert(
            "rooms".into(),
            serde_json::to_value(&claims.rooms).map_err(jsonwebtoken::errors::Error::from)?,
        );
    }
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &body,
        &EncodingKey::from_secret(secret)?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minting_refuses_what_the_service_would_refuse() {
        let secret = [7u8; 32];
        let ttl = Duration::from_secs(60);
        assert!(matches!(
            mint_hs256(&secret, &MintClaims::new("", ttl)),
            Err(MintError::NoIdentity)
        ));
        assert!(matches!(
            mint_hs256(&secret, &MintClaims::new("ann", Duration::ZERO)),
            Err(MintError::ZeroTtl)
        ));
        assert!(matches!(
            mint_hs256(&secret[..31], &MintClaims::new("ann", ttl)),
            Err(MintError::ShortSecret(31))
        ));
        assert!(mint_hs256(&secret, &MintClaims::new("ann", ttl)).is_ok());
    }
}
