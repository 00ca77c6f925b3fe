//! Rules every message must meet before it is stored.

use fastchat_proto::{
    station::{DEFAULT_ROOM, MAX_ROOM_LEN, is_valid_room},
    v1,
};

use crate::{SendError, config::SendConfig};

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
    if author.trim().is_empty() {
        return Err(invalid("author", "must not be empty or blank"));
    }
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
    if author.chars().any(char::is_control) {
        return Err(invalid("author", "must not contain control characters"));
    }
    if text.trim().is_empty() {
        return Err(invalid("text", "must not be empty or blank"));
    }
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
}
