//! `/meta/subscribe` and `/meta/unsubscribe`: one channel or a list, all or nothing.

use super::{Failure, Request};
use crate::channel::{self, ChannelKind};
use crate::engine::{Engine, Event};
use crate::errors::bayeux;
use crate::json::{self, Message};

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
        // All or nothing: every name is checked before any is applied.
        for name in &names {
            match channel::classify(name) {
                None => return Err(bayeux::SUBSCRIPTION_INVALID.into()),
                Some(ChannelKind::Meta) => return Err(bayeux::SUBSCRIBE_DENIED.into()),
                Some(_) => {}
            }
        }
        for name in &names {
            // Service channels are never broadcast: subscribing is a successful no-op.
            if channel::classify(name) == Some(ChannelKind::Service) {
                continue;
            }
            if subscribe {
                self.engine.subscribe(key, name);
            } else {
                self.engine.unsubscribe(key, name);
            }
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
}
