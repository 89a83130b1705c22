// Benchmark peer: Faye 1.4 with the faye-redis engine, on several Node.js processes sharing
// one port (the cluster module; its primary hands each new connection to the next worker),
// at http://127.0.0.1:PORT/cometd, serving long-polling and WebSocket.
// Usage: node server.js --redis redis://127.0.0.1:6379/0 [--port P] [--timeout SECS] [--workers N]
'use strict';
const cluster = require('cluster');
const http = require('http');

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(option('--port', 8000));
// Seconds a /meta/connect is held; the same default as the other servers in the benchmark.
const timeout = Number(option('--timeout', 20));
const workers = Number(option('--workers', 2));
const redis = new URL(option('--redis', 'redis://127.0.0.1:6379/0'));

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let listening = 0;
  cluster.on('listening', () => {
    if (++listening === workers) {
      const version = require('faye/package.json').version;
      console.error(`Faye ${version} with faye-redis on ${workers} processes at ` +
        `http://127.0.0.1:${port}/cometd, Redis ${redis.host}`);
    }
  });
  // A worker that dies is not replaced: the run it served is void, and the runner sees the
  // errors in the load generator's report.
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} ended (${signal || code})`);
  });
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
      process.exit(0);
    });
  }
} else {
  const faye = require('faye');
  const engine = {
    type: require('faye-redis'),
    host: redis.hostname,
    port: Number(redis.port || 6379),
    database: Number(redis.pathname.slice(1) || 0),
  };
  const bayeux = new faye.NodeAdapter({ mount: '/cometd', timeout, engine });
  const server = http.createServer();
  bayeux.attach(server);
  server.listen(port, '127.0.0.1');
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
}
