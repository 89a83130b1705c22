package org.starlettecometd.tests;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;

import org.cometd.bayeux.Channel;
import org.cometd.bayeux.Message;
import org.cometd.bayeux.client.ClientSession;

/**
 * The replay extension of Salesforce's Streaming API as its Java connector (EMP-Connector) speaks
 * it, written here for the tests: it asks for replay on the handshake, and only if the reply
 * says the server speaks it, sends with every subscribe the whole map of channels it tracks to
 * the last id seen on each (-1: only new messages, -2: everything retained), and updates the map
 * from {@code data.event.replayId} of every message it receives.
 */
final class ReplayExtension implements ClientSession.Extension {
    private static final String REPLAY = "replay";

    private final Map<String, Long> lastIds = new ConcurrentHashMap<>();
    private final AtomicBoolean supported = new AtomicBoolean();

    ReplayExtension(Map<String, Long> from) {
        lastIds.putAll(from);
    }

    /** The channels tracked and the last id seen on each (what the next subscribe sends). */
    Map<String, Long> lastIds() {
        return Map.copyOf(lastIds);
    }

    boolean supported() {
        return supported.get();
    }

    @Override
    public boolean rcvMeta(ClientSession session, Message.Mutable message) {
        if (Channel.META_HANDSHAKE.equals(message.getChannel())) {
            Map<String, Object> ext = message.getExt(false);
            supported.set(ext != null && Boolean.TRUE.equals(ext.get(REPLAY)));
        }
        return true;
    }

    @Override
    public boolean rcv(ClientSession session, Message.Mutable message) {
        if (supported.get() && message.getData() instanceof Map<?, ?> data
            && data.get("event") instanceof Map<?, ?> event
            && event.get("replayId") instanceof Number id) {
            lastIds.put(message.getChannel(), id.longValue());
        }
        return true;
    }

    @Override
    public boolean sendMeta(ClientSession session, Message.Mutable message) {
        String channel = message.getChannel();
        if (Channel.META_HANDSHAKE.equals(channel)) {
            message.getExt(true).put(REPLAY, Boolean.TRUE);
        } else if (Channel.META_SUBSCRIBE.equals(channel) && supported.get()) {
            message.getExt(true).put(REPLAY, Map.copyOf(lastIds));
        }
        return true;
    }
}
