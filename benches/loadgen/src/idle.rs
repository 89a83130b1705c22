//! S4: many idle sessions, two subscriptions each, held while the runner measures the server.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::cli::{Args, Transport};
use crate::client_lp;
use crate::http::HttpConn;
use crate::session::Config;
use crate::setup::{start_all, Plan, SetupReport};
use crate::stats::CpuMeter;

fn channels(i: usize, rooms: usize) -> Vec<String> {
    vec![format!("/room/{}", i % rooms.max(1)), format!("/user/{i}")]
}

/// Sets the sessions up, prints the report as one line on stdout, then holds them until
/// standard input closes or --hold seconds pass.
pub async fn run(cfg: Arc<Config>, args: &Args) -> Result<Value, String> {
    let cpu = CpuMeter::start();
    let (handles, setup) = if args.no_hold && args.transport == Transport::LongPolling {
        (Vec::new(), pooled(&cfg, args).await)
    } else {
        let plans = (0..args.clients)
            .map(|i| Plan {
                channels: channels(i, args.rooms),
                publish_to: None,
            })
            .collect();
        start_all(&cfg, plans, args.concurrency, args.quiet).await
    };
    let report = json!({
        "mode": "idle",
        "held": !(args.no_hold && args.transport == Transport::LongPolling),
        "setup": setup,
        "loadgen_cpu": cpu.fraction(),
    });
    println!("{report}");
    // The runner closes our stdin once it has measured; --hold bounds the wait regardless.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let eof = async { while stdin.read(&mut buf).await.is_ok_and(|n| n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs_f64(args.hold), eof).await;
    drop(handles);
    Ok(Value::Null)
}

/// Long-polling sessions without a held connect: --concurrency workers, each with one
/// keep-alive connection, set them up one after another.
async fn pooled(cfg: &Arc<Config>, args: &Args) -> SetupReport {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let pb = crate::progress::bar(args.clients as u64, "sessions", args.quiet);
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (cfg, next, pb, n, rooms) = (
            cfg.clone(),
            next.clone(),
            pb.clone(),
            args.clients,
            args.rooms,
        );
        workers.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(cfg.endpoint.clone());
            let (mut ok, mut first_error) = (0, None);
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= n || cfg.stopped() {
                    break;
                }
                let one = async {
                    let id = client_lp::handshake(&cfg, &mut conn, "").await?;
                    client_lp::subscribe(&cfg, &mut conn, &id, &channels(i, rooms)).await?;
                    client_lp::first_connect(&cfg, &mut conn, &id).await
                };
                match one.await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
                pb.inc(1);
            }
            (ok, first_error)
        }));
    }
    let (mut ok, mut first_error) = (0, None);
    for w in workers {
        if let Ok((n, e)) = w.await {
            ok += n;
            if first_error.is_none() {
                first_error = e;
            }
        }
    }
    pb.finish_and_clear();
    SetupReport {
        clients: args.clients,
        ok,
        failed: args.clients - ok,
        seconds: started.elapsed().as_secs_f64(),
        first_error,
    }
}
