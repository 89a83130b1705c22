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
            json!({"channel": "/a/b", "data": {"x": 1}}),
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
    let limit = engine.config().max_data_depth;
    let at_limit = json!({"channel": "/meta/handshake", "ext": deep(limit)});
    let over = json!({"channel": "/meta/handshake", "id": 1, "ext": deep(limit + 1)});
    let (replies, outcome) = run(&mut engine, browser, json!([at_limit, over]));
    assert_eq!(outcome.status, 200);
    assert_eq!(replies[0]["successful"], true);
    assert_eq!(
        replies[1],
        json!({"channel": "/meta/handshake", "successful": false, "error": "400:ext:too_deep", "id": 1})
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

fn limited_engine() -> MemoryEngine {
    MemoryEngine::new(Config {
        max_channel_length: 16,
        max_channel_segments: 3,
        max_data_depth: 2,
        max_subscriptions_per_session: 2,
        max_channels: 3,
        ..Config::default()
    })
}

fn subscribe_reply(engine: &mut MemoryEngine, browser: Id, id: &str, names: Value) -> Value {
    let (replies, _) = run(
        engine,
        browser,
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": names}]),
    );
    replies[0].clone()
}

#[test]
fn meta_patterns_are_refused_and_service_patterns_are_a_no_op() {
    let mut engine = engine();
    let browser = Id::generate();
    let id = session(&mut engine, browser);
    for name in ["/meta/*", "/meta/**", "/meta/connect/*", "/meta"] {
        let reply = subscribe_reply(&mut engine, browser, &id, json!([name]));
        assert_eq!(reply["successful"], false, "{name}");
        assert_eq!(reply["error"], bayeux::SUBSCRIBE_DENIED, "{name}");
        assert_eq!(reply["subscription"], json!([name]));
    }
    for name in ["/service/*", "/service/**", "/service/echo"] {
        let reply = subscribe_reply(&mut engine, browser, &id, json!([name]));
        assert_eq!(reply["successful"], true, "{name}");
    }
    let reply = subscribe_reply(&mut engine, browser, &id, json!(["/**"]));
    assert_eq!(reply["successful"], true);
    let key = engine.key_of(&Id::parse(&id).unwrap()).unwrap();
    assert_eq!(engine.session_info(key).subscriptions, ["/**"]);
    assert_eq!(engine.stats().channels, 1);
}

#[test]
fn channel_names_past_the_limits_are_refused_wherever_they_are_used() {
    let mut engine = limited_engine();
    let browser = Id::generate();
    let id = session(&mut engine, browser);
    let at_limit = "/abcdefghijklmno"; // 16 bytes
    let too_long = "/abcdefghijklmnop";
    let reply = subscribe_reply(&mut engine, browser, &id, json!([at_limit]));
    assert_eq!(reply["successful"], true);
    for (name, reason) in [
        (too_long, "channel_too_long"),
        ("/a/b/c/d", "channel_too_many_segments"),
        ("/service/a/b/c", "channel_too_many_segments"),
    ] {
        let reply = subscribe_reply(&mut engine, browser, &id, json!(["/ok", name]));
        assert_eq!(
            reply["error"],
            format!("403:{reason}:subscription_invalid"),
            "{name}"
        );
        let (replies, _) = run(
            &mut engine,
            browser,
            json!([{"channel": "/meta/unsubscribe", "clientId": id, "subscription": name}]),
        );
        assert_eq!(
            replies[0]["error"],
            format!("403:{reason}:subscription_invalid")
        );
        let (replies, _) = run(
            &mut engine,
            browser,
            json!([{"channel": name, "clientId": id, "data": 1, "id": "p"}]),
        );
        assert_eq!(
            replies[0],
            json!({"channel": name, "successful": false,
                   "error": format!("405:{reason}:channel_invalid"), "id": "p"})
        );
    }
    let (replies, _) = run(
        &mut engine,
        browser,
        json!([{"channel": "/a/b/c", "clientId": id, "data": 1}]),
    );
    assert_eq!(replies[0]["successful"], true);
}

#[test]
fn data_and_ext_nested_too_deep_are_refused_with_their_channel_and_id() {
    let mut engine = limited_engine();
    let browser = Id::generate();
    let id = session(&mut engine, browser);
    subscribe_reply(&mut engine, browser, &id, json!("/a"));
    let (replies, outcome) = run(
        &mut engine,
        browser,
        json!([{"channel": "/a", "clientId": id, "data": [[1]], "id": 1},
               {"channel": "/a", "clientId": id, "data": [[[1]]], "id": 2},
               {"channel": "/a", "clientId": id, "data": 1, "ext": {"a": {"b": {}}}, "id": 3},
               {"channel": "/meta/connect", "clientId": id, "ext": [[[]]], "id": 4}]),
    );
    assert_eq!(replies[0]["successful"], true);
    assert_eq!(
        replies[1],
        json!({"channel": "/a", "successful": false, "error": "400:data:too_deep", "id": 2})
    );
    assert_eq!(replies[2]["error"], "400:ext:too_deep");
    assert_eq!(replies[3]["error"], "400:ext:too_deep");
    assert_eq!(replies[3]["channel"], "/meta/connect");
    assert_eq!(outcome.effects.events.len(), 0);
    let key = engine.key_of(&Id::parse(&id).unwrap()).unwrap();
    assert_eq!(
        engine.session_info(key).queued,
        1,
        "only the first publish is delivered"
    );
}

#[test]
fn subscriptions_per_session_and_channels_in_all_are_bounded() {
    let mut engine = limited_engine();
    let browser = Id::generate();
    let first = session(&mut engine, browser);
    let second = session(&mut engine, browser);
    // At the limit, with a repeat and a service channel that count for nothing.
    let reply = subscribe_reply(
        &mut engine,
        browser,
        &first,
        json!(["/a", "/b", "/a", "/service/x"]),
    );
    assert_eq!(reply["successful"], true);
    let reply = subscribe_reply(&mut engine, browser, &first, json!(["/a", "/c"]));
    assert_eq!(reply["error"], bayeux::TOO_MANY_SUBSCRIPTIONS);
    assert_eq!(
        reply["subscription"],
        json!(["/a", "/c"]),
        "named, for the client to drop"
    );
    // All or nothing: "/a" was not subscribed again, nor anything else.
    let key = engine.key_of(&Id::parse(&first).unwrap()).unwrap();
    assert_eq!(engine.session_info(key).subscriptions, ["/a", "/b"]);
    // The index holds 2 channels of 3: one new one fits, existing ones always do.
    let reply = subscribe_reply(&mut engine, browser, &second, json!(["/x", "/y"]));
    assert_eq!(reply["error"], bayeux::TOO_MANY_CHANNELS);
    let reply = subscribe_reply(&mut engine, browser, &second, json!(["/a", "/x"]));
    assert_eq!(reply["successful"], true);
    assert_eq!(engine.stats().channels, 3);
    let reply = subscribe_reply(&mut engine, browser, &second, json!("/y"));
    assert_eq!(reply["error"], bayeux::TOO_MANY_SUBSCRIPTIONS);
    // Unsubscribing makes room again.
    let (replies, _) = run(
        &mut engine,
        browser,
        json!([{"channel": "/meta/unsubscribe", "clientId": first, "subscription": ["/b"]}]),
    );
    assert_eq!(replies[0]["successful"], true);
    let reply = subscribe_reply(&mut engine, browser, &first, json!("/c"));
    assert_eq!(reply["successful"], true);
}

#[test]
fn messages_the_hooks_must_not_see_are_told_apart() {
    let config = limited_engine().config().clone();
    let refused = |body: Value| {
        let body = serde_json::to_vec(&body).unwrap();
        let raw = json::split_batch(&body).unwrap();
        refused_before_hooks(&config, raw[0])
    };
    assert!(!refused(json!({"channel": "/a", "data": [[1]]})));
    assert!(refused(json!({"channel": "/a", "data": [[[1]]]})));
    assert!(refused(json!({"channel": "/a", "version": [[[1]]]})));
    assert!(refused(json!({"channel": "/abcdefghijklmnop", "data": 1})));
    assert!(refused(
        json!({"channel": "/meta/subscribe", "subscription": ["/a", "/a/b/c/d"]})
    ));
    assert!(!refused(
        json!({"channel": "/meta/subscribe", "subscription": ["/a/b/*"]})
    ));
    // "/meta/unsubscribe" is longer than this engine's names may be: it is not a name.
    assert!(!refused(
        json!({"channel": "/meta/unsubscribe", "subscription": "/a"})
    ));
    // What the core refuses for other reasons passes the hooks first, as before.
    assert!(!refused(json!({"channel": "/a", "bogus": 1})));
    assert!(!refused(json!({"channel": 5})));
    // What is not a message object at all is the core's to answer.
    assert!(refused(json!([1])));
    assert!(refused(json!("text")));
}

#[test]
fn unsuccessful_replies_are_handed_to_the_log_a_bounded_number_per_request() {
    let mut engine = engine();
    let browser = Id::generate();
    let id = session(&mut engine, browser);
    let (_, outcome) = run(
        &mut engine,
        browser,
        json!([{"channel": "/a/*", "clientId": id}, {"channel": "/b", "clientId": "nope"}]),
    );
    let refused: Vec<_> = outcome
        .effects
        .refused
        .iter()
        .map(|r| {
            (
                r.client_id.map(|c| c.to_string()),
                r.channel.as_deref(),
                &*r.error,
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            (Some(id.clone()), Some("/a/*"), "405::channel_invalid"),
            (None, Some("/b"), bayeux::SESSION_UNKNOWN),
        ]
    );
    let flood: Vec<Value> = (0..MAX_REFUSALS_LOGGED + 5)
        .map(|n| json!({"channel": "/a", "clientId": id, "data": n, "unknown": 1}))
        .collect();
    let (replies, outcome) = run(&mut engine, browser, Value::Array(flood));
    assert!(replies.iter().all(|reply| reply["successful"] == false));
    assert_eq!(outcome.effects.refused.len(), MAX_REFUSALS_LOGGED);
    assert_eq!(outcome.effects.refused_left_out, 5);
    let malformed = process(
        &mut engine,
        b"[{",
        RequestInfo::new(Some(browser), Transport::LongPolling),
        Instant::now(),
    );
    assert_eq!(
        malformed.effects.refused[0].error.as_ref(),
        "400::json_malformed"
    );
}

#[test]
fn stats_keep_count_of_sockets_and_subscriptions_through_any_sequence() {
    let mut engine = engine();
    let browser = Id::generate();
    let channels = ["/a", "/a/*", "/**", "/b/c", "/b/*"];
    let mut ids: Vec<String> = Vec::new();
    // A fixed pseudo-random walk: the same steps on every run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize % n
    };
    for step in 0..2_000 {
        let transport = next(3);
        let info = match transport {
            0 => RequestInfo::new(Some(browser), Transport::LongPolling),
            socket => RequestInfo::socket(Some(browser), socket as SocketId),
        };
        let id = ids.get(next(ids.len().max(1))).cloned().unwrap_or_default();
        let channel = channels[next(channels.len())];
        let message = match next(7) {
            0 => json!({"channel": "/meta/handshake"}),
            1 => json!({"channel": "/meta/connect", "clientId": id}),
            2 => json!({"channel": "/meta/subscribe", "clientId": id, "subscription": channel}),
            3 => json!({"channel": "/meta/unsubscribe", "clientId": id, "subscription": channel}),
            4 => json!({"channel": "/meta/disconnect", "clientId": id}),
            5 => {
                if let Some(parsed) = Id::parse(&id) {
                    let socket = 1 + next(2) as SocketId;
                    engine.unbind(&parsed, socket, Instant::now(), &mut Effects::default());
                }
                continue;
            }
            _ => {
                if let Some(key) = Id::parse(&id).and_then(|id| engine.key_of(&id)) {
                    engine.remove(key, RemoveReason::Removed, &mut Effects::default());
                }
                continue;
            }
        };
        let body = serde_json::to_vec(&json!([message])).unwrap();
        let outcome = process(&mut engine, &body, info, Instant::now());
        if let Ok(replies) = serde_json::from_slice::<Vec<Value>>(&outcome.body) {
            if let Some(new) = replies[0]["clientId"].as_str() {
                if !ids.iter().any(|known| known == new) {
                    ids.push(new.to_owned());
                }
            }
        }
        let stats = engine.stats();
        let counted = (stats.sessions_websocket, stats.subscriptions);
        assert_eq!(counted, engine.recounted(), "after step {step}");
    }
    let stats = engine.stats();
    assert!(
        stats.sessions_websocket > 0 && stats.subscriptions > 0,
        "the walk went somewhere"
    );
}
