//! The `auth` section of a service's configuration: how tokens are checked
//! (`auth.mode`, `auth.jwt.*`) and what callers get besides their token's
//! grants (`auth.authenticated`, `auth.anonymous`).
//!
//! The structs hold paths and settings, never key material, so `Debug`
//! and `Serialize` are safe to print.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::grant::Grant;

/// The most leeway accepted: leeway is for clock skew, and more than this
/// would keep expired tokens alive.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60 * 60);

/// Whether tokens are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Tokens are JWTs checked against `auth.jwt`; callers without one get
    /// `auth.anonymous`.
    #[default]
    Jwt,
    /// Nothing is checked and every caller may do everything: for
    /// development only (the service warns at start-up).
    None,
}

/// `auth`: how callers are authenticated and what they may do.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `jwt` (default) or `none` (development only).
    pub mode: Mode,
    /// How tokens are verified.
    pub jwt: JwtConfig,
    /// Grants for every caller with a valid token, consulted after the
    /// token's own (where none of the token's grants matches the room).
    pub authenticated: Vec<Grant>,
    /// Everything a caller without a token may do (default: nothing).
    pub anonymous: Vec<Grant>,
}

/// `auth.jwt`: the keys and the claims checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// A file whose bytes are the HS256/HS384/HS512 key (one trailing
    /// newline, `\n` or `\r\n`, is not part of it). At least 32 bytes.
    pub hmac_secret_file: Option<PathBuf>,
    /// A JWK set (`{"keys": [...]}`) with RS256, ES256 (P-256) and EdDSA
    /// (Ed25519) public keys, chosen by the token's `kid`. Re-read when it
    /// changes, so keys rotate without a restart.
    pub jwks_file: Option<PathBuf>,
    /// When set, a token's `iss` must be exactly this.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must be or contain this.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The claim that is the caller's identity (a non-empty string).
    pub user_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hmac_secret_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            user_claim: "sub".to_owned(),
        }
    }
}

impl AuthConfig {
    /// Checks what can be checked without reading the key files
    /// ([`Authenticator::new`](crate::Authenticator::new) reads them).
    ///
    /// # Errors
    /// A one-line reason naming the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        let jwt = &self.jwt;
        if self.mode == Mode::Jwt && jwt.hmac_secret_file.is_none() && jwt.jwks_file.is_none() {
            return Err("auth.mode is `jwt` but no key is configured: set \
                 auth.jwt.hmac_secret_file and/or auth.jwt.jwks_file (or auth.mode = \
                 \"none\", for development only)"
                .into());
        }
        for (key, path) in [
            ("auth.jwt.hmac_secret_file", &jwt.hmac_secret_file),
            ("auth.jwt.jwks_file", &jwt.jwks_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(format!("{key} is empty: name a file, or remove the key"));
            }
        }
        for (key, value) in [
            ("auth.jwt.issuer", &jwt.issuer),
            ("auth.jwt.audience", &jwt.audience),
        ] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!(
                    "{key} is empty: remove it (not checked) or set the expected value"
                ));
            }
        }
        if jwt.leeway > MAX_LEEWAY {
            return Err(format!(
                "auth.jwt.leeway is {}; at most {} is allowed (it is for clock skew)",
                humantime_serde::re::humantime::format_duration(jwt.leeway),
                humantime_serde::re::humantime::format_duration(MAX_LEEWAY)
            ));
        }
        if jwt.user_claim.trim().is_empty() {
            return Err(
                "auth.jwt.user_claim is empty: name the claim that holds the \
                 caller's identity (default `sub`)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::Operation;

    fn with_secret() -> AuthConfig {
        AuthConfig {
            jwt: JwtConfig {
                hmac_secret_file: Some("/run/secrets/jwt".into()),
                ..JwtConfig::default()
            },
            ..AuthConfig::default()
        }
    }

    #[test]
    fn the_defaults_need_a_key() {
        let config = AuthConfig::default();
        assert_eq!(config.mode, Mode::Jwt);
        assert_eq!(config.jwt.leeway, Duration::from_secs(30));
        assert_eq!(config.jwt.user_claim, "sub");
        let reason = config.validate().expect_err("no key");
        assert!(reason.contains("auth.jwt.hmac_secret_file"), "{reason}");
        assert!(reason.contains("auth.jwt.jwks_file"), "{reason}");
        assert!(!reason.contains('\n'));
        assert_eq!(with_secret().validate(), Ok(()));
    }

    #[test]
    fn mode_none_needs_no_key() {
        let config = AuthConfig {
            mode: Mode::None,
            ..AuthConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_named() {
        let mut config = with_secret();
        config.jwt.issuer = Some(" ".into());
        assert!(
            config
                .validate()
                .is_err_and(|r| r.starts_with("auth.jwt.issuer"))
        );
        let mut config = with_secret();
        config.jwt.user_claim = String::new();
        assert!(
            config
                .validate()
                .is_err_and(|r| r.starts_with("auth.jwt.user_claim"))
        );
        let mut config = with_secret();
        config.jwt.leeway = Duration::from_secs(2 * 60 * 60);
        assert!(
            config
                .validate()
                .is_err_and(|r| r.starts_with("auth.jwt.leeway"))
        );
        let mut config = with_secret();
        config.jwt.jwks_file = Some(PathBuf::new());
        assert!(
            config
                .validate()
                .is_err_and(|r| r.starts_with("auth.jwt.jwks_file"))
        );
    }

    #[test]
    fn the_section_reads_from_json_with_human_durations_and_refuses_unknown_keys() {
        let config: AuthConfig = serde_json::from_str(
            r#"{
                "jwt": {"jwks_file": "/etc/fastchat/jwks.json", "leeway": "1m", "issuer": "https://id.example"},
                "authenticated": [{"rooms": ["general"], "allow": ["read", "write"]}],
                "anonymous": [{"rooms": ["lobby"], "allow": ["read"]}]
            }"#,
        )
        .expect("valid");
        assert_eq!(config.jwt.leeway, Duration::from_secs(60));
        assert_eq!(config.jwt.user_claim, "sub");
        assert_eq!(config.anonymous[0].allow, vec![Operation::Read]);
        assert_eq!(config.validate(), Ok(()));
        let round_trip: AuthConfig =
            serde_json::from_value(serde_json::to_value(&config).expect("serializes"))
                .expect("deserializes");
        assert_eq!(round_trip, config);

        assert!(serde_json::from_str::<AuthConfig>(r#"{"jwt": {"secret": "x"}}"#).is_err());
        assert!(serde_json::from_str::<AuthConfig>(r#"{"mode": "basic"}"#).is_err());
        let none: AuthConfig = serde_json::from_str(r#"{"mode": "none"}"#).expect("valid");
        assert_eq!(none.mode, Mode::None);
    }
}
