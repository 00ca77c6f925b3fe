//! Where things are on disk: the workspace, the binaries it builds, and the
//! `nats-server` to run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root, so tests can find checked-in files (e.g. the deployed
/// `auth.conf`) and tools wherever cargo runs them from.
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support is two levels below the workspace root")
        .to_path_buf()
}

/// Path of a binary of this workspace built for the running test's profile
/// (`target/<profile>/<name>`), found next to the test executable, so an
/// end-to-end test runs the very build cargo just made.
#[must_use]
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is not built; run the tests through `make test` (cargo builds the workspace binaries \
         first)",
        bin.display()
    );
    bin
}

/// Path of the nats-server binary to use: `$NATS_SERVER_BIN`, else the one
/// `make test` installs at `target/tools/nats/bin/nats-server`, else
/// `nats-server` on `PATH` (see the crate docs), so every test runs the same
/// pinned server unless told otherwise.
#[must_use]
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let local = workspace_root().join("target/tools/nats/bin/nats-server");
    if local.is_file() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// Checks, once per process, that [`nats_server_bin`] is at least the
/// `major.minor` pinned in `deploy/nats-version`: the tests rely on what the
/// pinned server does and logs (e.g. how a permissions violation names the
/// user), and an older server on `PATH` (Debian ships 2.9) would fail them
/// in ways that look like bugs.
///
/// # Errors
/// Names the binary found, its version and how to get the pinned one.
pub fn check_nats_server_version() -> Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED.get_or_init(check_version).clone()
}

fn check_version() -> Result<(), String> {
    let bin = nats_server_bin();
    let pinned_file = workspace_root().join("deploy/nats-version");
    let pinned = std::fs::read_to_string(&pinned_file)
        .map_err(|e| format!("read {}: {e}", pinned_file.display()))?;
    let pinned = pinned.trim();
    let output = Command::new(&bin).arg("--version").output().map_err(|e| {
        format!(
            "cannot run {} ({e}); run `make setup` (or `make test`), which installs nats-server \
             {pinned} under target/tools, or set NATS_SERVER_BIN",
            bin.display()
        )
    })?;
    // "nats-server: v2.15.1"
    let text = String::from_utf8_lossy(&output.stdout);
    let found = text.trim().rsplit(['v', ' ']).next().unwrap_or_default();
    if major_minor(found) < major_minor(pinned) {
        return Err(format!(
            "{} is nats-server {found}, older than the {pinned} the tests are written against \
             (deploy/nats-version); run `make setup` (or `make test`), which installs it under \
             target/tools, or set NATS_SERVER_BIN",
            bin.display()
        ));
    }
    Ok(())
}

fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::major_minor;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert!(major_minor("2.9.20") < major_minor("2.15.1"));
        assert_eq!(major_minor("2.15.0"), major_minor("2.15.1"));
        assert!(major_minor("3.0.0") > major_minor("2.15.1"));
        assert_eq!(major_minor("garbage"), (0, 0));
    }
}
