//! One keep-alive HTTP/1.1 connection (hyper's low-level client), reopened after an error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::net::Endpoint;

pub struct HttpConn {
    endpoint: Arc<Endpoint>,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    /// `name=value` of every cookie the server set.
    pub cookies: Vec<String>,
}

impl HttpConn {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        let host = endpoint.server.to_string();
        HttpConn {
            endpoint,
            host,
            sender: None,
        }
    }

    async fn open(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = self
                .endpoint
                .connect()
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("http handshake: {e}"))?;
            // The connection task ends when the sender is dropped or the socket closes.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().unwrap())
    }

    /// POSTs a JSON body to `path`; gives up after `limit`. Any failure drops the connection.
    pub async fn post(
        &mut self,
        path: &str,
        body: String,
        cookie: &str,
        limit: Duration,
    ) -> Result<Reply, String> {
        let result = tokio::time::timeout(limit, self.post_inner(path, body, cookie)).await;
        let result = result.unwrap_or_else(|_| Err(format!("no reply within {limit:?}")));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn post_inner(
        &mut self,
        path: &str,
        body: String,
        cookie: &str,
    ) -> Result<Reply, String> {
        let mut req = Request::post(path)
            .header(HOST, self.host.as_str())
            .header(CONTENT_TYPE, "application/json");
        if !cookie.is_empty() {
            req = req.header(COOKIE, cookie);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let sender = self.open().await?;
        sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let cookies = resp
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(|v| v.trim().to_string())
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok(Reply {
            status,
            body: body.to_bytes(),
            cookies,
        })
    }
}
