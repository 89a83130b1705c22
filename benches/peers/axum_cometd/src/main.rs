//! Benchmark peer: axum_cometd 0.9.4's router served unchanged on 127.0.0.1:PORT under /cometd.
//!
//! Usage: axum-cometd-peer [--port P] [--timeout SECS] [--max-interval SECS]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use axum_cometd::{LongPollingServiceContextBuilder, RouterBuilder};

struct Args {
    port: u16,
    timeout: u64,
    max_interval: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 8000,
        timeout: 20,
        max_interval: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--port" => args.port = value.parse().map_err(bad)?,
            "--timeout" => args.timeout = value.parse().map_err(bad)?,
            "--max-interval" => args.max_interval = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("axum-cometd-peer: {e}");
        std::process::exit(2)
    });
    let context = LongPollingServiceContextBuilder::new()
        .timeout(Duration::from_secs(args.timeout))
        .max_interval(Duration::from_secs(args.max_interval))
        .build::<(), ()>();
    // Its endpoints become /cometd/, /cometd/handshake, /cometd/connect, /cometd/disconnect.
    let app = Router::new().nest("/cometd", RouterBuilder::new().build(Arc::clone(&context)));
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    eprintln!("axum_cometd 0.9.4 at http://{addr}/cometd");
    axum::Server::bind(&addr)
        .serve(app.into_make_service())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server failed");
}
