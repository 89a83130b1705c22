//! In-memory engine tests: delivery, cookies, removal and expiry, without the protocol.
use std::time::Duration;

use super::*;
use crate::engine::SubscribeLimit;

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

#[test]
fn subscribing_and_unsubscribing_cost_the_same_however_many_a_session_has() {
    // With a list searched per name, unsubscribing n names costs n * n / 2 comparisons: with
    // n = 300,000 that is 4.5 * 10^10, minutes. A set makes each one O(1).
    let mut engine = engine();
    let (_, key) = engine.create_session(Id::generate(), Instant::now());
    let names: Vec<String> = (0..300_000).map(|i| format!("/c/{i}")).collect();
    for name in &names {
        assert!(engine.subscribe(key, name));
    }
    assert_eq!(engine.stats().channels, names.len());
    for name in &names {
        assert!(engine.unsubscribe(key, name));
    }
    assert!(engine.session_info(key).subscriptions.is_empty());
    assert_eq!(engine.stats().channels, 0);
}

#[test]
fn session_info_lists_subscriptions_sorted() {
    let mut engine = engine();
    let (_, key) = engine.create_session(Id::generate(), Instant::now());
    for name in ["/b", "/a/**", "/a"] {
        engine.subscribe(key, name);
    }
    assert_eq!(
        engine.session_info(key).subscriptions,
        ["/a", "/a/**", "/b"]
    );
}

#[test]
fn subscribe_limits_count_new_subscriptions_and_new_channels_once() {
    let mut engine = MemoryEngine::new(Config {
        max_subscriptions_per_session: 3,
        max_channels: 4,
        ..Config::default()
    });
    let now = Instant::now();
    let (_, first) = engine.create_session(Id::generate(), now);
    let (_, second) = engine.create_session(Id::generate(), now);
    engine.subscribe(first, "/a");
    // Repeats and names already subscribed count once, or not at all.
    assert_eq!(
        engine.subscribe_limit(first, &["/a", "/b", "/b", "/c"]),
        None
    );
    assert_eq!(
        engine.subscribe_limit(first, &["/b", "/c", "/d"]),
        Some(SubscribeLimit::Subscriptions)
    );
    for name in ["/b", "/c"] {
        engine.subscribe(first, name);
    }
    // The index holds 3 channels of 4: one more is allowed, and joining existing ones always.
    assert_eq!(engine.subscribe_limit(second, &["/a", "/b", "/x"]), None);
    assert_eq!(
        engine.subscribe_limit(second, &["/x", "/y"]),
        Some(SubscribeLimit::Channels)
    );
    assert_eq!(
        engine.subscribe_limit(second, &["/x", "/x/*"]),
        Some(SubscribeLimit::Channels),
        "a pattern is a channel of its own"
    );
}
