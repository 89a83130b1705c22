//! A message on a broadcast or service channel: broadcast ones are serialised once and queued
//! for every subscriber; service ones go no further than the reply.

use super::{Failure, Request};
use crate::channel::{self, ChannelKind};
use crate::engine::Engine;
use crate::errors::bayeux;
use crate::json::Message;

impl<E: Engine + ?Sized> Request<'_, E> {
    pub(super) fn publish(&mut self, name: &str, message: &Message<'_>) -> Result<(), Failure> {
        if let Err(too_big) = self.engine.config().name_limits().check(name) {
            return Err(bayeux::channel_refused(too_big.reason()).into());
        }
        let kind = match channel::classify(name) {
            None | Some(ChannelKind::Wildcard) => return Err(bayeux::CHANNEL_INVALID.into()),
            Some(ChannelKind::Meta) => return Err(bayeux::CHANNEL_UNKNOWN.into()),
            Some(kind) => kind,
        };
        let (key, _) = self.session(message)?;
        let data = message.data.ok_or(bayeux::DATA_MISSING)?;
        if kind == ChannelKind::Broadcast {
            // Without the publisher's id, as CometD does: a client that matches replies to its
            // requests by id (aiocometd over WebSocket) would take a delivery carrying the id
            // of one of its own pending requests for that request's reply.
            let delivered = self.engine.broadcast_message(name, data.get(), self.now);
            self.engine
                .publish_from(name, delivered, Some(key), &mut self.outcome.effects);
        }
        let mut reply = self.out.object();
        reply.string("channel", name).bool("successful", true);
        if let Some(id) = message.id {
            reply.raw("id", id.get().as_bytes());
        }
        reply.finish();
        Ok(())
    }
}
