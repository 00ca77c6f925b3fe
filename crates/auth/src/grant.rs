//! Room grants: which rooms a caller may read or write.
//!
//! A grant is `{"rooms": ["general", "team-*"], "allow": ["read", "write"]}`,
//! the same shape in a token's `rooms` claim and in the configuration
//! (`auth.authenticated`, `auth.anonymous`). Grants are consulted in order and
//! the first one with a pattern that matches the room decides, so a narrow
//! grant placed first can take rights away from a broad one after it
//! (`[{"rooms": ["secret"], "allow": []}, {"rooms": ["*"], "allow": ["read"]}]`
//! reads everything but `secret`).
//!
//! Also here: the CLI's one-line grant syntax (`general,team-*=read,write;*=read`),
//! [`parse_grants`] and [`format_grants`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a caller wants to do with a room.
///
/// `Read` covers `Subscribe` and `ListMessages` (and the seed API's `all`);
/// `Write` covers `SendMessage` (and the seed API's `send`, which writes to
/// room `general`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Subscribe, list messages.
    Read,
    /// Send messages.
    Write,
}

impl Operation {
    /// The word used in grants and messages: `read` or `write`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest room pattern accepted, in bytes. Room names are at most 64
/// bytes; the bound keeps matching cheap whatever a token says.
pub const MAX_PATTERN_LEN: usize = 128;

/// Why a string is not a room pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("a room pattern cannot be empty (`*` matches every room)")]
    Empty,
    /// The pattern is longer than [`MAX_PATTERN_LEN`].
    #[error("a room pattern is at most {MAX_PATTERN_LEN} bytes, this one has {0}")]
    TooLong(usize),
    /// The pattern holds a character that is neither a room character nor `*`.
    #[error(
        "room pattern `{}` holds {found:?}: a pattern is made of room characters \
         (A-Z a-z 0-9 _ -) and `*`",
        crate::error::Shown(.pattern)
    )]
    Character {
        /// The pattern as given.
        pattern: String,
        /// The first character that is not allowed.
        found: char,
    },
}

/// A room name, or a glob where `*` matches any run of room characters
/// (`[A-Za-z0-9_-]`, possibly empty); `*` alone matches every room.
///
/// Checked when made (and so when deserialized), so every pattern in a
/// grant is well formed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomPattern(String);

impl RoomPattern {
    /// A pattern from its text.
    ///
    /// # Errors
    /// [`PatternError`] for an empty or over-long pattern, or one with a
    /// character that is neither a room character nor `*`.
    pub fn new(pattern: impl Into<String>) -> Result<Self, PatternError> {
        let pattern = pattern.into();
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong(pattern.len()));
        }
        if let Some(found) = pattern.chars().find(|&c| c != '*' && !is_room_char(c)) {
            return Err(PatternError::Character { pattern, found });
        }
        Ok(Self(pattern))
    }

    /// The pattern's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this pattern matches every room: `*` (or, equally, `**`…).
    /// Only such a pattern can let a caller subscribe to every room at once.
    #[must_use]
    pub fn is_every_room(&self) -> bool {
        self.0.bytes().all(|b| b == b'*')
    }

    /// Whether `room` matches. A room name with a character outside
    /// `[A-Za-z0-9_-]` (or an empty one) matches no pattern, not even `*`:
    /// callers check room names before they authorize.
    #[must_use]
    pub fn matches(&self, room: &str) -> bool {
        !room.is_empty()
            && room.bytes().all(is_room_byte)
            && glob(self.0.as_bytes(), room.as_bytes())
    }
}

impl TryFrom<String> for RoomPattern {
    type Error = PatternError;

    fn try_from(pattern: String) -> Result<Self, Self::Error> {
        Self::new(pattern)
    }
}

impl From<RoomPattern> for String {
    fn from(pattern: RoomPattern) -> Self {
        pattern.0
    }
}

impl fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RoomPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

fn is_room_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_room_char(c: char) -> bool {
    u8::try_from(c).is_ok_and(is_room_byte)
}

/// Glob matching with `*` as the only metacharacter, in O(pattern × text)
/// at worst and without recursion: on a mismatch, the last `*` seen takes
/// one more character and matching resumes after it. Returning to the last
/// star only is enough because a later star can absorb whatever an earlier
/// one would have.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` in the pattern and the text position it was
    // tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// One grant: the operations `allow`ed on the rooms matching any of
/// `rooms`. An empty `allow` denies those rooms (and, as the first match,
/// stops later grants from allowing them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grant {
    /// Room names or globs.
    pub rooms: Vec<RoomPattern>,
    /// What the grant allows on them.
    pub allow: Vec<Operation>,
}

impl Grant {
    /// A grant from patterns and operations.
    ///
    /// # Errors
    /// [`PatternError`] for the first pattern that is not one.
    pub fn new<P: Into<String>>(
        rooms: impl IntoIterator<Item = P>,
        allow: impl IntoIterator<Item = Operation>,
    ) -> Result<Self, PatternError> {
        Ok(Self {
            rooms: rooms
                .into_iter()
                .map(RoomPattern::new)
                .collect::<Result<_, _>>()?,
            allow: allow.into_iter().collect(),
        })
    }

    /// The first of this grant's patterns that matches `room`.
    #[must_use]
    pub fn matching(&self, room: &str) -> Option<&RoomPattern> {
        self.rooms.iter().find(|pattern| pattern.matches(room))
    }

    /// Whether the grant allows `op` (on the rooms it matches).
    #[must_use]
    pub fn allows(&self, op: Operation) -> bool {
        self.allow.contains(&op)
    }
}

impl fmt::Display for Grant {
    /// The CLI syntax: `general,team-*=read,write`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rooms: Vec<&str> = self.rooms.iter().map(RoomPattern::as_str).collect();
        let allow: Vec<&str> = self.allow.iter().map(|op| op.as_str()).collect();
        write!(f, "{}={}", rooms.join(","), allow.join(","))
    }
}

/// Where a grant came from, for messages that say which grant decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantSource {
    /// The token's `rooms` claim.
    Token,
    /// `auth.authenticated`: for every caller with a valid token, after the
    /// token's own grants.
    Authenticated,
    /// `auth.anonymous`: for callers without a token.
    Anonymous,
}

impl fmt::Display for GrantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Token => "the token's `rooms`",
            Self::Authenticated => "auth.authenticated",
            Self::Anonymous => "auth.anonymous",
        })
    }
}

/// The grant that decided a refusal: its matching pattern, where it came
/// from and what it does allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidingGrant {
    /// The grant's pattern that matched.
    pub pattern: String,
    /// Where the grant came from.
    pub source: GrantSource,
    /// What it allows (not what was asked).
    pub allow: Vec<Operation>,
}

impl fmt::Display for DecidingGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the grant for `{}` in {} ", self.pattern, self.source)?;
        if self.allow.is_empty() {
            f.write_str("allows nothing")
        } else {
            let allow: Vec<&str> = self.allow.iter().map(|op| op.as_str()).collect();
            write!(f, "allows only {}", allow.join(" and "))
        }
    }
}

impl DecidingGrant {
    fn of(grant: &Grant, pattern: &RoomPattern, source: GrantSource) -> Self {
        Self {
            pattern: pattern.as_str().to_owned(),
            source,
            allow: grant.allow.clone(),
        }
    }
}

/// Grants in the order they are consulted, each list with its source.
pub(crate) type Layers<'a> = [(GrantSource, &'a [Grant])];

/// Whether `op` on `room` is allowed: the first grant (across the layers,
/// in order) with a pattern matching `room` decides.
///
/// # Errors
/// The grant that refused, or `None` if no grant matched.
pub(crate) fn decide(
    layers: &Layers<'_>,
    room: &str,
    op: Operation,
) -> Result<(), Option<DecidingGrant>> {
    for (source, grants) in layers {
        for grant in *grants {
            if let Some(pattern) = grant.matching(room) {
                return if grant.allows(op) {
                    Ok(())
                } else {
                    Err(Some(DecidingGrant::of(grant, pattern, *source)))
                };
            }
        }
    }
    Err(None)
}

/// Whether every room may be read at once (a subscription without a room
/// filter): the first grant with a pattern matching every room (`*`) must
/// allow read, and no grant before it may refuse read on the rooms it
/// matches, since those rooms' messages would reach the subscriber too.
///
/// # Errors
/// The grant that refused, or `None` if no grant is for `*`.
pub(crate) fn decide_every_room_read(layers: &Layers<'_>) -> Result<(), Option<DecidingGrant>> {
    for (source, grants) in layers {
        for grant in *grants {
            if let Some(every) = grant.rooms.iter().find(|p| p.is_every_room()) {
                return if grant.allows(Operation::Read) {
                    Ok(())
                } else {
                    Err(Some(DecidingGrant::of(grant, every, *source)))
                };
            }
            if !grant.allows(Operation::Read)
                && let Some(first) = grant.rooms.first()
            {
                return Err(Some(DecidingGrant::of(grant, first, *source)));
            }
        }
    }
    Err(None)
}

/// Why a grant in the CLI syntax could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantSyntaxError {
    /// A grant without `=` between patterns and operations.
    #[error(
        "grant {index} (`{}`) has no `=`: write patterns=operations, \
         e.g. `general,team-*=read,write`",
        crate::error::Shown(.text)
    )]
    NoEquals {
        /// 1-based position among the `;`-separated grants.
        index: usize,
        /// The grant as written.
        text: String,
    },
    /// A grant with nothing before `=`, or an empty grant between two `;`.
    #[error(
        "grant {index} names no room pattern: write patterns=operations, \
         e.g. `general,team-*=read,write` (`*` is every room)"
    )]
    NoPattern {
        /// 1-based position among the `;`-separated grants.
        index: usize,
    },
    /// A pattern that is not one.
    #[error("grant {index}: {source}")]
    Pattern {
        /// 1-based position among the `;`-separated grants.
        index: usize,
        /// What is wrong with it.
        source: PatternError,
    },
    /// An operation other than `read` or `write`.
    #[error(
        "grant {index}: `{}` is not an operation: write `read`, `write`, both \
         (`read,write`) or nothing (deny)",
        crate::error::Shown(.word)
    )]
    Operation {
        /// 1-based position among the `;`-separated grants.
        index: usize,
        /// The word as written.
        word: String,
    },
}

/// Reads grants in the CLI's syntax: `patterns=operations`, patterns and
/// operations comma-separated, grants separated by `;`, spaces around
/// items ignored. `general,team-*=read,write;*=read` is two grants;
/// `secret=` denies `secret`; an empty string is no grant.
///
/// # Errors
/// [`GrantSyntaxError`] naming the grant (by position) and what is wrong.
pub fn parse_grants(text: &str) -> Result<Vec<Grant>, GrantSyntaxError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(';')
        .enumerate()
        .map(|(i, grant)| parse_grant(i + 1, grant.trim()))
        .collect()
}

fn parse_grant(index: usize, text: &str) -> Result<Grant, GrantSyntaxError> {
    if text.is_empty() {
        return Err(GrantSyntaxError::NoPattern { index });
    }
    let Some((rooms, allow)) = text.split_once('=') else {
        return Err(GrantSyntaxError::NoEquals {
            index,
            text: text.to_owned(),
        });
    };
    let rooms = rooms
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| RoomPattern::new(p).map_err(|source| GrantSyntaxError::Pattern { index, source }))
        .collect::<Result<Vec<_>, _>>()?;
    if rooms.is_empty() {
        return Err(GrantSyntaxError::NoPattern { index });
    }
    let allow = allow
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|word| match word.to_ascii_lowercase().as_str() {
            "read" => Ok(Operation::Read),
            "write" => Ok(Operation::Write),
            _ => Err(GrantSyntaxError::Operation {
                index,
                word: word.to_owned(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Grant { rooms, allow })
}

/// Writes grants in the CLI's syntax, the inverse of [`parse_grants`] for
/// grants with at least one pattern.
#[must_use]
pub fn format_grants(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(Grant::to_string)
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> RoomPattern {
        RoomPattern::new(p).expect("a valid pattern")
    }

    #[test]
    fn a_plain_pattern_matches_only_its_room() {
        assert!(pattern("general").matches("general"));
        assert!(!pattern("general").matches("general2"));
        assert!(!pattern("general").matches("genera"));
        assert!(!pattern("General").matches("general"));
    }

    #[test]
    fn a_star_matches_any_run_of_room_characters_including_none() {
        let p = pattern("team-*");
        assert!(p.matches("team-"));
        assert!(p.matches("team-a"));
        assert!(p.matches("team-a-b_c"));
        assert!(!p.matches("team"));
        assert!(!p.matches("xteam-a"));
        assert!(pattern("*-ops").matches("eu-ops"));
        assert!(pattern("a*b*c").matches("abc"));
        assert!(pattern("a*b*c").matches("aXbYbZc"));
        assert!(!pattern("a*b*c").matches("aXbYcZ"));
    }

    #[test]
    fn the_lone_star_matches_every_valid_room_and_no_invalid_one() {
        let every = pattern("*");
        assert!(every.is_every_room());
        assert!(pattern("**").is_every_room());
        assert!(!pattern("*a").is_every_room());
        for room in ["general", "a", "Team-1_x"] {
            assert!(every.matches(room), "{room}");
        }
        for room in ["", "a.b", "a b", "é", "a*"] {
            assert!(!every.matches(room), "{room:?}");
        }
    }

    #[test]
    fn patterns_are_checked_when_made_and_when_deserialized() {
        assert_eq!(RoomPattern::new(""), Err(PatternError::Empty));
        assert!(matches!(
            RoomPattern::new("a.b"),
            Err(PatternError::Character { found: '.', .. })
        ));
        assert!(matches!(
            RoomPattern::new("x".repeat(MAX_PATTERN_LEN + 1)),
            Err(PatternError::TooLong(_))
        ));
        assert!(RoomPattern::new("x".repeat(MAX_PATTERN_LEN)).is_ok());
        let grant: Result<Grant, _> =
            serde_json::from_str(r#"{"rooms": ["ok", "not ok"], "allow": ["read"]}"#);
        assert!(grant.is_err());
        let grant: Result<Grant, _> =
            serde_json::from_str(r#"{"rooms": ["ok"], "allow": ["admin"]}"#);
        assert!(grant.is_err());
        let grant: Result<Grant, _> =
            serde_json::from_str(r#"{"rooms": ["ok"], "allow": [], "extra": 1}"#);
        assert!(grant.is_err());
    }

    #[test]
    fn the_cli_syntax_reads_patterns_and_operations() {
        let grants = parse_grants("general,team-*=read,write; *=read ;secret=").expect("valid");
        assert_eq!(
            grants,
            vec![
                Grant::new(["general", "team-*"], [Operation::Read, Operation::Write])
                    .expect("valid"),
                Grant::new(["*"], [Operation::Read]).expect("valid"),
                Grant::new(["secret"], []).expect("valid"),
            ]
        );
        assert_eq!(
            format_grants(&grants),
            "general,team-*=read,write;*=read;secret="
        );
        assert_eq!(parse_grants("  "), Ok(vec![]));
    }

    #[test]
    fn the_cli_syntax_names_the_grant_that_is_wrong() {
        assert!(matches!(
            parse_grants("general=read;team"),
            Err(GrantSyntaxError::NoEquals { index: 2, .. })
        ));
        assert!(matches!(
            parse_grants("=read"),
            Err(GrantSyntaxError::NoPattern { index: 1 })
        ));
        assert!(matches!(
            parse_grants("a=read;;b=read"),
            Err(GrantSyntaxError::NoPattern { index: 2 })
        ));
        assert!(matches!(
            parse_grants("a.b=read"),
            Err(GrantSyntaxError::Pattern { index: 1, .. })
        ));
        let err = parse_grants("general=read,admin").expect_err("admin is no operation");
        assert!(matches!(err, GrantSyntaxError::Operation { index: 1, .. }));
        assert_eq!(
            err.to_string(),
            "grant 1: `admin` is not an operation: write `read`, `write`, both \
             (`read,write`) or nothing (deny)"
        );
    }

    fn grants(text: &str) -> Vec<Grant> {
        parse_grants(text).expect("valid grants")
    }

    #[test]
    fn the_first_matching_grant_decides() {
        let token = grants("secret=;team-*=read;*=read,write");
        let layers = [(GrantSource::Token, token.as_slice())];
        assert_eq!(decide(&layers, "general", Operation::Write), Ok(()));
        assert_eq!(decide(&layers, "team-a", Operation::Read), Ok(()));
        let refused = decide(&layers, "team-a", Operation::Write).expect_err("read only");
        assert_eq!(
            refused.map(|d| d.to_string()).as_deref(),
            Some("the grant for `team-*` in the token's `rooms` allows only read")
        );
        let refused = decide(&layers, "secret", Operation::Read).expect_err("denied");
        assert_eq!(
            refused.map(|d| d.to_string()).as_deref(),
            Some("the grant for `secret` in the token's `rooms` allows nothing")
        );
    }

    #[test]
    fn later_layers_apply_only_where_earlier_ones_match_nothing() {
        let token = grants("team-a=read");
        let config = grants("team-*=read,write;general=read");
        let layers = [
            (GrantSource::Token, token.as_slice()),
            (GrantSource::Authenticated, config.as_slice()),
        ];
        assert!(decide(&layers, "team-a", Operation::Write).is_err());
        assert_eq!(decide(&layers, "team-b", Operation::Write), Ok(()));
        assert_eq!(decide(&layers, "general", Operation::Read), Ok(()));
        assert_eq!(decide(&layers, "other", Operation::Read), Err(None));
    }

    #[test]
    fn every_room_needs_the_star_with_read_and_no_refusal_before_it() {
        let decide_all = |text: &str| {
            let g = grants(text);
            decide_every_room_read(&[(GrantSource::Token, g.as_slice())])
        };
        assert_eq!(decide_all("*=read"), Ok(()));
        assert_eq!(decide_all("general=read;*=read"), Ok(()));
        assert_eq!(decide_all("general,team-*=read,write"), Err(None));
        assert!(matches!(decide_all("*=write"), Err(Some(_))));
        assert!(matches!(decide_all("secret=;*=read"), Err(Some(d)) if d.pattern == "secret"));
        assert!(matches!(decide_all("log=write;*=read"), Err(Some(_))));
        assert_eq!(decide_all(""), Err(None));
    }
}
