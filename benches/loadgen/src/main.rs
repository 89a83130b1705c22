//! A Bayeux (CometD) load generator for the starlette-cometd benchmarks: C clients in R
//! rooms over long-polling or WebSocket, paced publishes scored for loss and latency; a sweep
//! of rates; idle sessions (S4); a burst to one channel (S3); a closed-loop request rate for
//! the fixed-bytes ceiling. Progress on stderr, one JSON summary on stdout.

mod bayeux;
mod burst;
mod cli;
mod client_lp;
mod client_ws;
mod http;
mod idle;
mod load;
mod net;
mod progress;
mod rps;
mod session;
mod setup;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use cli::Args;
use session::Config;

fn main() {
    let args = Args::parse();
    let nofile = net::raise_nofile_limit();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let code = runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs_f64(args.max_time), run(args)).await {
            Ok(Ok(mut summary)) => {
                if !summary.is_null() {
                    summary["nofile_limit"] = json!(nofile);
                    println!("{summary}");
                }
                0
            }
            Ok(Err(e)) => {
                eprintln!("loadgen: {e}");
                1
            }
            Err(_) => {
                eprintln!("loadgen: stopped at --max-time");
                1
            }
        }
    });
    // Clients still hold sockets and tasks; leave without waiting for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let (host_port, path) = split_url(&args.url)?;
    let endpoint = Arc::new(net::Endpoint::new(&host_port, args.sources)?);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let cfg = Arc::new(Config {
        endpoint,
        ws_url: format!("ws://{host_port}{path}"),
        path,
        transport: args.transport,
        dialect: args.dialect,
        padding: "x".repeat(args.payload),
        connect_limit: Duration::from_secs_f64(args.server_timeout + 15.0),
        scores: Arc::new(stats::Scores::new()),
        stop,
    });
    if args.dialect == cli::Dialect::Axum && args.transport == cli::Transport::Websocket {
        return Err("axum_cometd serves long-polling only".into());
    }
    let result = if args.idle {
        idle::run(cfg.clone(), &args).await
    } else if args.burst {
        burst::run(cfg.clone(), &args).await
    } else if args.rps {
        rps::run(cfg.clone(), &args).await
    } else {
        load::run(cfg.clone(), &args).await
    };
    let _ = stop_tx.send(true);
    let mut summary = result?;
    if !summary.is_null() {
        summary["transport"] = json!(bayeux::connection_type(args.transport));
        summary["url"] = json!(args.url);
        summary["clients"] = json!(args.clients);
        summary["rooms"] = json!(args.rooms);
        summary["errors_total"] =
            json!(cfg.scores.errors.load(std::sync::atomic::Ordering::Relaxed));
    }
    Ok(summary)
}

/// http://host:port/path -> ("host:port", "/path"). Only plain http: loopback, no TLS.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("the URL must start with http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let path = if path.len() > 1 {
        path.trim_end_matches('/').to_string()
    } else {
        path
    };
    Ok((host.to_string(), path))
}
