//! Protocol tests without Python or HTTP: batches in, replies and effects out.

use super::*;
use crate::config::Config;
use crate::engine::{Effects, MemoryEngine, RemoveReason};
use serde_json::{json, Value};
use std::sync::Arc;

fn engine() -> MemoryEngine {
    MemoryEngine::new(Config {
        connection_types: vec!["websocket".into(), "long-polling".into()],
        ..Config::default()
    })
}

fn run(engine: &mut MemoryEngine, browser: Id, batch: Value) -> (Vec<Value>, Outcome) {
    let body = serde_json::to_vec(&batch).unwrap();
    let outcome = process(
        engine,
        &body,
        RequestInfo::new(Some(browser), Transport::LongPolling),
        Instant::now(),
    );
    let replies = if outcome.body.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&outcome.body).unwrap()
    };
    (replies, outcome)
}

/// Handshakes and answers the first connect; returns the client id.
fn session(engine: &mut MemoryEngine, browser: Id) -> String {
    let (replies, outcome) = run(engine, browser, json!([{"channel": "/meta/handshake"}]));
    assert_eq!(outcome.effects.events.len(), 1);
    let id = replies[0]["clientId"].as_str().unwrap().to_owned();
    let (replies, outcome) = run(
        engine,
        browser,
        json!([{"channel": "/meta/connect", "clientId": id}]),
    );
    assert!(
        outcome.hold.is_none(),
        "the first connect is answered at once"
    );
    assert_eq!(replies[0]["successful"], true);
    id
}

#[test]
fn handshake_without_cookie_issues_one() {
    let mut engine = engine();
    let outcome = process(
        &mut engine,
        br#"[{"channel":"/meta/handshake","id":1}]"#,
        RequestInfo::new(None, Transport::LongPolling),
        Instant::now(),
    );
    assert!(outcome.new_browser.is_some());
    let replies: Vec<Value> = serde_json::from_slice(&outcome.body).unwrap();
    assert_eq!(replies[0]["id"], 1);
    assert_eq!(
        replies[0]["supportedConnectionTypes"],
        json!(["websocket", "long-polling"])
    );
}

#[test]
fn publish_reaches_wildcard_subscribers_once_and_wakes_held_connect() {
    let mut engine = engine();
    let browser = Id::generate();
    let listener = session(&mut engine, browser);
    let talker = session(&mut engine, browser);
    run(
        &mut engine,
        browser,
        json!([{"channel": "/meta/subscribe", "clientId": listener,
                "subscription": ["/a/*", "/a/**", "/a/b"]}]),
    );
    let (replies, held) = run(
        &mut engine,
        browser,
        json!([{"channel": "/meta/connect", "clientId": listener, "id": "h"}]),
    );
    assert!(replies.is_empty());
    let hold = held.hold.expect("a lone second connect is held");
    let (_, outcome) = run(
        &mut engine,
        browser,
        json!([{"channel": "/a/b", "clientId": talker, "data": {"x": 1}, "id": "p"}]),
    );
    assert_eq!(outcome.effects.wake, vec![hold.client_id]);
    assert!(outcome.effects.push.is_empty());
    let reply: Vec<Value> =
        serde_json::from_slice(&complete_connect(&mut engine, &hold, true, Instant::now()))
            .unwrap();
    assert_eq!(
        reply,
        vec![
            json!({"channel": "/a/b", "data": {"x": 1}, "id": "p"}),
            json!({"channel": "/meta/connect", "successful": true, "clientId": listener,
                   "advice": {"reconnect": "retry", "interval": 0, "timeout": 20000}, "id": "h"}),
        ]
    );
}

#[test]
fn newer_connect_releases_the_held_one_without_taking_its_messages() {
    let mut engine = engine();
    let browser = Id::generate();
    let id = session(&mut engine, browser);
    let connect = json!([{"channel": "/meta/connect", "clientId": id}]);
    let (_, first) = run(&mut engine, browser, connect.clone());
    let first = first.hold.unwrap();
    let (_, second) = run(&mut engine, browser, connect);
    assert_eq!(second.effects.release, vec![first.client_id]);
    let second = second.hold.unwrap();
    let key = engine.key_of(&second.client_id).unwrap();
    engine.deliver(key, Arc::from(&b"{}"[..]), &mut Effects::default());
    let released: Vec<Value> = serde_json::from_slice(&complete_connect(
        &mut engine,
        &first,
        false,
        Instant::now(),
    ))
    .unwrap();
    assert_eq!(
        released.len(),
        1,
        "the released connect carries no messages"
    );
    let answered: Vec<Value> = serde_json::from_slice(&complete_connect(
        &mut engine,
        &second,
        true,
        Instant::now(),
    ))
    .unwrap();
    assert_eq!(answered.len(), 2);
}

#[test]
fn wrong_cookie_is_an_unknown_session() {
    let mut engine = engine();
    let id = session(&mut engine, Id::generate());
    let (replies, _) = run(
        &mut engine,
        Id::generate(),
        json!([{"channel": "/meta/disconnect", "clientId": id}]),
    );
    assert_eq!(replies[0]["error"], "402::session_unknown");
    assert_eq!(replies[0]["advice"]["reconnect"], "handshake");
    assert_eq!(engine.stats().sessions, 1);
}

#[test]
fn completing_a_connect_of_a_removed_session_answers_402() {
    let mut engine = engine();
    let browser = Id::generate();
    let id = session(&mut engine, browser);
    let (_, outcome) = run(
        &mut engine,
        browser,
        json!([{"channel": "/meta/connect", "clientId": id, "id": 9}]),
    );
    let hold = outcome.hold.unwrap();
    let key = engine.key_of(&hold.client_id).unwrap();
    let mut effects = Effects::default();
    engine.remove(key, RemoveReason::Removed, &mut effects);
    assert_eq!(effects.release, vec![hold.client_id]);
    let reply: Vec<Value> =
        serde_json::from_slice(&complete_connect(&mut engine, &hold, true, Instant::now()))
            .unwrap();
    assert_eq!(reply[0]["error"], "402::session_unknown");
    assert_eq!(reply[0]["id"], 9);
}

#[test]
fn an_empty_batch_gets_an_empty_reply() {
    let mut engine = engine();
    let outcome = process(
        &mut engine,
        b" [ ] ",
        RequestInfo::new(None, Transport::LongPolling),
        Instant::now(),
    );
    assert_eq!((outcome.status, outcome.body), (200, b"[]".to_vec()));
}

#[test]
fn malformed_bodies_are_400() {
    let mut engine = engine();
    for body in [&b""[..], b"[", b"\xff", b"{}x"] {
        let outcome = process(
            &mut engine,
            body,
            RequestInfo::new(None, Transport::LongPolling),
            Instant::now(),
        );
        assert_eq!(outcome.status, 400);
    }
}

#[test]
fn a_message_nested_too_deep_is_refused_alone() {
    let mut engine = engine();
    let browser = Id::generate();
    let deep = |levels: usize| {
        let mut ext = json!(1);
        for _ in 0..levels {
            ext = json!([ext]);
        }
        ext
    };
    // The message is one level, its ext the others.
    let at_limit = json!({"channel": "/meta/handshake", "ext": deep(json::MAX_MESSAGE_DEPTH - 1)});
    let over = json!({"channel": "/meta/handshake", "id": 1, "ext": deep(json::MAX_MESSAGE_DEPTH)});
    let (replies, outcome) = run(&mut engine, browser, json!([at_limit, over]));
    assert_eq!(outcome.status, 200);
    assert_eq!(replies[0]["successful"], true);
    assert_eq!(
        replies[1],
        json!({"successful": false, "error": "400::message_too_deep"})
    );
}

#[test]
fn disconnect_answers_the_held_connect_with_no_reconnect_advice() {
    let mut engine = engine();
    let browser = Id::generate();
    let id = session(&mut engine, browser);
    let (_, outcome) = run(
        &mut engine,
        browser,
        json!([{"channel": "/meta/connect", "clientId": id}]),
    );
    let hold = outcome.hold.unwrap();
    let (_, outcome) = run(
        &mut engine,
        browser,
        json!([{"channel": "/meta/disconnect", "clientId": id}]),
    );
    assert_eq!(outcome.effects.release, vec![hold.client_id]);
    let reply: Vec<Value> =
        serde_json::from_slice(&complete_connect(&mut engine, &hold, true, Instant::now()))
            .unwrap();
    assert_eq!(reply[0]["successful"], true);
    assert_eq!(reply[0]["advice"]["reconnect"], "none");
}

#[test]
fn websocket_sessions_are_pushed_every_message_and_belong_to_their_socket() {
    let mut engine = engine();
    let body = br#"[{"channel":"/meta/handshake"}]"#;
    let outcome = process(
        &mut engine,
        body,
        RequestInfo::socket(None, 1),
        Instant::now(),
    );
    assert!(outcome.new_browser.is_none(), "a frame cannot set a cookie");
    let replies: Vec<Value> = serde_json::from_slice(&outcome.body).unwrap();
    let id = Id::parse(replies[0]["clientId"].as_str().unwrap()).unwrap();
    let subscribe =
        format!(r#"[{{"channel":"/meta/subscribe","clientId":"{id}","subscription":"/a"}}]"#);
    let outcome = process(
        &mut engine,
        subscribe.as_bytes(),
        RequestInfo::socket(None, 1),
        Instant::now(),
    );
    assert!(outcome.body.windows(4).any(|w| w == b"true"));
    let mut effects = Effects::default();
    engine.publish("/a", Arc::from(&b"1"[..]), &mut effects);
    engine.publish("/a", Arc::from(&b"2"[..]), &mut effects);
    assert_eq!(
        effects.push,
        vec![id],
        "a bound session is told once per drain"
    );
    assert!(effects.wake.is_empty());
    assert_eq!(drain_queue(&mut engine, &id, Some(1)).unwrap(), b"[1,2]");
    assert!(drain_queue(&mut engine, &id, Some(1)).is_none());
    engine.publish("/a", Arc::from(&b"3"[..]), &mut effects);
    assert_eq!(effects.push, vec![id, id]);
    // The same session over HTTP, or over another socket, without its cookie is refused,
    // and the session stays as it was.
    let connect = format!(r#"[{{"channel":"/meta/connect","clientId":"{id}"}}]"#);
    for info in [
        RequestInfo::new(None, Transport::LongPolling),
        RequestInfo::socket(None, 2),
    ] {
        let outcome = process(&mut engine, connect.as_bytes(), info, Instant::now());
        assert!(String::from_utf8_lossy(&outcome.body).contains("402::session_unknown"));
        assert!(outcome.effects.bound.is_empty() && outcome.effects.release.is_empty());
    }
    engine.publish("/a", Arc::from(&b"4"[..]), &mut effects);
    assert!(
        drain_queue(&mut engine, &id, Some(2)).is_none(),
        "only its socket drains it"
    );
    assert_eq!(drain_queue(&mut engine, &id, Some(1)).unwrap(), b"[3,4]");
}

#[test]
fn a_transport_not_offered_is_refused_with_advice_to_stop() {
    let mut engine = engine();
    let body = br#"[{"channel":"/meta/handshake","id":"h"}]"#;
    let outcome = process(
        &mut engine,
        body,
        RequestInfo::new(None, Transport::CallbackPolling),
        Instant::now(),
    );
    let replies: Vec<Value> = serde_json::from_slice(&outcome.body).unwrap();
    assert_eq!(
        replies[0],
        json!({"channel": "/meta/handshake", "successful": false,
               "error": "400::connection_type_unsupported",
               "advice": {"reconnect": "none", "interval": 0}, "id": "h"})
    );
    assert_eq!(engine.stats().sessions, 0);
}

#[test]
fn the_protocol_also_runs_over_an_engine_chosen_at_run_time() {
    // A second engine may be picked by configuration: the trait stays object safe.
    let mut memory = engine();
    let engine: &mut dyn Engine<Key = u32> = &mut memory;
    let outcome = process(
        engine,
        br#"[{"channel":"/meta/handshake"}]"#,
        RequestInfo::new(None, Transport::LongPolling),
        Instant::now(),
    );
    assert!(String::from_utf8_lossy(&outcome.body).contains(r#""successful":true"#));
    assert_eq!(engine.stats().sessions, 1);
}
