//! What the fuzz targets share: how an input is split into fields, the
//! rules a validated message must meet (the proto contract, checked
//! independently of the code under test), and the fixed test key.
//!
//! Inputs: most targets read a selector byte, then fields separated by
//! [`SEP`] (0xFF never occurs in UTF-8, so text fields cannot contain it by
//! accident). `examples/seeds.rs` writes the committed corpus in these
//! formats.

use std::{
    path::PathBuf,
    sync::LazyLock,
    time::{Duration, SystemTime},
};

use fastchat_auth::{AuthConfig, Authenticator, Grant, JwtConfig};
use fastchat_proto::station::is_valid_room;

/// Field separator in the inputs.
pub const SEP: u8 = 0xFF;

/// The selector byte and the fields after it (always `n` of them, missing
/// ones empty).
#[must_use]
pub fn fields(data: &[u8], n: usize) -> (u8, Vec<&[u8]>) {
    let Some((&selector, rest)) = data.split_first() else {
        return (0, vec![&[][..]; n]);
    };
    let mut parts: Vec<&[u8]> = rest.splitn(n, |&b| b == SEP).collect();
    parts.resize(n, &[]);
    (selector, parts)
}

/// An input made of a selector and fields (the inverse of [`fields`]).
#[must_use]
pub fn join(selector: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![selector];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(part);
    }
    out
}

/// A field as text: `None` if it is not UTF-8.
#[must_use]
pub fn text(field: &[u8]) -> Option<&str> {
    std::str::from_utf8(field).ok()
}

/// The HMAC key of every fuzz target's authenticator (and of the seed
/// tokens): fixed, so that the corpus holds valid tokens.
pub const HMAC_KEY: &[u8] = b"fastchat-fuzz-hmac-key-0123456789abcdef";
/// `auth.jwt.issuer` of the authenticator.
pub const ISSUER: &str = "https://id.fuzz.example";
/// `auth.jwt.audience` of the authenticator.
pub const AUDIENCE: &str = "fastchat";
/// `auth.jwt.leeway` of the authenticator.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The time tokens are checked at: 2026-12-01T00:00:00Z.
#[must_use]
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_200)
}

/// The key file, written once per process.
fn key_file() -> PathBuf {
    static PATH: LazyLock<PathBuf> = LazyLock::new(|| {
        let path = std::env::temp_dir().join(format!("fastchat-fuzz-{}.key", std::process::id()));
        std::fs::write(&path, HMAC_KEY).expect("the temporary directory is writable");
        path
    });
    PATH.clone()
}

/// An authenticator with [`HMAC_KEY`], [`ISSUER`], [`AUDIENCE`] and the
/// given `authenticated` and `anonymous` grants.
#[must_use]
pub fn authenticator(authenticated: Vec<Grant>, anonymous: Vec<Grant>) -> Authenticator {
    Authenticator::new(&AuthConfig {
        jwt: JwtConfig {
            hmac_secret_file: Some(key_file()),
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            leeway: LEEWAY,
            ..JwtConfig::default()
        },
        authenticated,
        anonymous,
        ..AuthConfig::default()
    })
    .expect("the fuzz authenticator's configuration is valid")
}

/// Whether `c` is one that no stored author or text may contain, whatever
/// else it holds: a control character other than `\n` and `\t` (and those
/// too in an author), bidi embeddings, overrides and isolates, U+2028 and
/// U+2029.
#[must_use]
pub fn forbidden_everywhere(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
        || c == '\u{2028}'
        || c == '\u{2029}'
}

/// The limits a validated message must be within (send-service's defaults).
pub const MAX_AUTHOR_CHARS: usize = 64;
/// See [`MAX_AUTHOR_CHARS`].
pub const MAX_TEXT_BYTES: usize = 4096;
/// See [`MAX_AUTHOR_CHARS`].
pub const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 128;

/// Panics unless a message that send-service accepted meets the proto
/// contract (fastchat.v1 `SendMessageRequest`, README): a valid room, an
/// author and a text within the limits and without what they may never
/// hold, a client id without control characters, a time not negative.
pub fn assert_accepted(message: &send_service::fuzzing::NewMessage) {
    assert!(is_valid_room(&message.room), "room {:?}", message.room);
    let author_chars = message.author.chars().count();
    assert!(
        (1..=MAX_AUTHOR_CHARS).contains(&author_chars),
        "author of {author_chars} characters"
    );
    assert!(
        !message.author.contains(['\n', '\t']),
        "author {:?}",
        message.author
    );
    assert!(
        !message.author.chars().any(forbidden_everywhere),
        "author {:?}",
        message.author
    );
    assert!(
        (1..=MAX_TEXT_BYTES).contains(&message.text.len()),
        "text of {} bytes",
        message.text.len()
    );
    assert!(!message.text.contains('\r'), "text {:?}", message.text);
    assert!(
        !message.text.chars().any(forbidden_everywhere),
        "text {:?}",
        message.text
    );
    assert!(
        !message.text.trim().is_empty(),
        "blank text {:?}",
        message.text
    );
    if let Some(id) = &message.client_message_id {
        assert!(!id.is_empty());
        assert!(id.chars().count() <= MAX_CLIENT_MESSAGE_ID_CHARS);
        assert!(!id.chars().any(char::is_control), "client id {id:?}");
    }
    assert!(message.client_time_ms >= 0);
}

/// Panics unless validating what send-service stored again accepts it
/// unchanged (its normalisation is idempotent: what is stored is what a
/// client would get accepted as it is).
pub fn assert_stable(message: &send_service::fuzzing::NewMessage) {
    let again = send_service::fuzzing::validate_v1(
        fastchat_proto::v1::SendMessageRequest {
            room: message.room.clone(),
            author: message.author.clone(),
            text: message.text.clone(),
            client_message_id: message.client_message_id.clone().unwrap_or_default(),
            client_time_ms: message.client_time_ms,
        },
        &send_service::config::SendConfig::default(),
    )
    .unwrap_or_else(|e| panic!("a stored message is refused when sent again: {e}"));
    assert_eq!(&again, message, "a stored message changes when sent again");
}

/// Panics unless a refusal is INVALID_ARGUMENT (a validation error must
/// never read as a server fault).
pub fn assert_invalid_argument(status: &tonic::Status) {
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{}",
        status.message()
    );
}

/// Panics unless all-messages-service's check of a `Subscribe` keeps to
/// the contract: the rooms asked for (none: every room), each valid, at most
/// 64 + 1; the start as asked, `since` within what the broker can hold.
pub fn check_subscribe(request: fastchat_proto::v1::SubscribeRequest) {
    use all_messages_service::fuzzing::{Start, validate_subscribe};
    let asked: Vec<String> = std::iter::once(request.room.clone())
        .filter(|r| !r.is_empty())
        .chain(request.rooms.iter().cloned())
        .collect();
    let start = request.start;
    match validate_subscribe(request) {
        Ok(checked) => {
            match &checked.rooms {
                None => assert!(asked.is_empty(), "rooms {asked:?} became every room"),
                Some(rooms) => {
                    assert!(!rooms.is_empty() && rooms.len() <= 65);
                    assert!(rooms.windows(2).all(|w| w[0] < w[1]));
                    assert!(rooms.iter().all(|r| is_valid_room(r)));
                    assert!(rooms.iter().all(|r| asked.contains(r)));
                    assert!(asked.iter().all(|r| rooms.contains(r)));
                }
            }
            use fastchat_proto::v1::subscribe_request::Start as S;
            match (start, checked.start) {
                (None | Some(S::NewOnly(false)), Start::All)
                | (Some(S::Last(0) | S::NewOnly(true)), Start::New) => {}
                (Some(S::AfterSequence(a)), Start::After(b)) => assert_eq!(a, b),
                (Some(S::Last(a)), Start::Last(b)) => assert!(a == b && b > 0),
                (Some(S::Since(ts)), Start::Since(nanos)) => {
                    assert_eq!(
                        nanos,
                        i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos)
                    );
                    let limit = i128::from(i64::MAX) - 1_000_000_000;
                    assert!((-limit..=limit).contains(&nanos));
                }
                (asked, got) => panic!("start {asked:?} became {got:?}"),
            }
        }
        Err(status) => assert_invalid_argument(&status),
    }
}

/// Panics unless a checked `ListMessages` names a valid room and a page of
/// 1 to `MAX_PAGE` messages, or is refused with INVALID_ARGUMENT.
pub fn check_list(request: &fastchat_proto::v1::ListMessagesRequest) {
    match all_messages_service::fuzzing::validate_list(request) {
        Ok((room, limit, before)) => {
            assert_eq!(room, request.room);
            assert!(is_valid_room(&room));
            assert!((1..=all_messages_service::MAX_PAGE).contains(&limit));
            assert_ne!(before, Some(0));
        }
        Err(status) => assert_invalid_argument(&status),
    }
}

/// `*`-glob matching written the obvious way (dynamic programming over
/// pattern × text), to check `RoomPattern::matches` against.
#[must_use]
pub fn reference_glob(pattern: &[u8], text: &[u8]) -> bool {
    // row[j]: pattern[..i] matches text[..j].
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        if p == b'*' {
            next[0] = row[0];
            for j in 1..=text.len() {
                next[j] = row[j] || next[j - 1];
            }
        } else {
            for j in 1..=text.len() {
                next[j] = row[j - 1] && text[j - 1] == p;
            }
        }
        row = next;
    }
    row[text.len()]
}

/// Whether a room pattern matches a room, by the README's rule: a room is
/// 1-64 of `[A-Za-z0-9_-]` (anything else matches nothing), `*` matches any
/// run of room characters.
#[must_use]
pub fn reference_matches(pattern: &fastchat_auth::RoomPattern, room: &str) -> bool {
    !room.is_empty()
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && reference_glob(pattern.as_str().as_bytes(), room.as_bytes())
}

/// The README's grant rule: across the lists in order, the first grant
/// with a pattern matching the room decides; none matching refuses.
#[must_use]
pub fn reference_allows(layers: &[&[Grant]], room: &str, op: fastchat_auth::Operation) -> bool {
    layers
        .iter()
        .flat_map(|grants| grants.iter())
        .find(|grant| grant.rooms.iter().any(|p| reference_matches(p, room)))
        .is_some_and(|grant| grant.allow.contains(&op))
}

/// Reading every room at once: the first grant for `*` must allow read,
/// and no grant before it may refuse read.
#[must_use]
pub fn reference_allows_every_room_read(layers: &[&[Grant]]) -> bool {
    for grant in layers.iter().flat_map(|grants| grants.iter()) {
        let reads = grant.allow.contains(&fastchat_auth::Operation::Read);
        if grant
            .rooms
            .iter()
            .any(|p| p.as_str().bytes().all(|b| b == b'*'))
        {
            return reads;
        }
        if !reads && !grant.rooms.is_empty() {
            return false;
        }
    }
    false
}
