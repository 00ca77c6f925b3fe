//! Room grants and authors with real tokens: the token's `rooms`, then
//! `auth.authenticated`; `auth.anonymous` for callers without a token;
//! development tokens from `mint_hs256`.

mod support;

use std::time::Duration;

use fastchat_auth::{
    Authenticator, Author, Caller, InvalidToken, MintClaims, Operation, format_grants, mint_hs256,
    parse_grants,
};
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::{Setup, authenticate, hmac_secret, now, reason, sign_hmac};

use Operation::{Read, Write};

struct World {
    secret: Vec<u8>,
    auth: Authenticator,
}

/// A service with `authenticated` and `anonymous` grants (CLI syntax).
fn world(authenticated: &str, anonymous: &str) -> World {
    let secret = hmac_secret();
    let mut setup = Setup::new().hmac(&secret);
    setup.config.authenticated = parse_grants(authenticated).expect("valid grants");
    setup.config.anonymous = parse_grants(anonymous).expect("valid grants");
    World {
        auth: setup.authenticator(),
        secret,
    }
}

impl World {
    /// A caller whose token grants `rooms` (CLI syntax).
    fn caller(&self, rooms: &str) -> Caller {
        let claims = MintClaims {
            rooms: parse_grants(rooms).expect("valid grants"),
            ..MintClaims::new("ann", Duration::from_secs(300))
        };
        let token = mint_hs256(&self.secret, &claims).expect("mints");
        authenticate(&self.auth, &token).expect("verified")
    }

    fn anonymous(&self) -> Caller {
        self.auth.authenticate(None).expect("anonymous")
    }
}

fn allowed(caller: &Caller, room: &str, op: Operation) -> bool {
    caller.authorize(room, op).is_ok()
}

#[test]
fn an_exact_pattern_grants_only_its_room() {
    let caller = world("", "").caller("general=read,write");
    assert!(allowed(&caller, "general", Read));
    assert!(allowed(&caller, "general", Write));
    assert!(!allowed(&caller, "general-2", Read));
    let err = caller.authorize("team-b", Write).expect_err("no grant");
    assert_eq!(err.reason(), "ROOM_FORBIDDEN");
    assert_eq!(err.code(), fastchat_auth::Code::PermissionDenied);
    assert_eq!(err.to_string(), "no grant allows write on room `team-b`");
    assert_eq!(
        err.metadata(),
        vec![
            ("operation", "write".to_owned()),
            ("room", "team-b".to_owned())
        ]
    );
}

#[test]
fn a_glob_grants_the_rooms_it_matches() {
    let caller = world("", "").caller("team-*=read");
    assert!(allowed(&caller, "team-", Read));
    assert!(allowed(&caller, "team-a", Read));
    assert!(allowed(&caller, "team-a_b-c", Read));
    assert!(!allowed(&caller, "team-a", Write));
    assert!(!allowed(&caller, "myteam-a", Read));
}

#[test]
fn the_star_grants_every_room() {
    let caller = world("", "").caller("*=read");
    for room in ["general", "team-a", "x"] {
        assert!(allowed(&caller, room, Read), "{room}");
        assert!(!allowed(&caller, room, Write), "{room}");
    }
    assert_eq!(caller.authorize_every_room_read(), Ok(()));
}

#[test]
fn the_first_matching_grant_wins_and_an_empty_allow_denies() {
    let caller = world("", "").caller("secret=;team-*=read;*=read,write");
    assert!(!allowed(&caller, "secret", Read));
    assert!(!allowed(&caller, "secret", Write));
    assert!(allowed(&caller, "team-a", Read));
    assert!(!allowed(&caller, "team-a", Write), "team-* comes before *");
    assert!(allowed(&caller, "general", Write));
    let err = caller.authorize("secret", Read).expect_err("denied");
    assert_eq!(
        err.to_string(),
        "read on room `secret` is not allowed: the grant for `secret` in the token's \
         `rooms` allows nothing"
    );
}

#[test]
fn authenticated_grants_apply_after_the_tokens_own() {
    let world = world("general=read,write;*=read", "");
    let caller = world.caller("general=read;team-a=read,write");
    assert!(
        !allowed(&caller, "general", Write),
        "the token's grant came first"
    );
    assert!(allowed(&caller, "team-a", Write));
    assert!(allowed(&caller, "random", Read), "auth.authenticated's *");
    assert!(!allowed(&caller, "random", Write));
    let err = caller.authorize("random", Write).expect_err("read only");
    assert_eq!(
        err.to_string(),
        "write on room `random` is not allowed: the grant for `*` in auth.authenticated \
         allows only read"
    );
    // A token without `rooms` gets auth.authenticated alone.
    let plain = world.caller("");
    assert!(allowed(&plain, "general", Write));
}

#[test]
fn callers_without_a_token_get_only_the_anonymous_grants() {
    let world = world("*=read,write", "lobby=read");
    let anonymous = world.anonymous();
    assert!(allowed(&anonymous, "lobby", Read));
    let err = anonymous.authorize("lobby", Write).expect_err("read only");
    assert_eq!(err.reason(), "TOKEN_MISSING");
    assert_eq!(err.code(), fastchat_auth::Code::Unauthenticated);
    assert_eq!(
        anonymous.authorize("general", Read).map_err(|e| e.reason()),
        Err("TOKEN_MISSING"),
        "auth.authenticated is not for callers without a token"
    );
    // With no anonymous grants (the default), nothing is allowed.
    let closed = self::world("*=read", "").anonymous();
    assert_eq!(
        closed.authorize("lobby", Read).map_err(|e| e.reason()),
        Err("TOKEN_MISSING")
    );
}

#[test]
fn subscribing_to_every_room_needs_a_star_grant_with_read() {
    let world = world("", "");
    let named = world.caller("general,team-*=read,write");
    let err = named.authorize_every_room_read().expect_err("no * grant");
    assert_eq!(err.reason(), "ROOM_FORBIDDEN");
    assert!(
        err.to_string()
            .starts_with("no grant allows read on every room; "),
        "{err}"
    );
    assert_eq!(
        world
            .caller("general=read;*=read")
            .authorize_every_room_read(),
        Ok(())
    );
    assert!(world.caller("*=write").authorize_every_room_read().is_err());
    // A room refused before the star would leak through a subscription
    // to every room.
    assert!(
        world
            .caller("secret=;*=read")
            .authorize_every_room_read()
            .is_err()
    );
    // The star can come from auth.authenticated.
    let world = self::world("*=read", "");
    assert_eq!(world.caller("").authorize_every_room_read(), Ok(()));
    assert_eq!(
        world
            .anonymous()
            .authorize_every_room_read()
            .map_err(|e| e.reason()),
        Err("TOKEN_MISSING")
    );
}

#[test]
fn a_token_names_its_author() {
    let world = world("*=read,write", "*=read,write");
    let caller = world.caller("");
    let ann = Ok(Author {
        name: "ann".into(),
        verified: true,
    });
    assert_eq!(caller.author(""), ann);
    assert_eq!(caller.author("ann"), ann);
    let err = caller.author("bob").expect_err("not ann");
    assert_eq!(err.reason(), "AUTHOR_MISMATCH");
    assert_eq!(
        world.anonymous().author("bob"),
        Ok(Author {
            name: "bob".into(),
            verified: false
        })
    );
}

#[test]
fn malformed_rooms_in_a_token_make_it_invalid() {
    let world = world("", "");
    for rooms in [
        json!({"rooms": ["general"], "allow": ["read"]}),
        json!([{"rooms": ["no spaces"], "allow": ["read"]}]),
        json!([{"rooms": ["general"], "allow": ["admin"]}]),
        json!([{"room": ["general"], "allow": ["read"]}]),
    ] {
        let token = sign_hmac(
            Algorithm::HS256,
            &world.secret,
            &json!({"sub": "ann", "exp": now() + 60, "rooms": rooms}),
        );
        let result = authenticate(&world.auth, &token);
        assert_eq!(reason(&result), "TOKEN_INVALID", "{rooms}");
        assert!(matches!(
            result,
            Err(fastchat_auth::AuthError::TokenInvalid(InvalidToken::Rooms(
                _
            )))
        ));
    }
}

#[test]
fn a_minted_token_carries_identity_grants_issuer_and_audience() {
    let secret = hmac_secret();
    let mut setup = Setup::new().hmac(&secret);
    setup.config.jwt.issuer = Some("fastchat-dev".into());
    setup.config.jwt.audience = Some("fastchat".into());
    let auth = setup.authenticator();
    let grants = parse_grants("general,team-*=read,write;*=read").expect("valid");
    let claims = MintClaims {
        rooms: grants.clone(),
        issuer: Some("fastchat-dev".into()),
        audience: Some("fastchat".into()),
        ..MintClaims::new("ann", Duration::from_secs(600))
    };
    let token = mint_hs256(&secret, &claims).expect("mints");
    let caller = authenticate(&auth, &token).expect("verified");
    assert_eq!(caller.identity(), Some("ann"));
    let expires = caller
        .expires_at()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    assert!(
        expires.is_some_and(|exp| exp >= now() + 599 && exp <= now() + 601),
        "{expires:?}"
    );
    let Caller::Verified(verified) = &caller else {
        panic!("a verified caller")
    };
    assert_eq!(verified.grants(), grants.as_slice());
    assert_eq!(
        format_grants(verified.grants()),
        "general,team-*=read,write;*=read"
    );
    assert!(allowed(&caller, "team-x", Write));
    assert!(!allowed(&caller, "other", Write));
    // Without the issuer the service asks for, the same token is refused.
    let bare =
        mint_hs256(&secret, &MintClaims::new("ann", Duration::from_secs(60))).expect("mints");
    assert_eq!(reason(&authenticate(&auth, &bare)), "TOKEN_INVALID");
}
