//! A long-polling client: one connection holds its /meta/connect, a second one publishes
//! (as the CometD clients do), so a held connect never delays a publish.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::bayeux::{self, Publish};
use crate::cli::{Dialect, Transport};
use crate::http::HttpConn;
use crate::session::{absorb, Config, Handle, Ident, SharedIdent, MAX_BATCH, REQUEST_LIMIT};

/// A session is abandoned after this many handshakes the server asked for again.
const MAX_REHANDSHAKES: u32 = 20;

/// Handshakes on `conn` and returns the session's id and cookies.
pub async fn handshake(cfg: &Config, conn: &mut HttpConn, cookie: &str) -> Result<Ident, String> {
    let body = bayeux::handshake(Transport::LongPolling);
    let reply = conn
        .post(&cfg.handshake_path(), body, cookie, REQUEST_LIMIT)
        .await?;
    let out = absorb(&cfg.scores, &reply.body)?;
    let client_id = out.handshake.ok_or("handshake refused")?;
    let mut cookies: Vec<String> = cookie
        .split("; ")
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    cookies.extend(reply.cookies);
    Ok(Ident {
        client_id,
        cookie: cookies.join("; "),
    })
}

/// Subscribes to each channel, one request each (axum_cometd takes one message per request).
pub async fn subscribe(
    cfg: &Config,
    conn: &mut HttpConn,
    id: &Ident,
    channels: &[String],
) -> Result<(), String> {
    for channel in channels {
        let body = bayeux::batch([bayeux::subscribe(&id.client_id, channel)]);
        let reply = conn
            .post(&cfg.path, body, &id.cookie, REQUEST_LIMIT)
            .await?;
        if absorb(&cfg.scores, &reply.body)?.subscribed != 1 {
            return Err(format!(
                "subscribe to {channel} refused: {}",
                String::from_utf8_lossy(&reply.body)
            ));
        }
    }
    Ok(())
}

/// The first connect, answered at once by servers that follow the CometD clients' habit;
/// axum_cometd holds every connect, so there it is skipped.
pub async fn first_connect(cfg: &Config, conn: &mut HttpConn, id: &Ident) -> Result<(), String> {
    if cfg.dialect == Dialect::Axum {
        return Ok(());
    }
    let body = bayeux::batch([bayeux::connect(&id.client_id, Transport::LongPolling, true)]);
    let reply = conn
        .post(&cfg.connect_path(), body, &id.cookie, REQUEST_LIMIT)
        .await?;
    let out = absorb(&cfg.scores, &reply.body)?;
    if out.connect_replies == 0 || out.failed > 0 {
        return Err(format!(
            "first connect refused: {}",
            String::from_utf8_lossy(&reply.body)
        ));
    }
    Ok(())
}

/// Sets up a session and starts its connect loop and, with `publish_to`, its publisher.
pub async fn start(
    cfg: Arc<Config>,
    channels: Vec<String>,
    publish_to: Option<String>,
) -> Result<Handle, String> {
    let mut conn = HttpConn::new(cfg.endpoint.clone());
    let id = handshake(&cfg, &mut conn, "").await?;
    subscribe(&cfg, &mut conn, &id, &channels).await?;
    first_connect(&cfg, &mut conn, &id).await?;
    let ident: SharedIdent = Arc::new(RwLock::new(id));
    tokio::spawn(connect_loop(cfg.clone(), conn, ident.clone(), channels));
    let publish = publish_to.map(|channel| {
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        tokio::spawn(publisher(cfg.clone(), ident, channel, rx));
        tx
    });
    Ok(Handle { publish })
}

/// Keeps one connect outstanding until the run stops; handshakes again when told to.
async fn connect_loop(
    cfg: Arc<Config>,
    mut conn: HttpConn,
    ident: SharedIdent,
    channels: Vec<String>,
) {
    let mut stop = cfg.stop.clone();
    let mut rehandshakes = 0;
    let path = cfg.connect_path();
    while !cfg.stopped() {
        let id = ident.read().unwrap().clone();
        let body = bayeux::batch([bayeux::connect(
            &id.client_id,
            Transport::LongPolling,
            false,
        )]);
        let reply = tokio::select! {
            r = conn.post(&path, body, &id.cookie, cfg.connect_limit) => r,
            _ = stop.changed() => break,
        };
        let out = reply.and_then(|r| absorb(&cfg.scores, &r.body));
        match out {
            Ok(out) if !out.wants_handshake && out.failed == 0 => continue,
            Ok(out) if !out.wants_handshake => {
                // Refused without advice to handshake: back off rather than spin.
                cfg.scores.error();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(_) => {
                rehandshakes += 1;
                cfg.scores.rehandshakes.fetch_add(1, Relaxed);
                if rehandshakes > MAX_REHANDSHAKES {
                    break;
                }
                match renew(&cfg, &mut conn, &id, &channels).await {
                    Ok(new_id) => *ident.write().unwrap() = new_id,
                    Err(_) => cfg.scores.error(),
                }
            }
            Err(_) => {
                cfg.scores.error();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn renew(
    cfg: &Config,
    conn: &mut HttpConn,
    old: &Ident,
    channels: &[String],
) -> Result<Ident, String> {
    let id = handshake(cfg, conn, &old.cookie).await?;
    subscribe(cfg, conn, &id, channels).await?;
    first_connect(cfg, conn, &id).await?;
    Ok(id)
}

/// Sends what the pacer hands over, batching whatever queued up while a request was out.
async fn publisher(
    cfg: Arc<Config>,
    ident: SharedIdent,
    channel: String,
    mut rx: mpsc::Receiver<Publish>,
) {
    let mut conn = HttpConn::new(cfg.endpoint.clone());
    let mut stop = cfg.stop.clone();
    loop {
        let first = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => break },
            _ = stop.changed() => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let id = ident.read().unwrap().clone();
        let body = bayeux::batch(
            batch
                .iter()
                .map(|p| bayeux::publish(&id.client_id, &channel, p, &cfg.padding)),
        );
        let reply = conn
            .post(&cfg.connect_path(), body, &id.cookie, REQUEST_LIMIT)
            .await;
        let refused = match reply.and_then(|r| absorb(&cfg.scores, &r.body)) {
            Ok(out) => out.failed,
            Err(_) => {
                cfg.scores.error();
                batch.len()
            }
        };
        cfg.scores.refused.fetch_add(refused as u64, Relaxed);
    }
}
