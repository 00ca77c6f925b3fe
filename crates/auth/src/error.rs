//! The errors a client can act on ([`AuthError`], with its stable
//! [`reason`](AuthError::reason) and [`Code`]) and the errors an operator
//! can act on ([`ConfigError`]).
//!
//! Messages never contain the token. Strings that come from a request (a
//! room, a `kid`, an issuer, an author) are shown escaped and shortened, so
//! a message cannot carry control characters or grow without bound.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::grant::{DecidingGrant, Operation};
use crate::token::MAX_TOKEN_LEN;

/// The `google.rpc.ErrorInfo` domain of every [`AuthError::reason`].
pub const DOMAIN: &str = "fastchat";

/// The stable reasons, as [`AuthError::reason`] returns them.
pub mod reason {
    /// No token, and what was asked needs one.
    pub const TOKEN_MISSING: &str = "TOKEN_MISSING";
    /// The token is not one this service accepts.
    pub const TOKEN_INVALID: &str = "TOKEN_INVALID";
    /// The token has expired, or is not valid yet.
    pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
    /// The caller may not do this on this room.
    pub const ROOM_FORBIDDEN: &str = "ROOM_FORBIDDEN";
    /// The message's author is not the token's identity.
    pub const AUTHOR_MISMATCH: &str = "AUTHOR_MISMATCH";
}

/// The gRPC code an [`AuthError`] stands for (this crate does not depend on
/// tonic; the service maps these one to one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// `UNAUTHENTICATED` (16): get a (new) token.
    Unauthenticated,
    /// `PERMISSION_DENIED` (7): this token does not allow it.
    PermissionDenied,
}

/// What was asked: an operation on one room, or reading every room at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The operation.
    pub op: Operation,
    /// The room; `None` for every room (a subscription without a filter).
    pub room: Option<String>,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.room {
            Some(room) => write!(f, "{} on room `{}`", self.op, Shown(room)),
            None => write!(f, "{} on every room", self.op),
        }
    }
}

/// Why a call is refused: something the client can act on. Each variant has
/// one [`reason`](Self::reason) and one [`code`](Self::code); its `Display`
/// says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A caller without a token asked for something no `auth.anonymous`
    /// grant allows.
    #[error(
        "{access} needs a token: no grant allows it to callers without one; \
         send `authorization: Bearer <token>`"
    )]
    TokenMissing {
        /// What was asked.
        access: Access,
    },
    /// The token is not one this service accepts.
    #[error(transparent)]
    TokenInvalid(#[from] InvalidToken),
    /// The token's `exp` (plus the leeway) has passed.
    #[error("the token expired at {}; get a new one", Rfc3339(*.expired_at))]
    TokenExpired {
        /// The token's `exp`.
        expired_at: SystemTime,
    },
    /// The token's `nbf` (less the leeway) has not come yet.
    #[error(
        "the token is not valid before {} (its `nbf`); check the clocks of \
         this service and of the token's issuer, or wait",
        Rfc3339(*.not_before)
    )]
    TokenNotYetValid {
        /// The token's `nbf`.
        not_before: SystemTime,
    },
    /// No grant allows what was asked, or the first matching one refuses it.
    #[error("{}", Forbidden(.access, .decided_by.as_ref()))]
    RoomForbidden {
        /// What was asked.
        access: Access,
        /// The grant that refused; `None` when no grant matched.
        decided_by: Option<DecidingGrant>,
    },
    /// A message's author differs from the token's identity.
    #[error(
        "the author `{}` is not this token's identity `{}`: send `{}` or leave \
         the author empty",
        Shown(.requested),
        Shown(.identity),
        Shown(.identity)
    )]
    AuthorMismatch {
        /// The author in the request.
        requested: String,
        /// The token's identity.
        identity: String,
    },
}

impl AuthError {
    /// The stable machine-readable reason (a `google.rpc.ErrorInfo` reason in
    /// [`DOMAIN`]): one of the constants in [`reason`].
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TokenMissing { .. } => reason::TOKEN_MISSING,
            Self::TokenInvalid(_) => reason::TOKEN_INVALID,
            Self::TokenExpired { .. } | Self::TokenNotYetValid { .. } => reason::TOKEN_EXPIRED,
            Self::RoomForbidden { .. } => reason::ROOM_FORBIDDEN,
            Self::AuthorMismatch { .. } => reason::AUTHOR_MISMATCH,
        }
    }

    /// The gRPC code: UNAUTHENTICATED for token problems, PERMISSION_DENIED
    /// for a valid caller asking for more than it may.
    #[must_use]
    pub fn code(&self) -> Code {
        match self {
            Self::TokenMissing { .. }
            | Self::TokenInvalid(_)
            | Self::TokenExpired { .. }
            | Self::TokenNotYetValid { .. } => Code::Unauthenticated,
            Self::RoomForbidden { .. } | Self::AuthorMismatch { .. } => Code::PermissionDenied,
        }
    }

    /// Details for `google.rpc.ErrorInfo.metadata`: the room and operation
    /// of a refusal, the time of an expiry.
    #[must_use]
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        let of_access = |access: &Access| {
            let mut out = vec![("operation", access.op.to_string())];
            match &access.room {
                Some(room) => out.push(("room", room.clone())),
                None => out.push(("room", "*".to_owned())),
            }
            out
        };
        match self {
            Self::TokenMissing { access } | Self::RoomForbidden { access, .. } => of_access(access),
            Self::TokenExpired { expired_at } => {
                vec![("expired_at", Rfc3339(*expired_at).to_string())]
            }
            Self::TokenNotYetValid { not_before } => {
                vec![("not_before", Rfc3339(*not_before).to_string())]
            }
            Self::TokenInvalid(_) | Self::AuthorMismatch { .. } => Vec::new(),
        }
    }
}

/// Why a token is invalid (reason `TOKEN_INVALID`), in detail. Tests and
/// logs can tell the cases apart; clients see the one reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidToken {
    /// The `authorization` header is not `Bearer <token>`.
    #[error(
        "the authorization header is not `Bearer <token>`{}",
        SchemeHint(.scheme.as_deref())
    )]
    NotBearer {
        /// The scheme that was sent, when it looks like one (`Basic`, …).
        scheme: Option<String>,
    },
    /// `Bearer` with nothing after it.
    #[error("the bearer token is empty: send `authorization: Bearer <token>`")]
    Empty,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is {0} bytes long; at most {MAX_TOKEN_LEN} are accepted")]
    TooLong(usize),
    /// Not a JWT: three base64url parts (header, claims, signature) with a
    /// JSON object in each of the first two.
    #[error("the token is not a JWT (header.claims.signature, base64url): {0}")]
    Malformed(String),
    /// An algorithm this service does not accept (`none`, one without a
    /// configured key, one that is not supported).
    #[error(
        "the token's algorithm `{}` is not accepted: this service accepts {accepted}",
        Shown(.alg)
    )]
    Algorithm {
        /// The token's `alg`.
        alg: String,
        /// What the configured keys accept, with the key that enables them.
        accepted: String,
    },
    /// A token for a key of `auth.jwt.jwks_file` without a `kid`.
    #[error(
        "the token names no key (`kid` in its header); one is needed to choose \
         among the keys of auth.jwt.jwks_file"
    )]
    NoKeyId,
    /// A `kid` that `auth.jwt.jwks_file` does not have.
    #[error(
        "the token's key `{}` is not in auth.jwt.jwks_file: get a token signed \
         with a current key, or add the key to the file",
        Shown(.0)
    )]
    UnknownKey(String),
    /// The token's `alg` is not its key's.
    #[error(
        "the token's algorithm is {alg} but its key `{}` is for {key_alg}",
        Shown(.kid)
    )]
    KeyMismatch {
        /// The token's `kid`.
        kid: String,
        /// The token's `alg`.
        alg: String,
        /// The key's algorithm.
        key_alg: &'static str,
    },
    /// The signature does not verify with the chosen key.
    #[error(
        "the token's signature does not verify: it was not signed by a key this \
         service trusts, or it was altered"
    )]
    Signature,
    /// `auth.jwt.issuer` is set and the token's `iss` differs or is missing.
    #[error("{}", IssuerMessage(.found.as_deref(), .expected))]
    Issuer {
        /// The token's `iss`, if it has one (a non-string shows as JSON).
        found: Option<String>,
        /// `auth.jwt.issuer`.
        expected: String,
    },
    /// `auth.jwt.audience` is set and not among the token's `aud`.
    #[error("{}", AudienceMessage(.found, .expected))]
    Audience {
        /// The token's audiences (empty if it has none).
        found: Vec<String>,
        /// `auth.jwt.audience`.
        expected: String,
    },
    /// A claim this service needs is missing or of the wrong kind: `exp`,
    /// `nbf`, or the identity (`auth.jwt.user_claim`).
    #[error("the token's `{}` claim {problem}", Shown(.claim))]
    Claim {
        /// The claim's name.
        claim: String,
        /// What is wrong with it, as the end of a sentence.
        problem: String,
    },
    /// The `rooms` claim is not a list of grants.
    #[error(
        "the token's `rooms` claim is not a list of grants like \
         {{\"rooms\": [\"general\", \"team-*\"], \"allow\": [\"read\", \"write\"]}}: {0}"
    )]
    Rooms(String),
}

/// Why the authentication settings cannot be used: one line naming the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// [`AuthConfig::validate`](crate::AuthConfig::validate) refused the
    /// settings.
    #[error("{0}")]
    Invalid(String),
    /// A key file could not be read.
    #[error("{key}: cannot read `{}`: {source}", .path.display())]
    Read {
        /// The setting that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A key file was read but holds no usable key.
    #[error("{key}: `{}` {problem}", .path.display())]
    Unusable {
        /// The setting that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, as the end of a sentence.
        problem: String,
    },
}

/// A string from a request, escaped and cut to 64 characters for messages.
pub(crate) struct Shown<'a>(pub(crate) &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX {
                return f.write_str("…");
            }
            if c == '`' {
                f.write_str("\\`")?;
            } else {
                write!(f, "{}", c.escape_debug())?;
            }
        }
        Ok(())
    }
}

/// A time as RFC 3339 in UTC, to the second: `2026-12-01T10:00:00Z`.
pub(crate) struct Rfc3339(pub(crate) SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // humantime formats years up to 9999; later times (an `exp` far in
        // the future) are shown as seconds since the epoch.
        match self.0.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(since) if since.as_secs() < 253_402_300_800 => write!(
                f,
                "{}",
                humantime_serde::re::humantime::format_rfc3339_seconds(self.0)
            ),
            Ok(since) => write!(f, "{} s after 1970-01-01T00:00:00Z", since.as_secs()),
            Err(_) => f.write_str("1970-01-01T00:00:00Z"),
        }
    }
}

struct SchemeHint<'a>(Option<&'a str>);

impl fmt::Display for SchemeHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(scheme) => write!(f, " (its scheme is `{}`)", Shown(scheme)),
            None => Ok(()),
        }
    }
}

struct IssuerMessage<'a>(Option<&'a str>, &'a str);

impl fmt::Display for IssuerMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(found) => write!(f, "the token's issuer is `{}`", Shown(found))?,
            None => f.write_str("the token has no issuer (`iss`)")?,
        }
        write!(
            f,
            ", this service accepts `{}` (auth.jwt.issuer)",
            Shown(self.1)
        )
    }
}

struct AudienceMessage<'a>(&'a [String], &'a str);

impl fmt::Display for AudienceMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX_SHOWN: usize = 4;
        if self.0.is_empty() {
            f.write_str("the token has no audience (`aud`)")?;
        } else {
            f.write_str("the token's audience is ")?;
            for (i, aud) in self.0.iter().take(MAX_SHOWN).enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "`{}`", Shown(aud))?;
            }
            if self.0.len() > MAX_SHOWN {
                write!(f, " and {} more", self.0.len() - MAX_SHOWN)?;
            }
        }
        write!(
            f,
            ", this service is `{}` (auth.jwt.audience)",
            Shown(self.1)
        )
    }
}

struct Forbidden<'a>(&'a Access, Option<&'a DecidingGrant>);

impl fmt::Display for Forbidden<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(access, decided_by) = *self;
        let every_room = access.room.is_none();
        match decided_by {
            None => write!(f, "no grant allows {access}")?,
            Some(grant) => {
                write!(f, "{access} is not allowed: {grant}")?;
                let is_star = grant.pattern.bytes().all(|b| b == b'*');
                if every_room && !is_star {
                    f.write_str(" and comes before any grant for `*`")?;
                }
            }
        }
        if every_room {
            f.write_str(
                "; subscribing without a room filter needs a grant for `*` that allows \
                 read, with no grant before it refusing read; subscribe to rooms by name instead",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::GrantSource;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn times_are_shown_in_rfc3339_utc() {
        let err = AuthError::TokenExpired {
            expired_at: at(1_796_119_200),
        };
        assert_eq!(
            err.to_string(),
            "the token expired at 2026-12-01T10:00:00Z; get a new one"
        );
        assert_eq!(
            Rfc3339(at(400_000_000_000)).to_string(),
            "400000000000 s after 1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn each_error_has_its_reason_and_code() {
        let access = Access {
            op: Operation::Write,
            room: Some("team-b".into()),
        };
        let cases = [
            (
                AuthError::TokenMissing {
                    access: access.clone(),
                },
                "TOKEN_MISSING",
                Code::Unauthenticated,
            ),
            (
                AuthError::TokenInvalid(InvalidToken::Signature),
                "TOKEN_INVALID",
                Code::Unauthenticated,
            ),
            (
                AuthError::TokenExpired { expired_at: at(0) },
                "TOKEN_EXPIRED",
                Code::Unauthenticated,
            ),
            (
                AuthError::TokenNotYetValid { not_before: at(0) },
                "TOKEN_EXPIRED",
                Code::Unauthenticated,
            ),
            (
                AuthError::RoomForbidden {
                    access,
                    decided_by: None,
                },
                "ROOM_FORBIDDEN",
                Code::PermissionDenied,
            ),
            (
                AuthError::AuthorMismatch {
                    requested: "bob".into(),
                    identity: "ann".into(),
                },
                "AUTHOR_MISMATCH",
                Code::PermissionDenied,
            ),
        ];
        for (err, reason, code) in cases {
            assert_eq!(err.reason(), reason, "{err}");
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn refusals_name_the_room_the_operation_and_the_deciding_grant() {
        let forbidden = |room: Option<&str>, decided_by| AuthError::RoomForbidden {
            access: Access {
                op: Operation::Write,
                room: room.map(str::to_owned),
            },
            decided_by,
        };
        assert_eq!(
            forbidden(Some("team-b"), None).to_string(),
            "no grant allows write on room `team-b`"
        );
        let grant = DecidingGrant {
            pattern: "team-*".into(),
            source: GrantSource::Authenticated,
            allow: vec![Operation::Read],
        };
        assert_eq!(
            forbidden(Some("team-b"), Some(grant)).to_string(),
            "write on room `team-b` is not allowed: the grant for `team-*` in \
             auth.authenticated allows only read"
        );
        let every = AuthError::RoomForbidden {
            access: Access {
                op: Operation::Read,
                room: None,
            },
            decided_by: Some(DecidingGrant {
                pattern: "secret".into(),
                source: GrantSource::Token,
                allow: vec![],
            }),
        };
        assert!(
            every.to_string().starts_with(
                "read on every room is not allowed: the grant for `secret` in the token's \
                 `rooms` allows nothing and comes before any grant for `*`; "
            ),
            "{every}"
        );
        assert_eq!(
            every.metadata(),
            vec![("operation", "read".to_owned()), ("room", "*".to_owned())]
        );
    }

    #[test]
    fn strings_from_requests_are_escaped_and_shortened() {
        assert_eq!(Shown("a\nb`c").to_string(), "a\\nb\\`c");
        let long = "x".repeat(100);
        assert_eq!(Shown(&long).to_string(), format!("{}…", "x".repeat(64)));
        let err = InvalidToken::Issuer {
            found: Some("evil\u{1b}[31m".into()),
            expected: "https://id.example".into(),
        };
        assert_eq!(
            err.to_string(),
            "the token's issuer is `evil\\u{1b}[31m`, this service accepts \
             `https://id.example` (auth.jwt.issuer)"
        );
    }
}
