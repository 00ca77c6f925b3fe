//! Where things are on disk: the workspace, the binaries it builds, and the
//! `nats-server` to run.

use std::path::{Path, PathBuf};

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
