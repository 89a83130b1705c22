//! Connect behaviour that depends on options: the ack extension, timesync, the limit of held
//! long-polls per browser, `broadcast_to_publisher` and `handshake_reconnect`.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::*;
use crate::config::Config;
use crate::engine::{Effects, MemoryEngine, RemoveReason};
use crate::protocol::{process, RequestInfo, Transport};

fn engine(config: Config) -> MemoryEngine {
    MemoryEngine::new(config)
}

fn send(engine: &mut MemoryEngine, browser: Id, batch: Value) -> (Vec<Value>, Option<Hold>) {
    let body = serde_json::to_vec(&batch).unwrap();
    let info = RequestInfo::new(Some(browser), Transport::LongPolling);
    let outcome = process(engine, &body, info, Instant::now());
    let replies = if outcome.body.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&outcome.body).unwrap()
    };
    (replies, outcome.hold)
}

fn handshake(engine: &mut MemoryEngine, browser: Id, ext: Value) -> (String, Value) {
    let (replies, _) = send(
        engine,
        browser,
        json!([{"channel": "/meta/handshake", "ext": ext}]),
    );
    (
        replies[0]["clientId"].as_str().unwrap().to_owned(),
        replies[0].clone(),
    )
}

fn deliver(engine: &mut MemoryEngine, id: &str, n: u64) {
    let key = engine.key_of(&Id::parse(id).unwrap()).unwrap();
    let message = Arc::from(format!("{n}").into_bytes());
    engine.deliver(key, message, &mut Effects::default());
}

#[test]
fn ack_resends_what_was_not_acknowledged_and_nothing_twice() {
    let mut engine = engine(Config {
        ack_extension: true,
        ..Config::default()
    });
    let browser = Id::generate();
    let (id, reply) = handshake(&mut engine, browser, json!({"ack": true}));
    assert_eq!(reply["ext"], json!({"ack": true}));
    let connect =
        |ack: u64| json!([{"channel": "/meta/connect", "clientId": id, "ext": {"ack": ack}}]);
    let (replies, _) = send(&mut engine, browser, connect(0));
    assert_eq!(replies[0]["ext"]["ack"], 0, "nothing sent yet");
    deliver(&mut engine, &id, 1);
    deliver(&mut engine, &id, 2);
    let (replies, _) = send(&mut engine, browser, connect(0));
    assert_eq!(replies, vec![json!(1), json!(2), replies[2].clone()]);
    assert_eq!(replies[2]["ext"]["ack"], 1);
    // That reply was lost: the client still acknowledges batch 0, so 1 and 2 come again.
    deliver(&mut engine, &id, 3);
    let (replies, _) = send(&mut engine, browser, connect(0));
    assert_eq!(&replies[..3], &[json!(1), json!(2), json!(3)]);
    assert_eq!(replies[3]["ext"]["ack"], 2);
    // Acknowledged: the next connect is held, with nothing to send again.
    let (replies, hold) = send(&mut engine, browser, connect(2));
    assert!(replies.is_empty());
    let hold = hold.expect("held once everything is acknowledged");
    deliver(&mut engine, &id, 4);
    let body = complete_connect(&mut engine, &hold, true, Instant::now());
    let replies: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(replies[0], json!(4));
    assert_eq!(replies[1]["ext"]["ack"], 3);
}

#[test]
fn ack_is_off_unless_the_server_enables_it() {
    let mut engine = engine(Config::default());
    let (_, reply) = handshake(&mut engine, Id::generate(), json!({"ack": true}));
    assert!(reply.get("ext").is_none());
}

#[test]
fn timesync_answers_with_the_clients_tc_and_the_server_time() {
    let mut engine = engine(Config {
        timesync: true,
        ..Config::default()
    });
    let (_, reply) = handshake(
        &mut engine,
        Id::generate(),
        json!({"timesync": {"tc": 1000, "l": 0, "o": 0}}),
    );
    let timesync = &reply["ext"]["timesync"];
    assert_eq!(timesync["tc"], 1000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((timesync["ts"].as_i64().unwrap() - now).abs() < 5_000);
    assert!(timesync["p"].as_i64().unwrap() >= 0);
}

#[test]
fn a_browser_holds_one_long_poll_then_gets_multiple_clients_advice() {
    let mut engine = engine(Config::default());
    let browser = Id::generate();
    let (a, _) = handshake(&mut engine, browser, json!({}));
    let (b, _) = handshake(&mut engine, browser, json!({}));
    for id in [&a, &b] {
        send(
            &mut engine,
            browser,
            json!([{"channel": "/meta/connect", "clientId": id}]),
        );
    }
    let (_, held) = send(
        &mut engine,
        browser,
        json!([{"channel": "/meta/connect", "clientId": a}]),
    );
    let held = held.expect("the first long-poll of the browser is held");
    let (replies, hold) = send(
        &mut engine,
        browser,
        json!([{"channel": "/meta/connect", "clientId": b}]),
    );
    assert!(hold.is_none());
    assert_eq!(replies[0]["advice"]["multiple-clients"], true);
    assert_eq!(replies[0]["advice"]["interval"], 2000);
    // Once the first long-poll returns, the other tab may hold one.
    complete_connect(&mut engine, &held, true, Instant::now());
    let (_, hold) = send(
        &mut engine,
        browser,
        json!([{"channel": "/meta/connect", "clientId": b}]),
    );
    let hold = hold.expect("held once the first returned");
    assert!(hold.counted && held.counted);
    // Ended early because the browser holds one on another process: the reply says so, and
    // still carries what was queued.
    deliver(&mut engine, &b, 7);
    let body = complete_connect_with(&mut engine, &hold, true, true, Instant::now());
    let replies: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(replies[0], json!(7));
    assert_eq!(replies[1]["successful"], true);
    assert_eq!(replies[1]["advice"]["multiple-clients"], true);
    assert_eq!(replies[1]["advice"]["interval"], 2000);
}

#[test]
fn publisher_can_be_left_out_of_its_own_broadcast() {
    let mut engine = engine(Config {
        broadcast_to_publisher: false,
        ..Config::default()
    });
    let browser = Id::generate();
    let (id, _) = handshake(&mut engine, browser, json!({}));
    send(
        &mut engine,
        browser,
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/a"},
               {"channel": "/a", "clientId": id, "data": 1}]),
    );
    let key = engine.key_of(&Id::parse(&id).unwrap()).unwrap();
    assert_eq!(engine.session_info(key).queued, 0);
}

#[test]
fn handshake_reconnect_advertises_max_interval() {
    let mut engine = engine(Config {
        handshake_reconnect: true,
        ..Config::default()
    });
    let (_, reply) = handshake(&mut engine, Id::generate(), json!({}));
    assert_eq!(reply["advice"]["maxInterval"], 60000);
}

#[test]
fn relayed_publishes_come_back_instead_of_fanning_out_and_fan_out_delivers_them() {
    let mut engine = engine(Config {
        relay_publishes: true,
        broadcast_to_publisher: false,
        ..Config::default()
    });
    let browser = Id::generate();
    let (publisher, _) = handshake(&mut engine, browser, json!({}));
    let (subscriber, _) = handshake(&mut engine, browser, json!({}));
    for id in [&publisher, &subscriber] {
        send(
            &mut engine,
            browser,
            json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/a/*"}]),
        );
    }
    let body = serde_json::to_vec(&json!([
        {"channel": "/a/b", "clientId": publisher, "data": {"n": 1}, "id": "7"}
    ]))
    .unwrap();
    let info = RequestInfo::new(Some(browser), Transport::LongPolling);
    let outcome = process(&mut engine, &body, info, Instant::now());
    let replies: Value = serde_json::from_slice(&outcome.body).unwrap();
    assert_eq!(
        replies[0]["successful"], true,
        "the publish itself is answered"
    );
    let publisher_id = Id::parse(&publisher).unwrap();
    let subscriber_key = engine.key_of(&Id::parse(&subscriber).unwrap()).unwrap();
    assert_eq!(
        engine.session_info(subscriber_key).queued,
        0,
        "not fanned out"
    );
    let [relayed] = &outcome.effects.relayed[..] else {
        panic!("one relayed publish, got {:?}", outcome.effects.relayed);
    };
    assert_eq!(&*relayed.channel, "/a/b");
    assert_eq!(relayed.excluded, Some(publisher_id));
    let message: Value = serde_json::from_slice(&relayed.message).unwrap();
    assert_eq!(message, json!({"channel": "/a/b", "data": {"n": 1}}));

    // Carried back by the cluster: every local subscriber but the excluded publisher gets it.
    let mut effects = Effects::default();
    let excluded = engine.key_of(&publisher_id);
    let reached = engine.fan_out("/a/b", Arc::clone(&relayed.message), excluded, &mut effects);
    assert_eq!(reached, 1);
    assert_eq!(engine.session_info(subscriber_key).queued, 1);
}

#[test]
fn a_moved_session_leaves_without_an_event_and_its_held_connect_is_answered_plainly() {
    let mut engine = engine(Config::default());
    let browser = Id::generate();
    let (id, _) = handshake(&mut engine, browser, json!({}));
    let connect =
        json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}]);
    send(&mut engine, browser, connect.clone());
    let (_, hold) = send(&mut engine, browser, connect);
    let hold = hold.expect("the second connect is held");
    let key = engine.key_of(&Id::parse(&id).unwrap()).unwrap();
    let mut effects = Effects::default();
    engine.remove(key, RemoveReason::Moved, &mut effects);
    assert!(
        effects.events.is_empty(),
        "no SessionRemoved: it lives on elsewhere"
    );
    assert_eq!(effects.release, vec![Id::parse(&id).unwrap()]);
    assert_eq!(engine.stats().sessions_removed, 0);
    let body = complete_connect(&mut engine, &hold, false, Instant::now());
    let replies: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(replies[0]["successful"], true);
    assert_eq!(replies[0]["advice"]["reconnect"], "retry");
}

#[test]
fn an_adopted_session_keeps_its_id_and_cookie_and_is_not_new() {
    let mut engine = engine(Config {
        max_sessions_per_cookie: Some(1),
        ..Config::default()
    });
    let browser = Id::generate();
    let (first, _) = handshake(&mut engine, browser, json!({}));
    let adopted = Id::generate();
    let now = Instant::now();
    let key = engine
        .adopt(adopted, browser, None, false, now)
        .expect("adopted although the cookie is at its limit: the session exists already");
    assert!(
        engine.adopt(adopted, browser, None, true, now).is_none(),
        "once"
    );
    assert!(engine.subscribe(key, "/a"));
    assert_eq!(
        engine.stats().sessions_created,
        1,
        "adopting creates no session"
    );
    // Its first connect is still to come (it handshook elsewhere): answered at once.
    let (_, hold) = send(
        &mut engine,
        browser,
        json!([{"channel": "/meta/connect", "clientId": adopted.to_string(), "connectionType": "long-polling"}]),
    );
    assert!(hold.is_none());
    // The cookie still proves ownership; another cookie does not.
    let (replies, _) = send(
        &mut engine,
        Id::generate(),
        json!([{"channel": "/a", "clientId": adopted.to_string(), "data": 1}]),
    );
    assert_eq!(replies[0]["error"], "402::session_unknown");
    let info = engine.session_info(key);
    assert_eq!(info.browser, browser);
    assert_eq!(info.subscriptions, ["/a"]);
    assert_ne!(first, adopted.to_string());
}

#[test]
fn an_adopted_session_never_connected_is_free_for_a_socket_without_its_cookie() {
    // As on the process that made it (and as the cluster's CLAIM lets it): Faye opens its
    // WebSocket before the handshake, without the cookie the handshake then sets.
    let mut engine = engine(Config::default());
    let (fresh, connected) = (Id::generate(), Id::generate());
    let now = Instant::now();
    engine
        .adopt(fresh, Id::generate(), None, false, now)
        .unwrap();
    engine
        .adopt(connected, Id::generate(), None, true, now)
        .unwrap();
    let other = Id::generate();
    let socket = crate::engine::Caller::Socket(7);
    assert!(engine.lookup(&fresh, Some(&other), socket).is_ok());
    assert!(engine.lookup(&connected, Some(&other), socket).is_err());
    let http = crate::engine::Caller::Http;
    assert!(engine.lookup(&fresh, Some(&other), http).is_err());
}
