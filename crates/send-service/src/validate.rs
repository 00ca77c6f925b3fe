//! Rules every message must meet before it is stored.
//!
//! A refused message answers INVALID_ARGUMENT naming the first offending
//! field as in `fastchat.v1` and what is wrong; a character is named by its
//! code point (`U+202E`), never echoed, so a reason is itself safe to show.
//! Nothing is silently dropped from an author or a text: what is not
//! normalised below is stored as sent, or refused.
//!
//! # room, client_message_id, client_time_ms
//!
//! `room` is 1-64 characters of `A-Z a-z 0-9 _ -` (empty means `general`);
//! `client_message_id` has at most `send.max_client_message_id_chars`
//! characters and no control characters (empty means none);
//! `client_time_ms` is not negative (0 means not given).
//!
//! # author
//!
//! An author is shown beside every message, so it must be one plain,
//! visible name that cannot pass for another or disturb what is around it.
//!
//! - **Normalised** to NFC first (`e` + U+0301 is stored as `é`); the
//!   limit of `send.max_author_chars` characters applies to the normalised
//!   form, and the normalised form is stored.
//! - **Refused** if it contains any of:
//!   - a control character, C0 or C1 (U+0000-U+001F, U+007F-U+009F);
//!   - a bidirectional formatting character, embedding, override, isolate
//!     or mark (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C):
//!     they can reorder the name and the text after it, and Arabic or
//!     Hebrew names need none, their letters carry their direction;
//!   - a tag character (U+E0000-U+E007F), which is invisible and can carry
//!     hidden ASCII; subdivision flags (🏴 + tags) are refused with them;
//!   - any other format character (Cf: U+200B, U+FEFF, U+00AD, U+2060, ...)
//!     or default-ignorable code point (U+3164 and U+FFA0 Hangul fillers,
//!     U+034F, variation selectors, ...), with three exceptions that names
//!     need: U+200D ZWJ inside an emoji ZWJ sequence (👩‍💻, 🏳️‍🌈); U+FE0F
//!     or U+FE0E right after an emoji (❤️); U+200D or U+200C ZWNJ where the
//!     CONTEXTJ rules of RFC 5892 (IDNA) allow them, after a virama (Indic
//!     conjuncts) or, for ZWNJ, between joining letters (Persian names);
//!   - U+2028 LINE SEPARATOR or U+2029 PARAGRAPH SEPARATOR;
//!   - an unassigned code point (as of Unicode 18) or a noncharacter, or a
//!     private-use character (both draw as anything or nothing; surrogates
//!     cannot occur in UTF-8).
//! - **Refused** if it has nothing visible: empty, only white space, or only
//!   fillers, blanks (U+2800 braille blank, U+1D159) and combining marks;
//!   visible is a letter, number, punctuation or symbol.
//! - **Refused** if it starts with a combining mark (it would combine with
//!   whatever a client shows before the name), or stacks more than 4
//!   nonspacing marks or the same mark twice on one character ("Zalgo"),
//!   as UTS #39 §5.4 suggests.
//! - **Refused** if it mixes scripts where UTS #39 "highly restrictive"
//!   (§5.2) would not: one script, or Latin with Han and Hiragana/Katakana,
//!   with Han and Bopomofo, or with Han and Hangul. Characters shared by
//!   all scripts (digits, spaces, punctuation, emoji, most marks) fit any,
//!   by Script_Extensions. This refuses the common homoglyph trick of a
//!   Cyrillic `а` in a Latin name (`pаypal`), and also honest mixes such
//!   as `David דוד` or `Ivan Иван`.
//!
//! Not covered, on purpose: whole-script confusables (an all-Cyrillic name
//! that looks Latin, `раура1`), look-alikes within one script (`rn` and
//! `m`, `l` and `I`, `0` and `O`), letters of no script (the mathematical
//! alphanumerics, `𝐚dmin`, are Common like digits; only NFKC would fold
//! them, and it would also rewrite fullwidth and other forms people use),
//! and names that differ only in spacing.
//! Catching those needs the UTS #39 confusable skeletons compared against
//! the names already in use, and FastChat has no registry of names: an
//! author is free text on each message, not an account. A client that
//! must tell people apart needs authenticated identities, not this check.
//!
//! # text
//!
//! A text is the message itself, so it keeps what people write (every
//! script and mix of scripts, emoji sequences with U+200D and U+FE0F, flags,
//! invisible characters that scripts need such as U+200C in Persian or
//! U+200B in Thai, private-use and not yet assigned characters, which may be
//! newer emoji) and refuses only what can hide text or change how other
//! text is shown.
//!
//! - **Normalised**: every `\r\n` and lone `\r` becomes `\n` (a lone
//!   carriage return would let a terminal client overwrite the line), then
//!   NFC. The limit of `send.max_text_bytes` bytes of UTF-8 applies to the
//!   normalised text, and the normalised text is stored.
//! - **Kept**: `\n` and `\t`; the bidi marks U+200E, U+200F and U+061C:
//!   they are invisible strong characters that set the direction of the
//!   spaces, punctuation and numbers next to them, never of letters, so
//!   they cannot make a run of text read in another order; and they are
//!   what mixed Hebrew or Arabic and Latin sentences need to show their
//!   punctuation and numbers in the right place.
//! - **Refused** if it contains:
//!   - any other control character, C0 or C1 (NUL, ESC, which drives
//!     terminals, U+0085 NEL, ...): they draw nothing or act on the
//!     display;
//!   - any bidi embedding, override or isolate (U+202A-U+202E,
//!     U+2066-U+2069), balanced or not: an override shows text in another
//!     order than it is read (`\u{202E}gpj.exe` shows as `exe.jpg`), and a
//!     client cannot tell a harmless pair from a spoof;
//!   - U+2028 or U+2029: a new line is `\n`, and not every client breaks
//!     a line at these, so the same text would show differently;
//!   - the deprecated format characters U+206A-U+206F (they change digit
//!     shapes and joining for what follows) and the interlinear annotation
//!     characters U+FFF9-U+FFFB (they hide text from some readers);
//!   - a tag character outside a subdivision flag: a flag is U+1F3F4, 1-7
//!     tag digits or small letters, and U+E007F CANCEL TAG; anywhere else
//!     tags are invisible text that machines read and people do not.
//! - **Refused** if it is empty or has nothing visible, as for authors.
//!
//! A text may stack combining marks: a client shows each message in its own
//! box and clips what overflows it. Clients should also show author and text
//! each in its own bidi isolate (`<bdi>`, `dir="auto"`), which no rule here
//! can replace.

use fastchat_proto::{
    station::{DEFAULT_ROOM, MAX_ROOM_LEN, is_valid_room},
    v1,
};

use crate::{
    SendError,
    config::SendConfig,
    unicode::{check_author, check_text, nfc, unify_line_ends},
};

/// A message that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub room: String,
    pub author: String,
    pub text: String,
    pub client_message_id: Option<String>,
    pub client_time_ms: i64,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SendError {
    SendError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Checks every field of `request` against `limits`.
///
/// # Errors
/// [`SendError::Invalid`] naming the first offending field (as in
/// `fastchat.v1`) and its limit.
pub fn validate(
    request: v1::SendMessageRequest,
    limits: &SendConfig,
) -> Result<NewMessage, SendError> {
    let v1::SendMessageRequest {
        room,
        author,
        text,
        client_message_id,
        client_time_ms,
    } = request;
    let room = if room.is_empty() {
        DEFAULT_ROOM.to_owned()
    } else {
        room
    };
    if !is_valid_room(&room) {
        return Err(invalid(
            "room",
            format!("must be 1-{MAX_ROOM_LEN} characters of A-Z, a-z, 0-9, '_' or '-'"),
        ));
    }
    let author = nfc(author);
    let author_chars = author.chars().count();
    if author_chars > limits.max_author_chars {
        return Err(invalid(
            "author",
            format!(
                "is {author_chars} characters; at most {} are allowed",
                limits.max_author_chars
            ),
        ));
    }
    check_author(&author).map_err(|refusal| invalid("author", refusal.to_string()))?;
    let text = nfc(unify_line_ends(text));
    if text.len() > limits.max_text_bytes {
        return Err(invalid(
            "text",
            format!(
                "is {} bytes; at most {} bytes of UTF-8 are allowed",
                text.len(),
                limits.max_text_bytes
            ),
        ));
    }
    check_text(&text).map_err(|refusal| invalid("text", refusal.to_string()))?;
    let id_chars = client_message_id.chars().count();
    if id_chars > limits.max_client_message_id_chars {
        return Err(invalid(
            "client_message_id",
            format!(
                "is {id_chars} characters; at most {} are allowed",
                limits.max_client_message_id_chars
            ),
        ));
    }
    if client_message_id.chars().any(char::is_control) {
        return Err(invalid(
            "client_message_id",
            "must not contain control characters",
        ));
    }
    if client_time_ms < 0 {
        return Err(invalid(
            "client_time_ms",
            "must be milliseconds since the Unix epoch (0 = not given), not negative",
        ));
    }
    Ok(NewMessage {
        room,
        author,
        text,
        client_message_id: (!client_message_id.is_empty()).then_some(client_message_id),
        client_time_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        room: &str,
        author: &str,
        text: &str,
        id: &str,
        time: i64,
    ) -> Result<NewMessage, SendError> {
        let request = v1::SendMessageRequest {
            room: room.into(),
            author: author.into(),
            text: text.into(),
            client_message_id: id.into(),
            client_time_ms: time,
        };
        validate(request, &SendConfig::default())
    }

    #[test]
    fn accepts_good_messages_and_defaults_the_room() {
        let m = check("", "ann", "hello", "", 0).expect("valid");
        assert_eq!(m.room, "general");
        assert_eq!(m.client_message_id, None);
        let m = check("dev-ops_2", &"é".repeat(64), &"x".repeat(4096), "k1", 1).expect("valid");
        assert_eq!(m.room, "dev-ops_2");
        assert_eq!(m.client_message_id.as_deref(), Some("k1"));
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases: &[(&str, &str, &str, &str, i64, &str)] = &[
            ("bad room", "ann", "hi", "", 0, "room"),
            (&"r".repeat(65), "ann", "hi", "", 0, "room"),
            ("", "", "hi", "", 0, "author"),
            ("", "   ", "hi", "", 0, "author"),
            ("", &"a".repeat(65), "hi", "", 0, "author"),
            ("", "a\nb", "hi", "", 0, "author"),
            ("", "ann", "", "", 0, "text"),
            ("", "ann", " \n\t", "", 0, "text"),
            ("", "ann", &"x".repeat(4097), "", 0, "text"),
            ("", "ann", "hi", &"k".repeat(129), 0, "client_message_id"),
            ("", "ann", "hi", "", -1, "client_time_ms"),
        ];
        for (room, author, text, id, time, field) in cases {
            match check(room, author, text, id, *time) {
                Err(SendError::Invalid { field: f, reason }) => {
                    assert_eq!(f, *field, "{reason}");
                    assert!(!reason.is_empty());
                }
                other => panic!("{field}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn people_write_in_every_script_and_with_emoji() {
        let cases: &[(&str, &str)] = &[
            ("Zoë 🎉", "party 🎉🥳"),
            (
                "👩🏽\u{200D}💻",
                "👨\u{200D}👩\u{200D}👧 family, ❤\u{FE0F} heart",
            ),
            (
                "🏳\u{FE0F}\u{200D}🌈",
                "🇺🇦 🏴\u{E0067}\u{E0062}\u{E0077}\u{E006C}\u{E0073}\u{E007F}",
            ),
            ("山田太郎", "こんにちは、世界"),
            ("Taro 山田", "漢字 and English"),
            ("김민준", "안녕하세요"),
            ("محمد", "مرحبا بالعالم 123"),
            ("فاطمه\u{200C}زهرا", "می\u{200C}خواهم"),
            ("דוד", "שלום, \u{200F}David!"),
            ("Nguyễn", "tab\tand\nnew line"),
        ];
        for (author, text) in cases {
            let m = check("", author, text, "", 0)
                .unwrap_or_else(|e| panic!("{author:?} {text:?}: {e}"));
            assert_eq!(m.author, *author);
            assert_eq!(m.text, *text);
        }
    }

    #[test]
    fn authors_and_texts_are_stored_normalised_and_limited_as_normalised() {
        let m = check("", "Jose\u{301}", "cafe\u{301}\r\nbar\rbaz", "", 0).expect("valid");
        assert_eq!(m.author, "Jos\u{E9}");
        assert_eq!(m.text, "caf\u{E9}\nbar\nbaz");
        // 128 characters as sent, 64 after NFC.
        let m = check("", &"e\u{301}".repeat(64), "hi", "", 0).expect("64 characters");
        assert_eq!(m.author, "\u{E9}".repeat(64));
        // 6144 bytes as sent, 4096 after NFC; 4098 as sent, 2732 with \n.
        check("", "ann", &"e\u{301}".repeat(2048), "", 0).expect("4096 bytes");
        check("", "ann", &"x\r\n".repeat(1366), "", 0).expect("2732 bytes");
        let Err(SendError::Invalid { field, reason }) =
            check("", &"e\u{301}".repeat(65), "hi", "", 0)
        else {
            panic!("65 characters after NFC");
        };
        assert_eq!(
            (field, reason.as_str()),
            ("author", "is 65 characters; at most 64 are allowed")
        );
    }

    #[test]
    fn what_could_fool_a_reader_is_refused_with_its_field_and_why() {
        // (author, text, field, a part of the reason)
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "\u{3164}",
                "hi",
                "author",
                "invisible formatting characters (found U+3164)",
            ),
            ("\u{2800}", "hi", "author", "visible character"),
            ("\u{200B}\u{FEFF}", "hi", "author", "U+200B"),
            ("an\u{200B}n", "hi", "author", "U+200B"),
            (
                "ann\u{202E}nimda",
                "hi",
                "author",
                "bidirectional formatting characters (found U+202E)",
            ),
            ("ann\u{200F}", "hi", "author", "U+200F"),
            ("ann\u{E0041}\u{E0042}", "hi", "author", "tag characters"),
            (
                "ann\u{85}",
                "hi",
                "author",
                "control characters (found U+0085)",
            ),
            (
                "ann\u{2028}",
                "hi",
                "author",
                "line or paragraph separators",
            ),
            ("ann\u{E000}", "hi", "author", "private-use"),
            ("ann\u{378}", "hi", "author", "unassigned"),
            ("\u{301}\u{302}", "hi", "author", "combining mark"),
            (
                "p\u{430}ypal",
                "hi",
                "author",
                "mixes the Latin and Cyrillic scripts",
            ),
            (
                "ann",
                "nul\0",
                "text",
                "other than line feed and tab (found U+0000)",
            ),
            ("ann", "next\u{85}line", "text", "(found U+0085)"),
            ("ann", "\u{1b}[31mred", "text", "(found U+001B)"),
            (
                "ann",
                "file \u{202E}gpj.exe",
                "text",
                "bidirectional formatting characters (found U+202E)",
            ),
            ("ann", "\u{2066}isolate\u{2069}", "text", "U+2066"),
            ("ann", "a\u{2029}b", "text", "line or paragraph separators"),
            (
                "ann",
                "hi\u{E0069}\u{E0067}\u{E006E}",
                "text",
                "tag characters except in a flag",
            ),
            ("ann", "\u{200B}\u{3164}", "text", "visible character"),
            ("ann", "\r\n", "text", "must not be empty or blank"),
        ];
        for (author, text, field, part) in cases {
            match check("", author, text, "", 0) {
                Err(SendError::Invalid { field: f, reason }) => {
                    assert_eq!(f, *field, "{author:?} {text:?}: {reason}");
                    assert!(reason.contains(part), "{author:?} {text:?}: {reason}");
                }
                other => panic!("{author:?} {text:?}: expected Invalid, got {other:?}"),
            }
        }
    }
}
