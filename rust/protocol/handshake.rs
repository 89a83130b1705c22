//! `/meta/handshake` starts a session (and, over HTTP, the browser's cookie if it has none);
//! `/meta/disconnect` ends one.

use super::ext::{AckField, AckReply, ExtRequest};
use super::{replies, Failure, Request, Transport};
use crate::client_id::Id;
use crate::engine::{Engine, Event, RemoveReason};
use crate::errors::bayeux;
use crate::json::{self, Message};

impl<E: Engine + ?Sized> Request<'_, E> {
    pub(super) fn handshake(
        &mut self,
        message: &Message<'_>,
        ext: &ExtRequest,
    ) -> Result<(), Failure> {
        if let Some(raw) = message.supported_connection_types {
            let offered = json::as_str_list(raw)
                .ok_or_else(|| bayeux::field("invalid_type", "supportedConnectionTypes"))?;
            if !offered.iter().any(|t| self.engine.config().offers(t)) {
                return Err(bayeux::CONNECTION_TYPE_UNSUPPORTED.into());
            }
        }
        let browser = self.browser_or_new();
        let (client_id, key) = self
            .engine
            .create_session(browser, self.address, self.now)
            .map_err(|exceeded| exceeded.error())?;
        if let Some(socket) = self.caller.socket() {
            self.engine
                .set_bound(key, Some(socket), &mut self.outcome.effects);
        }
        let mut reply_ext = self.timesync_ext();
        // Echoed only when asked: a Salesforce client that was not asked sends no replay maps.
        reply_ext.replay = ext.replay && !self.engine.config().history.is_empty();
        if self.engine.config().ack_extension && ext.ack == Some(AckField::Enabled(true)) {
            self.engine.enable_ack(key);
            reply_ext.ack = Some(AckReply::Enabled);
        }
        self.outcome
            .effects
            .events
            .push(Event::SessionAdded(client_id));
        let advice = replies::advice(self.engine.config());
        let types = replies::connection_types(self.engine.config());
        self.succeed(
            "/meta/handshake",
            &client_id,
            message.id,
            reply_ext,
            |reply| {
                reply
                    .string("version", "1.0")
                    .string("minimumVersion", "1.0")
                    .raw("supportedConnectionTypes", &types)
                    .raw("advice", &advice);
            },
        );
        Ok(())
    }

    /// The request's browser cookie, or a new one (set by the reply, over HTTP).
    fn browser_or_new(&mut self) -> Id {
        if let Some(browser) = self.browser {
            return browser;
        }
        let fresh = Id::generate();
        self.browser = Some(fresh);
        // A WebSocket frame cannot set a cookie.
        if self.transport != Transport::WebSocket {
            self.outcome.new_browser = Some(fresh);
        }
        fresh
    }

    pub(super) fn disconnect(&mut self, message: &Message<'_>) -> Result<(), Failure> {
        let (key, client_id) = self.session(message)?;
        self.engine
            .remove(key, RemoveReason::Disconnected, &mut self.outcome.effects);
        let ext = self.timesync_ext();
        self.succeed("/meta/disconnect", &client_id, message.id, ext, |_| {});
        Ok(())
    }
}
