//! Key rotation: `auth.jwt.jwks_file` is re-read when it changes, while
//! the service runs, and a file that cannot be used keeps the keys in use.
//! These tests wait on real time (the file is looked at once a second).

mod support;

use std::fs;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use fastchat_auth::{AuthError, Authenticator, InvalidToken};
use support::{Setup, TestKey, authenticate, claims, jwks};

/// How long a key written to the file may take to be usable.
const WITHIN: Duration = Duration::from_millis(1500);

/// Authenticates `token` every 20 ms until it passes or `limit` has gone
/// by; returns how long it took.
fn usable_within(auth: &Authenticator, token: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= limit {
        if authenticate(auth, token).is_ok() {
            return Some(start.elapsed());
        }
        sleep(Duration::from_millis(20));
    }
    None
}

/// Writes the file as a new one renamed over the old, as Kubernetes and
/// careful tools do.
fn replace(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).expect("writes");
    fs::rename(&tmp, path).expect("renames");
}

#[test]
fn a_key_added_to_the_file_is_usable_within_a_second_and_a_half() {
    let old = TestKey::ed25519("old");
    let setup = Setup::new().jwks(&jwks(&[&old]));
    let auth = setup.authenticator();
    let new = TestKey::p256("new");
    let token = new.sign(&claims("ann"));
    assert_eq!(
        authenticate(&auth, &token).map(|_| ()),
        Err(AuthError::TokenInvalid(InvalidToken::UnknownKey(
            "new".into()
        )))
    );
    // Rewritten in place.
    fs::write(setup.jwks_path(), jwks(&[&old, &new])).expect("writes");
    let took = usable_within(&auth, &token, WITHIN).expect("the new key is used");
    assert!(authenticate(&auth, &old.sign(&claims("ann"))).is_ok());

    // Replaced by a rename, and the old key dropped.
    let newer = TestKey::rsa("newer");
    let token = newer.sign(&claims("ann"));
    replace(&setup.jwks_path(), &jwks(&[&newer]));
    let took_again = usable_within(&auth, &token, WITHIN).expect("the newer key is used");
    assert_eq!(
        authenticate(&auth, &old.sign(&claims("ann"))).map(|_| ()),
        Err(AuthError::TokenInvalid(InvalidToken::UnknownKey(
            "old".into()
        ))),
        "a key removed from the file is no longer accepted"
    );
    assert_eq!(auth.jwks_problem(), None);
    eprintln!("usable after {took:?} and {took_again:?}");
}

#[test]
fn a_file_rewritten_twice_in_a_moment_ends_with_its_last_version() {
    // Two versions of the same length written within a millisecond may
    // share a modification time; the last one must still win.
    let first = TestKey::ed25519("key-a");
    let setup = Setup::new().jwks(&jwks(&[&first]));
    let auth = setup.authenticator();
    let (b, c) = (TestKey::ed25519("key-b"), TestKey::ed25519("key-c"));
    // Let the service look at the file between the two writes sometimes.
    sleep(Duration::from_millis(990));
    assert!(authenticate(&auth, &first.sign(&claims("ann"))).is_ok());
    fs::write(setup.jwks_path(), jwks(&[&b])).expect("writes");
    fs::write(setup.jwks_path(), jwks(&[&c])).expect("writes");
    let token = c.sign(&claims("ann"));
    usable_within(&auth, &token, Duration::from_millis(3500)).expect("the last version is used");
}

/// Log output captured from one thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

#[test]
fn a_broken_file_keeps_the_old_keys_and_is_reported_once() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let key = TestKey::ed25519("key-1");
    let setup = Setup::new().jwks(&jwks(&[&key]));
    let auth = setup.authenticator();
    let token = key.sign(&claims("ann"));

    fs::write(setup.jwks_path(), "{\"keys\": [").expect("writes");
    // Verify for 2.5 s: the file is looked at (and, while its change is
    // recent, read again) more than twice.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        assert!(
            authenticate(&auth, &token).is_ok(),
            "the old key still works"
        );
        sleep(Duration::from_millis(20));
    }
    let problem = auth.jwks_problem().expect("the problem is known");
    assert!(problem.starts_with("auth.jwt.jwks_file `"), "{problem}");
    assert!(problem.contains("is not a JWK set"), "{problem}");
    let text = logs.text();
    assert_eq!(
        text.matches("cannot be used; the keys loaded before stay in use")
            .count(),
        1,
        "{text}"
    );

    // Gone altogether: still the old keys, one more report.
    fs::remove_file(setup.jwks_path()).expect("removes");
    sleep(Duration::from_millis(1100));
    assert!(authenticate(&auth, &token).is_ok());
    assert!(
        auth.jwks_problem()
            .is_some_and(|p| p.contains("cannot be read")),
        "{:?}",
        auth.jwks_problem()
    );

    // Fixed: the new version is used and the problem is gone.
    let next = TestKey::ed25519("key-2");
    fs::write(setup.jwks_path(), jwks(&[&next])).expect("writes");
    usable_within(&auth, &next.sign(&claims("ann")), WITHIN).expect("the fixed file is used");
    assert_eq!(auth.jwks_problem(), None);
    let text = logs.text();
    assert_eq!(
        text.matches("cannot be used; the keys loaded before stay in use")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("changed; its keys are in use"), "{text}");
}
