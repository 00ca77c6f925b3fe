//! Token verification, end to end through `Authenticator`: every kind of
//! key, and every way a token can be refused.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fastchat_auth::{
    AuthConfig, AuthError, Authenticator, Caller, ConfigError, InvalidToken, Mode, Operation,
};
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::{
    RSA_PUBLIC_PEM, Setup, TestKey, authenticate, claims, hmac_secret, jwks, now, reason, sign_hmac,
};

fn invalid(result: Result<Caller, AuthError>) -> InvalidToken {
    match result {
        Err(AuthError::TokenInvalid(why)) => why,
        other => panic!("expected TOKEN_INVALID, got {other:?}"),
    }
}

/// A token's three parts, re-joined after `edit`.
fn edited(token: &str, edit: impl FnOnce(&mut Vec<String>)) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    edit(&mut parts);
    parts.join(".")
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

#[test]
fn a_request_without_a_token_is_anonymous() {
    let setup = Setup::new().hmac(&hmac_secret());
    let caller = setup.authenticator().authenticate(None).expect("anonymous");
    assert!(matches!(caller, Caller::Anonymous(_)));
    assert_eq!(caller.identity(), None);
    assert_eq!(caller.expires_at(), None);
}

#[test]
fn hs256_hs384_and_hs512_tokens_verify_with_the_secret_file_less_its_newline() {
    let secret = hmac_secret();
    for contents in [
        secret.clone(),
        [secret.as_slice(), b"\n"].concat(),
        [secret.as_slice(), b"\r\n"].concat(),
    ] {
        let auth = Setup::new().hmac_file(&contents).authenticator();
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = sign_hmac(alg, &secret, &claims("ann"));
            let caller = authenticate(&auth, &token).expect("verified");
            assert_eq!(caller.identity(), Some("ann"), "{alg:?}");
        }
    }
    // Only one newline is dropped: a second one is part of the key.
    let auth = Setup::new()
        .hmac_file(&[secret.as_slice(), b"\n\n"].concat())
        .authenticator();
    let token = sign_hmac(Algorithm::HS256, &secret, &claims("ann"));
    assert!(matches!(
        invalid(authenticate(&auth, &token)),
        InvalidToken::Signature
    ));
}

#[test]
fn rs256_es256_and_eddsa_tokens_verify_with_the_key_their_kid_names() {
    let keys = [
        TestKey::rsa("rsa-1"),
        TestKey::p256("ec-1"),
        TestKey::ed25519("ed-1"),
    ];
    let auth = Setup::new()
        .jwks(&jwks(&keys.iter().collect::<Vec<_>>()))
        .authenticator();
    for key in &keys {
        let caller = authenticate(&auth, &key.sign(&claims(&key.kid))).expect("verified");
        assert_eq!(caller.identity(), Some(key.kid.as_str()), "{:?}", key.alg);
    }
}

#[test]
fn both_kinds_of_key_can_be_configured_together() {
    let secret = hmac_secret();
    let key = TestKey::ed25519("ed-1");
    let auth = Setup::new()
        .hmac(&secret)
        .jwks(&jwks(&[&key]))
        .authenticator();
    assert!(authenticate(&auth, &key.sign(&claims("ann"))).is_ok());
    let token = sign_hmac(Algorithm::HS256, &secret, &claims("bob"));
    assert!(authenticate(&auth, &token).is_ok());
}

#[test]
fn a_header_that_is_not_bearer_is_invalid() {
    let secret = hmac_secret();
    let auth = Setup::new().hmac(&secret).authenticator();
    let token = sign_hmac(Algorithm::HS256, &secret, &claims("ann"));
    assert!(auth.authenticate(Some(&format!("bEaReR {token}"))).is_ok());
    for header in [
        token.clone(),
        format!("Basic {token}"),
        "Bearer".to_owned(),
        String::new(),
    ] {
        assert_eq!(reason(&auth.authenticate(Some(&header))), "TOKEN_INVALID");
    }
}

#[test]
fn a_malformed_token_is_invalid() {
    let secret = hmac_secret();
    let auth = Setup::new().hmac(&secret).authenticator();
    let good = sign_hmac(Algorithm::HS256, &secret, &claims("ann"));
    let claims_not_json = edited(&good, |p| p[1] = URL_SAFE_NO_PAD.encode("not json"));
    let claims_not_object = edited(&good, |p| p[1] = b64(&json!([1, 2])));
    for token in [
        "garbage".to_owned(),
        "a.b".to_owned(),
        format!("{good}.extra.part"),
        edited(&good, |p| p[0] = "%%%".into()),
        edited(&good, |p| p[2] = "%%%".into()),
        claims_not_json,
        claims_not_object,
    ] {
        let why = invalid(authenticate(&auth, &token));
        assert!(
            matches!(why, InvalidToken::Malformed(_) | InvalidToken::Signature),
            "{token}: {why:?}"
        );
    }
    assert!(matches!(
        invalid(authenticate(&auth, "garbage")),
        InvalidToken::Malformed(_)
    ));
}

#[test]
fn a_bad_signature_is_invalid() {
    let secret = hmac_secret();
    let key = TestKey::p256("ec-1");
    let auth = Setup::new()
        .hmac(&secret)
        .jwks(&jwks(&[&key]))
        .authenticator();
    // Claims changed after signing.
    let forged_claims = b64(&json!({"sub": "mallory", "exp": now() + 300}));
    for token in [
        edited(&sign_hmac(Algorithm::HS256, &secret, &claims("ann")), |p| {
            p[1] = forged_claims.clone();
        }),
        edited(&key.sign(&claims("ann")), |p| p[1] = forged_claims.clone()),
        // Signed with another secret, or another key under the same kid.
        sign_hmac(Algorithm::HS256, &hmac_secret(), &claims("ann")),
        TestKey::p256("ec-1").sign(&claims("ann")),
        // No signature at all.
        edited(&key.sign(&claims("ann")), |p| p[2] = String::new()),
    ] {
        assert!(
            matches!(
                invalid(authenticate(&auth, &token)),
                InvalidToken::Signature
            ),
            "{token}"
        );
    }
}

#[test]
fn alg_none_is_invalid() {
    let auth = Setup::new().hmac(&hmac_secret()).authenticator();
    for alg in ["none", "None", "NONE", ""] {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(&claims("mallory"))
        );
        let err = authenticate(&auth, &token).expect_err("unsigned");
        assert!(
            matches!(
                &err,
                AuthError::TokenInvalid(InvalidToken::Algorithm { .. })
            ),
            "{alg}: {err:?}"
        );
        if alg == "none" {
            assert_eq!(
                err.to_string(),
                "the token's algorithm `none` is not accepted: this service accepts \
                 HS256, HS384, HS512 (auth.jwt.hmac_secret_file)"
            );
        }
    }
}

#[test]
fn an_hmac_token_against_a_jwks_only_config_is_invalid() {
    let key = TestKey::ed25519("ed-1");
    let auth = Setup::new().jwks(&jwks(&[&key])).authenticator();
    let token = sign_hmac(Algorithm::HS256, &hmac_secret(), &claims("ann"));
    let err = authenticate(&auth, &token).expect_err("no HMAC secret");
    assert_eq!(
        err.to_string(),
        "the token's algorithm `HS256` is not accepted: this service accepts RS256, \
         ES256, EdDSA (auth.jwt.jwks_file)"
    );
}

#[test]
fn an_rs256_token_resigned_as_hs256_with_the_public_key_is_invalid() {
    // The classic algorithm confusion: the attacker takes the service's
    // public key (published) and uses its bytes as an HMAC secret.
    let rsa = TestKey::rsa("rsa-1");
    let forged = |kid: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            &claims("mallory"),
            &jsonwebtoken::EncodingKey::from_secret(RSA_PUBLIC_PEM).expect("a secret"),
        )
        .expect("signs")
    };
    // Only a JWK set: HS256 is not accepted at all.
    let auth = Setup::new().jwks(&jwks(&[&rsa])).authenticator();
    for token in [forged(Some("rsa-1")), forged(None)] {
        assert!(matches!(
            invalid(authenticate(&auth, &token)),
            InvalidToken::Algorithm { .. }
        ));
    }
    // With an HMAC secret as well, HS256 is checked with that secret only.
    let auth = Setup::new()
        .hmac(&hmac_secret())
        .jwks(&jwks(&[&rsa]))
        .authenticator();
    assert!(matches!(
        invalid(authenticate(&auth, &forged(Some("rsa-1")))),
        InvalidToken::Signature
    ));
    // And the genuine RS256 token still verifies.
    assert!(authenticate(&auth, &rsa.sign(&claims("ann"))).is_ok());
}

#[test]
fn a_tokens_alg_must_be_the_one_of_its_key() {
    let ec = TestKey::p256("ec-1");
    let ed = TestKey::ed25519("ed-1");
    let auth = Setup::new().jwks(&jwks(&[&ec, &ed])).authenticator();
    // An ES256 signature presented as RS256 and as EdDSA under the same kid.
    for alg in ["RS256", "EdDSA"] {
        let token = edited(&ec.sign(&claims("ann")), |p| {
            p[0] = b64(&json!({"alg": alg, "kid": "ec-1"}));
        });
        let err = authenticate(&auth, &token).expect_err("wrong alg");
        assert!(
            matches!(
                &err,
                AuthError::TokenInvalid(InvalidToken::KeyMismatch {
                    key_alg: "ES256",
                    ..
                })
            ),
            "{alg}: {err:?}"
        );
        if alg == "RS256" {
            assert_eq!(
                err.to_string(),
                "the token's algorithm is RS256 but its key `ec-1` is for ES256"
            );
        }
    }
    // Algorithms jsonwebtoken knows but this service does not take.
    for alg in ["PS256", "RS512", "ES384"] {
        let token = edited(&ec.sign(&claims("ann")), |p| {
            p[0] = b64(&json!({"alg": alg, "kid": "ec-1"}));
        });
        assert!(matches!(
            invalid(authenticate(&auth, &token)),
            InvalidToken::Algorithm { .. }
        ));
    }
}

#[test]
fn an_unknown_or_missing_kid_is_invalid() {
    let key = TestKey::ed25519("ed-1");
    let auth = Setup::new().jwks(&jwks(&[&key])).authenticator();
    let stranger = TestKey::ed25519("ed-2");
    let err = authenticate(&auth, &stranger.sign(&claims("ann"))).expect_err("unknown kid");
    assert_eq!(
        err,
        AuthError::TokenInvalid(InvalidToken::UnknownKey("ed-2".into()))
    );
    assert_eq!(
        err.to_string(),
        "the token's key `ed-2` is not in auth.jwt.jwks_file: get a token signed with a \
         current key, or add the key to the file"
    );
    let no_kid = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::EdDSA),
        &claims("ann"),
        &key.encoding,
    )
    .expect("signs");
    assert!(matches!(
        invalid(authenticate(&auth, &no_kid)),
        InvalidToken::NoKeyId
    ));
}

#[test]
fn an_expired_token_is_token_expired_with_its_time() {
    let secret = hmac_secret();
    let auth = Setup::new().hmac(&secret).authenticator();
    let exp = now() - 3600;
    let token = sign_hmac(
        Algorithm::HS256,
        &secret,
        &json!({"sub": "ann", "exp": exp}),
    );
    let err = authenticate(&auth, &token).expect_err("expired");
    assert_eq!(err.reason(), "TOKEN_EXPIRED");
    assert_eq!(err.code(), fastchat_auth::Code::Unauthenticated);
    let at = humantime_serde::re::humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(exp),
    );
    assert_eq!(
        err.to_string(),
        format!("the token expired at {at}; get a new one")
    );
}

#[test]
fn a_token_not_valid_yet_is_token_expired() {
    let secret = hmac_secret();
    let auth = Setup::new().hmac(&secret).authenticator();
    let token = sign_hmac(
        Algorithm::HS256,
        &secret,
        &json!({"sub": "ann", "exp": now() + 7200, "nbf": now() + 3600}),
    );
    let err = authenticate(&auth, &token).expect_err("not yet");
    assert_eq!(err.reason(), "TOKEN_EXPIRED");
    assert!(err.to_string().contains("is not valid before"), "{err}");
}

#[test]
fn the_leeway_applies_to_exp_and_nbf() {
    let secret = hmac_secret();
    let late = sign_hmac(
        Algorithm::HS256,
        &secret,
        &json!({"sub": "ann", "exp": now() - 10}),
    );
    let early = sign_hmac(
        Algorithm::HS256,
        &secret,
        &json!({"sub": "ann", "exp": now() + 300, "nbf": now() + 10}),
    );
    let default = Setup::new().hmac(&secret).authenticator();
    assert!(authenticate(&default, &late).is_ok(), "30 s by default");
    assert!(authenticate(&default, &early).is_ok());
    let strict = Setup::new()
        .hmac(&secret)
        .leeway(Duration::ZERO)
        .authenticator();
    assert_eq!(reason(&authenticate(&strict, &late)), "TOKEN_EXPIRED");
    assert_eq!(reason(&authenticate(&strict, &early)), "TOKEN_EXPIRED");
}

#[test]
fn a_token_without_exp_is_invalid() {
    let secret = hmac_secret();
    let auth = Setup::new().hmac(&secret).authenticator();
    let token = sign_hmac(Algorithm::HS256, &secret, &json!({"sub": "ann"}));
    let why = invalid(authenticate(&auth, &token));
    assert!(matches!(&why, InvalidToken::Claim { claim, .. } if claim == "exp"));
}

fn with_issuer_and_audience(secret: &[u8]) -> Authenticator {
    let mut setup = Setup::new().hmac(secret);
    setup.config.jwt.issuer = Some("https://id.example".into());
    setup.config.jwt.audience = Some("fastchat".into());
    setup.authenticator()
}

#[test]
fn a_wrong_issuer_is_invalid() {
    let secret = hmac_secret();
    let auth = with_issuer_and_audience(&secret);
    let mut body = claims("ann");
    body["aud"] = json!("fastchat");
    body["iss"] = json!("https://id.example");
    assert!(authenticate(&auth, &sign_hmac(Algorithm::HS256, &secret, &body)).is_ok());
    body["iss"] = json!("https://other.example");
    let err = authenticate(&auth, &sign_hmac(Algorithm::HS256, &secret, &body))
        .expect_err("wrong issuer");
    assert_eq!(
        err.to_string(),
        "the token's issuer is `https://other.example`, this service accepts \
         `https://id.example` (auth.jwt.issuer)"
    );
}

#[test]
fn a_wrong_audience_is_invalid() {
    let secret = hmac_secret();
    let auth = with_issuer_and_audience(&secret);
    let mut body = claims("ann");
    body["iss"] = json!("https://id.example");
    body["aud"] = json!(["other", "fastchat"]);
    assert!(authenticate(&auth, &sign_hmac(Algorithm::HS256, &secret, &body)).is_ok());
    body["aud"] = json!("other");
    let err = authenticate(&auth, &sign_hmac(Algorithm::HS256, &secret, &body))
        .expect_err("wrong audience");
    assert_eq!(
        err.to_string(),
        "the token's audience is `other`, this service is `fastchat` (auth.jwt.audience)"
    );
}

#[test]
fn the_identity_comes_from_the_configured_claim() {
    let secret = hmac_secret();
    let mut setup = Setup::new().hmac(&secret);
    setup.config.jwt.user_claim = "email".into();
    let auth = setup.authenticator();
    let token = sign_hmac(
        Algorithm::HS256,
        &secret,
        &json!({"sub": "1234", "email": "ann@example.com", "exp": now() + 60}),
    );
    let caller = authenticate(&auth, &token).expect("verified");
    assert_eq!(caller.identity(), Some("ann@example.com"));
    let without = sign_hmac(Algorithm::HS256, &secret, &claims("1234"));
    assert!(matches!(
        invalid(authenticate(&auth, &without)),
        InvalidToken::Claim { claim, .. } if claim == "email"
    ));
}

#[test]
fn no_message_echoes_the_token() {
    let secret = hmac_secret();
    let key = TestKey::ed25519("ed-1");
    let auth = Setup::new()
        .hmac(&secret)
        .jwks(&jwks(&[&key]))
        .authenticator();
    let tokens = [
        sign_hmac(Algorithm::HS256, &hmac_secret(), &claims("ann")),
        sign_hmac(
            Algorithm::HS256,
            &secret,
            &json!({"sub": "ann", "exp": now() - 3600}),
        ),
        TestKey::ed25519("ed-9").sign(&claims("ann")),
        edited(&key.sign(&claims("ann")), |p| p[1] = "x".into()),
    ];
    for token in &tokens {
        let message = authenticate(&auth, token).expect_err("refused").to_string();
        for part in token.split('.').filter(|p| p.len() > 8) {
            assert!(!message.contains(part), "{message}");
        }
        let header = auth
            .authenticate(Some(token))
            .expect_err("no scheme")
            .to_string();
        assert!(!header.contains(token.as_str()), "{header}");
    }
}

#[test]
fn missing_and_unusable_key_files_are_config_errors_naming_key_and_path() {
    let setup = Setup::new();
    let mut config = AuthConfig::default();
    config.jwt.hmac_secret_file = Some(setup.dir.path().join("absent"));
    let err = Authenticator::new(&config).expect_err("no file");
    assert!(matches!(
        err,
        ConfigError::Read {
            key: "auth.jwt.hmac_secret_file",
            ..
        }
    ));
    let message = err.to_string();
    assert!(
        message.starts_with("auth.jwt.hmac_secret_file: cannot read `"),
        "{message}"
    );
    assert!(message.contains("absent"), "{message}");

    let short = Setup::new().hmac(b"too short");
    let err = Authenticator::new(&short.config).expect_err("short");
    assert!(err.to_string().contains("holds 9 bytes"), "{err}");

    let cases = [
        ("not json", "is not a JWK set"),
        (r#"{"keys": []}"#, "holds no usable key"),
        (
            r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "h"}]}"#,
            "is a symmetric key",
        ),
    ];
    for (contents, expected) in cases {
        let setup = Setup::new().jwks(contents);
        let err = Authenticator::new(&setup.config).expect_err("unusable");
        let message = err.to_string();
        assert!(message.starts_with("auth.jwt.jwks_file: `"), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
}

#[test]
fn unusable_keys_in_a_jwk_set_are_left_out_and_the_others_used() {
    let good = TestKey::ed25519("good");
    let mut private = TestKey::p256("private").jwk;
    private["d"] = json!("c2VjcmV0");
    let mut no_kid = TestKey::ed25519("x").jwk;
    no_kid.as_object_mut().map(|k| k.remove("kid"));
    let mut wrong_alg = TestKey::rsa("ps").jwk;
    wrong_alg["alg"] = json!("PS256");
    let mut for_encryption = TestKey::p256("enc").jwk;
    for_encryption["use"] = json!("enc");
    let set = json!({"keys": [
        good.jwk, private, no_kid, wrong_alg, for_encryption,
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA"},
        {"kty": "weird", "kid": "weird"},
    ]});
    let auth = Setup::new().jwks(&set.to_string()).authenticator();
    assert!(authenticate(&auth, &good.sign(&claims("ann"))).is_ok());
    assert!(
        format!("{auth:?}").contains("jwks_keys: Some(1)"),
        "{auth:?}"
    );
}

#[test]
fn two_keys_with_one_kid_are_refused() {
    let set = jwks(&[&TestKey::ed25519("k"), &TestKey::ed25519("k")]);
    let err = Authenticator::new(&Setup::new().jwks(&set).config).expect_err("ambiguous");
    assert!(err.to_string().contains("two keys with kid `k`"), "{err}");
}

#[test]
fn debug_output_shows_no_key_material() {
    let secret = b"0123456789abcdef0123456789abcdef-secret".to_vec();
    let auth = Setup::new().hmac(&secret).authenticator();
    let debug = format!("{auth:?}");
    assert!(!debug.contains("0123456789abcdef"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn mode_none_lets_every_caller_do_everything() {
    let auth = Authenticator::new(&AuthConfig {
        mode: Mode::None,
        ..AuthConfig::default()
    })
    .expect("needs no key");
    for header in [None, Some("Bearer whatever"), Some("garbage")] {
        let caller = auth.authenticate(header).expect("unchecked");
        assert!(matches!(caller, Caller::Unchecked));
        assert_eq!(caller.authorize("any", Operation::Write), Ok(()));
        assert_eq!(caller.authorize_every_room_read(), Ok(()));
    }
}
