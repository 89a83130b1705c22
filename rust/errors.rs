//! Every error the core reports: Bayeux error strings in replies, and one enum for the
//! Python-facing API, turned into Python exceptions in `py::errors`.

use std::fmt;

/// Bayeux error strings, `code:args:message` as CometD Java writes them.
pub mod bayeux {
    pub const CHANNEL_MISSING: &str = "400::channel_missing";
    pub const CHANNEL_INVALID: &str = "405::channel_invalid";
    pub const CHANNEL_UNKNOWN: &str = "400::channel_unknown";
    pub const MESSAGE_NOT_OBJECT: &str = "400::message_not_an_object";
    pub const MESSAGE_MALFORMED: &str = "400::message_malformed";
    pub const DATA_MISSING: &str = "400::data_missing";
    pub const CLIENT_ID_MISSING: &str = "402::client_id_missing";
    pub const SESSION_UNKNOWN: &str = "402::session_unknown";
    pub const SUBSCRIPTION_MISSING: &str = "403::subscription_missing";
    pub const SUBSCRIPTION_INVALID: &str = "403::subscription_invalid";
    pub const SUBSCRIBE_DENIED: &str = "403:denied_by_security_policy:subscribe_denied";
    pub const PUBLISH_DENIED: &str = "403:denied_by_security_policy:publish_denied";
    pub const CONNECTION_TYPE_UNSUPPORTED: &str = "400::connection_type_unsupported";
    pub const TOO_MANY_SESSIONS_PER_BROWSER: &str =
        "403:too_many_sessions_per_cookie:handshake_denied";
    pub const TOO_MANY_SESSIONS_PER_ADDRESS: &str =
        "403:too_many_sessions_per_address:handshake_denied";
    /// Past `max_subscriptions_per_session`, in the shape of CometD's authorizer denials.
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "403:too_many_subscriptions:subscribe_denied";
    /// Past `max_channels`: a new channel is refused, as CometD's `create_denied`.
    pub const TOO_MANY_CHANNELS: &str = "403:too_many_channels:create_denied";

    /// A channel name past a limit, published to: `405:channel_too_long:channel_invalid`.
    pub fn channel_refused(reason: &str) -> String {
        format!("405:{reason}:channel_invalid")
    }

    /// A channel name past a limit, subscribed to:
    /// `403:channel_too_long:subscription_invalid`.
    pub fn subscription_refused(reason: &str) -> String {
        format!("403:{reason}:subscription_invalid")
    }

    /// A replay id that cannot be replayed after, in Salesforce's words (two spaces after the
    /// first full stop, the id in braces as the client sent it): its clients parse it.
    pub fn replay_id_invalid(id: &str) -> String {
        format!(
            "400::The replayId {{{id}}} you provided was invalid.  Please provide a valid ID, \
             -2 to replay all events, or -1 to replay only new events."
        )
    }

    /// A replay asked on a channel without history, or on a wildcard subscription.
    pub fn replay_refused(channel: &str, problem: &str) -> String {
        format!("400:{channel}:{problem}")
    }

    /// A field of the wrong type or an unknown field, naming it.
    pub fn field(problem: &str, name: &str) -> String {
        let name: String = name
            .chars()
            .filter(|c| *c != ':' && *c != ',')
            .take(64)
            .collect();
        format!("400:{name}:{problem}")
    }
}

/// What kind of error a Bayeux error string is, for counting: `code:message`, where the message
/// is the string's last part when it is a name (those come from this module, a bounded set),
/// `replay_id_invalid` for Salesforce's text, and `other` otherwise.
pub fn kind_of(error: &str) -> String {
    let code = error
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
    let code = code.unwrap_or("000");
    let message = error.rsplit(':').next().unwrap_or_default();
    let named = !message.is_empty()
        && message.len() <= 40
        && message.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let message = if named {
        message
    } else if error.starts_with("400::The replayId") {
        "replay_id_invalid"
    } else {
        "other"
    };
    format!("{code}:{message}")
}

/// Failures of the Python-facing API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// Not a valid channel for this operation.
    InvalidChannel(String),
    /// No such session.
    ClientNotFound(String),
    /// Not a valid client id.
    InvalidClientId(String),
    /// A value that cannot be represented as JSON.
    NotJson(String),
    /// A channel name past `max_channel_length` (`channel_too_long`) or
    /// `max_channel_segments` (`channel_too_many_segments`), with that limit.
    ChannelTooBig(&'static str, usize),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::InvalidChannel(name) => {
                write!(f, "{name:?} is not a channel that messages can be sent to")
            }
            CoreError::ClientNotFound(id) => write!(f, "no session with client id {id}"),
            CoreError::InvalidClientId(text) => {
                write!(
                    f,
                    "{text:?} is not a client id (40 lowercase hex characters)"
                )
            }
            CoreError::NotJson(why) => write!(f, "cannot send as JSON: {why}"),
            CoreError::ChannelTooBig(reason, limit) => {
                write!(
                    f,
                    "the channel name is refused: {reason} (the limit is {limit})"
                )
            }
        }
    }
}

impl std::error::Error for CoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_a_bounded_kind() {
        assert_eq!(kind_of(bayeux::SESSION_UNKNOWN), "402:session_unknown");
        assert_eq!(kind_of(bayeux::TOO_MANY_CHANNELS), "403:create_denied");
        let replay = bayeux::replay_refused("/chat/a", "replay_limit_exceeded");
        assert_eq!(kind_of(&replay), "400:replay_limit_exceeded");
        assert_eq!(
            kind_of(&bayeux::replay_id_invalid("7")),
            "400:replay_id_invalid"
        );
        assert_eq!(kind_of("nonsense: With Words"), "000:other");
    }
}
