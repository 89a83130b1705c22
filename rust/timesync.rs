//! The server side of the clients' timesync extension: the server's clock on receipt and
//! how long it kept the message, so a client can estimate its offset from the server.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::json::ObjectWriter;

/// `ext.timesync` from a client: its clock (`tc`), lag (`l`) and offset (`o`), in ms.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct TimesyncRequest {
    tc: f64,
    #[serde(default)]
    l: f64,
    #[serde(default)]
    o: f64,
}

impl TimesyncRequest {
    /// A request whose client clock is a usable number.
    pub fn is_valid(&self) -> bool {
        self.tc.is_finite()
    }
}

/// The timesync answer: the client's `tc`, the server's time on receipt (`ts`), the time the
/// server kept the message (`p`), and how far the client's estimate was off (`a`).
#[derive(Debug, Clone, Copy)]
pub struct Timesync {
    request: TimesyncRequest,
    received_ms: f64,
}

impl Timesync {
    /// Notes the time a message asking for timesync arrived.
    pub fn received(request: TimesyncRequest) -> Self {
        Self {
            request,
            received_ms: unix_millis(),
        }
    }

    /// Writes `timesync` into a reply's `ext`, taking the time the reply is written as the end
    /// of the server's part.
    pub fn write(&self, ext: &mut ObjectWriter<'_>) {
        let ts = self.received_ms.round();
        let p = (unix_millis() - self.received_ms).max(0.0).round();
        let a = (self.request.tc + self.request.o + self.request.l - ts).round();
        let mut bytes = Vec::with_capacity(64);
        ObjectWriter::new(&mut bytes)
            .float("tc", self.request.tc)
            .float("ts", ts)
            .float("p", p)
            .float("a", a)
            .finish();
        ext.raw("timesync", &bytes);
    }
}

fn unix_millis() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_the_clients_clock_and_a_non_negative_hold_time() {
        let request: TimesyncRequest = serde_json::from_str(r#"{"tc":1000}"#).unwrap();
        let mut bytes = Vec::new();
        let mut ext = ObjectWriter::new(&mut bytes);
        Timesync::received(request).write(&mut ext);
        ext.finish();
        let ext: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(ext["timesync"]["tc"], 1000);
        assert!(ext["timesync"]["p"].as_i64().unwrap() >= 0);
    }
}
