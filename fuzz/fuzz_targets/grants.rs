//! Room grants: the CLI's grant syntax (`parse_grants`, `format_grants`),
//! room patterns and the first-match decision a caller's `authorize` makes,
//! through an authenticator whose `auth.anonymous` are the grants. Input: a
//! selector byte (bit 0: read or write), then the grants in the CLI syntax,
//! a room, and a pattern, separated by 0xFF.
//!
//! Holds beyond "no panic": formatting parsed grants and parsing that
//! again gives the same grants; `matches` agrees with a plain glob; the
//! decision agrees with the README's rule written independently.

#![no_main]

use fastchat_auth::{Operation, RoomPattern, format_grants, parse_grants};
use fastchat_fuzz::{
    authenticator, fields, reference_allows, reference_allows_every_room_read, reference_matches,
    text,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (selector, parts) = fields(data, 3);
    let op = if selector & 1 == 0 {
        Operation::Read
    } else {
        Operation::Write
    };
    let room = String::from_utf8_lossy(parts[1]);

    if let Some(pattern) = text(parts[2])
        && let Ok(pattern) = RoomPattern::new(pattern)
    {
        assert_eq!(
            pattern.matches(&room),
            reference_matches(&pattern, &room),
            "pattern {pattern} on room {room:?}"
        );
        // Serde agrees with the constructor.
        let json = serde_json::to_string(&pattern).expect("a pattern serializes");
        let back: RoomPattern = serde_json::from_str(&json).expect("a pattern deserializes");
        assert_eq!(back, pattern);
    }

    let Some(grants) = text(parts[0]).and_then(|t| parse_grants(t).ok()) else {
        return;
    };
    assert!(grants.iter().all(|g| !g.rooms.is_empty()));
    let formatted = format_grants(&grants);
    assert_eq!(
        parse_grants(&formatted).as_ref(),
        Ok(&grants),
        "{formatted:?}"
    );
    // As a configuration's grants (serde) they are the same grants.
    let json = serde_json::to_value(&grants).expect("grants serialize");
    let back: Vec<fastchat_auth::Grant> = serde_json::from_value(json).expect("grants deserialize");
    assert_eq!(back, grants);

    let caller = authenticator(Vec::new(), grants.clone())
        .authenticate_at(None, fastchat_fuzz::now())
        .expect("no token is an anonymous caller");
    assert_eq!(
        caller.authorize(&room, op).is_ok(),
        reference_allows(&[&grants], &room, op),
        "{op} on {room:?} with {formatted:?}"
    );
    assert_eq!(
        caller.authorize_every_room_read().is_ok(),
        reference_allows_every_room_read(&[&grants]),
        "every room with {formatted:?}"
    );
});
