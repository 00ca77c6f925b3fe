//! The room glob matcher against a model: a plain recursive matcher that
//! tries every split for each `*`, over random patterns and room names from
//! small alphabets (so that matches are frequent).

use fastchat_auth::{Grant, Operation, RoomPattern, format_grants, parse_grants};
use proptest::prelude::*;

/// The reference: `*` matches any run of bytes, possibly empty.
fn model(pattern: &[u8], room: &[u8]) -> bool {
    match pattern.split_first() {
        None => room.is_empty(),
        Some((b'*', rest)) => (0..=room.len()).any(|i| model(rest, &room[i..])),
        Some((c, rest)) => room.first() == Some(c) && model(rest, &room[1..]),
    }
}

fn pattern() -> impl Strategy<Value = String> {
    "[ab*_-]{1,10}"
}

fn room() -> impl Strategy<Value = String> {
    "[ab_-]{1,14}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_matcher_agrees_with_the_model(pattern in pattern(), room in room()) {
        let compiled = RoomPattern::new(pattern.clone()).expect("a valid pattern");
        prop_assert_eq!(
            compiled.matches(&room),
            model(pattern.as_bytes(), room.as_bytes()),
            "pattern {} room {}", pattern, room
        );
    }

    #[test]
    fn a_pattern_matches_itself_with_its_stars_taken_as_anything(pattern in pattern(), fill in "[ab]{0,3}") {
        let compiled = RoomPattern::new(pattern.clone()).expect("a valid pattern");
        let room = pattern.replace('*', &fill);
        prop_assume!(!room.is_empty());
        prop_assert!(compiled.matches(&room), "pattern {} room {}", pattern, room);
    }

    #[test]
    fn the_star_matches_every_room_name(room in "[A-Za-z0-9_-]{1,64}") {
        prop_assert!(RoomPattern::new("*").expect("valid").matches(&room));
    }

    #[test]
    fn a_room_with_another_character_matches_nothing(
        pattern in pattern(),
        (left, right) in (room(), room()),
        bad in "[. /é*]",
    ) {
        let compiled = RoomPattern::new(pattern).expect("a valid pattern");
        let room = format!("{left}{bad}{right}");
        prop_assert!(!compiled.matches(&room));
    }

    #[test]
    fn the_cli_syntax_reads_back_what_it_writes(
        grants in prop::collection::vec(
            (
                prop::collection::vec(pattern(), 1..4),
                prop::collection::vec(prop_oneof![Just(Operation::Read), Just(Operation::Write)], 0..3),
            ),
            0..5,
        )
    ) {
        let grants: Vec<Grant> = grants
            .into_iter()
            .map(|(rooms, allow)| Grant::new(rooms, allow).expect("valid patterns"))
            .collect();
        prop_assert_eq!(parse_grants(&format_grants(&grants)), Ok(grants));
    }
}
