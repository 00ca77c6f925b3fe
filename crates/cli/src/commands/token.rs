//! `fastchat token`: a development token (HS256), signed with the service's
//! HMAC secret, printed alone on stdout so that
//! `export FASTCHAT_TOKEN=$(fastchat token …)` works.
//!
//! The secret is read with [`fastchat_auth::read_hmac_secret`], the
//! service's own reading of `auth.jwt.hmac_secret_file`, and the token made
//! by [`fastchat_auth::mint_hs256_at`], so the service accepts what this
//! prints. A note on stderr says what the token is and that it is for
//! development: whoever can read the secret file can sign any token.

use std::{io::Write, time::SystemTime};

use fastchat_auth::{ConfigError, MintClaims, MintError, format_grants, mint_hs256_at};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    args::TokenArgs,
    error::{CliError, ErrorKind},
    output::Printer,
};

/// The claims `args` ask for.
#[must_use]
pub fn claims(args: &TokenArgs) -> MintClaims {
    let mut claims = MintClaims::new(args.sub.clone(), args.ttl);
    claims.user_claim.clone_from(&args.user_claim);
    claims.rooms = args.rooms.clone().map(|g| g.0).unwrap_or_default();
    claims.issuer.clone_from(&args.issuer);
    claims.audience.clone_from(&args.audience);
    claims
}

/// Prints a token for `args`, and the note about it on stderr.
///
/// # Errors
/// [`ErrorKind::Usage`]: the secret file cannot be read or is too short, an
/// empty `--sub` or `--user-claim`, a zero `--ttl`; writing failed.
pub fn run<W: Write>(args: &TokenArgs, out: &mut Printer<W>) -> Result<(), CliError> {
    let secret = fastchat_auth::read_hmac_secret(&args.secret_file).map_err(secret_error)?;
    let claims = claims(args);
    let now = SystemTime::now();
    let token = mint_hs256_at(&secret, &claims, now).map_err(mint_error)?;
    out.token(&token)?;
    eprintln!("fastchat: {}", note(args, &claims, now));
    Ok(())
}

/// The note for stderr: who the token is for, what it grants, until when,
/// and that it is for development only.
#[must_use]
pub fn note(args: &TokenArgs, claims: &MintClaims, now: SystemTime) -> String {
    // As mint_hs256_at computes `exp`: whole seconds, the lifetime rounded up.
    let iat = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ttl = claims.ttl.as_secs() + u64::from(claims.ttl.subsec_nanos() > 0);
    let exp = i64::try_from(iat.saturating_add(ttl)).unwrap_or(i64::MAX);
    let until = OffsetDateTime::from_unix_timestamp(exp)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{exp} (Unix time)"));
    let rooms = if claims.rooms.is_empty() {
        "no rooms claim (the service's auth.authenticated grants apply)".to_owned()
    } else {
        format!("rooms {}", format_grants(&claims.rooms))
    };
    format!(
        "development token for {}={} with {rooms}, valid until {until}. For development \
         only: anyone who can read {} can sign any token; production tokens come from an \
         identity provider",
        claims.user_claim,
        claims.identity,
        args.secret_file.display()
    )
}

fn secret_error(e: ConfigError) -> CliError {
    let message = match e {
        ConfigError::Read { path, source, .. } => {
            format!("--secret-file: cannot read {}: {source}", path.display())
        }
        ConfigError::Unusable { path, problem, .. } => {
            format!("--secret-file: {} {problem}", path.display())
        }
        other => format!("--secret-file: {other}"),
    };
    CliError::new(ErrorKind::Usage, message)
}

fn mint_error(e: MintError) -> CliError {
    let message = match e {
        MintError::NoIdentity => "--sub and --user-claim must not be empty".to_owned(),
        MintError::ZeroTtl => "--ttl must be above zero".to_owned(),
        other => other.to_string(),
    };
    CliError::new(ErrorKind::Usage, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser as _;
    use std::time::Duration;

    fn args(extra: &[&str]) -> TokenArgs {
        let mut argv = vec!["fastchat", "token", "--secret-file", "/k", "--sub", "ann"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Token(args) => args,
            other => panic!("token expected, got {other:?}"),
        }
    }

    #[test]
    fn claims_are_what_the_flags_say() {
        let claims = claims(&args(&[]));
        assert_eq!(claims, MintClaims::new("ann", Duration::from_secs(3600)));

        let claims = claims_of(&[
            "--rooms",
            "general,team-*=read,write;*=read",
            "--ttl",
            "90m",
            "--issuer",
            "dev",
            "--audience",
            "fastchat",
            "--user-claim",
            "preferred_username",
        ]);
        assert_eq!(claims.ttl, Duration::from_secs(90 * 60));
        assert_eq!(claims.user_claim, "preferred_username");
        assert_eq!(claims.issuer.as_deref(), Some("dev"));
        assert_eq!(claims.audience.as_deref(), Some("fastchat"));
        assert_eq!(
            format_grants(&claims.rooms),
            "general,team-*=read,write;*=read"
        );
    }

    fn claims_of(extra: &[&str]) -> MintClaims {
        claims(&args(extra))
    }

    #[test]
    fn bad_grants_are_usage_errors_naming_the_grant() {
        let argv = [
            "fastchat",
            "token",
            "--secret-file",
            "/k",
            "--sub",
            "ann",
            "--rooms",
            "general=read;oops",
        ];
        let e = Cli::try_parse_from(argv).expect_err("bad grant");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("grant 2"), "{e}");
        let missing =
            Cli::try_parse_from(["fastchat", "token", "--sub", "ann"]).expect_err("no secret file");
        assert_eq!(
            missing.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn the_note_says_who_until_when_and_that_it_is_for_development() {
        let args = args(&["--rooms", "dev=read", "--ttl", "1500ms"]);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let note = note(&args, &claims(&args), now);
        assert!(
            note.starts_with("development token for sub=ann with rooms dev=read"),
            "{note}"
        );
        // 1.5 s is rounded up to 2 s, as in the token's `exp`.
        assert!(note.contains("valid until 2023-11-14T22:13:22Z"), "{note}");
        assert!(
            note.contains("anyone who can read /k can sign any token"),
            "{note}"
        );

        let args = self::args(&[]);
        let note = super::note(&args, &claims(&args), now);
        assert!(note.contains("no rooms claim"), "{note}");
    }

    #[test]
    fn minting_errors_name_the_flags() {
        assert_eq!(
            mint_error(MintError::ZeroTtl).to_string(),
            "--ttl must be above zero"
        );
        assert_eq!(mint_error(MintError::NoIdentity).kind(), ErrorKind::Usage);
        let e = secret_error(
            fastchat_auth::read_hmac_secret(std::path::Path::new("/nonexistent/hmac.key"))
                .expect_err("missing"),
        );
        assert!(
            e.to_string()
                .starts_with("--secret-file: cannot read /nonexistent/hmac.key: "),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
    }
}
