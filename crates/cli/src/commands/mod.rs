//! One module per subcommand; each takes its parsed arguments, the shared
//! [`Context`] and a [`Printer`](crate::output::Printer), and returns a
//! [`CliError`] for `main` to report.

pub mod health;
pub mod history;
pub mod send;
pub mod tail;
pub mod token;

use std::{fs, time::Duration};

use tonic::{Request, Status, transport::Channel};

use crate::{
    addr::{ServiceAddr, Target},
    args::Cli,
    connect::{self, Bearer, TOKEN_ENV, Tls, Use},
    error::{CliError, ErrorKind, Unreachable, code_name},
    output::Format,
};

/// What every command needs besides its own arguments.
#[derive(Debug, Clone)]
pub struct Context {
    /// send-service address.
    pub send_addr: ServiceAddr,
    /// all-messages-service address.
    pub all_addr: ServiceAddr,
    /// Bound on connecting and on each request/answer call.
    pub timeout: Duration,
    /// Text or JSON lines.
    pub format: Format,
    /// How `https://` addresses are secured.
    pub tls: Tls,
    /// The token calls carry, if one was given.
    pub bearer: Option<Bearer>,
}

impl Context {
    /// The context `cli` describes: its TLS files read and, when
    /// `with_token`, its token (from `--token-file`, `--token` or
    /// `FASTCHAT_TOKEN`).
    ///
    /// # Errors
    /// [`ErrorKind::Usage`]: a file cannot be read or used, the token is
    /// empty or not one, or both `--token` and `--token-file` were given.
    pub fn new(cli: &Cli, with_token: bool) -> Result<Self, CliError> {
        let tls = Tls::load(
            cli.ca_file.as_deref(),
            cli.cert_file.as_deref(),
            cli.key_file.as_deref(),
        )?;
        let bearer = if with_token { bearer(cli)? } else { None };
        Ok(Self {
            send_addr: cli.send_addr.clone(),
            all_addr: cli.all_addr.clone(),
            timeout: cli.timeout,
            format: if cli.json {
                Format::Json
            } else {
                Format::Human
            },
            tls,
            bearer,
        })
    }

    /// The address of `target`.
    #[must_use]
    pub fn addr(&self, target: Target) -> &ServiceAddr {
        match target {
            Target::Send => &self.send_addr,
            Target::All => &self.all_addr,
        }
    }

    /// Connects to `target` at its address.
    ///
    /// # Errors
    /// As [`connect::connect`].
    pub async fn connect(&self, target: Target, usage: Use) -> Result<Channel, Unreachable> {
        connect::connect(target, self.addr(target), self.timeout, usage, &self.tls).await
    }

    /// The error for a call to `target` that failed with `status`: as
    /// [`CliError::status`] words it, unless how the connection is secured
    /// is the likely cause (a server that wants a client certificate accepts
    /// the TLS 1.3 handshake, then closes the connection, which the call
    /// sees as `CANCELLED` or `UNKNOWN`): then a service unavailable to us,
    /// with advice.
    #[must_use]
    pub fn status_error(&self, target: Target, status: &Status) -> CliError {
        let addr = self.addr(target);
        match self.tls.call_hint(addr, status) {
            Some(hint) => CliError::new(
                ErrorKind::Unavailable,
                format!(
                    "{target} at {addr} ended the call over TLS ({}: {})",
                    code_name(status.code()),
                    status.message()
                ),
            )
            .with_hint(&hint),
            None => CliError::status(target, addr, status),
        }
    }

    /// `message` as a request with the token, if there is one.
    pub fn request<T>(&self, message: T) -> Request<T> {
        connect::request(message, self.bearer.as_ref())
    }

    /// `error` with the token, should a server have quoted it, redacted.
    #[must_use]
    pub fn redact(&self, error: CliError) -> CliError {
        match &self.bearer {
            Some(bearer) => error.redact(bearer.secret()),
            None => error,
        }
    }
}

/// The token `cli` gives: `--token-file` wins over `FASTCHAT_TOKEN`; with
/// `--token` it is a usage error.
fn bearer(cli: &Cli) -> Result<Option<Bearer>, CliError> {
    match (&cli.token, &cli.token_file) {
        (Some(_), Some(_)) if !cli.token_from_env => Err(CliError::new(
            ErrorKind::Usage,
            "--token and --token-file exclude each other: give one",
        )),
        (_, Some(path)) => {
            let token = fs::read_to_string(path).map_err(|e| {
                CliError::new(
                    ErrorKind::Usage,
                    format!("--token-file: cannot read {}: {e}", path.display()),
                )
            })?;
            let from = format!("--token-file {}", path.display());
            Bearer::new(&token, &from).map(Some)
        }
        (Some(token), None) => {
            let from = if cli.token_from_env {
                TOKEN_ENV
            } else {
                "--token"
            };
            Bearer::new(&token.0, from).map(Some)
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser as _};

    fn context(args: &[&str]) -> Result<Context, CliError> {
        Context::new(&Cli::try_parse_from(args).expect("parses"), true)
    }

    #[test]
    fn the_token_comes_from_the_flag_or_a_file_never_both() {
        let ctx = context(&["fastchat", "--token", "abc", "health"]).expect("token");
        let header = ctx.request(()).metadata().get("authorization").cloned();
        assert_eq!(
            header.as_ref().and_then(|h| h.to_str().ok()),
            Some("Bearer abc")
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("token");
        fs::write(&file, "from.the.file\n").expect("write");
        let file = file.to_str().expect("utf-8 path");
        let ctx = context(&["fastchat", "history", "--room", "a", "--token-file", file])
            .expect("token file");
        let header = ctx.request(()).metadata().get("authorization").cloned();
        assert_eq!(
            header.as_ref().and_then(|h| h.to_str().ok()),
            Some("Bearer from.the.file")
        );

        let e = context(&["fastchat", "--token", "abc", "--token-file", file, "health"])
            .expect_err("both");
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(e.to_string().contains("exclude each other"), "{e}");
        assert!(!e.to_string().contains("abc"), "{e}");

        // From the environment, a --token-file on the command line wins.
        let mut cli =
            Cli::try_parse_from(["fastchat", "--token", "env", "--token-file", file, "health"])
                .expect("parses");
        cli.token_from_env = true;
        let ctx = Context::new(&cli, true).expect("file wins");
        let header = ctx.request(()).metadata().get("authorization").cloned();
        assert_eq!(
            header.as_ref().and_then(|h| h.to_str().ok()),
            Some("Bearer from.the.file")
        );

        let missing = dir.path().join("missing");
        let e = context(&[
            "fastchat",
            "--token-file",
            missing.to_str().expect("utf-8"),
            "health",
        ])
        .expect_err("missing");
        assert!(
            e.to_string().starts_with("--token-file: cannot read "),
            "{e}"
        );

        let ctx = context(&["fastchat", "health"]).expect("no token");
        assert!(ctx.request(()).metadata().is_empty());
    }

    #[test]
    fn a_token_on_the_command_line_is_known_as_such() {
        let matches = Cli::command()
            .try_get_matches_from(["fastchat", "send", "hi", "--token", "abc"])
            .expect("parses");
        let cli = Cli::from_matches(&matches).expect("a cli");
        assert!(!cli.token_from_env);
        assert!(cli.token.is_some());
        assert!(!format!("{cli:?}").contains("abc"), "{cli:?}");
    }

    #[test]
    fn health_needs_no_token() {
        let cli =
            Cli::try_parse_from(["fastchat", "--token", "two words", "health"]).expect("parses");
        assert!(
            Context::new(&cli, false)
                .expect("not read")
                .bearer
                .is_none()
        );
        assert!(Context::new(&cli, true).is_err());
    }

    #[test]
    fn errors_quoting_the_token_are_redacted() {
        let ctx = context(&["fastchat", "--token", "s3cr3t", "health"]).expect("token");
        let e = ctx.redact(CliError::new(ErrorKind::Denied, "bad token s3cr3t"));
        assert_eq!(e.to_string(), "bad token <redacted>");
        assert_eq!(e.kind(), ErrorKind::Denied);
    }
}
