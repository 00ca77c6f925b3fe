//! The verification keys: the HMAC secret (`auth.jwt.hmac_secret_file`) and
//! the public keys of a JWK set (`auth.jwt.jwks_file`), which is re-read
//! when it changes.
//!
//! Reload happens on the verify path, not on a watcher thread: when a token
//! needs a JWKS key and a second has passed since the last look, one caller
//! `stat`s the file (the others go on with the keys they have), and reads and
//! parses it only if it changed. Nothing runs in the background, nothing
//! needs shutting down, and a key added to the file is used within about a
//! second of the next token that needs it. A file that cannot be used (being
//! written, deleted, broken) leaves the keys in use as they were; each
//! distinct problem is logged once, and [`JwksFile::problem`] tells it.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::error::ConfigError;

/// The shortest HMAC secret accepted, in bytes: RFC 7518 §3.2 requires a key
/// at least as long as the hash (256 bits for HS256).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// How often, at most, the JWK set file is looked at.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A file changed this recently may still change within the same timestamp
/// tick, so it is read again at the next look until it has been still for
/// this long.
const SETTLE: Duration = Duration::from_secs(2);

const HMAC_KEY: &str = "auth.jwt.hmac_secret_file";
const JWKS_KEY: &str = "auth.jwt.jwks_file";

/// Reads an HMAC secret as `auth.jwt.hmac_secret_file` takes it: the file's
/// bytes as they are, less one trailing newline (`\n` or `\r\n`). The CLI
/// reads the secret it mints development tokens with through this too, so
/// both agree on the key.
///
/// # Errors
/// [`ConfigError`] naming the key and the file if it cannot be read or is
/// shorter than [`MIN_HMAC_SECRET_LEN`].
pub fn read_hmac_secret(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut secret = fs::read(path).map_err(|source| ConfigError::Read {
        key: HMAC_KEY,
        path: path.to_owned(),
        source,
    })?;
    if secret.ends_with(b"\r\n") {
        secret.truncate(secret.len() - 2);
    } else if secret.ends_with(b"\n") {
        secret.truncate(secret.len() - 1);
    }
    if secret.len() < MIN_HMAC_SECRET_LEN {
        return Err(ConfigError::Unusable {
            key: HMAC_KEY,
            path: path.to_owned(),
            problem: format!(
                "holds {} bytes; an HMAC key needs at least {MIN_HMAC_SECRET_LEN} \
                 (e.g. `openssl rand -base64 48 > FILE`)",
                secret.len()
            ),
        });
    }
    Ok(secret)
}

/// The asymmetric algorithms a JWK set key can be for; each key is for
/// exactly one, and a token must name that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublicAlg {
    Rs256,
    Es256,
    EdDsa,
}

impl PublicAlg {
    pub(crate) const ALL: [Self; 3] = [Self::Rs256, Self::Es256, Self::EdDsa];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub(crate) fn algorithm(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }
}

/// One key of the set.
pub(crate) struct PublicKey {
    pub(crate) alg: PublicAlg,
    pub(crate) key: DecodingKey,
}

/// The usable keys of one version of the file, by `kid`.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, Arc<PublicKey>>,
}

/// A parsed file: its usable keys, and why others were left out.
struct Parsed {
    set: KeySet,
    skipped: Vec<String>,
}

/// Reads a JWK set. Keys this service cannot use (another algorithm or
/// curve, no `kid`, for encryption, symmetric, with private parts) are left
/// out and listed; a file with no usable key, or with two usable keys of
/// one `kid`, is refused.
fn parse_jwks(bytes: &[u8]) -> Result<Parsed, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let raw: RawSet = serde_json::from_slice(bytes)
        .map_err(|e| format!("is not a JWK set (a JSON object with `keys`): {e}"))?;
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    for (i, value) in raw.keys.iter().enumerate() {
        let kid = value.get("kid").and_then(Value::as_str);
        let name = match kid {
            Some(kid) => format!("key `{}`", crate::error::Shown(kid)),
            None => format!("key {}", i + 1),
        };
        match public_key(value) {
            Ok(key) => {
                let Some(kid) = kid else {
                    skipped.push(format!("{name} has no `kid`, so no token can name it"));
                    continue;
                };
                if set.keys.insert(kid.to_owned(), Arc::new(key)).is_some() {
                    return Err(format!(
                        "has two keys with kid `{}`",
                        crate::error::Shown(kid)
                    ));
                }
            }
            Err(why) => skipped.push(format!("{name} {why}")),
        }
    }
    if set.keys.is_empty() {
        let mut problem =
            "holds no usable key (RS256, ES256 on P-256 or EdDSA on Ed25519, with a `kid`)"
                .to_owned();
        if !skipped.is_empty() {
            problem.push_str(": ");
            problem.push_str(&skipped.join("; "));
        }
        return Err(problem);
    }
    Ok(Parsed { set, skipped })
}

/// One JWK as a verification key, or why it is not one.
fn public_key(value: &Value) -> Result<PublicKey, String> {
    if value.get("d").is_some() {
        return Err("holds private key material (`d`); the file must hold public keys only".into());
    }
    let jwk: Jwk =
        serde_json::from_value(value.clone()).map_err(|e| format!("is not a JWK: {e}"))?;
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Err("is for encryption (`use`: `enc`)".into());
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("does not allow `verify` in its `key_ops`".into());
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            // Leading zero bytes do not count towards the size.
            let n = decoded("n", &rsa.n)?
                .iter()
                .skip_while(|&&b| b == 0)
                .count();
            if !(256..=512).contains(&n) {
                return Err(format!(
                    "is an RSA key of {} bits; 2048 to 4096 are accepted",
                    n * 8
                ));
            }
            let e = decoded("e", &rsa.e)?
                .iter()
                .skip_while(|&&b| b == 0)
                .count();
            if !(1..=8).contains(&e) {
                return Err("has an RSA exponent (`e`) of an unusable size".into());
            }
            PublicAlg::Rs256
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            if decoded("x", &ec.x)?.len() != 32 || decoded("y", &ec.y)?.len() != 32 {
                return Err("is not a P-256 point (`x` and `y` are 32 bytes each)".into());
            }
            PublicAlg::Es256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            if decoded("x", &okp.x)?.len() != 32 {
                return Err("is not an Ed25519 key (`x` is 32 bytes)".into());
            }
            PublicAlg::EdDsa
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(format!(
                "is a symmetric key (`oct`), which a JWK set of public keys must not \
                 hold; an HMAC secret goes in {HMAC_KEY}"
            ));
        }
        _ => {
            return Err(
                "is of a kind this service does not verify with (it takes RSA, \
                 EC P-256 and OKP Ed25519 keys)"
                    .into(),
            );
        }
    };
    if let Some(stated) = jwk.common.key_algorithm {
        let stated = stated.to_string();
        if stated != alg.name() {
            return Err(format!(
                "says `alg` {stated}; this service takes {} for such a key",
                alg.name()
            ));
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("cannot be used: {e}"))?;
    // Build a verifier once, so that a key that is not a valid point (EC,
    // Ed25519) is refused here rather than failing every token later.
    let provider = jsonwebtoken::crypto::CryptoProvider::try_get_default()
        .ok_or("cannot be checked: no crypto provider")?;
    (provider.verifier_factory)(&alg.algorithm(), &key)
        .map_err(|e| format!("is not a valid {} public key: {e}", alg.name()))?;
    Ok(PublicKey { alg, key })
}

fn decoded(field: &str, value: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("has a `{field}` that is not base64url without padding"))
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    /// Device, inode, change time: a file replaced by a rename (how
    /// Kubernetes updates a mounted ConfigMap or Secret) or rewritten with
    /// its modification time set back still looks different.
    #[cfg(unix)]
    identity: (u64, u64, i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            identity: (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file changed so recently that it may change again
    /// without its stamp changing.
    fn is_settled(&self, now: SystemTime) -> bool {
        self.modified
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age >= SETTLE)
    }
}

/// What the last look at the file found.
#[derive(Default)]
struct Seen {
    stamp: Option<Stamp>,
    /// The content last parsed, and whether it was usable.
    content: Option<(Vec<u8>, bool)>,
    /// Why the file's current state is not in use, as last logged.
    problem: Option<String>,
}

/// The JWK set file and the keys from its last usable version.
pub(crate) struct JwksFile {
    path: PathBuf,
    keys: RwLock<Arc<KeySet>>,
    created: Instant,
    /// Milliseconds after `created` before which nobody looks at the file.
    next_look_ms: AtomicU64,
    /// Held by the one caller looking at the file; `try_lock`ed, so no
    /// verification ever waits for another's look. Nothing is awaited under
    /// it (there is nothing async here at all).
    seen: Mutex<Seen>,
}

impl JwksFile {
    /// Loads the file; at start-up every problem is a configuration error.
    pub(crate) fn open(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |source| ConfigError::Read {
            key: JWKS_KEY,
            path: path.to_owned(),
            source,
        };
        // The stamp is taken before the read: if the file changes in
        // between, the stamp is older than the content and the next look
        // reads the file again.
        let stamp = Stamp::of(&fs::metadata(path).map_err(read_error)?);
        let bytes = fs::read(path).map_err(read_error)?;
        let parsed = parse_jwks(&bytes).map_err(|problem| ConfigError::Unusable {
            key: JWKS_KEY,
            path: path.to_owned(),
            problem,
        })?;
        log_skipped(path, &parsed.skipped);
        Ok(Self {
            path: path.to_owned(),
            keys: RwLock::new(Arc::new(parsed.set)),
            created: Instant::now(),
            next_look_ms: AtomicU64::new(millis(RELOAD_INTERVAL)),
            seen: Mutex::new(Seen {
                stamp: Some(stamp),
                content: Some((bytes, true)),
                problem: None,
            }),
        })
    }

    /// The key named `kid`, from the file as it is now (looked at no more
    /// than once per [`RELOAD_INTERVAL`]).
    pub(crate) fn get(&self, kid: &str) -> Option<Arc<PublicKey>> {
        self.look();
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .get(kid)
            .cloned()
    }

    /// How many keys are in use.
    pub(crate) fn len(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .len()
    }

    /// Why the file as it is now is not the one in use, if it is not.
    pub(crate) fn problem(&self) -> Option<String> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let problem = seen.problem.as_ref()?;
        Some(format!("{JWKS_KEY} `{}` {problem}", self.path.display()))
    }

    fn look(&self) {
        let now_ms = millis(self.created.elapsed());
        if now_ms < self.next_look_ms.load(Ordering::Acquire) {
            return;
        }
        let mut seen = match self.seen.try_lock() {
            Ok(seen) => seen,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Someone else is looking; go on with the keys as they are.
            Err(TryLockError::WouldBlock) => return,
        };
        if now_ms < self.next_look_ms.load(Ordering::Acquire) {
            return;
        }
        self.next_look_ms
            .store(now_ms + millis(RELOAD_INTERVAL), Ordering::Release);
        self.reload(&mut seen);
    }

    fn reload(&self, seen: &mut Seen) {
        let stamp = match fs::metadata(&self.path) {
            Ok(meta) => Stamp::of(&meta),
            Err(e) => return self.report(seen, format!("cannot be read: {e}")),
        };
        if seen.stamp == Some(stamp) && stamp.is_settled(SystemTime::now()) {
            return;
        }
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => return self.report(seen, format!("cannot be read: {e}")),
        };
        seen.stamp = Some(stamp);
        if let Some((content, usable)) = &seen.content
            && *content == bytes
        {
            if *usable && seen.problem.take().is_some() {
                tracing::info!(
                    path = %self.path.display(),
                    "{JWKS_KEY} can be read again, with the keys in use"
                );
            }
            return;
        }
        match parse_jwks(&bytes) {
            Ok(parsed) => {
                let kids = {
                    let mut kids: Vec<&str> = parsed.set.keys.keys().map(String::as_str).collect();
                    kids.sort_unstable();
                    kids.join(", ")
                };
                tracing::info!(
                    path = %self.path.display(),
                    keys = parsed.set.keys.len(),
                    kids = %kids,
                    "{JWKS_KEY} changed; its keys are in use"
                );
                log_skipped(&self.path, &parsed.skipped);
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(parsed.set);
                seen.content = Some((bytes, true));
                seen.problem = None;
            }
            Err(problem) => {
                seen.content = Some((bytes, false));
                self.report(seen, problem);
            }
        }
    }

    /// Logs a problem with the file once, however often it is seen.
    fn report(&self, seen: &mut Seen, problem: String) {
        if seen.problem.as_ref() != Some(&problem) {
            tracing::warn!(
                path = %self.path.display(),
                %problem,
                "{JWKS_KEY} changed but cannot be used; the keys loaded before stay in use"
            );
            seen.problem = Some(problem);
        }
    }
}

fn log_skipped(path: &Path, skipped: &[String]) {
    for why in skipped {
        tracing::warn!(path = %path.display(), "{JWKS_KEY}: {why}; it is not used");
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ed25519_jwk(kid: &str, seed: u8) -> Value {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
        })
    }

    fn set(keys: &[Value]) -> String {
        json!({ "keys": keys }).to_string()
    }

    impl JwksFile {
        /// Looks at the file now, whenever the last look was.
        fn look_now(&self) {
            self.next_look_ms.store(0, Ordering::Release);
            self.look();
        }
    }

    #[test]
    fn the_secret_file_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("secret");
        let secret = [b'k'; 32];
        for (suffix, expected) in [
            (&b""[..], 32),
            (b"\n", 32),
            (b"\r\n", 32),
            (b"\n\n", 33),
            (b" ", 33),
        ] {
            fs::write(&path, [&secret[..], suffix].concat()).expect("writes");
            let read = read_hmac_secret(&path).expect("long enough");
            assert_eq!(read.len(), expected, "{suffix:?}");
        }
        fs::write(&path, [b'k'; 31]).expect("writes");
        assert!(matches!(
            read_hmac_secret(&path),
            Err(ConfigError::Unusable { key: HMAC_KEY, .. })
        ));
    }

    #[test]
    fn a_rewrite_with_its_modification_time_set_back_is_still_seen() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("jwks.json");
        fs::write(&path, set(&[ed25519_jwk("key-a", 1)])).expect("writes");
        let modified = fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        let file = JwksFile::open(&path).expect("valid");
        assert!(file.get("key-a").is_some());

        // Same length, same modification time: only the change time (or
        // the settling rule) tells the versions apart.
        fs::write(&path, set(&[ed25519_jwk("key-b", 2)])).expect("writes");
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(modified))
            .expect("sets the modification time back");
        file.look_now();
        assert!(file.get("key-b").is_some());
        assert!(file.get("key-a").is_none());
    }

    #[test]
    fn nothing_is_read_between_looks() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("jwks.json");
        fs::write(&path, set(&[ed25519_jwk("key-a", 1)])).expect("writes");
        let file = JwksFile::open(&path).expect("valid");
        fs::write(&path, set(&[ed25519_jwk("key-b", 2)])).expect("writes");
        // Less than a second since the file was opened: not looked at yet.
        assert!(file.get("key-b").is_none());
        file.look_now();
        assert!(file.get("key-b").is_some());
    }

    #[test]
    fn a_broken_version_keeps_the_keys_and_its_problem_is_told() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("jwks.json");
        let good = set(&[ed25519_jwk("key-a", 1)]);
        fs::write(&path, &good).expect("writes");
        let file = JwksFile::open(&path).expect("valid");
        for broken in [
            "{".to_owned(),
            set(&[]),
            set(&[ed25519_jwk("dup", 1), ed25519_jwk("dup", 2)]),
        ] {
            fs::write(&path, &broken).expect("writes");
            file.look_now();
            assert!(file.get("key-a").is_some(), "{broken}");
            assert!(file.problem().is_some(), "{broken}");
        }
        // Back to the version in use: nothing to load, no problem left.
        fs::write(&path, &good).expect("writes");
        file.look_now();
        assert_eq!(file.problem(), None);
        assert_eq!(file.len(), 1);
    }

    #[test]
    fn keys_that_cannot_verify_are_left_out() {
        // (1, 1) is not on P-256.
        let mut one = [0_u8; 32];
        one[31] = 1;
        let not_a_point = json!({
            "kty": "EC", "crv": "P-256", "kid": "bad",
            "x": URL_SAFE_NO_PAD.encode(one), "y": URL_SAFE_NO_PAD.encode(one),
        });
        let parsed = parse_jwks(set(&[ed25519_jwk("good", 1), not_a_point]).as_bytes())
            .expect("one usable key");
        assert_eq!(parsed.set.keys.len(), 1);
        assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
        assert!(
            parsed.skipped[0].starts_with("key `bad` is not a valid ES256 public key"),
            "{:?}",
            parsed.skipped
        );
    }
}
