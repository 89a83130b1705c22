//! `/meta/subscribe` and `/meta/unsubscribe`: one channel or a list, all or nothing. Each name
//! costs the same however many the session or the batch holds.

use super::ext::replay_map;
use super::{Failure, Request};
use crate::channel::{self, ChannelKind};
use crate::engine::{Engine, Event, SubscribeLimit};
use crate::errors::bayeux;
use crate::history::{ReplayFrom, ReplayRefused};
use crate::json::{self, Message};
use crate::message::Shared;
use serde_json::value::RawValue;

impl<E: Engine + ?Sized> Request<'_, E> {
    pub(super) fn subscribe(
        &mut self,
        message: &Message<'_>,
        subscribe: bool,
    ) -> Result<(), Failure> {
        let (key, client_id) = self.session(message)?;
        let raw = message.subscription.ok_or(bayeux::SUBSCRIPTION_MISSING)?;
        let names = json::as_str_list(raw)
            .filter(|names| !names.is_empty())
            .ok_or(bayeux::SUBSCRIPTION_INVALID)?;
        // All or nothing: every name is checked before any is applied. Service channels are
        // never broadcast, so subscribing to them (or to a pattern under `/service`) is a
        // successful no-op, as in CometD; nobody subscribes under `/meta`, patterns included.
        let limits = self.engine.config().name_limits();
        let mut broadcast = Vec::with_capacity(names.len());
        for name in &names {
            if let Err(too_big) = limits.check(name) {
                return Err(bayeux::subscription_refused(too_big.reason()).into());
            }
            if channel::classify(name).is_none() {
                return Err(bayeux::SUBSCRIPTION_INVALID.into());
            }
            match channel::root(name) {
                ChannelKind::Meta => return Err(bayeux::SUBSCRIBE_DENIED.into()),
                ChannelKind::Service => {}
                ChannelKind::Broadcast | ChannelKind::Wildcard => broadcast.push(&**name),
            }
        }
        let mut replayed = Vec::new();
        if subscribe {
            match self.engine.subscribe_limit(key, &broadcast) {
                Some(SubscribeLimit::Subscriptions) => {
                    return Err(bayeux::TOO_MANY_SUBSCRIPTIONS.into())
                }
                Some(SubscribeLimit::Channels) => return Err(bayeux::TOO_MANY_CHANNELS.into()),
                None => {}
            }
            replayed = self.replayed(message, &broadcast)?;
            let undelivered = self.engine.replayed_undelivered(key) + replayed.len();
            if !replayed.is_empty() && undelivered > self.engine.config().max_replayed() {
                let name = broadcast.first().copied().unwrap_or_default();
                return Err(bayeux::replay_refused(name, "replay_limit_exceeded").into());
            }
        }
        for &name in &broadcast {
            if subscribe {
                self.engine.subscribe(key, name);
            } else {
                self.engine.unsubscribe(key, name);
            }
        }
        if !replayed.is_empty() {
            self.engine
                .deliver_replay(key, replayed, &mut self.outcome.effects);
        }
        let channels = names.iter().map(|n| n.to_string()).collect();
        self.outcome.effects.events.push(if subscribe {
            Event::Subscribed(client_id, channels)
        } else {
            Event::Unsubscribed(client_id, channels)
        });
        let meta = if subscribe {
            "/meta/subscribe"
        } else {
            "/meta/unsubscribe"
        };
        let ext = self.timesync_ext();
        self.succeed(meta, &client_id, message.id, ext, |reply| {
            reply.raw("subscription", raw.get().as_bytes());
        });
        Ok(())
    }

    /// What a subscribe's `ext.replay` asks to be replayed on the channels it subscribes to,
    /// in order. Refused as a whole if any cannot be.
    fn replayed(&mut self, message: &Message<'_>, names: &[&str]) -> Result<Vec<Shared>, Failure> {
        let asked = asked_replays(message.ext, names)
            .map_err(|()| bayeux::field("invalid_type", "ext.replay"))?;
        let mut replayed = Vec::new();
        for (name, raw) in asked {
            let from = serde_json::from_str::<i64>(raw.get())
                .ok()
                .and_then(ReplayFrom::from_id)
                .ok_or_else(|| bayeux::replay_id_invalid(raw.get()))?;
            if from == ReplayFrom::New {
                continue;
            }
            if channel::classify(name) == Some(ChannelKind::Wildcard) {
                return Err(bayeux::replay_refused(name, "replay_wildcard_unsupported").into());
            }
            match self.engine.replay(name, from, self.now) {
                Ok(messages) => replayed.extend(messages),
                Err(ReplayRefused::NoHistory) => {
                    return Err(bayeux::replay_refused(name, "replay_not_available").into())
                }
                Err(ReplayRefused::InvalidId) => {
                    return Err(bayeux::replay_id_invalid(raw.get()).into())
                }
                Err(ReplayRefused::TooMany) => {
                    return Err(bayeux::replay_refused(name, "replay_limit_exceeded").into())
                }
            }
        }
        Ok(replayed)
    }
}

/// The ids a subscribe's `ext` asks to replay after on the channels it subscribes to (`names`),
/// in their order, as sent; entries for other channels are passed over (Salesforce's clients
/// send every channel they track with every subscribe). Err when `ext.replay` is not an object.
pub(crate) fn asked_replays<'a, 'e>(
    ext: Option<&'e RawValue>,
    names: &[&'a str],
) -> Result<Vec<(&'a str, &'e RawValue)>, ()> {
    let Some(map) = replay_map(ext)? else {
        return Ok(Vec::new());
    };
    Ok(names
        .iter()
        .filter_map(|&name| {
            let (_, raw) = map.iter().find(|(channel, _)| channel == name)?;
            Some((name, *raw))
        })
        .collect())
}
