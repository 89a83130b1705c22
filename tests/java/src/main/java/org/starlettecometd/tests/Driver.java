package org.starlettecometd.tests;

import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.Array;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.ConsoleHandler;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.Logger;

import jakarta.websocket.ContainerProvider;
import jakarta.websocket.WebSocketContainer;
import org.cometd.bayeux.Channel;
import org.cometd.bayeux.Message;
import org.cometd.bayeux.client.ClientSessionChannel;
import org.cometd.client.BayeuxClient;
import org.cometd.client.ext.AckExtension;
import org.cometd.client.ext.TimesyncClientExtension;
import org.cometd.client.http.jetty.JettyHttpClientTransport;
import org.cometd.client.transport.ClientTransport;
import org.cometd.client.websocket.jakarta.WebSocketTransport;
import org.eclipse.jetty.client.HttpClient;
import org.eclipse.jetty.util.ajax.JSON;

/**
 * Test driver: lets pytest steer the CometD Java client (BayeuxClient).
 *
 * <p>It speaks the JSON-lines protocol of tests/js/driver.mjs: one JSON command per line on
 * stdin, one JSON event per line on stdout. Logs and anything else go to stderr, so that
 * stdout stays machine-readable. See tests/drivers.py for the Python side.</p>
 *
 * <p>Differences from the JS driver, all due to the Java client itself:</p>
 * <ul>
 *   <li>{@code appendMessageTypeToURL} is accepted and ignored: the Java long-polling
 *       transport always appends the type of a lone meta message to a URL without a query.</li>
 *   <li>The Java client has no {@code /meta/unsuccessful} channel; the driver emits the
 *       {@code meta} event with that listener name for every unsuccessful reply on a
 *       {@code /meta/*} channel and for every unsuccessful publish reply, after the event of
 *       the channel's own listener (if any).</li>
 *   <li>{@code options} are set on the client and its transports as they are; options the
 *       Java client does not know are ignored by it.</li>
 *   <li>{@code configure} takes {@code "extensions"}: {@code "ack"} registers the client's
 *       {@code org.cometd.client.ext.AckExtension}, {@code "timesync"} its
 *       {@code TimesyncClientExtension}, {@code "replay"} the Salesforce replay extension
 *       ({@link ReplayExtension}) tracking the channels of the command's {@code "replay"} map
 *       (channel to the id to replay from), which {@code status} reports as it goes. There is
 *       no {@code remote_call} command and no
 *       {@code instance} field: one driver runs one client.</li>
 * </ul>
 */
public final class Driver {
    private static final List<String> META_LISTENERS =
        List.of("/meta/handshake", "/meta/connect", "/meta/disconnect");
    private static final String META_UNSUCCESSFUL = "/meta/unsuccessful";
    private static final int MAX_DEPTH = 64;

    // java.util.logging keeps only weak references to loggers: hold the configured ones.
    private static final Logger ROOT_LOGGER = Logger.getLogger("");
    private static final Logger JETTY_LOGGER = Logger.getLogger("org.eclipse.jetty");

    private final PrintStream out;
    private final JSON json = new JSON();
    // channel -> listener, in subscription order, remembered so that the driver can
    // re-subscribe after the server drops the session and the client re-handshakes.
    private final Map<String, ClientSessionChannel.MessageListener> subscriptions =
        Collections.synchronizedMap(new LinkedHashMap<>());
    // Whether a handshake succeeded since the last handshake or disconnect command: a
    // successful handshake after that is a re-handshake the client performed by itself.
    private final AtomicBoolean handshook = new AtomicBoolean();
    private final AtomicBoolean exiting = new AtomicBoolean();
    private volatile DriverBayeuxClient client;
    // The replay extension of the current client, when configured with one.
    private volatile ReplayExtension replay;
    private HttpClient httpClient;
    private WebSocketContainer webSocketContainer;

    private Driver(PrintStream out) {
        this.out = out;
        // Arrays in commands become Lists, like the client's own JSON parser makes them.
        json.setArrayConverter(list -> list);
    }

    public static void main(String[] args) throws Exception {
        // Only events may reach the real stdout.
        PrintStream events = new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
        System.setOut(System.err);
        configureLogging("warn");

        Driver driver = new Driver(events);
        Thread.setDefaultUncaughtExceptionHandler((thread, x) ->
            driver.emit(event("error", null, "message", "uncaught in " + thread.getName() + ": " + x)));

        BufferedReader input = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = input.readLine()) != null) {
            if (!line.isBlank()) {
                driver.handle(line);
            }
        }
        // pytest closed our stdin: nobody left to steer us.
        driver.exit(null);
    }

    // --- Logging -------------------------------------------------------------------------

    private static void configureLogging(String logLevel) {
        if (System.getProperty("java.util.logging.SimpleFormatter.format") == null) {
            System.setProperty("java.util.logging.SimpleFormatter.format", "%1$tT.%1$tL %4$s %3$s - %5$s%6$s%n");
        }
        Level level = switch (logLevel == null ? "warn" : logLevel) {
            case "debug" -> Level.FINE;
            case "info" -> Level.INFO;
            case "error" -> Level.SEVERE;
            default -> Level.WARNING;
        };
        boolean installed = false;
        for (Handler handler : ROOT_LOGGER.getHandlers()) {
            if (handler instanceof ConsoleHandler) {
                installed = true;
                handler.setLevel(Level.ALL);
            }
        }
        if (!installed) {
            ConsoleHandler handler = new ConsoleHandler(); // writes to stderr
            handler.setLevel(Level.ALL);
            ROOT_LOGGER.addHandler(handler);
        }
        ROOT_LOGGER.setLevel(level);
        // Jetty's debug output would drown the client's.
        JETTY_LOGGER.setLevel(level.intValue() < Level.INFO.intValue() ? Level.INFO : level);
    }

    // --- Events --------------------------------------------------------------------------

    private static Map<String, Object> event(String name, Object tag, Object... fields) {
        Map<String, Object> result = new LinkedHashMap<>();
        result.put("event", name);
        if (tag != null) {
            result.put("tag", tag);
        }
        for (int i = 0; i + 1 < fields.length; i += 2) {
            result.put((String)fields[i], fields[i + 1]);
        }
        return result;
    }

    private void emit(Map<String, Object> event) {
        String line;
        try {
            line = json.toJSON(plain(event, 0));
        } catch (Throwable x) {
            line = json.toJSON(event("error", null, "message", "cannot encode event " + event.get("event") + ": " + x));
        }
        synchronized (out) {
            out.print(line);
            out.print('\n');
            out.flush();
        }
    }

    /**
     * A copy of {@code value} made only of what JSON can carry: maps with string keys, lists,
     * strings, finite numbers, booleans and null. Failure replies built by the client hold
     * exceptions and the failed messages: exceptions become their description.
     */
    private static Object plain(Object value, int depth) {
        if (value == null || value instanceof String || value instanceof Boolean) {
            return value;
        }
        if (depth > MAX_DEPTH) {
            return "<too deep>";
        }
        if (value instanceof Number number) {
            if (number instanceof Double || number instanceof Float) {
                double d = number.doubleValue();
                return Double.isFinite(d) ? number : String.valueOf(d);
            }
            return number;
        }
        if (value instanceof Map<?, ?> map) {
            Map<String, Object> result = new LinkedHashMap<>();
            for (Map.Entry<?, ?> entry : new ArrayList<>(map.entrySet())) {
                result.put(String.valueOf(entry.getKey()), plain(entry.getValue(), depth + 1));
            }
            return result;
        }
        if (value instanceof Collection<?> collection) {
            List<Object> result = new ArrayList<>(collection.size());
            for (Object item : new ArrayList<>(collection)) {
                result.add(plain(item, depth + 1));
            }
            return result;
        }
        if (value.getClass().isArray()) {
            int length = Array.getLength(value);
            List<Object> result = new ArrayList<>(length);
            for (int i = 0; i < length; ++i) {
                result.add(plain(Array.get(value, i), depth + 1));
            }
            return result;
        }
        if (value instanceof Character) {
            return value.toString();
        }
        return String.valueOf(value);
    }

    /** A readable error for an unsuccessful reply, or null for a successful one. */
    private static String errorOf(Message reply) {
        if (reply == null || reply.isSuccessful()) {
            return null;
        }
        Object error = reply.get(Message.ERROR_FIELD);
        if (error != null) {
            return String.valueOf(error);
        }
        if (reply.get("failure") instanceof Map<?, ?> failure) {
            if (failure.get("reason") != null) {
                return String.valueOf(failure.get("reason"));
            }
            if (failure.get("exception") != null) {
                return String.valueOf(failure.get("exception"));
            }
            if (failure.get("httpCode") != null) {
                return "HTTP " + failure.get("httpCode");
            }
        }
        return "unsuccessful";
    }

    private Map<String, Object> metaEvent(String listener, Message message) {
        return event("meta", null,
            "listener", listener,
            "channel", message.getChannel(),
            "successful", message.isSuccessful(),
            "error", errorOf(message),
            "clientId", message.getClientId(),
            "advice", message.getAdvice(),
            "ext", message.getExt());
    }

    // --- Commands ------------------------------------------------------------------------

    private void handle(String line) {
        Map<?, ?> cmd;
        try {
            Object parsed = json.fromJSON(line);
            if (!(parsed instanceof Map<?, ?> map)) {
                throw new IllegalArgumentException("not a JSON object");
            }
            cmd = map;
        } catch (Throwable x) {
            emit(event("error", null, "message", "bad JSON command: " + x.getMessage()));
            return;
        }
        Object tag = cmd.get("tag");
        Object name = cmd.get("cmd");
        try {
            switch (String.valueOf(name)) {
                case "configure" -> configure(cmd, tag);
                case "handshake" -> handshake(cmd, tag);
                case "subscribe" -> subscribe(cmd, tag);
                case "unsubscribe" -> unsubscribe(cmd, tag);
                case "publish" -> publish(cmd, tag);
                case "publish_many" -> publishMany(cmd, tag);
                case "disconnect" -> disconnect(tag);
                case "status" -> status(tag);
                case "exit" -> exit(tag);
                default -> throw new IllegalArgumentException("unknown command " + json.toJSON(name));
            }
        } catch (Throwable x) {
            String message = x.getMessage() != null ? x.getMessage() : x.toString();
            emit(event("error", tag, "cmd", name, "message", message));
        }
    }

    private DriverBayeuxClient requireClient() {
        DriverBayeuxClient current = client;
        if (current == null) {
            throw new IllegalStateException("not configured: send a 'configure' command first");
        }
        return current;
    }

    private static String requireString(Map<?, ?> cmd, String field) {
        if (cmd.get(field) instanceof String value) {
            return value;
        }
        throw new IllegalArgumentException("missing string field '" + field + "'");
    }

    private void configure(Map<?, ?> cmd, Object tag) throws Exception {
        DriverBayeuxClient previous = client;
        if (previous != null && !previous.isDisconnected()) {
            previous.disconnect();
        }
        subscriptions.clear();
        handshook.set(false);
        configureLogging(cmd.get("logLevel") instanceof String level ? level : "warn");

        String url = requireString(cmd, "url");
        Map<String, Object> options = new HashMap<>();
        if (cmd.get("options") instanceof Map<?, ?> given) {
            for (Map.Entry<?, ?> entry : given.entrySet()) {
                options.put(String.valueOf(entry.getKey()), entry.getValue());
            }
        }
        List<String> wanted = new ArrayList<>();
        if (cmd.get("transports") instanceof List<?> list) {
            for (Object item : list) {
                wanted.add(String.valueOf(item));
            }
        } else {
            wanted.add("long-polling");
        }

        // One transport per requested type, in the requested order of preference.
        List<ClientTransport> transports = new ArrayList<>();
        for (String type : wanted) {
            switch (type) {
                case "long-polling" -> transports.add(new JettyHttpClientTransport(new HashMap<>(options), httpClient()));
                case "websocket" -> transports.add(new WebSocketTransport(new HashMap<>(options), null, webSocketContainer()));
                default -> throw new IllegalArgumentException("unknown transport " + json.toJSON(type));
            }
        }
        if (transports.isEmpty()) {
            throw new IllegalArgumentException("no transport requested");
        }
        DriverBayeuxClient created = new DriverBayeuxClient(url, transports.get(0),
            transports.subList(1, transports.size()).toArray(new ClientTransport[0]));
        // Client-level options (backoffIncrement, maxBackoff, ...); forwarded to the transports too.
        options.forEach(created::setOption);
        replay = null;
        if (cmd.get("extensions") instanceof List<?> extensions) {
            for (Object extension : extensions) {
                switch (String.valueOf(extension)) {
                    case "ack" -> created.addExtension(new AckExtension());
                    case "timesync" -> created.addExtension(new TimesyncClientExtension());
                    case "replay" -> {
                        replay = new ReplayExtension(replayFrom(cmd.get("replay")));
                        created.addExtension(replay);
                    }
                    default -> throw new IllegalArgumentException("unknown extension " + json.toJSON(extension));
                }
            }
        }

        for (String channel : META_LISTENERS) {
            created.getChannel(channel).addListener((ClientSessionChannel.MessageListener)(ch, message) -> {
                emit(metaEvent(channel, message));
                if (Channel.META_HANDSHAKE.equals(channel)) {
                    onHandshakeListener(created, message);
                }
            });
        }
        // Every meta channel: stands in for the JS client's /meta/unsuccessful listeners.
        created.getChannel("/meta/**").addListener((ClientSessionChannel.MessageListener)(ch, message) -> {
            if (!message.isSuccessful()) {
                emit(metaEvent(META_UNSUCCESSFUL, message));
            }
        });
        client = created;
        emit(event("configured", tag,
            "transports", created.getAllowedTransports(),
            "client", "cometd-java-client " + cometdVersion()));
    }

    /** The CometD client's version, from the Maven metadata that the shaded jar keeps. */
    private static String cometdVersion() {
        String resource = "/META-INF/maven/org.cometd.java/cometd-java-client-common/pom.properties";
        try (InputStream stream = Driver.class.getResourceAsStream(resource)) {
            if (stream != null) {
                Properties properties = new Properties();
                properties.load(stream);
                return properties.getProperty("version", "unknown");
            }
        } catch (IOException x) {
            // Unknown, then.
        }
        return "unknown";
    }

    private synchronized HttpClient httpClient() throws Exception {
        if (httpClient == null) {
            HttpClient created = new HttpClient();
            created.start();
            httpClient = created;
        }
        return httpClient;
    }

    private synchronized WebSocketContainer webSocketContainer() {
        if (webSocketContainer == null) {
            webSocketContainer = ContainerProvider.getWebSocketContainer();
        }
        return webSocketContainer;
    }

    private void onHandshakeListener(DriverBayeuxClient source, Message message) {
        if (source != client || !message.isSuccessful()) {
            return;
        }
        // The client clears its subscriptions when it re-handshakes (the server dropped the
        // session): the documented pattern is that the application subscribes again.
        if (handshook.getAndSet(true)) {
            resubscribeAll(source);
        }
    }

    private void resubscribeAll(DriverBayeuxClient source) {
        List<Map.Entry<String, ClientSessionChannel.MessageListener>> entries;
        synchronized (subscriptions) {
            entries = new ArrayList<>(subscriptions.entrySet());
        }
        List<String> channels = entries.stream().map(Map.Entry::getKey).toList();
        if (entries.isEmpty()) {
            emit(event("resubscribed", null, "channels", channels, "successful", true, "results", List.of()));
            return;
        }
        List<Map<String, Object>> results = Collections.synchronizedList(new ArrayList<>());
        AtomicInteger pending = new AtomicInteger(entries.size());
        source.batch(() -> {
            for (Map.Entry<String, ClientSessionChannel.MessageListener> entry : entries) {
                String channel = entry.getKey();
                ClientSessionChannel.MessageListener listener = entry.getValue();
                source.getChannel(channel).subscribe(listener, reply -> {
                    if (!reply.isSuccessful()) {
                        subscriptions.remove(channel, listener);
                    }
                    results.add(event("result", null,
                        "channel", channel, "successful", reply.isSuccessful(), "error", errorOf(reply)));
                    if (pending.decrementAndGet() == 0) {
                        List<Map<String, Object>> all;
                        synchronized (results) {
                            all = new ArrayList<>(results);
                        }
                        all.forEach(result -> result.remove("event"));
                        boolean successful = all.stream().allMatch(result -> Boolean.TRUE.equals(result.get("successful")));
                        emit(event("resubscribed", null,
                            "channels", channels, "successful", successful, "results", all));
                    }
                });
            }
        });
    }

    private void handshake(Map<?, ?> cmd, Object tag) {
        DriverBayeuxClient current = requireClient();
        subscriptions.clear();
        handshook.set(false);
        Map<String, Object> fields = null;
        if (cmd.get("ext") != null) {
            fields = new HashMap<>();
            fields.put(Message.EXT_FIELD, cmd.get("ext"));
        }
        // The client keeps this callback for its own re-handshakes too;
        // only the first invocation answers this command.
        AtomicBoolean answered = new AtomicBoolean();
        current.handshake(fields, reply -> {
            if (answered.compareAndSet(false, true)) {
                emit(event("handshake", tag,
                    "successful", reply.isSuccessful(),
                    "clientId", reply.getClientId(),
                    "error", errorOf(reply),
                    "reply", reply));
            }
        });
    }

    private void subscribe(Map<?, ?> cmd, Object tag) {
        DriverBayeuxClient current = requireClient();
        String channel = requireString(cmd, "channel");
        ClientSessionChannel.MessageListener listener = (ch, message) -> emit(event("message", null,
            "subscription", channel,
            "channel", message.getChannel(),
            "data", message.getData()));
        if (subscriptions.putIfAbsent(channel, listener) != null) {
            throw new IllegalStateException("already subscribed to " + channel);
        }
        current.getChannel(channel).subscribe(listener, reply -> {
            if (!reply.isSuccessful()) {
                // The client drops failed subscriptions itself; mirror that.
                subscriptions.remove(channel, listener);
            }
            emit(event("subscribed", tag,
                "channel", channel, "successful", reply.isSuccessful(), "error", errorOf(reply)));
        });
    }

    private void unsubscribe(Map<?, ?> cmd, Object tag) {
        DriverBayeuxClient current = requireClient();
        String channel = requireString(cmd, "channel");
        ClientSessionChannel.MessageListener listener = subscriptions.remove(channel);
        if (listener == null) {
            throw new IllegalStateException("not subscribed to " + channel);
        }
        current.getChannel(channel).unsubscribe(listener, reply -> emit(event("unsubscribed", tag,
            "channel", channel, "successful", reply.isSuccessful(), "error", errorOf(reply))));
    }

    private void publish(Map<?, ?> cmd, Object tag) {
        DriverBayeuxClient current = requireClient();
        String channel = requireString(cmd, "channel");
        current.getChannel(channel).publish(cmd.get("data"), reply -> {
            emit(event("published", tag,
                "channel", channel, "successful", reply.isSuccessful(), "error", errorOf(reply)));
            unsuccessfulPublish(reply);
        });
    }

    private void unsuccessfulPublish(Message reply) {
        if (!reply.isSuccessful()) {
            emit(metaEvent(META_UNSUCCESSFUL, reply));
        }
    }

    private void publishMany(Map<?, ?> cmd, Object tag) {
        DriverBayeuxClient current = requireClient();
        String channel = requireString(cmd, "channel");
        int count = cmd.get("count") instanceof Number number ? number.intValue() : 0;
        if (count <= 0) {
            emit(event("published_many", tag, "count", 0, "successful", true, "errors", List.of()));
            return;
        }
        Object prefix = cmd.get("prefix");
        AtomicInteger replies = new AtomicInteger();
        List<Map<String, Object>> errors = Collections.synchronizedList(new ArrayList<>());
        int total = count;
        Runnable send = () -> {
            ClientSessionChannel target = current.getChannel(channel);
            for (int i = 0; i < total; ++i) {
                int seq = i;
                Map<String, Object> data = new LinkedHashMap<>();
                data.put("seq", seq);
                if (prefix != null) {
                    data.put("prefix", prefix);
                }
                target.publish(data, reply -> {
                    if (!reply.isSuccessful()) {
                        errors.add(event("error", null, "seq", seq, "error", errorOf(reply)));
                        unsuccessfulPublish(reply);
                    }
                    if (replies.incrementAndGet() == total) {
                        List<Map<String, Object>> all;
                        synchronized (errors) {
                            all = new ArrayList<>(errors);
                        }
                        all.forEach(error -> error.remove("event"));
                        emit(event("published_many", tag,
                            "count", total, "successful", all.isEmpty(), "errors", all));
                    }
                });
            }
        };
        // Default: one request for all messages; "batch": false sends them one by one.
        if (Boolean.FALSE.equals(cmd.get("batch"))) {
            send.run();
        } else {
            current.batch(send);
        }
    }

    /** Completes with the disconnect reply, or a stand-in one if already disconnected or on timeout. */
    private CompletableFuture<Map<String, Object>> disconnectClient(long timeoutMs) {
        DriverBayeuxClient current = client;
        if (current == null || current.isDisconnected()) {
            return CompletableFuture.completedFuture(Map.of("successful", true, "alreadyDisconnected", true));
        }
        CompletableFuture<Map<String, Object>> result = new CompletableFuture<>();
        // A client that is already disconnected never calls the callback.
        current.disconnect(reply -> {
            Map<String, Object> answer = new HashMap<>();
            answer.put("successful", reply.isSuccessful());
            answer.put("error", errorOf(reply));
            result.complete(answer);
        });
        Map<String, Object> timedOut = new HashMap<>();
        timedOut.put("successful", false);
        timedOut.put("error", "disconnect timed out");
        // The callback runs before the client has wound down: answer once it is really
        // disconnected (as the JS client is when it calls back), within the same time limit.
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        return result.thenApplyAsync(reply -> {
            if (Boolean.TRUE.equals(reply.get("successful"))) {
                long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                current.waitFor(Math.max(left, 1), BayeuxClient.State.DISCONNECTED);
            }
            return reply;
        }).completeOnTimeout(timedOut, timeoutMs, TimeUnit.MILLISECONDS);
    }

    private void disconnect(Object tag) {
        subscriptions.clear();
        handshook.set(false);
        disconnectClient(10_000).thenAccept(reply -> emit(event("disconnected", tag,
            "successful", reply.get("successful"), "error", reply.get("error"))));
    }

    /** The configure command's {@code replay} map: channel to the id to replay from. */
    private static Map<String, Long> replayFrom(Object given) {
        Map<String, Long> from = new HashMap<>();
        if (given instanceof Map<?, ?> map) {
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                if (entry.getValue() instanceof Number id) {
                    from.put(String.valueOf(entry.getKey()), id.longValue());
                }
            }
        }
        return from;
    }

    private void status(Object tag) {
        DriverBayeuxClient current = client;
        List<String> channels;
        synchronized (subscriptions) {
            channels = new ArrayList<>(subscriptions.keySet());
        }
        ClientTransport transport = current == null ? null : current.getTransport();
        emit(event("status", tag,
            "status", current == null ? "unconfigured" : current.status(),
            "state", current == null ? null : current.state().name(),
            "clientId", current == null ? null : current.getId(),
            "transport", transport == null ? null : transport.getName(),
            "subscriptions", channels,
            "replay", replay == null ? null : replay.lastIds(),
            "replaySupported", replay != null && replay.supported()));
    }

    private void exit(Object tag) {
        if (!exiting.compareAndSet(false, true)) {
            return;
        }
        try {
            disconnectClient(3_000).get(4, TimeUnit.SECONDS);
        } catch (Throwable x) {
            // Exiting anyway.
        }
        emit(event("exited", tag));
        out.flush();
        System.err.flush();
        // Jetty's and the client's threads (and shutdown hooks) must not delay the exit.
        Runtime.getRuntime().halt(0);
    }

    /** A BayeuxClient whose state can be read, for the status command. */
    private static final class DriverBayeuxClient extends BayeuxClient {
        DriverBayeuxClient(String url, ClientTransport transport, ClientTransport... transports) {
            super(url, transport, transports);
        }

        State state() {
            return getState();
        }

        /** The state named as the JS client names its status. */
        String status() {
            return switch (getState()) {
                case HANDSHAKING, REHANDSHAKING -> "handshaking";
                case HANDSHAKEN, CONNECTING, UNCONNECTED -> "connecting";
                case CONNECTED -> "connected";
                case DISCONNECTING -> "disconnecting";
                case TERMINATING, DISCONNECTED -> "disconnected";
            };
        }
    }
}
