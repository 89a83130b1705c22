//! A WebSocket client: one socket carries its handshake, subscriptions, connects and
//! publishes; the server pushes deliveries whenever it likes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::bayeux::{self, Publish};
use crate::cli::Transport;
use crate::session::{absorb, Config, Handle, Outcome, REQUEST_LIMIT};

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;
type Source = SplitStream<WebSocketStream<TcpStream>>;

use crate::session::MAX_BATCH;

/// Sets up a session on its own socket and starts its reader and writer.
pub async fn start(
    cfg: Arc<Config>,
    channels: Vec<String>,
    publish_to: Option<String>,
) -> Result<Handle, String> {
    let setup = async {
        let stream = cfg
            .endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (ws, _) = tokio_tungstenite::client_async(cfg.ws_url.as_str(), stream)
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let (mut sink, mut source) = ws.split();
        send(&mut sink, bayeux::handshake(Transport::Websocket)).await?;
        let client_id = read_until(&cfg, &mut source, |o| o.handshake.clone()).await?;
        let mut batch: Vec<String> = channels
            .iter()
            .map(|c| bayeux::subscribe(&client_id, c))
            .collect();
        batch.push(bayeux::connect(&client_id, Transport::Websocket, true));
        send(&mut sink, bayeux::batch(batch)).await?;
        let (mut subscribed, mut connected) = (0, false);
        read_until(&cfg, &mut source, |o| {
            subscribed += o.subscribed;
            connected |= o.connect_replies > 0;
            (subscribed == channels.len() && connected).then_some(())
        })
        .await?;
        Ok::<_, String>((sink, source, client_id))
    };
    let (sink, source, client_id) = tokio::time::timeout(REQUEST_LIMIT, setup)
        .await
        .map_err(|_| "websocket setup timed out".to_string())??;
    let reconnect = Arc::new(Notify::new());
    // The first connect was answered during setup; from here on one is always outstanding.
    reconnect.notify_one();
    let (tx, rx) = mpsc::channel(MAX_BATCH);
    tokio::spawn(reader(cfg.clone(), source, reconnect.clone()));
    tokio::spawn(writer(cfg, sink, client_id, publish_to, rx, reconnect));
    Ok(Handle { publish: Some(tx) })
}

async fn send(sink: &mut Sink, text: String) -> Result<(), String> {
    sink.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// Reads frames, scoring deliveries, until `done` returns something.
async fn read_until<T>(
    cfg: &Config,
    source: &mut Source,
    mut done: impl FnMut(&Outcome) -> Option<T>,
) -> Result<T, String> {
    loop {
        let frame = source
            .next()
            .await
            .ok_or("socket closed")?
            .map_err(|e| e.to_string())?;
        if let Message::Text(text) = frame {
            let out = absorb(&cfg.scores, text.as_bytes())?;
            if out.failed > 0 {
                return Err(format!("refused: {}", text.as_str()));
            }
            if let Some(v) = done(&out) {
                return Ok(v);
            }
        }
    }
}

/// Scores deliveries until the run stops; each connect reply asks the writer for a new one.
async fn reader(cfg: Arc<Config>, mut source: Source, reconnect: Arc<Notify>) {
    let mut stop = cfg.stop.clone();
    while !cfg.stopped() {
        let frame = tokio::select! {
            f = source.next() => f,
            _ = stop.changed() => break,
        };
        match frame {
            Some(Ok(Message::Text(text))) => match absorb(&cfg.scores, text.as_bytes()) {
                Ok(out) => {
                    cfg.scores.refused.fetch_add(out.failed as u64, Relaxed);
                    if out.wants_handshake {
                        cfg.scores.rehandshakes.fetch_add(1, Relaxed);
                    }
                    if out.connect_replies > 0 {
                        reconnect.notify_one();
                    }
                }
                Err(_) => cfg.scores.error(),
            },
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                cfg.scores.error();
                break;
            }
        }
    }
}

/// Sends connects when asked and publishes as the pacer hands them over, batched per frame.
async fn writer(
    cfg: Arc<Config>,
    mut sink: Sink,
    client_id: String,
    publish_to: Option<String>,
    mut rx: mpsc::Receiver<Publish>,
    reconnect: Arc<Notify>,
) {
    let mut stop = cfg.stop.clone();
    let channel = publish_to.unwrap_or_default();
    // Once the pacer lets go of this client, it still answers connect replies.
    let mut pacer_open = true;
    loop {
        let text = tokio::select! {
            _ = reconnect.notified() => bayeux::batch([bayeux::connect(&client_id, Transport::Websocket, false)]),
            p = rx.recv(), if pacer_open => {
                let Some(first) = p else {
                    pacer_open = false;
                    continue;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                bayeux::batch(batch.iter().map(|p| bayeux::publish(&client_id, &channel, p, &cfg.padding)))
            }
            _ = stop.changed() => break,
        };
        if send(&mut sink, text).await.is_err() {
            cfg.scores.error();
            break;
        }
    }
    let _ = sink.close().await;
}
