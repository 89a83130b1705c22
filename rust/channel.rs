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
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.is_empty() {
            return None;
        }
        if segment.contains('*') && (!last || (segment != "*" && segment != "**")) {
            return None;
        }
        if last && segment.starts_with('*') {
            return Some(ChannelKind::Wildcard);
        }
    }
    Some(root(name))
}

/// The kind a valid name's first segment gives it, wildcard or not: `/meta/*` is under
/// `/meta`, `/service/**` under `/service`; `/*` and `/**` are broadcast patterns.
pub fn root(name: &str) -> ChannelKind {
    let rest = name.strip_prefix('/').unwrap_or(name);
    let first = rest.split('/').next().unwrap_or_default();
    match first {
        "meta" => ChannelKind::Meta,
        "service" => ChannelKind::Service,
        _ => ChannelKind::Broadcast,
    }
}

/// How long and how deep a channel name may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameLimits {
    /// In bytes.
    pub max_length: usize,
    /// Segments: `/a/b/*` has three.
    pub max_segments: usize,
}

/// Why a channel name is refused before it is even read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TooBig {
    Long,
    Deep,
}

impl TooBig {
    /// The reason, as the `args` of a Bayeux error string.
    pub fn reason(self) -> &'static str {
        match self {
            TooBig::Long => "channel_too_long",
            TooBig::Deep => "channel_too_many_segments",
        }
    }
}

impl NameLimits {
    /// Checks a name's length and segment count; costs at most `max_length` bytes of reading,
    /// however long the name is.
    pub fn check(self, name: &str) -> Result<(), TooBig> {
        if name.len() > self.max_length {
            return Err(TooBig::Long);
        }
        if name.bytes().filter(|&b| b == b'/').count() > self.max_segments {
            return Err(TooBig::Deep);
        }
        Ok(())
    }
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

/// Whether a subscription (a channel or pattern) matches a broadcast `channel`: what the index
/// answers for many subscriptions at once, for one.
pub fn matches(subscription: &str, channel: &str) -> bool {
    match pattern(subscription) {
        Pattern::Exact(name) => name == channel,
        Pattern::OneSegment(prefix) => parent(channel) == prefix,
        Pattern::AnyDepth(prefix) => {
            channel.len() > prefix.len()
                && channel.starts_with(prefix)
                && channel.as_bytes()[prefix.len()] == b'/'
        }
    }
}

/// The parent of a channel (`/a/b` for `/a/b/c`; empty for `/a`).
pub fn parent(channel: &str) -> &str {
    channel.rfind('/').map_or("", |i| &channel[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_as_the_index_does() {
        for (subscription, channel, expected) in [
            ("/a/b", "/a/b", true),
            ("/a/b", "/a/bc", false),
            ("/a/*", "/a/b", true),
            ("/a/*", "/a/b/c", false),
            ("/a/*", "/ab", false),
            ("/a/**", "/a/b/c", true),
            ("/a/**", "/ab/c", false),
            ("/a/**", "/a", false),
            ("/**", "/x/y", true),
            ("/*", "/x", true),
            ("/*", "/x/y", false),
        ] {
            assert_eq!(
                matches(subscription, channel),
                expected,
                "{subscription} {channel}"
            );
        }
    }

    #[test]
    fn classifies_channels() {
        assert_eq!(classify("/meta/connect"), Some(ChannelKind::Meta));
        assert_eq!(classify("/service/echo"), Some(ChannelKind::Service));
        assert_eq!(classify("/chat/room 1"), Some(ChannelKind::Broadcast));
        assert_eq!(classify("/a/*"), Some(ChannelKind::Wildcard));
        assert_eq!(classify("/a/**"), Some(ChannelKind::Wildcard));
        assert_eq!(classify("/**"), Some(ChannelKind::Wildcard));
        assert_eq!(classify("/metax"), Some(ChannelKind::Broadcast));
        assert_eq!(classify("/meta/*"), Some(ChannelKind::Wildcard));
    }

    #[test]
    fn the_first_segment_gives_the_root_kind_of_patterns_too() {
        assert_eq!(root("/meta/*"), ChannelKind::Meta);
        assert_eq!(root("/meta/connect/**"), ChannelKind::Meta);
        assert_eq!(root("/meta"), ChannelKind::Meta);
        assert_eq!(root("/service/**"), ChannelKind::Service);
        assert_eq!(root("/**"), ChannelKind::Broadcast);
        assert_eq!(root("/*"), ChannelKind::Broadcast);
        assert_eq!(root("/metadata/*"), ChannelKind::Broadcast);
    }

    #[test]
    fn names_are_bounded_in_bytes_and_segments() {
        let limits = NameLimits {
            max_length: 8,
            max_segments: 3,
        };
        assert_eq!(limits.check("/a/b/cde"), Ok(()));
        assert_eq!(limits.check("/a/b/cdef"), Err(TooBig::Long));
        assert_eq!(limits.check("/a/b/*"), Ok(()));
        assert_eq!(limits.check("/a/b/c/d"), Err(TooBig::Deep));
        assert_eq!(TooBig::Long.reason(), "channel_too_long");
        // A name far past the limit is refused without reading it.
        assert_eq!(limits.check(&"/a".repeat(1 << 20)), Err(TooBig::Long));
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
