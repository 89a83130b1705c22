// Test driver: lets pytest steer the official CometD JavaScript client.
//
// Protocol: one JSON command per line on stdin, one JSON event per line on
// stdout. Anything else (client logs, diagnostics) goes to stderr so that
// stdout stays machine-readable. See tests/drivers.py for the Python side.
//
// Instances: a command may name the CometD instance it is for ("instance",
// default "default"); every event carries the name of the instance it comes
// from. The "default" instance's "configure" installs the Node adapter afresh
// (a new cookie jar); other instances reuse the adapter installed last, so
// they share its cookie jar (BAYEUX_BROWSER) like tabs of one browser.
//
// Commands beyond the basic ones:
//   configure: "extensions": ["ack", "timesync"] registers the cometd
//     package's AckExtension / TimeSyncExtension on the instance.
//   remote_call: {"target", "data", "timeout" (ms, optional)} calls
//     cometd.remoteCall(); answered by a "remote_call" event with
//     successful, data and error.
//   status: with the timesync extension, also "timeOffset", "networkLag"
//     and "serverTime" from it.
// The "meta" events carry the reply's "ext" too, and "at": when the listener
// ran (Date.now()).

import { createInterface } from "node:readline";
import { emit } from "./protocol.mjs";
import { adapt } from "cometd-nodejs-client";
import { AckExtension, CometD, TimeSyncExtension } from "cometd";

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

// One CometD client and what the driver remembers about it.
class Instance {
    constructor(name) {
        this.name = name;
        this.cometd = null;
        // channel -> subscription handle, remembered so we can re-subscribe
        // after the server drops our session and the client re-handshakes.
        this.subscriptions = new Map();
        this.timesync = null;
    }

    emit(event) {
        emit({ ...event, instance: this.name });
    }

    requireClient() {
        if (this.cometd === null) {
            throw new Error("not configured: send a 'configure' command first");
        }
        return this.cometd;
    }

    onMessage(subscription) {
        return (message) => this.emit({
            event: "message",
            subscription,
            channel: message.channel,
            data: message.data,
        });
    }

    subscribeChannel(channel, done) {
        const handle = this.cometd.subscribe(channel, this.onMessage(channel), (reply) => {
            if (!reply.successful) {
                // The client drops failed subscriptions itself; mirror that.
                this.subscriptions.delete(channel);
            }
            done(reply);
        });
        this.subscriptions.set(channel, handle);
    }

    // The documented CometD pattern: subscriptions do not survive a
    // re-handshake (the client clears them), so the application re-subscribes.
    resubscribeAll() {
        const channels = [...this.subscriptions.keys()];
        if (channels.length === 0) {
            this.emit({ event: "resubscribed", channels, successful: true, results: [] });
            return;
        }
        const results = [];
        this.cometd.batch(() => {
            for (const channel of channels) {
                this.subscribeChannel(channel, (reply) => {
                    results.push({ channel, successful: reply.successful, error: errorOf(reply) });
                    if (results.length === channels.length) {
                        this.emit({
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

    configure(cmd) {
        if (this.cometd !== null && !this.cometd.isDisconnected()) {
            this.cometd.disconnect();
        }
        this.subscriptions.clear();
        // adapt() installs window.XMLHttpRequest/WebSocket/setTimeout for Node
        // and a fresh per-hostname cookie jar; it must run before new CometD()
        // because the constructor registers websocket only if window.WebSocket exists.
        // Other instances keep the adapter (and its cookie jar) already installed.
        if (this.name === DEFAULT || !adapted) {
            adapt(cmd.logLevel === "debug" ? { logLevel: "debug" } : {});
            adapted = true;
            quietStdout();
        }
        const cometd = this.cometd = new CometD(this.name);

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

        this.timesync = null;
        for (const name of cmd.extensions || []) {
            switch (name) {
                case "ack":
                    cometd.registerExtension("ack", new AckExtension());
                    break;
                case "timesync":
                    this.timesync = new TimeSyncExtension();
                    cometd.registerExtension("timesync", this.timesync);
                    break;
                default:
                    throw new Error("unknown extension " + JSON.stringify(name));
            }
        }

        for (const channel of ["/meta/handshake", "/meta/connect", "/meta/disconnect", "/meta/unsuccessful"]) {
            cometd.addListener(channel, (message) => {
                this.emit({
                    event: "meta",
                    listener: channel,
                    channel: message.channel,
                    successful: message.successful,
                    error: errorOf(message),
                    clientId: message.clientId ?? null,
                    advice: message.advice ?? null,
                    ext: message.ext ?? null,
                    // When the client saw the reply (ms since the epoch, Date.now()).
                    at: Date.now(),
                });
                // reestablish is true only for a successful handshake that follows
                // an earlier one without an explicit disconnect in between.
                if (channel === "/meta/handshake" && message.successful && message.reestablish) {
                    this.resubscribeAll();
                }
            });
        }
        return { event: "configured", transports: cometd.getTransportTypes() };
    }

    handshake(cmd, tag) {
        const client = this.requireClient();
        this.subscriptions.clear();
        const props = cmd.ext ? { ext: cmd.ext } : undefined;
        // The client keeps this callback for its automatic re-handshakes too;
        // only the first invocation answers this command.
        let answered = false;
        client.handshake(props, (reply) => {
            if (answered) {
                return;
            }
            answered = true;
            this.emit({
                event: "handshake",
                tag,
                successful: reply.successful,
                clientId: reply.clientId ?? null,
                error: errorOf(reply),
                reply,
            });
        });
    }

    subscribe(cmd, tag) {
        this.requireClient();
        const channel = cmd.channel;
        if (this.subscriptions.has(channel)) {
            throw new Error("already subscribed to " + channel);
        }
        this.subscribeChannel(channel, (reply) => this.emit({
            event: "subscribed", tag, channel, successful: reply.successful, error: errorOf(reply),
        }));
    }

    unsubscribe(cmd, tag) {
        const client = this.requireClient();
        const channel = cmd.channel;
        const handle = this.subscriptions.get(channel);
        if (handle === undefined) {
            throw new Error("not subscribed to " + channel);
        }
        this.subscriptions.delete(channel);
        client.unsubscribe(handle, (reply) => this.emit({
            event: "unsubscribed", tag, channel, successful: reply.successful, error: errorOf(reply),
        }));
    }

    publish(cmd, tag) {
        this.requireClient().publish(cmd.channel, cmd.data ?? null, (reply) => this.emit({
            event: "published", tag, channel: cmd.channel, successful: reply.successful, error: errorOf(reply),
        }));
    }

    publishMany(cmd, tag) {
        const client = this.requireClient();
        const count = cmd.count;
        if (count <= 0) {
            this.emit({ event: "published_many", tag, count: 0, successful: true, errors: [] });
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
                        this.emit({ event: "published_many", tag, count, successful: errors.length === 0, errors });
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

    remoteCall(cmd, tag) {
        const client = this.requireClient();
        const target = cmd.target;
        const callback = (reply) => this.emit({
            event: "remote_call",
            tag,
            target,
            successful: reply.successful,
            data: reply.data ?? null,
            error: errorOf(reply),
        });
        const data = cmd.data === undefined ? {} : cmd.data;
        if (cmd.timeout === undefined) {
            client.remoteCall(target, data, callback);
        } else {
            client.remoteCall(target, data, cmd.timeout, callback);
        }
    }

    // Resolves with the disconnect reply; a client that is already
    // disconnected never calls the callback, so answer that case directly.
    disconnectClient(timeoutMs) {
        return new Promise((resolve) => {
            const cometd = this.cometd;
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

    async disconnect(tag) {
        this.subscriptions.clear();
        const reply = await this.disconnectClient(10000);
        this.emit({ event: "disconnected", tag, successful: reply.successful, error: errorOf(reply) });
    }

    status(tag) {
        const cometd = this.cometd;
        const event = {
            event: "status",
            tag,
            status: cometd ? cometd.getStatus() : "unconfigured",
            clientId: cometd ? cometd.getClientId() : null,
            transportType: cometd && cometd.getTransport() ? cometd.getTransport().type : null,
            subscriptions: [...this.subscriptions.keys()],
        };
        if (this.timesync !== null) {
            event.timeOffset = this.timesync.getTimeOffset();
            event.networkLag = this.timesync.getNetworkLag();
            event.serverTime = this.timesync.getServerTime();
        }
        this.emit(event);
    }
}

const DEFAULT = "default";
// Whether adapt() has installed the Node adapter yet.
let adapted = false;
const instances = new Map();

function instanceFor(cmd) {
    const name = cmd.instance === undefined ? DEFAULT : String(cmd.instance);
    let instance = instances.get(name);
    if (instance === undefined) {
        instance = new Instance(name);
        instances.set(name, instance);
    }
    return instance;
}

let exiting = false;
async function exit(tag) {
    if (exiting) {
        return;
    }
    exiting = true;
    await Promise.all([...instances.values()].map((instance) => instance.disconnectClient(3000)));
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
        const instance = cmd.cmd === "exit" ? null : instanceFor(cmd);
        switch (cmd.cmd) {
            case "configure":
                instance.emit({ ...instance.configure(cmd), tag });
                break;
            case "handshake":
                instance.handshake(cmd, tag);
                break;
            case "subscribe":
                instance.subscribe(cmd, tag);
                break;
            case "unsubscribe":
                instance.unsubscribe(cmd, tag);
                break;
            case "publish":
                instance.publish(cmd, tag);
                break;
            case "publish_many":
                instance.publishMany(cmd, tag);
                break;
            case "remote_call":
                instance.remoteCall(cmd, tag);
                break;
            case "disconnect":
                await instance.disconnect(tag);
                break;
            case "status":
                instance.status(tag);
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
