// Test driver: lets pytest steer the official CometD JavaScript client.
//
// Protocol: one JSON command per line on stdin, one JSON event per line on
// stdout. Anything else (client logs, diagnostics) goes to stderr so that
// stdout stays machine-readable. See tests/js_client.py for the Python side.

import { createInterface } from "node:readline";
import { adapt } from "cometd-nodejs-client";
import { CometD } from "cometd";

// Route every console method to stderr. CometD logs through window.console
// (info/debug go to stdout in Node) and adapt() aliases console.debug to
// console.log, so this must be re-applied after each adapt() call.
function quietStdout() {
    const toStderr = (...args) => console.error(...args);
    console.log = toStderr;
    console.info = toStderr;
    console.debug = toStderr;
}
quietStdout();

function emit(event) {
    // Pipes are synchronous on Linux, so a single write is flushed at once.
    process.stdout.write(JSON.stringify(event, safeReplacer()) + "\n");
}

// Failure replies built by the client carry the XHR object and functions:
// drop what JSON can't carry and break cycles.
function safeReplacer() {
    const seen = new WeakSet();
    return (key, value) => {
        if (typeof value === "function" || key === "transport") {
            return undefined;
        }
        if (value instanceof Error) {
            return String(value);
        }
        if (typeof value === "object" && value !== null) {
            if (seen.has(value)) {
                return undefined;
            }
            seen.add(value);
        }
        return value;
    };
}

// A readable error for an unsuccessful reply: the server's "error" field if
// present, otherwise what the client recorded about the transport failure.
function errorOf(reply) {
    if (!reply || reply.successful) {
        return null;
    }
    if (reply.error !== undefined) {
        return reply.error;
    }
    const failure = reply.failure;
    if (failure) {
        if (failure.reason) {
            return String(failure.reason);
        }
        if (failure.exception) {
            return String(failure.exception);
        }
        if (failure.httpCode !== undefined) {
            return "HTTP " + failure.httpCode;
        }
    }
    return "unsuccessful";
}

let cometd = null;
// channel -> subscription handle, remembered so we can re-subscribe
// after the server drops our session and the client re-handshakes.
const subscriptions = new Map();

function requireClient() {
    if (cometd === null) {
        throw new Error("not configured: send a 'configure' command first");
    }
    return cometd;
}

function onMessage(subscription) {
    return (message) => emit({
        event: "message",
        subscription,
        channel: message.channel,
        data: message.data,
    });
}

function subscribeChannel(channel, done) {
    const handle = cometd.subscribe(channel, onMessage(channel), (reply) => {
        if (!reply.successful) {
            // The client drops failed subscriptions itself; mirror that.
            subscriptions.delete(channel);
        }
        done(reply);
    });
    subscriptions.set(channel, handle);
}

// The documented CometD pattern: subscriptions do not survive a
// re-handshake (the client clears them), so the application re-subscribes.
function resubscribeAll() {
    const channels = [...subscriptions.keys()];
    if (channels.length === 0) {
        emit({ event: "resubscribed", channels, successful: true, results: [] });
        return;
    }
    const results = [];
    cometd.batch(() => {
        for (const channel of channels) {
            subscribeChannel(channel, (reply) => {
                results.push({ channel, successful: reply.successful, error: errorOf(reply) });
                if (results.length === channels.length) {
                    emit({
                        event: "resubscribed",
                        channels,
                        successful: results.every((r) => r.successful),
                        results,
                    });
                }
            });
        }
    });
}

function configure(cmd) {
    if (cometd !== null && !cometd.isDisconnected()) {
        cometd.disconnect();
    }
    subscriptions.clear();
    // adapt() installs window.XMLHttpRequest/WebSocket/setTimeout for Node
    // and a fresh per-hostname cookie jar; it must run before new CometD()
    // because the constructor registers websocket only if window.WebSocket exists.
    adapt(cmd.logLevel === "debug" ? { logLevel: "debug" } : {});
    quietStdout();
    cometd = new CometD();

    // Keep only the requested transports, in the requested order of preference.
    const wanted = cmd.transports || ["long-polling"];
    for (const type of cometd.getTransportTypes()) {
        if (!wanted.includes(type)) {
            cometd.unregisterTransport(type);
        }
    }
    for (const type of wanted) {
        // Re-registering appends, so the final order follows `wanted`.
        const transport = cometd.unregisterTransport(type);
        if (transport !== null) {
            cometd.registerTransport(type, transport);
        }
    }

    cometd.configure({
        url: cmd.url,
        appendMessageTypeToURL: cmd.appendMessageTypeToURL !== false,
        logLevel: cmd.logLevel || "warn",
        ...(cmd.options || {}),
    });

    for (const channel of ["/meta/handshake", "/meta/connect", "/meta/disconnect", "/meta/unsuccessful"]) {
        cometd.addListener(channel, (message) => {
            emit({
                event: "meta",
                listener: channel,
                channel: message.channel,
                successful: message.successful,
                error: errorOf(message),
                clientId: message.clientId ?? null,
                advice: message.advice ?? null,
            });
            // reestablish is true only for a successful handshake that follows
            // an earlier one without an explicit disconnect in between.
            if (channel === "/meta/handshake" && message.successful && message.reestablish) {
                resubscribeAll();
            }
        });
    }
    return { event: "configured", transports: cometd.getTransportTypes() };
}

function handshake(cmd, tag) {
    const client = requireClient();
    subscriptions.clear();
    const props = cmd.ext ? { ext: cmd.ext } : undefined;
    // The client keeps this callback for its automatic re-handshakes too;
    // only the first invocation answers this command.
    let answered = false;
    client.handshake(props, (reply) => {
        if (answered) {
            return;
        }
        answered = true;
        emit({
            event: "handshake",
            tag,
            successful: reply.successful,
            clientId: reply.clientId ?? null,
            error: errorOf(reply),
            reply,
        });
    });
}

function subscribe(cmd, tag) {
    requireClient();
    const channel = cmd.channel;
    if (subscriptions.has(channel)) {
        throw new Error("already subscribed to " + channel);
    }
    subscribeChannel(channel, (reply) => emit({
        event: "subscribed", tag, channel, successful: reply.successful, error: errorOf(reply),
    }));
}

function unsubscribe(cmd, tag) {
    const client = requireClient();
    const channel = cmd.channel;
    const handle = subscriptions.get(channel);
    if (handle === undefined) {
        throw new Error("not subscribed to " + channel);
    }
    subscriptions.delete(channel);
    client.unsubscribe(handle, (reply) => emit({
        event: "unsubscribed", tag, channel, successful: reply.successful, error: errorOf(reply),
    }));
}

function publish(cmd, tag) {
    requireClient().publish(cmd.channel, cmd.data ?? null, (reply) => emit({
        event: "published", tag, channel: cmd.channel, successful: reply.successful, error: errorOf(reply),
    }));
}

function publishMany(cmd, tag) {
    const client = requireClient();
    const count = cmd.count;
    if (count <= 0) {
        emit({ event: "published_many", tag, count: 0, successful: true, errors: [] });
        return;
    }
    let replies = 0;
    const errors = [];
    const send = () => {
        for (let i = 0; i < count; ++i) {
            const data = cmd.prefix === undefined ? { seq: i } : { seq: i, prefix: cmd.prefix };
            client.publish(cmd.channel, data, (reply) => {
                if (!reply.successful) {
                    errors.push({ seq: i, error: errorOf(reply) });
                }
                if (++replies === count) {
                    emit({ event: "published_many", tag, count, successful: errors.length === 0, errors });
                }
            });
        }
    };
    // Default: one HTTP request for all messages; "batch": false sends them one by one.
    if (cmd.batch === false) {
        send();
    } else {
        client.batch(send);
    }
}

// Resolves with the disconnect reply; a client that is already
// disconnected never calls the callback, so answer that case directly.
function disconnectClient(timeoutMs) {
    return new Promise((resolve) => {
        if (cometd === null || cometd.isDisconnected()) {
            resolve({ successful: true, alreadyDisconnected: true });
            return;
        }
        const timer = setTimeout(() => resolve({ successful: false, error: "disconnect timed out" }), timeoutMs);
        cometd.disconnect((reply) => {
            clearTimeout(timer);
            resolve(reply);
        });
    });
}

async function disconnect(tag) {
    subscriptions.clear();
    const reply = await disconnectClient(10000);
    emit({ event: "disconnected", tag, successful: reply.successful, error: errorOf(reply) });
}

let exiting = false;
async function exit(tag) {
    if (exiting) {
        return;
    }
    exiting = true;
    await disconnectClient(3000);
    emit({ event: "exited", tag });
    // Keep-alive sockets and client timers would keep Node alive.
    process.exit(0);
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
                publish(cmd, tag);
                break;
            case "publish_many":
                publishMany(cmd, tag);
                break;
            case "disconnect":
                await disconnect(tag);
                break;
            case "status":
                emit({
                    event: "status",
                    tag,
                    status: cometd ? cometd.getStatus() : "unconfigured",
                    clientId: cometd ? cometd.getClientId() : null,
                    transportType: cometd && cometd.getTransport() ? cometd.getTransport().type : null,
                    subscriptions: [...subscriptions.keys()],
                });
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

// pytest went away: nobody to report to.
process.stdout.on("error", () => process.exit(0));
// Errors thrown from client callbacks or timers must not kill the driver.
process.on("uncaughtException", (x) => emit({ event: "error", message: "uncaught: " + (x && x.stack ? x.stack : x) }));
process.on("unhandledRejection", (x) => emit({ event: "error", message: "unhandled: " + (x && x.stack ? x.stack : x) }));

const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", (line) => {
    if (line.trim() !== "") {
        handle(line);
    }
});
input.on("close", () => exit(undefined));
