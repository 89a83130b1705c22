//! Channel names: validation, classification and wildcard patterns.

/// What a valid channel name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// `/meta/...`: protocol messages, never broadcast.
    Meta,
    /// `/service/...`: client-to-server messages, never broadcast.
    Service,
    /// Anything else without wildcards: delivered to subscribers.
    Broadcast,
    /// Ends in `/*` (one segment) or `/**` (one or more); only valid for subscriptions.
    Wildcard,
}

/// A subscription pattern, keyed by the part before the wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern<'a> {
    Exact(&'a str),
    /// `/a/*`, keyed by `/a`.
    OneSegment(&'a str),
    /// `/a/**`, keyed by `/a`; `/**` is keyed by the empty string.
    AnyDepth(&'a str),
}

/// CometD's channel validator: letters, digits, space and `! # $ ( ) * + - . / @ _ { ~ }`.
fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " !#$()*+-./@_{~}".contains(c)
}

/// Validates a channel name and says what kind it is; `None` when invalid.
/// Valid names start with `/`, have no empty segment, and use `*` or `**` only as a whole last
/// segment.
pub fn classify(name: &str) -> Option<ChannelKind> {
    let rest = name.strip_prefix('/')?;
    if rest.is_empty() || !name.chars().all(valid_char) {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return None;
        }
        if segment.contains('*') && (i != last || (*segment != "*" && *segment != "**")) {
            return None;
        }
    }
    if segments[last] == "*" || segments[last] == "**" {
        return Some(ChannelKind::Wildcard);
    }
    Some(match segments[0] {
        "meta" => ChannelKind::Meta,
        "service" => ChannelKind::Service,
        _ => ChannelKind::Broadcast,
    })
}

/// Splits a valid channel name into the pattern the subscription index stores it under.
pub fn pattern(name: &str) -> Pattern<'_> {
    if let Some(prefix) = name.strip_suffix("/**") {
        Pattern::AnyDepth(prefix)
    } else if let Some(prefix) = name.strip_suffix("/*") {
        Pattern::OneSegment(prefix)
    } else {
        Pattern::Exact(name)
    }
}

/// The keys under which subscribers of `channel` are found: the channel itself, its parent for
/// `/*`, and every ancestor (down to the root) for `/**`.
pub fn ancestors(channel: &str) -> impl Iterator<Item = &str> {
    channel
        .char_indices()
        .filter(|&(_, c)| c == '/')
        .map(move |(i, _)| &channel[..i])
}

/// The parent of a channel (`/a/b` for `/a/b/c`; empty for `/a`).
pub fn parent(channel: &str) -> &str {
    channel.rfind('/').map_or("", |i| &channel[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_channels() {
        assert_eq!(classify("/meta/connect"), Some(ChannelKind::Meta));
        assert_eq!(classify("/service/echo"), Some(ChannelKind::Service));
        assert_eq!(classify("/chat/room 1"), Some(ChannelKind::Broadcast));
        assert_eq!(classify("/a/*"), Some(ChannelKind::Wildcard));
        assert_eq!(classify("/a/**"), Some(ChannelKind::Wildcard));
        assert_eq!(classify("/**"), Some(ChannelKind::Wildcard));
        assert_eq!(classify("/metax"), Some(ChannelKind::Broadcast));
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in [
            "", "/", "a/b", "/a//b", "/a/", "/a/*/b", "/a/b*", "/a/***", "/a/é", "/a/<x>", "/a\\b",
            "/a\"b", "/a/b:c",
        ] {
            assert_eq!(classify(bad), None, "{bad:?} should be invalid");
        }
    }

    #[test]
    fn patterns_and_ancestors() {
        assert_eq!(pattern("/a/b"), Pattern::Exact("/a/b"));
        assert_eq!(pattern("/a/*"), Pattern::OneSegment("/a"));
        assert_eq!(pattern("/a/**"), Pattern::AnyDepth("/a"));
        assert_eq!(pattern("/**"), Pattern::AnyDepth(""));
        assert_eq!(
            ancestors("/a/b/c").collect::<Vec<_>>(),
            vec!["", "/a", "/a/b"]
        );
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "");
    }
}
