// Test driver: lets pytest steer Faye's Node.js client (npm `faye` 1.4).
//
// It speaks the JSON-lines protocol of driver.mjs (the CometD JS driver):
// one JSON command per line on stdin, one JSON event per line on stdout,
// logs on stderr. What differs is how each command maps onto Faye:
//
// - Faye handshakes lazily (on the first connect, subscribe or publish) and
//   gives the application no handshake callback, so one client extension
//   watches every /meta/* reply: it answers `handshake` commands, emits the
//   `meta` events and notices re-handshakes.
// - After a /meta/connect reply advising reconnect=handshake, Faye handshakes
//   again and re-subscribes every channel it knows by itself; the driver only
//   watches for those /meta/subscribe replies and emits `resubscribed`.
// - A disconnected Faye client never connects again, so a `handshake` after a
//   disconnect (or a second `handshake`) starts a fresh client with the same
//   configuration, like CometD's handshake() starts a new session.
// - client.unsubscribe() reports nothing back; the /meta/unsubscribe reply is
//   matched to the command through the message id the extension saw leave.
// - Faye has no appendMessageTypeToURL; the option is accepted and ignored.
//
// Faye-only event: {"event": "transport", "state": "up"|"down"} when Faye's
// dispatcher sees its transport fail or recover (Faye retries failed
// requests by itself and makes no reply message for them).
//
// jsforce: `configure` with {"jsforce": {"instanceUrl", "channel", "replayId"}}
// builds the Faye client as jsforce 3 does for Salesforce's Streaming API
// (endpoint <instanceUrl>/cometd/50.0, an OAuth header), with its replay
// extension for that channel; `status` then reports the id it would replay
// from (`replay`), which the extension takes from data.event.replayId.

import { createInterface } from "node:readline";
import { emit } from "./protocol.mjs";
import Faye from "faye";
import jsforce from "jsforce";
import { createRequire } from "node:module";

// jsforce's streaming module is published for require() only.
const { StreamingExtension } = createRequire(import.meta.url)("jsforce/api/streaming");

const LEVELS = ["debug", "info", "warn", "error", "fatal"];

function log(...args) {
    console.error("[faye-driver]", ...args);
}

// Faye logs through Faye.logger: an object with one method per level it wants.
function setLogLevel(level) {
    const from = Math.max(LEVELS.indexOf(level || "warn"), 0);
    const logger = {};
    for (const name of LEVELS.slice(from)) {
        logger[name] = (text) => console.error(text);
    }
    Faye.logger = logger;
}

// The error string of an unsuccessful reply; null for a successful one.
function errorOf(reply) {
    if (!reply || reply.successful) {
        return null;
    }
    return reply.error !== undefined ? reply.error : "unsuccessful";
}

// Faye rejects subscriptions and publications with its own Error object, parsed from the
// reply's error string; turn it back into that string.
function errorText(reason) {
    if (reason === undefined || reason === null) {
        return "failed";
    }
    if (typeof reason === "object" && "code" in reason && "params" in reason) {
        // A string that didn't follow Bayeux's error grammar is kept whole as the message.
        return reason.code === null ? String(reason.message) : String(reason);
    }
    return String(reason);
}

// Faye's Client states (protocol/client.js), named like CometD statuses where they match.
const STATES = { 1: "unconnected", 2: "handshaking", 3: "connected", 4: "disconnected" };

const FAYE_TRANSPORTS = ["in-process", "websocket", "long-polling"];

let config = null;          // the last `configure` command
let client = null;
let generation = 0;         // bumped with every new Faye client; stale callbacks check it
let handshakes = 0;         // successful handshakes of the current client
let handshakeExt = null;    // ext for the next /meta/handshake, from the `handshake` command
const handshakeTags = [];   // `handshake` commands waiting for a handshake reply
const subscriptions = new Map();    // channel -> Faye Subscription
const sentUnsubscribes = new Map(); // message id -> { channel, tag }
const unsubscribeTags = new Map();  // channel -> tag of the pending `unsubscribe`
let resubscribing = null;   // { channels, pending: Set, results } after a re-handshake
let replayExtension = null; // jsforce's replay extension, with the jsforce option
let lastClientId = null;

function requireClient() {
    if (client === null) {
        throw new Error("not configured: send a 'configure' command first");
    }
    if (client._state === client.DISCONNECTED) {
        throw new Error("disconnected: send a 'handshake' command first");
    }
    return client;
}

function finishResubscribe() {
    const { channels, results } = resubscribing;
    resubscribing = null;
    emit({
        event: "resubscribed",
        channels,
        successful: results.every((r) => r.successful),
        results,
    });
}

function onHandshakeReply(reply) {
    for (const tag of handshakeTags.splice(0)) {
        emit({
            event: "handshake",
            tag,
            successful: reply.successful === true,
            clientId: reply.clientId ?? null,
            error: errorOf(reply),
            reply,
        });
    }
    if (!reply.successful) {
        return;
    }
    lastClientId = reply.clientId ?? null;
    handshakes += 1;
    if (handshakes > 1) {
        // Faye will now re-send /meta/subscribe for every channel it holds.
        const channels = [...subscriptions.keys()];
        resubscribing = { channels, pending: new Set(channels), results: [] };
        if (channels.length === 0) {
            finishResubscribe();
        }
    }
}

function onSubscribeReply(reply) {
    if (resubscribing === null) {
        return;
    }
    for (const channel of [].concat(reply.subscription ?? [])) {
        if (resubscribing.pending.delete(channel)) {
            resubscribing.results.push({ channel, successful: reply.successful === true, error: errorOf(reply) });
        }
    }
    if (resubscribing.pending.size === 0) {
        finishResubscribe();
    }
}

function onUnsubscribeReply(reply) {
    const sent = sentUnsubscribes.get(reply.id);
    if (sent === undefined) {
        return;
    }
    sentUnsubscribes.delete(reply.id);
    emit({
        event: "unsubscribed",
        tag: sent.tag,
        channel: sent.channel,
        successful: reply.successful === true,
        error: errorOf(reply),
    });
}

// Sees every message the client sends and receives, after Faye built it and before Faye
// acts on it.
function observer(owner) {
    return {
        outgoing(message, callback) {
            if (owner === generation) {
                if (message.channel === "/meta/handshake" && handshakeExt !== null) {
                    message.ext = { ...(message.ext || {}), ...handshakeExt };
                }
                if (message.channel === "/meta/unsubscribe") {
                    const channel = message.subscription;
                    sentUnsubscribes.set(message.id, { channel, tag: unsubscribeTags.get(channel) });
                    unsubscribeTags.delete(channel);
                }
            }
            callback(message);
        },
        incoming(message, callback) {
            const channel = typeof message.channel === "string" ? message.channel : null;
            const isMeta = channel !== null && channel.startsWith("/meta/");
            const event = {
                event: "meta",
                listener: channel,
                channel,
                successful: message.successful,
                error: errorOf(message),
                clientId: message.clientId ?? null,
                advice: message.advice ?? null,
                subscription: message.subscription ?? null,
                id: message.id ?? null,
            };
            if (owner === generation && isMeta) {
                emit(event);
            }
            if (owner === generation && message.successful === false) {
                // Like CometD's /meta/unsuccessful listener: every failed reply, publish replies
                // and channel-less ones (such as the answer to a refused batch) included.
                emit({ ...event, listener: "/meta/unsuccessful" });
            }
            if (owner === generation && isMeta) {
                if (message.advice && message.advice.reconnect === "handshake") {
                    lastClientId = null;
                }
                if (channel === "/meta/handshake") {
                    onHandshakeReply(message);
                } else if (channel === "/meta/subscribe") {
                    onSubscribeReply(message);
                } else if (channel === "/meta/unsubscribe") {
                    onUnsubscribeReply(message);
                }
            }
            callback(message);
        },
    };
}

// A fresh Faye client from the current configuration; the previous one is disconnected.
function newClient() {
    if (client !== null && client._state === client.CONNECTED) {
        client.disconnect();
    }
    generation += 1;
    handshakes = 0;
    handshakeExt = null;
    resubscribing = null;
    lastClientId = null;
    subscriptions.clear();
    sentUnsubscribes.clear();
    unsubscribeTags.clear();

    const owner = generation;
    client = config.jsforce ? jsforceClient(config.jsforce) : new Faye.Client(config.url, { ...(config.options || {}) });
    const wanted = config.transports || ["long-polling"];
    for (const type of FAYE_TRANSPORTS) {
        if (!wanted.includes(type)) {
            client.disable(type);
        }
    }
    // Only meaningful in browsers (disconnect on page unload); disabled for clarity.
    client.disable("autodisconnect");
    client.addExtension(observer(owner));
    client.on("transport:down", () => owner === generation && emit({ event: "transport", state: "down" }));
    client.on("transport:up", () => owner === generation && emit({ event: "transport", state: "up" }));
    return client;
}

// A Faye client built by jsforce, as an application of Salesforce's Streaming API builds it.
function jsforceClient(options) {
    const connection = new jsforce.Connection({
        instanceUrl: options.instanceUrl,
        accessToken: "token",
        version: "50.0",
    });
    replayExtension = new StreamingExtension.Replay(options.channel, options.replayId);
    return connection.streaming.createClient([replayExtension]);
}

function configure(cmd) {
    if (cmd.url === undefined) {
        throw new Error("configure needs a url");
    }
    setLogLevel(cmd.logLevel);
    config = cmd;
    handshakeTags.length = 0;
    newClient();
    const wanted = cmd.transports || ["long-polling"];
    return {
        event: "configured",
        transports: FAYE_TRANSPORTS.filter((type) => wanted.includes(type)),
        version: Faye.VERSION,
    };
}

function handshake(cmd, tag) {
    if (config === null) {
        throw new Error("not configured: send a 'configure' command first");
    }
    // A client that handshook already (or disconnected) stays on its session; start anew.
    if (client._state === client.CONNECTED || client._state === client.DISCONNECTED) {
        newClient();
    }
    handshakeExt = cmd.ext ?? null;
    handshakeTags.push(tag);
    // connect() handshakes first, then starts the /meta/connect cycle (no-op if a
    // handshake is already in flight; its reply answers this command too).
    client.connect();
}

function subscribe(cmd, tag) {
    const faye = requireClient();
    const channel = cmd.channel;
    if (subscriptions.has(channel)) {
        throw new Error("already subscribed to " + channel);
    }
    const owner = generation;
    const subscription = faye.subscribe(channel);
    // withChannel's callback gets the message's own channel, which differs from the
    // subscription's for wildcard subscriptions.
    subscription.withChannel((messageChannel, data) => {
        if (owner === generation) {
            emit({ event: "message", subscription: channel, channel: messageChannel, data });
        }
    });
    subscriptions.set(channel, subscription);
    subscription.then(
        () => emit({ event: "subscribed", tag, channel, successful: true, error: null }),
        (reason) => {
            // Faye forgets a failed subscription itself; mirror that.
            if (owner === generation && subscriptions.get(channel) === subscription) {
                subscriptions.delete(channel);
            }
            emit({ event: "subscribed", tag, channel, successful: false, error: errorText(reason) });
        },
    );
}

function unsubscribe(cmd, tag) {
    requireClient();
    const channel = cmd.channel;
    const subscription = subscriptions.get(channel);
    if (subscription === undefined) {
        throw new Error("not subscribed to " + channel);
    }
    subscriptions.delete(channel);
    // The driver holds one subscription per channel, so cancelling it always makes Faye
    // send /meta/unsubscribe; the extension picks up the tag from here.
    unsubscribeTags.set(channel, tag);
    subscription.cancel();
}

function publishOne(channel, data) {
    return new Promise((resolve) => {
        requireClient().publish(channel, data).then(
            () => resolve(null),
            (reason) => resolve(errorText(reason)),
        );
    });
}

async function publish(cmd, tag) {
    const error = await publishOne(cmd.channel, cmd.data ?? null);
    emit({ event: "published", tag, channel: cmd.channel, successful: error === null, error });
}

async function publishMany(cmd, tag) {
    requireClient();
    const count = cmd.count;
    const errors = [];
    const dataOf = (i) => (cmd.prefix === undefined ? { seq: i } : { seq: i, prefix: cmd.prefix });
    if (cmd.batch === false) {
        // One at a time: over HTTP each publish is its own request, and Node sends parallel
        // requests on parallel sockets, so waiting for each reply is what keeps them in order.
        for (let i = 0; i < count; ++i) {
            const error = await publishOne(cmd.channel, dataOf(i));
            if (error !== null) {
                errors.push({ seq: i, error });
            }
        }
    } else {
        // Faye batches messages queued in the same tick into one request (splitting it past
        // 2048 characters of JSON).
        const results = [];
        for (let i = 0; i < count; ++i) {
            results.push(publishOne(cmd.channel, dataOf(i)));
        }
        (await Promise.all(results)).forEach((error, i) => {
            if (error !== null) {
                errors.push({ seq: i, error });
            }
        });
    }
    emit({ event: "published_many", tag, count: Math.max(count, 0), successful: errors.length === 0, errors });
}

// Resolves with the disconnect reply's outcome; a client that isn't connected sends nothing.
function disconnectClient(timeoutMs) {
    return new Promise((resolve) => {
        if (client === null || client._state !== client.CONNECTED) {
            resolve({ successful: true, alreadyDisconnected: true, error: null });
            return;
        }
        const timer = setTimeout(() => resolve({ successful: false, error: "disconnect timed out" }), timeoutMs);
        client.disconnect().then(
            () => {
                clearTimeout(timer);
                resolve({ successful: true, error: null });
            },
            (reason) => {
                clearTimeout(timer);
                resolve({ successful: false, error: errorText(reason) });
            },
        );
    });
}

async function disconnect(tag) {
    subscriptions.clear();
    resubscribing = null;
    const reply = await disconnectClient(10000);
    lastClientId = null;
    emit({ event: "disconnected", tag, successful: reply.successful, error: reply.error });
}

let exiting = false;
async function exit(tag) {
    if (exiting) {
        return;
    }
    exiting = true;
    await disconnectClient(3000);
    emit({ event: "exited", tag });
    // Keep-alive sockets and Faye's timers would keep Node alive.
    process.exit(0);
}

function status(tag) {
    emit({
        event: "status",
        tag,
        status: client ? STATES[client._state] ?? String(client._state) : "unconfigured",
        clientId: client ? lastClientId : null,
        subscriptions: [...subscriptions.keys()],
        // The transport Faye currently sends through (a private field, for diagnostics).
        connectionType: client && client._dispatcher ? client._dispatcher.connectionType ?? null : null,
        replay: replayExtension ? replayExtension._replay ?? null : null,
    });
}

async function handle(line) {
    let cmd;
    try {
        cmd = JSON.parse(line);
    } catch (x) {
        emit({ event: "error", message: "bad JSON command: " + x.message });
        return;
    }
    const tag = cmd.tag;
    try {
        switch (cmd.cmd) {
            case "configure":
                emit({ ...configure(cmd), tag });
                break;
            case "handshake":
                handshake(cmd, tag);
                break;
            case "subscribe":
                subscribe(cmd, tag);
                break;
            case "unsubscribe":
                unsubscribe(cmd, tag);
                break;
            case "publish":
                await publish(cmd, tag);
                break;
            case "publish_many":
                await publishMany(cmd, tag);
                break;
            case "disconnect":
                await disconnect(tag);
                break;
            case "status":
                status(tag);
                break;
            case "exit":
                await exit(tag);
                break;
            default:
                throw new Error("unknown command " + JSON.stringify(cmd.cmd));
        }
    } catch (x) {
        emit({ event: "error", tag, cmd: cmd.cmd, message: x && x.message ? x.message : String(x) });
    }
}

setLogLevel("warn");
// pytest went away: nobody to report to.
process.stdout.on("error", () => process.exit(0));
// Errors thrown from client callbacks or timers must not kill the driver.
process.on("uncaughtException", (x) => emit({ event: "error", message: "uncaught: " + (x && x.stack ? x.stack : x) }));
process.on("unhandledRejection", (x) => emit({ event: "error", message: "unhandled: " + (x && x.stack ? x.stack : x) }));

const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", (line) => {
    if (line.trim() !== "") {
        handle(line).catch((x) => log("command failed:", x));
    }
});
input.on("close", () => exit(undefined));
