//! Who is calling: each request's bearer token checked against the
//! configured keys (`auth.*`), the caller's identity for per-identity
//! limits, and when a long stream must end because its token does.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use fastchat_auth::{AuthConfig, AuthError, Authenticator, Caller, InvalidToken, Mode};
use tonic::{Request, Status};

use crate::status;

/// The metadata key of the token.
const AUTHORIZATION: &str = "authorization";

/// Checks callers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    authenticator: Authenticator,
    leeway: Duration,
}

impl Gate {
    /// The gate `config` describes (key files are read now).
    ///
    /// # Errors
    /// A key file that cannot be read or used, naming the key and path.
    pub fn new(config: &AuthConfig) -> Result<Self, fastchat_auth::ConfigError> {
        Ok(Self {
            authenticator: Authenticator::new(config)?,
            leeway: config.jwt.leeway,
        })
    }

    /// Whether tokens are checked at all (`auth.mode`).
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.authenticator.mode()
    }

    /// The caller of `request`: verified from its `authorization` metadata,
    /// anonymous without it.
    ///
    /// # Errors
    /// UNAUTHENTICATED with the reason (TOKEN_INVALID, TOKEN_EXPIRED) and a
    /// message saying what to do; the token is never echoed.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let header = match request.metadata().get(AUTHORIZATION) {
            None => None,
            Some(value) => match value.to_str() {
                Ok(text) => Some(text),
                // Not visible ASCII: not a bearer token whatever it is.
                Err(_) => {
                    return Err(denied(&AuthError::TokenInvalid(InvalidToken::NotBearer {
                        scheme: None,
                    })));
                }
            },
        };
        self.authenticator
            .authenticate(header)
            .map_err(|e| denied(&e))
    }

    /// When a stream opened by `caller` must end: its token's expiry plus
    /// the leeway a token is accepted with (`None`: never).
    #[must_use]
    pub fn stream_deadline(&self, caller: &Caller) -> Option<SystemTime> {
        caller.expires_at().map(|at| at + self.leeway)
    }
}

/// An authorization failure as a status (for handlers).
#[must_use]
pub fn denied(error: &AuthError) -> Status {
    status::auth(error).status()
}

/// Whom per-identity limits count: a token's identity, else (anonymous or
/// unchecked callers) the client's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityKey {
    /// A verified identity.
    User(String),
    /// A caller without a verified identity, by address.
    Address(IpAddr),
    /// Neither is known (a transport without addresses).
    Unknown,
}

impl IdentityKey {
    /// `caller`'s key, coming from `peer`.
    #[must_use]
    pub fn of(caller: &Caller, peer: Option<SocketAddr>) -> Self {
        match (caller.identity(), peer) {
            (Some(user), _) => Self::User(user.to_owned()),
            (None, Some(peer)) => Self::Address(peer.ip()),
            (None, None) => Self::Unknown,
        }
    }
}
