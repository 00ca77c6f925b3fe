//! Who is calling ([`Caller`]) and what that caller may do: per-room
//! authorization and the author a message is stored with.

use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Access, AuthError};
use crate::grant::{self, Grant, GrantSource, Operation};

/// The caller of one request, as [`Authenticator::authenticate`]
/// established it.
///
/// [`Authenticator::authenticate`]: crate::Authenticator::authenticate
#[derive(Debug, Clone)]
pub enum Caller {
    /// `auth.mode = "none"`: nothing was checked and everything is allowed.
    /// For development only; the service warns at start-up.
    Unchecked,
    /// No token was sent: `auth.anonymous` is all this caller may do.
    Anonymous(AnonymousCaller),
    /// A valid token: its `rooms` grants, then `auth.authenticated`.
    Verified(VerifiedCaller),
}

/// A caller without a token.
#[derive(Debug, Clone)]
pub struct AnonymousCaller {
    pub(crate) grants: Arc<[Grant]>,
}

/// A caller with a valid token.
#[derive(Debug, Clone)]
pub struct VerifiedCaller {
    pub(crate) identity: String,
    pub(crate) expires_at: SystemTime,
    pub(crate) grants: Vec<Grant>,
    pub(crate) authenticated: Arc<[Grant]>,
}

impl VerifiedCaller {
    /// The identity: the token's `auth.jwt.user_claim` (`sub` by default).
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The token's `exp`. It is accepted until `exp` + `auth.jwt.leeway`;
    /// a long-lived stream opened with it can be ended then.
    #[must_use]
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// The token's own grants (its `rooms` claim), consulted before
    /// `auth.authenticated`.
    #[must_use]
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }
}

/// The author a message is stored with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The name to store.
    pub name: String,
    /// Whether the name is a token's identity (not just what the client said).
    pub verified: bool,
}

impl Caller {
    /// The caller's identity, for a verified token.
    #[must_use]
    pub fn identity(&self) -> Option<&str> {
        match self {
            Self::Verified(caller) => Some(caller.identity()),
            Self::Unchecked | Self::Anonymous(_) => None,
        }
    }

    /// When the caller's token expires, for a verified token.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        match self {
            Self::Verified(caller) => Some(caller.expires_at()),
            Self::Unchecked | Self::Anonymous(_) => None,
        }
    }

    /// Whether the caller may do `op` on `room`: the first grant with a
    /// pattern matching `room` decides (the token's, then
    /// `auth.authenticated`; for callers without a token, `auth.anonymous`).
    /// Check the room name first: an invalid one matches no grant.
    ///
    /// # Errors
    /// [`AuthError::RoomForbidden`] for a caller with a token,
    /// [`AuthError::TokenMissing`] for one without (a token may allow it).
    pub fn authorize(&self, room: &str, op: Operation) -> Result<(), AuthError> {
        let access = || Access {
            op,
            room: Some(room.to_owned()),
        };
        match self {
            Self::Unchecked => Ok(()),
            Self::Anonymous(caller) => grant::decide(&caller.layers(), room, op)
                .map_err(|_| AuthError::TokenMissing { access: access() }),
            Self::Verified(caller) => {
                grant::decide(&caller.layers(), room, op).map_err(|decided_by| {
                    AuthError::RoomForbidden {
                        access: access(),
                        decided_by,
                    }
                })
            }
        }
    }

    /// Whether the caller may read every room at once (a subscription
    /// without a room filter): the first grant with the pattern `*` must
    /// allow read, and no grant before it may refuse read on a room.
    ///
    /// # Errors
    /// As [`Caller::authorize`].
    pub fn authorize_every_room_read(&self) -> Result<(), AuthError> {
        let access = || Access {
            op: Operation::Read,
            room: None,
        };
        match self {
            Self::Unchecked => Ok(()),
            Self::Anonymous(caller) => grant::decide_every_room_read(&caller.layers())
                .map_err(|_| AuthError::TokenMissing { access: access() }),
            Self::Verified(caller) => {
                grant::decide_every_room_read(&caller.layers()).map_err(|decided_by| {
                    AuthError::RoomForbidden {
                        access: access(),
                        decided_by,
                    }
                })
            }
        }
    }

    /// The author to store a message with. With a token the author is its
    /// identity: an empty `requested` author becomes the identity, the
    /// identity itself is fine, anything else is refused. Without a token
    /// (or unchecked) the requested author is kept as it is, unverified;
    /// the service still checks it like any client input.
    ///
    /// # Errors
    /// [`AuthError::AuthorMismatch`] when a token's caller names another
    /// author.
    pub fn author(&self, requested: &str) -> Result<Author, AuthError> {
        match self {
            Self::Verified(caller) => {
                if requested.is_empty() || requested == caller.identity {
                    Ok(Author {
                        name: caller.identity.clone(),
                        verified: true,
                    })
                } else {
                    Err(AuthError::AuthorMismatch {
                        requested: requested.to_owned(),
                        identity: caller.identity.clone(),
                    })
                }
            }
            Self::Unchecked | Self::Anonymous(_) => Ok(Author {
                name: requested.to_owned(),
                verified: false,
            }),
        }
    }
}

impl AnonymousCaller {
    fn layers(&self) -> [(GrantSource, &[Grant]); 1] {
        [(GrantSource::Anonymous, &self.grants)]
    }
}

impl VerifiedCaller {
    fn layers(&self) -> [(GrantSource, &[Grant]); 2] {
        [
            (GrantSource::Token, &self.grants),
            (GrantSource::Authenticated, &self.authenticated),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::parse_grants;

    fn verified(token: &str, authenticated: &str) -> Caller {
        Caller::Verified(VerifiedCaller {
            identity: "ann".into(),
            expires_at: SystemTime::UNIX_EPOCH,
            grants: parse_grants(token).expect("valid"),
            authenticated: parse_grants(authenticated).expect("valid").into(),
        })
    }

    fn anonymous(grants: &str) -> Caller {
        Caller::Anonymous(AnonymousCaller {
            grants: parse_grants(grants).expect("valid").into(),
        })
    }

    #[test]
    fn a_token_caller_is_refused_with_room_forbidden() {
        let caller = verified("general=read,write", "");
        assert_eq!(caller.authorize("general", Operation::Write), Ok(()));
        let err = caller
            .authorize("team-b", Operation::Write)
            .expect_err("no grant");
        assert_eq!(err.reason(), "ROOM_FORBIDDEN");
        assert_eq!(err.to_string(), "no grant allows write on room `team-b`");
    }

    #[test]
    fn authenticated_grants_apply_after_the_tokens_own() {
        let caller = verified("lobby=read", "lobby,general=read,write");
        assert!(caller.authorize("lobby", Operation::Write).is_err());
        assert_eq!(caller.authorize("general", Operation::Write), Ok(()));
        assert_eq!(
            verified("", "*=read").authorize("x", Operation::Read),
            Ok(())
        );
    }

    #[test]
    fn a_caller_without_a_token_gets_only_anonymous_grants_and_is_told_to_get_one() {
        let caller = anonymous("lobby=read");
        assert_eq!(caller.authorize("lobby", Operation::Read), Ok(()));
        let err = caller
            .authorize("lobby", Operation::Write)
            .expect_err("read only");
        assert_eq!(err.reason(), "TOKEN_MISSING");
        assert_eq!(
            err.to_string(),
            "write on room `lobby` needs a token: no grant allows it to callers without \
             one; send `authorization: Bearer <token>`"
        );
        assert_eq!(
            anonymous("")
                .authorize_every_room_read()
                .map_err(|e| e.reason()),
            Err("TOKEN_MISSING")
        );
        assert_eq!(anonymous("*=read").authorize_every_room_read(), Ok(()));
    }

    #[test]
    fn unchecked_callers_may_do_everything() {
        let caller = Caller::Unchecked;
        assert_eq!(caller.authorize("any", Operation::Write), Ok(()));
        assert_eq!(caller.authorize_every_room_read(), Ok(()));
        assert_eq!(caller.identity(), None);
        assert_eq!(
            caller.author("bob"),
            Ok(Author {
                name: "bob".into(),
                verified: false
            })
        );
    }

    #[test]
    fn a_tokens_author_is_its_identity() {
        let caller = verified("", "");
        let ann = Ok(Author {
            name: "ann".into(),
            verified: true,
        });
        assert_eq!(caller.author(""), ann);
        assert_eq!(caller.author("ann"), ann);
        let err = caller.author("bob").expect_err("someone else");
        assert_eq!(err.reason(), "AUTHOR_MISMATCH");
        assert_eq!(
            err.to_string(),
            "the author `bob` is not this token's identity `ann`: send `ann` or leave the \
             author empty"
        );
        assert_eq!(
            anonymous("").author("bob"),
            Ok(Author {
                name: "bob".into(),
                verified: false
            })
        );
    }
}
