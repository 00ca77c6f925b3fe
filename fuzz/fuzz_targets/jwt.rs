//! Bearer tokens: the `authorization` header → the bearer token → the
//! token's header → the HMAC signature (a fixed test key) → the claim rules
//! (`exp`, `nbf`, `iss`, `aud`, the identity, `rooms`) → grant matching.
//! Input: a selector byte, then fields separated by 0xFF.
//!
//! - selector bit 0 clear: the header value as sent, then a room;
//! - set: a token's header JSON, its claims JSON, a room and the
//!   `auth.authenticated` grants (CLI syntax); the target signs the token
//!   with the test key (HS256, HS384 or HS512 by bits 1-2), so the claim
//!   rules see what a signed token can say.
//!
//! Bit 3 chooses read or write. Holds beyond "no panic": a caller is only
//! verified when its claims meet every rule (checked here independently
//! against the claims JSON); the identity is the `sub` claim; the grants
//! are the `rooms` claim; a room decision follows the README's first-match
//! rule over the token's grants, then `auth.authenticated`; a refusal of a
//! token is UNAUTHENTICATED.

#![no_main]

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use fastchat_auth::{Caller, Code, Grant, Operation, parse_grants};
use fastchat_fuzz::{AUDIENCE, HMAC_KEY, ISSUER, LEEWAY, authenticator, fields, now, text};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

fuzz_target!(|data: &[u8]| {
    let (selector, parts) = fields(data, 4);
    let op = if selector & 8 == 0 {
        Operation::Read
    } else {
        Operation::Write
    };
    if selector & 1 == 0 {
        let Some(value) = text(parts[0]) else {
            return;
        };
        match authenticator(Vec::new(), Vec::new()).authenticate_at(Some(value), now()) {
            Ok(Caller::Verified(caller)) => {
                assert!(!caller.identity().is_empty());
                let _ = Caller::Verified(caller).authorize(&String::from_utf8_lossy(parts[1]), op);
            }
            Ok(other) => panic!("a header that is not a valid token gave {other:?}"),
            Err(e) => assert_eq!(e.code(), Code::Unauthenticated, "{e}"),
        }
        return;
    }

    let alg = ALGS[usize::from(selector >> 1 & 3) % ALGS.len()];
    let signed_part = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(parts[0]),
        URL_SAFE_NO_PAD.encode(parts[1])
    );
    let key = EncodingKey::from_secret(HMAC_KEY).expect("an HMAC key");
    let signature =
        jsonwebtoken::crypto::sign(signed_part.as_bytes(), &key, alg).expect("HMAC signs anything");
    let token = format!("{signed_part}.{signature}");
    let authenticated = text(parts[3])
        .and_then(|t| parse_grants(t).ok())
        .unwrap_or_default();
    let room = String::from_utf8_lossy(parts[2]);

    let result = authenticator(authenticated.clone(), Vec::new())
        .authenticate_at(Some(&format!("Bearer {token}")), now());
    let caller = match result {
        Ok(Caller::Verified(caller)) => caller,
        Ok(other) => panic!("a token gave {other:?}"),
        Err(e) => {
            assert_eq!(e.code(), Code::Unauthenticated, "{e}");
            return;
        }
    };

    // Verified: the claims must say all that the rules require.
    let claims: Map<String, Value> =
        serde_json::from_slice(parts[1]).expect("verified claims are a JSON object");
    assert_eq!(claims.get("iss"), Some(&Value::String(ISSUER.into())));
    match claims.get("aud") {
        Some(Value::String(aud)) => assert_eq!(aud, AUDIENCE),
        Some(Value::Array(auds)) => assert!(auds.contains(&Value::String(AUDIENCE.into()))),
        other => panic!("verified with aud {other:?}"),
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .expect("verified without a numeric exp");
    let now_secs = now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        exp + LEEWAY.as_secs_f64() >= now_secs,
        "verified although it expired at {exp}"
    );
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().expect("verified with a non-numeric nbf");
        assert!(
            nbf <= now_secs + LEEWAY.as_secs_f64(),
            "verified before nbf {nbf}"
        );
    }
    assert_eq!(
        claims.get("sub"),
        Some(&Value::String(caller.identity().to_owned()))
    );
    assert!(!caller.identity().is_empty());
    let grants: Vec<Grant> = match claims.get("rooms") {
        None => Vec::new(),
        Some(rooms) => serde_json::from_value(rooms.clone()).expect("verified with bad rooms"),
    };
    assert_eq!(caller.grants(), grants.as_slice());

    let caller = Caller::Verified(caller);
    assert_eq!(
        caller.authorize(&room, op).is_ok(),
        fastchat_fuzz::reference_allows(&[&grants, &authenticated], &room, op),
        "{op} on {room:?}"
    );
    assert_eq!(
        caller.authorize_every_room_read().is_ok(),
        fastchat_fuzz::reference_allows_every_room_read(&[&grants, &authenticated]),
    );
    // The author of a message: the identity, or refused.
    let identity = caller.identity().unwrap_or_default().to_owned();
    assert_eq!(
        caller.author("").map(|a| (a.name, a.verified)).ok(),
        Some((identity.clone(), true))
    );
    if !room.is_empty() && room != identity {
        assert!(caller.author(&room).is_err());
    }
});
