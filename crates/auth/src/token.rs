//! A token before its signature is checked ([`bearer`], its header) and its
//! claims after (`exp`, `nbf`, `iss`, `aud`, the identity, `rooms`).
//!
//! The claims are checked here rather than by jsonwebtoken's `Validation`
//! so that each failure can say exactly what was wrong (the time a token
//! expired, the issuer it has and the one expected) and so that every rule
//! is this crate's: `exp` required, `iss` and `aud` required when
//! configured, one leeway for both `exp` and `nbf`.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize as _;
use serde_json::{Map, Value};

use crate::error::{AuthError, InvalidToken};
use crate::grant::Grant;

/// The longest token accepted, in bytes. Real ones are well under 4 KiB;
/// the bound keeps a request from making the service decode megabytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The token in an `authorization` header value: `Bearer <token>`, the
/// scheme in any case, spaces around the token ignored.
///
/// # Errors
/// [`AuthError::TokenInvalid`] for another scheme, no token, or a token
/// with spaces in it. The message names the scheme only when it looks like
/// one (a short word), so a token sent without a scheme is never echoed.
pub fn bearer(header_value: &str) -> Result<&str, AuthError> {
    let value = header_value.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        let looks_like_a_scheme = (1..=16).contains(&scheme.len())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        return Err(InvalidToken::NotBearer {
            scheme: looks_like_a_scheme.then(|| scheme.to_owned()),
        }
        .into());
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(InvalidToken::Empty.into());
    }
    if token.contains(char::is_whitespace) {
        return Err(InvalidToken::Malformed("it contains spaces".into()).into());
    }
    Ok(token)
}

/// What is read from a token's header before choosing a key. Only these
/// two fields; jsonwebtoken checks the rest (`crit`, `b64`) when it
/// verifies.
#[derive(Debug)]
pub(crate) struct RawHeader {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
}

/// Splits a compact JWT and reads its header.
pub(crate) fn header(token: &str) -> Result<RawHeader, InvalidToken> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(InvalidToken::TooLong(token.len()));
    }
    let parts = token.split('.').count();
    if parts != 3 {
        return Err(InvalidToken::Malformed(if parts == 5 {
            "it has five parts, as an encrypted token (JWE) does; a signed one has three".into()
        } else {
            format!(
                "it has {parts} part{}; a signed token has three",
                if parts == 1 { "" } else { "s" }
            )
        }));
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| InvalidToken::Malformed("its header is not base64url".into()))?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| InvalidToken::Malformed("its header is not a JSON object".into()))?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => {
            return Err(InvalidToken::Malformed(
                "its header has no `alg` string".into(),
            ));
        }
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => {
            return Err(InvalidToken::Malformed(
                "its header's `kid` is not a string".into(),
            ));
        }
    };
    Ok(RawHeader { alg, kid })
}

/// The claim rules, from `auth.jwt`.
#[derive(Debug)]
pub(crate) struct ClaimRules {
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) leeway: Duration,
    pub(crate) user_claim: String,
}

/// What a token's verified claims say about its caller.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) identity: String,
    pub(crate) expires_at: SystemTime,
    pub(crate) grants: Vec<Grant>,
}

impl ClaimRules {
    /// Checks verified claims at `now`.
    pub(crate) fn check(
        &self,
        claims: &Map<String, Value>,
        now: SystemTime,
    ) -> Result<Checked, AuthError> {
        if let Some(expected) = &self.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == expected => {}
                found => {
                    return Err(InvalidToken::Issuer {
                        found: found.map(shown_value),
                        expected: expected.clone(),
                    }
                    .into());
                }
            }
        }
        if let Some(expected) = &self.audience {
            let found: Vec<String> = match claims.get("aud") {
                None => Vec::new(),
                Some(Value::Array(auds)) => auds.iter().map(shown_value).collect(),
                Some(aud) => vec![shown_value(aud)],
            };
            let matches = match claims.get("aud") {
                Some(Value::String(aud)) => aud == expected,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expected)),
                _ => false,
            };
            if !matches {
                return Err(InvalidToken::Audience {
                    found,
                    expected: expected.clone(),
                }
                .into());
            }
        }

        let expires_at = match claims.get("exp") {
            None => {
                return Err(claim(
                    "exp",
                    "is missing; this service accepts only tokens that expire",
                ));
            }
            Some(exp) => numeric_date(exp).ok_or_else(|| claim("exp", NOT_A_TIME))?,
        };
        if expires_at
            .checked_add(self.leeway)
            .is_some_and(|limit| now >= limit)
        {
            return Err(AuthError::TokenExpired {
                expired_at: expires_at,
            });
        }
        if let Some(nbf) = claims.get("nbf") {
            let not_before = numeric_date(nbf).ok_or_else(|| claim("nbf", NOT_A_TIME))?;
            if now
                .checked_add(self.leeway)
                .is_some_and(|now| now < not_before)
            {
                return Err(AuthError::TokenNotYetValid { not_before });
            }
        }

        let identity = match claims.get(&self.user_claim) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::String(_)) => {
                return Err(claim(
                    &self.user_claim,
                    "(auth.jwt.user_claim, the caller's identity) is empty",
                ));
            }
            Some(_) => {
                return Err(claim(
                    &self.user_claim,
                    "(auth.jwt.user_claim, the caller's identity) is not a string",
                ));
            }
            None => {
                return Err(claim(
                    &self.user_claim,
                    "(auth.jwt.user_claim, the caller's identity) is missing",
                ));
            }
        };

        let grants = match claims.get("rooms") {
            None => Vec::new(),
            Some(rooms) => Vec::<Grant>::deserialize(rooms)
                .map_err(|e| AuthError::TokenInvalid(InvalidToken::Rooms(e.to_string())))?,
        };
        Ok(Checked {
            identity,
            expires_at,
            grants,
        })
    }
}

const NOT_A_TIME: &str = "is not a time (a number of seconds since 1970-01-01T00:00:00Z)";

fn claim(name: &str, problem: &str) -> AuthError {
    InvalidToken::Claim {
        claim: name.to_owned(),
        problem: problem.to_owned(),
    }
    .into()
}

/// A claim value for a message: strings as they are, anything else as JSON.
fn shown_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JWT NumericDate: seconds since the epoch, possibly fractional, not
/// negative.
fn numeric_date(value: &Value) -> Option<SystemTime> {
    let number = value.as_number()?;
    let since = match number.as_u64() {
        Some(secs) => Duration::from_secs(secs),
        None => {
            let secs = number.as_f64()?;
            if !secs.is_finite() || secs < 0.0 {
                return None;
            }
            Duration::try_from_secs_f64(secs).ok()?
        }
    };
    SystemTime::UNIX_EPOCH.checked_add(since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(result: Result<&str, AuthError>) -> &'static str {
        result.map_or_else(|e| e.reason(), |_| "OK")
    }

    #[test]
    fn bearer_takes_the_scheme_in_any_case() {
        assert_eq!(bearer("Bearer abc.def.ghi").ok(), Some("abc.def.ghi"));
        assert_eq!(bearer("bearer abc").ok(), Some("abc"));
        assert_eq!(bearer("BEARER   abc  ").ok(), Some("abc"));
        assert_eq!(bearer("Bearer\tabc").ok(), Some("abc"));
    }

    #[test]
    fn bearer_refuses_other_schemes_and_empty_tokens() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "abc.def.ghi",
            "",
            "Bearer",
            "Bearer  ",
            "Bearer a b",
            "Bearerabc",
        ] {
            assert_eq!(reason(bearer(value)), "TOKEN_INVALID", "{value:?}");
        }
        let err = bearer("Basic dXNlcjpwYXNz").expect_err("basic");
        assert_eq!(
            err.to_string(),
            "the authorization header is not `Bearer <token>` (its scheme is `Basic`)"
        );
        let err = bearer("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln").expect_err("no scheme");
        assert_eq!(
            err.to_string(),
            "the authorization header is not `Bearer <token>`"
        );
    }

    fn encode(header: &Value) -> String {
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header.to_string()))
    }

    #[test]
    fn the_header_gives_alg_and_kid() {
        let h =
            header(&encode(&json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}))).expect("valid");
        assert_eq!((h.alg.as_str(), h.kid.as_deref()), ("ES256", Some("k1")));
        let h = header(&encode(&json!({"alg": "none"}))).expect("valid");
        assert_eq!((h.alg.as_str(), h.kid), ("none", None));
    }

    #[test]
    fn a_token_that_is_no_jwt_is_malformed() {
        for token in [
            "abc",
            "a.b",
            "a.b.c.d.e",
            "!!!.e30.c2ln",
            &format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode("[1]")),
            &encode(&json!({"typ": "JWT"})),
            &encode(&json!({"alg": 256})),
            &encode(&json!({"alg": "HS256", "kid": 7})),
        ] {
            assert!(
                matches!(header(token), Err(InvalidToken::Malformed(_))),
                "{token}"
            );
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(header(&long), Err(InvalidToken::TooLong(_))));
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: Some("https://id.example".into()),
            audience: Some("fastchat".into()),
            leeway: Duration::from_secs(30),
            user_claim: "sub".into(),
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn check(claims: Value) -> Result<Checked, AuthError> {
        let Value::Object(claims) = claims else {
            panic!("claims are an object")
        };
        rules().check(&claims, now())
    }

    fn refused(claims: Value) -> AuthError {
        check(claims).expect_err("refused")
    }

    fn good() -> Value {
        json!({"sub": "ann", "exp": NOW + 60, "iss": "https://id.example", "aud": "fastchat"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut claims = good();
        claims[key] = value;
        claims
    }

    fn without(key: &str) -> Value {
        let mut claims = good();
        claims.as_object_mut().map(|c| c.remove(key));
        claims
    }

    #[test]
    fn good_claims_give_identity_expiry_and_grants() {
        let checked = check(with(
            "rooms",
            json!([{"rooms": ["general"], "allow": ["read"]}]),
        ))
        .expect("valid");
        assert_eq!(checked.identity, "ann");
        assert_eq!(
            checked.expires_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(NOW + 60)
        );
        assert_eq!(checked.grants.len(), 1);
        assert!(check(good()).expect("valid").grants.is_empty());
        assert!(check(with("aud", json!(["other", "fastchat"]))).is_ok());
        assert!(check(with("exp", json!(NOW as f64 + 0.5))).is_ok());
    }

    #[test]
    fn exp_is_required_and_honours_the_leeway() {
        assert_eq!(refused(without("exp")).reason(), "TOKEN_INVALID");
        assert_eq!(
            refused(with("exp", json!("soon"))).reason(),
            "TOKEN_INVALID"
        );
        assert_eq!(refused(with("exp", json!(-5))).reason(), "TOKEN_INVALID");
        assert!(check(with("exp", json!(NOW - 29))).is_ok());
        let err = refused(with("exp", json!(NOW - 30)));
        assert_eq!(err.reason(), "TOKEN_EXPIRED");
        assert_eq!(
            err.to_string(),
            "the token expired at 2027-01-15T07:59:30Z; get a new one"
        );
    }

    #[test]
    fn nbf_in_the_future_beyond_the_leeway_is_refused() {
        assert!(check(with("nbf", json!(NOW + 30))).is_ok());
        let err = refused(with("nbf", json!(NOW + 31)));
        assert_eq!(err.reason(), "TOKEN_EXPIRED");
        assert!(matches!(err, AuthError::TokenNotYetValid { .. }));
        assert_eq!(refused(with("nbf", json!(null))).reason(), "TOKEN_INVALID");
    }

    #[test]
    fn issuer_and_audience_must_be_the_configured_ones() {
        let err = refused(with("iss", json!("https://evil.example")));
        assert_eq!(
            err.to_string(),
            "the token's issuer is `https://evil.example`, this service accepts \
             `https://id.example` (auth.jwt.issuer)"
        );
        assert!(matches!(
            check(without("iss")),
            Err(AuthError::TokenInvalid(InvalidToken::Issuer {
                found: None,
                ..
            }))
        ));
        let err = refused(with("aud", json!(["a", "b"])));
        assert_eq!(
            err.to_string(),
            "the token's audience is `a`, `b`, this service is `fastchat` (auth.jwt.audience)"
        );
        assert!(matches!(
            check(without("aud")),
            Err(AuthError::TokenInvalid(InvalidToken::Audience { .. }))
        ));
        let open = ClaimRules {
            issuer: None,
            audience: None,
            ..rules()
        };
        let Value::Object(claims) = with("aud", json!("anything")) else {
            panic!("an object")
        };
        assert!(open.check(&claims, now()).is_ok());
    }

    #[test]
    fn the_identity_is_a_non_empty_string() {
        for claims in [
            without("sub"),
            with("sub", json!("")),
            with("sub", json!(42)),
        ] {
            let err = refused(claims);
            assert_eq!(err.reason(), "TOKEN_INVALID");
            assert!(err.to_string().contains("auth.jwt.user_claim"), "{err}");
        }
    }

    #[test]
    fn malformed_rooms_are_invalid() {
        for rooms in [
            json!("general"),
            json!(null),
            json!([{"rooms": ["a b"], "allow": ["read"]}]),
            json!([{"rooms": ["a"], "allow": ["admin"]}]),
            json!([{"rooms": ["a"], "allow": ["read"], "deny": ["write"]}]),
        ] {
            let err = refused(with("rooms", rooms.clone()));
            assert!(
                matches!(err, AuthError::TokenInvalid(InvalidToken::Rooms(_))),
                "{rooms}: {err}"
            );
        }
    }
}
