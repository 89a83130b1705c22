//! Closed-loop request rate, for the ceiling server that answers every request with fixed
//! bytes: each client sends its next /meta/connect as soon as the previous reply arrives. With
//! `--churn`, each round is a session's life instead: a handshake, then a disconnect.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::bayeux;
use crate::cli::{Args, Transport};
use crate::http::HttpConn;
use crate::session::{Config, REQUEST_LIMIT};
use crate::stats::{CpuMeter, Latency};

struct Window {
    from: Instant,
    to: Instant,
    replies: AtomicU64,
    errors: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

pub async fn run(cfg: Arc<Config>, args: &Args) -> Result<Value, String> {
    let from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let window = Arc::new(Window {
        from,
        to: from + Duration::from_secs_f64(args.duration),
        replies: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()),
    });
    let tasks: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(client(cfg.clone(), window.clone(), args.churn)))
        .collect();
    let pb = crate::progress::bar((args.warmup + args.duration) as u64, "rps", args.quiet);
    tokio::time::sleep_until(from.into()).await;
    let cpu = CpuMeter::start();
    while Instant::now() < window.to {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pb.set_position(args.warmup as u64 + (Instant::now() - from).as_secs());
    }
    let loadgen_cpu = cpu.fraction();
    pb.finish_and_clear();
    for t in tasks {
        let _ = t.await;
    }
    let replies = window.replies.load(Relaxed);
    Ok(json!({
        "mode": "rps",
        "clients": args.clients,
        "replies": replies,
        "requests_per_s": replies as f64 / args.duration,
        "errors": window.errors.load(Relaxed),
        "latency": Latency::of(&window.latency_us.lock().unwrap()),
        "loadgen_cpu": loadgen_cpu,
    }))
}

async fn client(cfg: Arc<Config>, w: Arc<Window>, churn: bool) {
    let connect = bayeux::batch([bayeux::connect("0", cfg.transport, false)]);
    let record = |sent: Instant| {
        let now = Instant::now();
        if sent >= w.from && now <= w.to {
            w.replies.fetch_add(1, Relaxed);
            let us = (now - sent).as_micros() as u64;
            w.latency_us.lock().unwrap().saturating_record(us.max(1));
        }
    };
    match cfg.transport {
        Transport::LongPolling => {
            let mut conn = HttpConn::new(cfg.endpoint.clone());
            while Instant::now() < w.to {
                let sent = Instant::now();
                let round = if churn {
                    session_life(&mut conn, &cfg).await
                } else {
                    conn.post(&cfg.connect_path(), connect.clone(), "", REQUEST_LIMIT)
                        .await
                        .map(|r| r.status)
                };
                match round {
                    Ok(200) => record(sent),
                    _ => {
                        w.errors.fetch_add(1, Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        Transport::Websocket => {
            let Ok(stream) = cfg.endpoint.connect().await else {
                w.errors.fetch_add(1, Relaxed);
                return;
            };
            let Ok((mut ws, _)) =
                tokio_tungstenite::client_async(cfg.ws_url.as_str(), stream).await
            else {
                w.errors.fetch_add(1, Relaxed);
                return;
            };
            while Instant::now() < w.to {
                let sent = Instant::now();
                let round = async {
                    ws.send(Message::text(connect.clone())).await.ok()?;
                    ws.next().await?.ok()
                };
                match tokio::time::timeout(REQUEST_LIMIT, round).await {
                    Ok(Some(_)) => record(sent),
                    _ => {
                        w.errors.fetch_add(1, Relaxed);
                        return;
                    }
                }
            }
        }
    }
}

/// A handshake, then a disconnect of the session it made (with its cookie); the status of the
/// disconnect's reply, 0 if it was unsuccessful.
async fn session_life(conn: &mut HttpConn, cfg: &Config) -> Result<u16, String> {
    let handshake = bayeux::handshake(cfg.transport);
    let reply = conn
        .post(&cfg.handshake_path(), handshake, "", REQUEST_LIMIT)
        .await?;
    let client_id = bayeux::parse(&reply.body)?
        .into_iter()
        .find_map(|m| m.client_id)
        .ok_or("a handshake without a clientId")?;
    let disconnect = format!(r#"[{{"channel":"/meta/disconnect","clientId":"{client_id}"}}]"#);
    let cookie = reply.cookies.join("; ");
    let reply = conn
        .post(&cfg.connect_path(), disconnect, &cookie, REQUEST_LIMIT)
        .await?;
    let ended = bayeux::parse(&reply.body)?
        .iter()
        .any(|m| m.is("/meta/disconnect") && m.successful == Some(true));
    Ok(if ended { reply.status } else { 0 })
}
