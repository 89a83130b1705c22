//! Command-line options. Every mode runs for a bounded time and then exits by itself.

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    LongPolling,
    Websocket,
}

/// How a server expects its requests. `Standard` posts every message to the base URL (as Faye
/// and aiocometd do); `Axum` follows axum_cometd 0.9.4: `/handshake`, subscribe on the base
/// path, publishes only on `/connect`, one message per poll, no immediate first connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dialect {
    Standard,
    Axum,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadgen",
    about = "Bayeux (CometD) load generator: rooms, sweep, idle, burst"
)]
pub struct Args {
    /// Base URL of the CometD endpoint (loopback only), e.g. http://127.0.0.1:8000/cometd
    #[arg(long, default_value = "http://127.0.0.1:8000/cometd")]
    pub url: String,
    #[arg(long, value_enum, default_value = "long-polling")]
    pub transport: Transport,
    #[arg(long, value_enum, default_value = "standard")]
    pub dialect: Dialect,
    /// Number of clients (sessions).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Number of rooms; client i joins /room/(i % rooms).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Publishes per second over all clients (the first rate of a sweep).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds measured per run (per step in a sweep).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before each measurement, not counted.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds to wait after a measurement for messages still in flight.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Bytes of padding in each published message.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Raise the rate step by step until p99 > --max-p99-ms or anything is lost.
    #[arg(long)]
    pub sweep: bool,
    /// Sweep: each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.5)]
    pub sweep_factor: f64,
    /// Sweep: bisection steps between the last rate that held and the first that failed.
    #[arg(long, default_value_t = 2)]
    pub sweep_refine: u32,
    /// Sweep: a rate that failed is tried this many times more before it counts as failed.
    #[arg(long, default_value_t = 1)]
    pub sweep_retries: u32,
    /// Sweep: at most this many steps in all.
    #[arg(long, default_value_t = 30)]
    pub max_steps: u32,
    /// A step holds while p99 stays at or under this many milliseconds.
    #[arg(long, default_value_t = 200.0)]
    pub max_p99_ms: f64,
    /// S4: set up the sessions (two subscriptions each), hold them, report, wait.
    #[arg(long)]
    pub idle: bool,
    /// Idle: seconds to hold the sessions (ends earlier when standard input closes).
    #[arg(long, default_value_t = 60.0)]
    pub hold: f64,
    /// Idle over long-polling: no held connect per session, so sessions need no socket each
    /// (set up over a pool of --concurrency connections).
    #[arg(long)]
    pub no_hold: bool,
    /// S3: every client subscribes to one channel, then one more client publishes a burst.
    #[arg(long)]
    pub burst: bool,
    /// Burst: the number of messages published at once.
    #[arg(long, default_value_t = 100)]
    pub burst_messages: usize,
    /// Burst: give up waiting for copies after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub burst_timeout: f64,
    /// Closed-loop request rate (for the fixed-bytes ceiling server): every client repeats
    /// its /meta/connect as soon as the reply arrives.
    #[arg(long)]
    pub rps: bool,
    /// With --rps over long-polling: each round is a session's whole life instead, a
    /// handshake then a disconnect (what a server logs per session).
    #[arg(long)]
    pub churn: bool,
    /// Client sockets bind round-robin to 127.0.0.1 .. 127.0.0.N (more ephemeral ports).
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Sessions set up at the same time.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds the server holds a /meta/connect; requests wait that long plus a margin.
    #[arg(long, default_value_t = 20.0)]
    pub server_timeout: f64,
    /// Runtime worker threads (1: a single-threaded runtime, for one pinned core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 1800.0)]
    pub max_time: f64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}
