//! In-memory engine tests: delivery, cookies, removal and expiry, without the protocol.
use std::time::Duration;

use super::*;

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
    let (id, key) = engine.create_session(Id::generate(), now);
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
    let (id, _) = engine.create_session(browser, Instant::now());
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
    let (id, key) = engine.create_session(Id::generate(), Instant::now());
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
    let (idle, _) = engine.create_session(Id::generate(), now);
    let (held, held_key) = engine.create_session(Id::generate(), now);
    let mut effects = Effects::default();
    engine.hold(held_key, false, &mut effects);
    engine.sweep(now + Duration::from_secs(61), &mut effects);
    assert_eq!(
        effects.events,
        vec![Event::SessionRemoved(idle, RemoveReason::Expired)]
    );
    assert!(engine.key_of(&held).is_some());
}
