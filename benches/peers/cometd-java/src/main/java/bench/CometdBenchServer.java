package bench;

import java.util.logging.Level;
import java.util.logging.Logger;

import org.cometd.bayeux.server.BayeuxServer;
import org.cometd.server.BayeuxServerImpl;
import org.cometd.server.http.JSONHttpTransport;
import org.cometd.server.http.jakarta.CometDServlet;
import org.cometd.server.websocket.jetty.JettyWebSocketTransport;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Context;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.websocket.server.WebSocketUpgradeHandler;

/**
 * Benchmark peer: CometD Java 8 on Jetty 12 at http://127.0.0.1:PORT/cometd, serving
 * "websocket" (Jetty's WebSocket server) and "long-polling" (the Jakarta servlet), in memory.
 *
 * <p>Usage: java -jar cometd-bench-server.jar [port] [timeoutSeconds] [maxIntervalSeconds]
 */
public final class CometdBenchServer {
    private CometdBenchServer() {}

    public static void main(String[] args) throws Exception {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 8000;
        long timeoutMs = 1000L * (args.length > 1 ? Long.parseLong(args[1]) : 20);
        long maxIntervalMs = 1000L * (args.length > 2 ? Long.parseLong(args[2]) : 60);
        // Warnings only: per-request logs would cost the server time in a benchmark.
        Logger.getLogger("").setLevel(Level.WARNING);

        Server server = new Server();
        ServerConnector connector = new ServerConnector(server);
        connector.setHost("127.0.0.1");
        connector.setPort(port);
        server.addConnector(connector);

        ServletContextHandler context = new ServletContextHandler("/");
        // WebSocket upgrades are taken before the servlets see the request.
        context.insertHandler(WebSocketUpgradeHandler.from(server, context));

        BayeuxServerImpl bayeux = new BayeuxServerImpl();
        bayeux.setOption(Context.class.getName(), context.getContext());
        bayeux.setOption("ws.cometdURLMapping", "/cometd/*");
        bayeux.setOption("timeout", timeoutMs);
        bayeux.setOption("maxInterval", maxIntervalMs);
        // Every load-generator client is its own browser; no per-browser connect limit.
        bayeux.setOption("maxSessionsPerBrowser", -1);
        bayeux.setTransports(new JettyWebSocketTransport(bayeux), new JSONHttpTransport(bayeux));
        // The servlet uses this instance as it is instead of building its own.
        context.setAttribute(BayeuxServer.ATTRIBUTE, bayeux);
        context.addBean(bayeux, true);

        ServletHolder cometd = new ServletHolder("cometd", CometDServlet.class);
        cometd.setInitOrder(1);
        context.addServlet(cometd, "/cometd/*");

        server.setHandler(context);
        server.setStopAtShutdown(true);
        server.start();
        System.err.println("CometD Java 8 at http://127.0.0.1:" + port + "/cometd");
        server.join();
    }
}
