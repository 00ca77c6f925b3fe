//! FastChat's authentication and per-room authorization, independent of
//! gRPC: the services turn its errors into statuses at their edge.
//!
//! A request's `authorization: Bearer <token>` header holds a JWT. The
//! [`Authenticator`] (built once from the `auth` section, [`AuthConfig`])
//! verifies it against an HMAC secret and/or a JWK set file of public keys
//! (re-read when it changes) and returns a [`Caller`]: verified (with an
//! identity and the token's room grants), anonymous (no token:
//! `auth.anonymous` grants only) or unchecked (`auth.mode = "none"`,
//! development only). The caller then [`authorizes`](Caller::authorize)
//! each room and operation and gives the [`author`](Caller::author) a
//! message is stored with. Every refusal is an [`AuthError`] with a stable
//! [`reason`](AuthError::reason) (`TOKEN_MISSING`, `TOKEN_INVALID`,
//! `TOKEN_EXPIRED`, `ROOM_FORBIDDEN`, `AUTHOR_MISMATCH`), a [`Code`] and a
//! message that says what to do.
//!
//! Layers, bottom up: [`grant`] (room patterns, grants, first-match
//! decisions, the CLI's grant syntax) and [`error`]; `token` (the bearer
//! header, the token's header, claim rules) and `keys` (HMAC secret, JWK
//! set and its reload) on jsonwebtoken; [`Authenticator`] on those;
//! [`Caller`] on [`grant`]. [`mint_hs256`] makes development tokens for the
//! CLI.

#![forbid(unsafe_code)]

mod authenticator;
mod caller;
mod config;
pub mod error;
pub mod grant;
mod keys;
mod mint;
mod token;

pub use authenticator::Authenticator;
pub use caller::{AnonymousCaller, Author, Caller, VerifiedCaller};
pub use config::{AuthConfig, JwtConfig, MAX_LEEWAY, Mode};
pub use error::{Access, AuthError, Code, ConfigError, DOMAIN, InvalidToken, reason};
pub use grant::{
    Grant, GrantSyntaxError, Operation, PatternError, RoomPattern, format_grants, parse_grants,
};
pub use keys::{MIN_HMAC_SECRET_LEN, read_hmac_secret};
pub use mint::{MintClaims, MintError, mint_hs256, mint_hs256_at};
pub use token::{MAX_TOKEN_LEN, bearer};
