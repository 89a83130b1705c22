// Benchmark peer: a Faye 1.4 server (in-memory engine) on 127.0.0.1:PORT at /cometd,
// serving long-polling and WebSocket. Usage: node server.js [--port P] [--timeout SECS]
'use strict';
const http = require('http');
const faye = require('faye');

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}

const port = option('--port', 8000);
// Seconds a /meta/connect is held; the same default as the other servers in the benchmark.
const timeout = option('--timeout', 20);

const bayeux = new faye.NodeAdapter({ mount: '/cometd', timeout });
const server = http.createServer();
bayeux.attach(server);
server.listen(port, '127.0.0.1', () => {
  console.error(`Faye ${require('faye/package.json').version} at http://127.0.0.1:${port}/cometd`);
});

// Stop promptly when the benchmark runner ends the process.
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
