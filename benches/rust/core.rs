//! Micro benchmarks of the core in pure Rust (divan), beside the pytest-benchmark ones that go
//! through the Python API: fan-out, wildcard matching, parsing a request, building a response.
//!
//! Run: cargo bench --bench core
//! Each benchmark counts its unit of work (deliveries, publishes, messages), so divan prints
//! the time per unit as well as per iteration.

use std::cell::RefCell;
use std::time::Instant;

use divan::counter::ItemsCount;
use divan::Bencher;
use starlette_cometd_core::config::Config;
use starlette_cometd_core::engine::{Effects, Engine, MemoryEngine};
use starlette_cometd_core::message::delivered_message;
use starlette_cometd_core::protocol::{process, RequestInfo, Transport};

const SUBSCRIBERS: usize = 10_000;

fn main() {
    divan::main();
}

fn engine() -> MemoryEngine {
    MemoryEngine::new(Config {
        trust_client_session: true,
        queue_capacity: 1_000,
        connection_types: vec!["long-polling".into()],
        ..Config::default()
    })
}

fn request(engine: &mut MemoryEngine, body: &str) -> Vec<u8> {
    let info = RequestInfo::new(None, Transport::LongPolling);
    process(engine, body.as_bytes(), info, Instant::now()).body
}

/// A new session; returns its client id.
fn handshake(engine: &mut MemoryEngine) -> String {
    let reply = request(engine, r#"[{"channel":"/meta/handshake"}]"#);
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    reply[0]["clientId"].as_str().unwrap().to_owned()
}

fn subscribe(engine: &mut MemoryEngine, client_id: &str, channel: &str) {
    let body = format!(
        r#"[{{"channel":"/meta/subscribe","clientId":"{client_id}","subscription":"{channel}"}}]"#
    );
    let reply = request(engine, &body);
    assert!(String::from_utf8_lossy(&reply).contains(r#""successful":true"#));
}

/// S5: one message to every subscriber of a channel (a full queue drops its oldest message,
/// so the queues stay bounded however many iterations run).
#[divan::bench(sample_count = 200)]
fn fan_out_to_10000_subscribers(bencher: Bencher) {
    let mut core = engine();
    for _ in 0..SUBSCRIBERS {
        let id = handshake(&mut core);
        subscribe(&mut core, &id, "/news");
    }
    let data = format!(r#"{{"headline":"{}","n":1}}"#, "x".repeat(100));
    bencher
        .counter(ItemsCount::new(SUBSCRIBERS))
        .bench_local(|| {
            let message = delivered_message("/news", data.as_bytes());
            let mut effects = Effects::default();
            core.publish("/news", message, &mut effects)
        });
}

/// A publish matched against 10,000 wildcard patterns held by one session.
#[divan::bench]
fn wildcard_matching_with_10000_patterns(bencher: Bencher) {
    let mut core = engine();
    let id = handshake(&mut core);
    for i in 0..SUBSCRIBERS {
        let pattern = if i % 2 == 1 {
            format!("/rooms/{i}/*")
        } else {
            format!("/rooms/{i}/**")
        };
        subscribe(&mut core, &id, &pattern);
    }
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        let message = delivered_message("/rooms/4242/chat", b"1");
        let mut effects = Effects::default();
        core.publish("/rooms/4242/chat", message, &mut effects)
    });
}

/// A request of 100 publishes (to a channel nobody listens to): parsing, validation, replies.
#[divan::bench]
fn parse_a_100_message_request(bencher: Bencher) {
    let mut core = engine();
    let id = handshake(&mut core);
    let messages: Vec<String> = (0..100)
        .map(|i| {
            format!(r#"{{"channel":"/nobody/listens","clientId":"{id}","data":{{"text":"hello","n":{i}}},"id":"{i}"}}"#)
        })
        .collect();
    let body = format!("[{}]", messages.join(","));
    bencher
        .counter(ItemsCount::new(100usize))
        .bench_local(|| request(&mut core, &body));
}

/// A connect reply carrying 100 queued messages (queued in the untimed setup).
#[divan::bench]
fn build_a_100_message_response(bencher: Bencher) {
    let core = RefCell::new(engine());
    let id = handshake(&mut core.borrow_mut());
    subscribe(&mut core.borrow_mut(), &id, "/feed");
    let connect =
        format!(r#"[{{"channel":"/meta/connect","clientId":"{id}","advice":{{"timeout":0}}}}]"#);
    bencher
        .counter(ItemsCount::new(100usize))
        .with_inputs(|| {
            let mut core = core.borrow_mut();
            for i in 0..100 {
                let data = format!(r#"{{"text":"hello","n":{i}}}"#);
                let message = delivered_message("/feed", data.as_bytes());
                core.publish("/feed", message, &mut Effects::default());
            }
        })
        .bench_local_values(|()| request(&mut core.borrow_mut(), &connect));
}
