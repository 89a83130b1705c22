//! In-memory engine tests: delivery, cookies, removal and expiry, without the protocol.
use std::time::Duration;

use super::*;
use crate::engine::address_key;

fn engine() -> MemoryEngine {
    MemoryEngine::new(Config {
        queue_capacity: 2,
        ..Config::default()
    })
}

#[test]
fn wildcard_matches_deliver_once_and_wake_once() {
    let mut engine = engine();
    let now = Instant::now();
    let (id, key) = engine.create_session(Id::generate(), None, now).unwrap();
    for name in ["/a/b", "/a/*", "/a/**", "/**"] {
        assert!(engine.subscribe(key, name));
    }
    let mut effects = Effects::default();
    engine.hold(key, false, &mut effects);
    assert_eq!(
        engine.publish("/a/b", Arc::from(&b"1"[..]), &mut effects),
        1
    );
    assert_eq!(
        engine.publish("/a/b", Arc::from(&b"2"[..]), &mut effects),
        1
    );
    assert_eq!(effects.wake, vec![id]);
    assert_eq!(engine.session_info(key).queued, 2);
}

#[test]
fn http_needs_the_cookie_unless_trusted() {
    let mut engine = engine();
    let browser = Id::generate();
    let (id, _) = engine
        .create_session(browser, None, Instant::now())
        .unwrap();
    assert!(engine.lookup(&id, Some(&browser), Caller::Http).is_ok());
    assert_eq!(
        engine.lookup(&id, None, Caller::Http),
        Err(Lookup::WrongBrowser)
    );
    let stranger = Id::generate();
    assert_eq!(
        engine.lookup(&id, Some(&stranger), Caller::Http),
        Err(Lookup::WrongBrowser)
    );
    assert_eq!(
        engine.lookup(&stranger, Some(&browser), Caller::Http),
        Err(Lookup::Unknown)
    );
    engine.config.trust_client_session = true;
    assert!(engine.lookup(&id, None, Caller::Http).is_ok());
}

#[test]
fn a_fresh_session_goes_to_the_first_socket_then_needs_the_cookie() {
    let mut engine = engine();
    let browser = Id::generate();
    let (id, key) = engine
        .create_session(browser, None, Instant::now())
        .unwrap();
    // Fresh from a handshake over HTTP: a socket without the cookie may take it (Faye).
    assert!(engine.lookup(&id, None, Caller::Socket(1)).is_ok());
    let mut effects = Effects::default();
    engine.set_bound(key, Some(1), &mut effects);
    assert_eq!(effects.bound, vec![id]);
    assert!(engine.lookup(&id, None, Caller::Socket(1)).is_ok());
    assert_eq!(
        engine.lookup(&id, None, Caller::Socket(2)),
        Err(Lookup::OtherSocket)
    );
    assert_eq!(
        engine.lookup(&id, Some(&Id::generate()), Caller::Http),
        Err(Lookup::OtherSocket)
    );
    // The cookie proves the owner, on a new socket or over HTTP.
    assert!(engine
        .lookup(&id, Some(&browser), Caller::Socket(2))
        .is_ok());
    assert!(engine.lookup(&id, Some(&browser), Caller::Http).is_ok());
    // Trust waives the cookie, not another socket's hold.
    engine.config.trust_client_session = true;
    assert_eq!(
        engine.lookup(&id, None, Caller::Socket(2)),
        Err(Lookup::OtherSocket)
    );
    assert_eq!(
        engine.lookup(&id, None, Caller::Http),
        Err(Lookup::OtherSocket)
    );
    // Once its socket closes, a trusted session may go to another socket; an untrusted one
    // needs the cookie, since it is no longer fresh.
    engine.unbind(&id, 1, Instant::now(), &mut effects);
    assert!(engine.lookup(&id, None, Caller::Socket(2)).is_ok());
    engine.config.trust_client_session = false;
    assert_eq!(
        engine.lookup(&id, None, Caller::Socket(2)),
        Err(Lookup::WrongBrowser)
    );
}

#[test]
fn a_connect_claims_a_fresh_session() {
    let mut engine = engine();
    let (id, key) = engine
        .create_session(Id::generate(), None, Instant::now())
        .unwrap();
    assert!(engine.first_connect(key));
    assert_eq!(
        engine.lookup(&id, None, Caller::Socket(1)),
        Err(Lookup::WrongBrowser)
    );
}

#[test]
fn only_the_bound_socket_closing_unbinds() {
    let mut engine = engine();
    let (id, key) = engine
        .create_session(Id::generate(), None, Instant::now())
        .unwrap();
    let mut effects = Effects::default();
    engine.set_bound(key, Some(1), &mut effects);
    // Its owner came back on socket 2 before socket 1's close was seen.
    engine.set_bound(key, Some(2), &mut effects);
    engine.hold(key, false, &mut effects);
    let mut closed = Effects::default();
    engine.unbind(&id, 1, Instant::now(), &mut closed);
    assert!(closed.release.is_empty(), "socket 2's held connect stays");
    assert!(engine.lookup(&id, None, Caller::Socket(2)).is_ok());
    engine.deliver(key, Arc::from(&b"1"[..]), &mut closed);
    assert_eq!(closed.push, vec![id], "still pushed through socket 2");
    engine.unbind(&id, 2, Instant::now(), &mut closed);
    assert_eq!(closed.release, vec![id]);
}

#[test]
fn removal_clears_subscriptions_and_releases_held_connect() {
    let mut engine = engine();
    let (id, key) = engine
        .create_session(Id::generate(), None, Instant::now())
        .unwrap();
    engine.subscribe(key, "/a/**");
    let mut effects = Effects::default();
    engine.hold(key, false, &mut effects);
    engine.remove(key, RemoveReason::Removed, &mut effects);
    assert_eq!(effects.release, vec![id]);
    assert_eq!(
        effects.events,
        vec![Event::SessionRemoved(id, RemoveReason::Removed)]
    );
    assert_eq!(
        engine.publish("/a/b", Arc::from(&b"x"[..]), &mut effects),
        0
    );
    assert_eq!(engine.stats().sessions, 0);
    assert_eq!(engine.stats().channels, 0);
}

#[test]
fn sweep_expires_only_sessions_past_their_deadline_and_not_held() {
    let mut engine = engine();
    let now = Instant::now();
    let (idle, _) = engine.create_session(Id::generate(), None, now).unwrap();
    let (held, held_key) = engine.create_session(Id::generate(), None, now).unwrap();
    let mut effects = Effects::default();
    engine.hold(held_key, false, &mut effects);
    assert!(engine.sweep(now + Duration::from_secs(61), &mut effects));
    assert_eq!(
        effects.events,
        vec![Event::SessionRemoved(idle, RemoveReason::Expired)]
    );
    assert!(engine.key_of(&held).is_some());
}

#[test]
fn a_large_expiry_is_swept_in_slices_and_leaves_nothing_behind() {
    let mut engine = MemoryEngine::new(Config {
        max_sessions_per_cookie: None,
        max_sessions_per_address: None,
        ..Config::default()
    });
    let now = Instant::now();
    let browser = Id::generate();
    let address = address_key("192.0.2.1");
    let count = 2 * SWEEP_REMOVALS + 10;
    for _ in 0..count {
        engine.create_session(browser, address, now).unwrap();
    }
    let later = now + Duration::from_secs(61);
    let mut calls = 0;
    let mut removed = 0;
    loop {
        let mut effects = Effects::default();
        let done = engine.sweep(later, &mut effects);
        assert!(
            effects.events.len() <= SWEEP_REMOVALS,
            "one slice at a time"
        );
        removed += effects.events.len();
        calls += 1;
        if done {
            break;
        }
    }
    assert_eq!((removed, calls), (count, 3));
    let stats = engine.stats();
    assert_eq!(stats.sessions, 0);
    assert_eq!(
        (stats.sessions_created, stats.sessions_removed),
        (count as u64, count as u64)
    );
    assert!(
        engine.sessions.slot_count() <= 64,
        "the table gave its slots back"
    );
    // The counts per browser and address went with the sessions: the limits admit again.
    engine.config.max_sessions_per_cookie = Some(1);
    engine.config.max_sessions_per_address = Some(1);
    assert!(engine.create_session(browser, address, later).is_ok());
    assert_eq!(
        engine
            .create_session(Id::generate(), address, later)
            .unwrap_err(),
        Exceeded::Address
    );
    assert_eq!(
        engine.create_session(browser, None, later).unwrap_err(),
        Exceeded::Browser
    );
}
