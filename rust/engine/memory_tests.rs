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
fn cookie_must_match_unless_trusted() {
    let mut engine = engine();
    let browser = Id::generate();
    let (id, _) = engine
        .create_session(browser, None, Instant::now())
        .unwrap();
    assert!(engine.lookup(&id, Some(&browser), true).is_ok());
    assert_eq!(engine.lookup(&id, None, true), Err(Lookup::WrongBrowser));
    let stranger = Id::generate();
    assert_eq!(
        engine.lookup(&id, Some(&stranger), true),
        Err(Lookup::WrongBrowser)
    );
    assert_eq!(
        engine.lookup(&stranger, Some(&browser), true),
        Err(Lookup::Unknown)
    );
    // WebSocket requests skip the check.
    assert!(engine.lookup(&id, None, false).is_ok());
    engine.config.trust_client_session = true;
    assert!(engine.lookup(&id, None, true).is_ok());
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
