//! `Engine`: the in-memory engine as Python sees it. A thin wrapper: all protocol work happens
//! in `protocol` and `engine`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::channel::{self, ChannelKind, TooBig};
use crate::client_id::Id;
use crate::config::Config;
use crate::engine::durations::BOUNDS_US;
use crate::engine::{address_key, Effects, Engine, MemoryEngine, RemoveReason, SocketId};
use crate::errors::{bayeux, CoreError};
use crate::history::{ReplayFrom, ReplayRefused};
use crate::json;
use crate::message::{delivered_message, Shared};
use crate::protocol::{self, RequestInfo, Transport};

use super::client_id::parse_id;
use super::errors::ReplayIdError;
use super::json::to_json;
use super::outcome::{effects_outcome, outcome, PyHold, PyOutcome};

/// The in-memory engine. Every method runs to completion under one lock; nothing in it awaits.
#[pyclass(frozen, module = "starlette_cometd._core", name = "Engine")]
pub struct PyEngine {
    inner: Mutex<MemoryEngine>,
    /// The engine's settings, fixed when it was built: read without the lock.
    config: Config,
}

impl PyEngine {
    /// A channel name within `max_channel_length` and `max_channel_segments`, as every
    /// channel a client names must be.
    fn check_name(&self, channel: &str) -> Result<(), CoreError> {
        let limits = self.config.name_limits();
        limits.check(channel).map_err(|too_big| {
            let limit = match too_big {
                TooBig::Long => limits.max_length,
                TooBig::Deep => limits.max_segments,
            };
            CoreError::ChannelTooBig(too_big.reason(), limit)
        })
    }

    /// Channels and patterns a cluster carries as a session's subscriptions: each a valid name
    /// of a broadcast channel or a wildcard, as a subscribe would have checked.
    fn check_subscriptions(&self, names: &[String]) -> Result<(), CoreError> {
        for name in names {
            self.check_name(name)?;
            if !matches!(
                channel::classify(name),
                Some(ChannelKind::Broadcast | ChannelKind::Wildcard)
            ) {
                return Err(CoreError::InvalidChannel(name.clone()));
            }
        }
        Ok(())
    }

    fn engine(&self) -> MutexGuard<'_, MemoryEngine> {
        // A panic while the lock was held leaves the table consistent enough to keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[pymethods]
impl PyEngine {
    /// An engine with the settings given by name (see `rust/config.rs`); the others keep
    /// their defaults.
    #[new]
    #[pyo3(signature = (**settings))]
    fn new(settings: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let config = Config::from_py(settings)?;
        Ok(Self {
            inner: Mutex::new(MemoryEngine::new(config.clone())),
            config,
        })
    }

    /// Splits a request body into its messages, for the path through the application's hooks,
    /// by the protocol's own reader: each message's bytes, and whether the hooks may see it.
    /// They see exactly the messages the core would act on; one it refuses whatever the hooks
    /// say (not a message, nested too deep, a channel name past the limits) goes straight to
    /// the core. `None` when the body is not a batch at all (the core names the problem).
    fn split<'py>(&self, py: Python<'py>, body: &[u8]) -> Option<Vec<(Bound<'py, PyBytes>, bool)>> {
        let messages = json::split_batch(body).ok()?;
        let split = messages.into_iter().map(|raw| {
            let readable = protocol::read(raw, self.config.max_data_depth).is_ok()
                && !protocol::refused_before_hooks(&self.config, raw);
            (PyBytes::new(py, raw.get().as_bytes()), readable)
        });
        Some(split.collect())
    }

    /// Handles one request body that arrived over `transport` ("long-polling",
    /// "callback-polling" or "websocket") from a client whose `BAYEUX_BROWSER` cookie is
    /// `browser`.
    /// `multiplexed`: the request came over HTTP/2 or later. `alone`: whether its messages
    /// stand alone, so that a connect may be held (by default, whether it holds one message).
    /// `socket`: the number of the WebSocket it came over (required for "websocket").
    /// `address`: the client's IP address, for the limit on sessions per address.
    #[pyo3(signature = (
        body, browser = None, transport = "long-polling", multiplexed = false, alone = None,
        socket = None, address = None
    ))]
    // Each argument is one of the Python method's keyword arguments.
    #[allow(clippy::too_many_arguments)]
    fn process(
        &self,
        py: Python<'_>,
        body: &[u8],
        browser: Option<&str>,
        transport: &str,
        multiplexed: bool,
        alone: Option<bool>,
        socket: Option<SocketId>,
        address: Option<&str>,
    ) -> PyResult<PyOutcome> {
        let info = RequestInfo {
            browser: browser.and_then(Id::parse),
            address: address.and_then(address_key),
            transport: parse_transport(transport, socket)?,
            socket,
            multiplexed,
            alone,
        };
        let mut engine = self.engine();
        let started = Instant::now();
        let result = protocol::process(&mut *engine, body, info, started);
        engine.batches.record(started.elapsed());
        drop(engine);
        outcome(
            py,
            result.status,
            &result.body,
            result.hold,
            result.effects,
            result.new_browser,
        )
    }

    /// Whether `client_id` names a live session that a request with this cookie, over this
    /// transport (and socket), may use: the check every message of the session passes in the
    /// core.
    #[pyo3(signature = (client_id, browser = None, transport = "long-polling", socket = None))]
    fn owns_session(
        &self,
        client_id: &str,
        browser: Option<&str>,
        transport: &str,
        socket: Option<SocketId>,
    ) -> PyResult<bool> {
        let info = RequestInfo {
            socket,
            ..RequestInfo::new(
                browser.and_then(Id::parse),
                parse_transport(transport, socket)?,
            )
        };
        let Some(id) = Id::parse(client_id) else {
            return Ok(false);
        };
        let engine = self.engine();
        Ok(engine
            .lookup(&id, info.browser.as_ref(), info.caller())
            .is_ok())
    }

    /// The reply to a held connect; `drain` is false when it was released without messages;
    /// `multiple_clients` when its browser has a long-poll held on another process.
    #[pyo3(signature = (hold, drain, multiple_clients = false))]
    fn complete_connect(
        &self,
        py: Python<'_>,
        hold: &Bound<'_, PyHold>,
        drain: bool,
        multiple_clients: bool,
    ) -> Py<PyBytes> {
        let body = protocol::complete_connect_with(
            &mut *self.engine(),
            &hold.get().0,
            drain,
            multiple_clients,
            Instant::now(),
        );
        PyBytes::new(py, &body).unbind()
    }

    /// With the ack extension, for a cluster to record where each batch stands: the batch the
    /// client acknowledged last and the batch of the connect reply built since the last call
    /// (each reported once), as `(acknowledged, built)`; `None` for a session without it.
    fn ack_report(&self, client_id: &str) -> PyResult<Option<(Option<u64>, Option<u64>)>> {
        let id = parse_id(client_id)?;
        let mut engine = self.engine();
        Ok(engine.key_of(&id).and_then(|key| engine.ack_report(key)))
    }

    /// With the ack extension: numbers a session's next batches after `batch`, the last one
    /// another process of a cluster sent it (nothing for a session without it).
    fn continue_ack_after(&self, client_id: &str, batch: u64) -> PyResult<()> {
        let id = parse_id(client_id)?;
        let mut engine = self.engine();
        let key = engine
            .key_of(&id)
            .ok_or_else(|| CoreError::ClientNotFound(client_id.to_owned()))?;
        engine.continue_ack_after(key, batch);
        Ok(())
    }

    /// Every message queued for a session as one JSON array, for the WebSocket `socket` to
    /// push; `None` if there is none, or the session is not bound to that socket (when one is
    /// named).
    #[pyo3(signature = (client_id, socket = None))]
    fn drain<'py>(
        &self,
        py: Python<'py>,
        client_id: &str,
        socket: Option<SocketId>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let id = parse_id(client_id)?;
        let body = protocol::drain_queue(&mut *self.engine(), &id, socket);
        Ok(body.map(|b| PyBytes::new(py, b.as_slice())))
    }

    /// The WebSocket `socket` closed: if the session is still bound to it, its held connect
    /// is released and its expiry clock starts.
    fn unbind(&self, py: Python<'_>, client_id: &str, socket: SocketId) -> PyResult<PyOutcome> {
        let id = parse_id(client_id)?;
        let mut effects = Effects::default();
        self.engine()
            .unbind(&id, socket, Instant::now(), &mut effects);
        effects_outcome(py, effects)
    }

    /// Publishes `data` to every subscriber of a broadcast channel.
    fn publish(
        &self,
        py: Python<'_>,
        channel: &str,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<PyOutcome> {
        self.check_name(channel)?;
        if channel::classify(channel) != Some(ChannelKind::Broadcast) {
            return Err(CoreError::InvalidChannel(channel.to_owned()).into());
        }
        let data = to_json(data, self.config.max_data_depth)?;
        // What to_json writes is JSON, so UTF-8.
        let data = String::from_utf8(data).expect("JSON is UTF-8");
        let mut effects = Effects::default();
        let mut engine = self.engine();
        let message = engine.broadcast_message(channel, &data, Instant::now());
        engine.publish(channel, message, &mut effects);
        drop(engine);
        effects_outcome(py, effects)
    }

    /// Sends `data` on `channel` to one session, subscribed or not.
    fn deliver(
        &self,
        py: Python<'_>,
        client_id: &str,
        channel: &str,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<PyOutcome> {
        self.check_name(channel)?;
        if !matches!(
            channel::classify(channel),
            Some(ChannelKind::Broadcast | ChannelKind::Service)
        ) {
            return Err(CoreError::InvalidChannel(channel.to_owned()).into());
        }
        let id = parse_id(client_id)?;
        let data = to_json(data, self.config.max_data_depth)?;
        let message = delivered_message(channel, &data);
        let mut engine = self.engine();
        let key = engine
            .key_of(&id)
            .ok_or_else(|| CoreError::ClientNotFound(client_id.to_owned()))?;
        let mut effects = Effects::default();
        engine.deliver(key, message, &mut effects);
        drop(engine);
        effects_outcome(py, effects)
    }

    /// The client ids that messages of a batch name, each once, in order, with whether the
    /// session is here and whether the batch connects it: in a cluster, a session that is not
    /// here is taken over before a batch that connects it (its messages are delivered where
    /// it connects), and only borrowed for any other. Empty for a body that is not a batch.
    fn named_sessions(&self, body: &[u8]) -> Vec<(String, bool, bool)> {
        let Ok(messages) = json::split_batch(body) else {
            return Vec::new();
        };
        let engine = self.engine();
        let mut named: Vec<(String, bool, bool)> = Vec::new();
        for raw in messages {
            let Ok((message, channel)) = protocol::read(raw, self.config.max_data_depth) else {
                continue;
            };
            let connects = channel == "/meta/connect";
            let Some(id) = message
                .client_id
                .and_then(json::as_str)
                .and_then(|text| Id::parse(&text))
            else {
                continue;
            };
            let text = id.to_string();
            match named.iter_mut().find(|(seen, _, _)| *seen == text) {
                Some((_, _, any_connect)) => *any_connect |= connects,
                None => named.push((text, engine.key_of(&id).is_some(), connects)),
            }
        }
        named
    }

    /// The replays a batch's subscribes ask for, as `(client id, channel, id)`: on a cluster's
    /// node, what must be read from the cluster's history (`set_replay_feed`) before the batch
    /// is processed, where its session lives. Ids that are not integers, `-1`, wildcards and
    /// channels without history are left out: the subscribe refuses or ignores them itself.
    fn replays(&self, body: &[u8]) -> Vec<(String, String, i64)> {
        let Ok(messages) = json::split_batch(body) else {
            return Vec::new();
        };
        let engine = self.engine();
        let history = engine.history();
        let mut replays = Vec::new();
        for raw in messages {
            let Ok((message, channel)) = protocol::read(raw, self.config.max_data_depth) else {
                continue;
            };
            let client_id = message.client_id.and_then(json::as_str);
            let names = message.subscription.and_then(json::as_str_list);
            let (Some(client_id), Some(names)) = (client_id, names) else {
                continue;
            };
            if channel != "/meta/subscribe" {
                continue;
            }
            let names: Vec<&str> = names.iter().map(|name| &**name).collect();
            let Ok(asked) = protocol::asked_replays(message.ext, &names) else {
                continue;
            };
            for (name, raw) in asked {
                let id = serde_json::from_str::<i64>(raw.get()).ok();
                let wanted = id.filter(|&id| ReplayFrom::from_id(id).is_some() && id != -1);
                if let Some(id) = wanted {
                    if channel::classify(name) == Some(ChannelKind::Broadcast)
                        && history.rule(name).is_some()
                    {
                        replays.push((client_id.to_string(), name.to_owned(), id));
                    }
                }
            }
        }
        replays
    }

    /// What the next batch's replays read (see `replays`): `(channel, id asked after, the
    /// messages as subscribers receive them or None when that id cannot be replayed after,
    /// whether they were not read for being more than a session may take at once)`.
    #[allow(clippy::type_complexity)]
    fn set_replay_feed(&self, feed: Vec<(String, i64, Option<Vec<Bound<'_, PyBytes>>>, bool)>) {
        let feed = feed
            .into_iter()
            .map(|(channel, after, messages, too_many)| {
                let fed = match messages {
                    _ if too_many => Err(ReplayRefused::TooMany),
                    None => Err(ReplayRefused::InvalidId),
                    // Garbage under the history's key is passed over, as in the log.
                    Some(list) => Ok(list
                        .iter()
                        .map(|m| m.as_bytes())
                        .filter(|m| is_json_object(m))
                        .map(Shared::from)
                        .collect()),
                };
                ((channel.into_boxed_str(), after), fed)
            })
            .collect();
        self.engine().history_mut().set_feed(feed);
    }

    /// How many replayed messages a session may have undelivered at once (a replay past it
    /// is refused): what a cluster's node reads for one batch at most.
    fn max_replayed(&self) -> usize {
        self.config.max_replayed()
    }

    /// The history `channel` keeps, `(size, ttl in ms or None)`, or None for none.
    fn history_rule(&self, channel: &str) -> Option<(usize, Option<u64>)> {
        let engine = self.engine();
        let rule = engine.history().rule(channel)?;
        Some((rule.size.max(1), rule.ttl.map(|ttl| ttl.as_millis() as u64)))
    }

    /// Takes in a session another process of a cluster served until now (see
    /// `Engine::adopt`), with its subscriptions, whether it uses the ack extension and whether
    /// its first connect was answered. False if a session with that id is here already.
    #[pyo3(signature = (
        client_id, browser, subscriptions, ack = false, address = None, connected = true
    ))]
    fn adopt(
        &self,
        client_id: &str,
        browser: &str,
        subscriptions: Vec<String>,
        ack: bool,
        address: Option<&str>,
        connected: bool,
    ) -> PyResult<bool> {
        let id = parse_id(client_id)?;
        let browser = parse_id(browser)?;
        self.check_subscriptions(&subscriptions)?;
        let mut engine = self.engine();
        let address = address.and_then(address_key);
        let Some(key) = engine.adopt(id, browser, address, connected, Instant::now()) else {
            return Ok(false);
        };
        for name in &subscriptions {
            engine.subscribe(key, name);
        }
        if ack {
            engine.enable_ack(key);
        }
        Ok(true)
    }

    /// Queues for a session just adopted what it missed while no process served it:
    /// `(channel, message, excluded, direct)` entries carried by the cluster, in order. A
    /// `direct` one was sent to this session alone and is queued whatever it subscribed to;
    /// the others are passed over on channels its subscriptions do not match, or when it
    /// published them itself and must not receive them. Returns how many were queued.
    #[pyo3(signature = (client_id, entries, stamp = 0))]
    fn catch_up(
        &self,
        client_id: &str,
        entries: Vec<(String, Vec<u8>, Option<String>, bool)>,
        stamp: u64,
    ) -> PyResult<usize> {
        let id = parse_id(client_id)?;
        let mut engine = self.engine();
        engine.set_stamp(stamp);
        let key = engine
            .key_of(&id)
            .ok_or_else(|| CoreError::ClientNotFound(client_id.to_owned()))?;
        let subscriptions = engine.session_info(key).subscriptions;
        let mut effects = Effects::default();
        let mut queued = 0;
        for (channel, message, excluded, direct) in entries {
            let wanted = direct || subscriptions.iter().any(|s| channel::matches(s, &channel));
            let own = excluded.is_some_and(|excluded| excluded == client_id);
            if wanted && !own && is_json_object(&message) {
                engine.deliver(key, Arc::from(message), &mut effects);
                queued += 1;
            }
        }
        Ok(queued)
    }

    /// `data` on `channel` as subscribers receive it, for the cluster to carry to a session
    /// served elsewhere (`send_to_client`); the channel must be a broadcast or service one.
    fn message<'py>(
        &self,
        py: Python<'py>,
        channel: &str,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.check_name(channel)?;
        if !matches!(
            channel::classify(channel),
            Some(ChannelKind::Broadcast | ChannelKind::Service)
        ) {
            return Err(CoreError::InvalidChannel(channel.to_owned()).into());
        }
        let data = to_json(data, self.config.max_data_depth)?;
        Ok(PyBytes::new(py, &delivered_message(channel, &data)))
    }

    /// Queues a message the cluster carried here for one session (see `message`), with the
    /// `stamp` of its log entry (see `track_marks`).
    #[pyo3(signature = (client_id, message, stamp = 0))]
    fn deliver_message(
        &self,
        py: Python<'_>,
        client_id: &str,
        message: &[u8],
        stamp: u64,
    ) -> PyResult<PyOutcome> {
        let message = relayed_message(message)?;
        let id = parse_id(client_id)?;
        let mut engine = self.engine();
        engine.set_stamp(stamp);
        let key = engine
            .key_of(&id)
            .ok_or_else(|| CoreError::ClientNotFound(client_id.to_owned()))?;
        let mut effects = Effects::default();
        engine.deliver(key, message, &mut effects);
        drop(engine);
        effects_outcome(py, effects)
    }

    /// Makes a session's subscriptions exactly `subscriptions` (another process of a cluster
    /// changed them): no event, and no limit applies (they were checked where they were made).
    fn resubscribe(&self, client_id: &str, subscriptions: Vec<String>) -> PyResult<()> {
        let id = parse_id(client_id)?;
        self.check_subscriptions(&subscriptions)?;
        let mut engine = self.engine();
        let key = engine
            .key_of(&id)
            .ok_or_else(|| CoreError::ClientNotFound(client_id.to_owned()))?;
        for name in engine.session_info(key).subscriptions {
            if !subscriptions.contains(&name) {
                engine.unsubscribe(key, &name);
            }
        }
        for name in &subscriptions {
            engine.subscribe(key, name);
        }
        Ok(())
    }

    /// Lets go of a session that another process of a cluster serves from now on: no event,
    /// and its held connect, if any, is answered as a plain connect reply.
    fn forget(&self, py: Python<'_>, client_id: &str) -> PyResult<PyOutcome> {
        let id = parse_id(client_id)?;
        let mut engine = self.engine();
        let mut effects = Effects::default();
        if let Some(key) = engine.key_of(&id) {
            engine.remove(key, RemoveReason::Moved, &mut effects);
        }
        drop(engine);
        effects_outcome(py, effects)
    }

    /// Queues a message that the cluster carried here (`message`: as subscribers receive it,
    /// from a relayed publish) for every local subscriber of `channel`, except `excluded`,
    /// with the `stamp` of its log entry (see `track_marks`).
    #[pyo3(signature = (channel, message, excluded = None, stamp = 0))]
    fn fan_out(
        &self,
        py: Python<'_>,
        channel: &str,
        message: &[u8],
        excluded: Option<&str>,
        stamp: u64,
    ) -> PyResult<PyOutcome> {
        self.check_name(channel)?;
        if channel::classify(channel) != Some(ChannelKind::Broadcast) {
            return Err(CoreError::InvalidChannel(channel.to_owned()).into());
        }
        let message = relayed_message(message)?;
        let excluded = excluded.map(parse_id).transpose()?;
        let mut engine = self.engine();
        let excluded = excluded.and_then(|id| engine.key_of(&id));
        engine.set_stamp(stamp);
        let mut effects = Effects::default();
        engine.fan_out(channel, message, excluded, &mut effects);
        drop(engine);
        effects_outcome(py, effects)
    }

    /// Starts tracking, for a cluster node, where each session's undelivered messages begin:
    /// every message queued carries the stamp its caller gives (`fan_out`, `deliver_message`,
    /// `catch_up`), and `take_marks` tells which sessions' first undelivered stamp changed.
    fn track_marks(&self) {
        self.engine().track_marks();
    }

    /// Each session whose first undelivered message changed since the last call, with that
    /// message's stamp (0: it has none undelivered). Sessions with the ack extension are left
    /// out. Nothing unless `track_marks` was called.
    fn take_marks(&self) -> Vec<(String, u64)> {
        let changed = self.engine().take_marks();
        changed
            .into_iter()
            .map(|(id, since)| (id.to_string(), since))
            .collect()
    }

    /// The client ids of every session here.
    fn session_ids(&self) -> Vec<String> {
        self.engine()
            .session_ids()
            .map(|id| id.to_string())
            .collect()
    }

    /// Ends a session as if the server decided so.
    fn remove_session(&self, py: Python<'_>, client_id: &str) -> PyResult<PyOutcome> {
        let id = parse_id(client_id)?;
        let mut engine = self.engine();
        let key = engine
            .key_of(&id)
            .ok_or_else(|| CoreError::ClientNotFound(client_id.to_owned()))?;
        let mut effects = Effects::default();
        engine.remove(key, RemoveReason::Removed, &mut effects);
        drop(engine);
        effects_outcome(py, effects)
    }

    /// Removes sessions whose `max_interval` has passed without a connect, one slice of the
    /// table per call. Returns the outcome and whether the pass over the table is done (if
    /// not, call again soon).
    fn sweep(&self, py: Python<'_>) -> PyResult<(PyOutcome, bool)> {
        let mut effects = Effects::default();
        let done = self.engine().sweep(Instant::now(), &mut effects);
        Ok((effects_outcome(py, effects)?, done))
    }

    /// Releases every held connect (shutdown).
    fn release_all(&self, py: Python<'_>) -> PyResult<PyOutcome> {
        let mut effects = Effects::default();
        self.engine().release_all(&mut effects);
        effects_outcome(py, effects)
    }

    /// Counters: sessions, channels, published, delivered, dropped, what history keeps.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.engine().stats();
        let dict = PyDict::new(py);
        dict.set_item("sessions", stats.sessions)?;
        dict.set_item("sessions_created", stats.sessions_created)?;
        dict.set_item("sessions_removed", stats.sessions_removed)?;
        dict.set_item("sessions_disconnected", stats.sessions_disconnected)?;
        dict.set_item("sessions_expired", stats.sessions_expired)?;
        dict.set_item("sessions_ended_by_server", stats.sessions_ended_by_server)?;
        dict.set_item("sessions_websocket", stats.sessions_websocket)?;
        dict.set_item("subscriptions", stats.subscriptions)?;
        dict.set_item("channels", stats.channels)?;
        dict.set_item("published", stats.published)?;
        dict.set_item("delivered", stats.delivered)?;
        dict.set_item("dropped", stats.dropped)?;
        dict.set_item("history_channels", stats.history_channels)?;
        dict.set_item("history_messages", stats.history_messages)?;
        dict.set_item("history_oldest_id", stats.history_oldest_id)?;
        Ok(dict)
    }

    /// How long the core took, as histograms: `{"batches": ..., "fan_outs": ...}`, each
    /// `(bucket bounds in seconds, count per bucket with one more past the last bound, sum in
    /// seconds)`.
    #[allow(clippy::type_complexity)]
    fn durations(&self) -> Vec<(&'static str, Vec<f64>, Vec<u64>, f64)> {
        let engine = self.engine();
        let bounds: Vec<f64> = BOUNDS_US.iter().map(|&us| us as f64 / 1e6).collect();
        [("batches", engine.batches), ("fan_outs", engine.fan_outs)]
            .into_iter()
            .map(|(name, d)| (name, bounds.clone(), d.counts.to_vec(), d.sum.as_secs_f64()))
            .collect()
    }

    /// Counts an unsuccessful reply the Python layer made (the application's hooks, a
    /// cluster's refusals), with those the core makes.
    fn count_error(&self, error: &str) {
        self.engine().count_error(error);
    }

    /// Unsuccessful replies so far, by kind: `{"402:session_unknown": n, ...}`.
    fn error_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (kind, count) in self.engine().error_counts() {
            dict.set_item(kind, count)?;
        }
        Ok(dict)
    }

    /// The messages kept on a broadcast `channel` after the id `after` (-2: all of them, -1:
    /// none), each as subscribers receive it; raises `ReplayIdError` with the replay
    /// extension's error for a channel without history or an id that cannot be read after.
    fn history<'py>(
        &self,
        py: Python<'py>,
        channel: &str,
        after: i64,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        self.check_name(channel)?;
        if channel::classify(channel) != Some(ChannelKind::Broadcast) {
            return Err(CoreError::InvalidChannel(channel.to_owned()).into());
        }
        let invalid = || ReplayIdError::new_err(bayeux::replay_id_invalid(&after.to_string()));
        let from = ReplayFrom::from_id(after).ok_or_else(invalid)?;
        match self.engine().replay(channel, from, Instant::now()) {
            Ok(messages) => Ok(messages.iter().map(|m| PyBytes::new(py, m)).collect()),
            Err(ReplayRefused::InvalidId) => Err(invalid()),
            Err(refused) => {
                let problem = match refused {
                    ReplayRefused::TooMany => "replay_limit_exceeded",
                    _ => "replay_not_available",
                };
                Err(ReplayIdError::new_err(bayeux::replay_refused(
                    channel, problem,
                )))
            }
        }
    }

    /// One session's queue length, dropped count and subscriptions; `None` if unknown.
    fn session_info<'py>(
        &self,
        py: Python<'py>,
        client_id: &str,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let id = parse_id(client_id)?;
        let engine = self.engine();
        let Some(key) = engine.key_of(&id) else {
            return Ok(None);
        };
        let info = engine.session_info(key);
        drop(engine);
        let dict = PyDict::new(py);
        dict.set_item("queued", info.queued)?;
        dict.set_item("dropped", info.dropped)?;
        dict.set_item("subscriptions", info.subscriptions)?;
        dict.set_item("browser", info.browser.to_string())?;
        dict.set_item("ack", info.ack)?;
        dict.set_item("connected", info.connected)?;
        Ok(Some(dict))
    }
}

/// Whether `message`, which comes from outside this process, is one JSON object: anything else
/// would corrupt the reply of every session it reached.
fn is_json_object(message: &[u8]) -> bool {
    serde_json::from_slice::<&serde_json::value::RawValue>(message)
        .is_ok_and(|raw| raw.get().starts_with('{'))
}

/// A message another process carried here, shared as delivered; refused unless it is one JSON
/// object.
fn relayed_message(message: &[u8]) -> PyResult<Shared> {
    if !is_json_object(message) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "a relayed message must be one JSON object",
        ));
    }
    Ok(Arc::from(message))
}

/// A transport by name; a WebSocket request must name its socket, which owns its sessions.
fn parse_transport(name: &str, socket: Option<SocketId>) -> PyResult<Transport> {
    let transport = Transport::parse(name).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!("unknown transport {name:?}"))
    })?;
    if transport == Transport::WebSocket && socket.is_none() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "a websocket request needs the socket it came over",
        ));
    }
    Ok(transport)
}
