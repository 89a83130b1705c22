//! What the in-memory engine keeps of the messages published on channels with a history, for
//! the replay extension (Salesforce's): each message gets an id, carried to subscribers in
//! `data.event.replayId` (with `data.event.createdDate`), and a client that was away asks, as it
//! subscribes, for every message retained after the last id it saw.
//!
//! Ids count up from the engine's start time in milliseconds times 1,000, so they only grow
//! across restarts (while fewer than 1,000 messages a millisecond are kept on average and the
//! clock does not go back) and an id from before a restart is below every id since: it is
//! refused, so its client knows it cannot be recovered.
//!
//! A node of a cluster keeps nothing here: the cluster's Redis does, in one stream per channel
//! written by the script that logs the message (which gives the id, so every node's copy of a
//! message is the same bytes). The message then leaves this core with `RELAYED_ID` in place of
//! its id, and a replay reads what the node fetched for the batch beforehand (`set_feed`).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap;

use crate::channel::{self, ChannelKind};
use crate::message::{delivered_message, delivered_with_event, Shared};
use crate::shrink::ShrinkIfSparse;

/// Which channels keep a history, and how much: the first rule whose pattern matches.
#[derive(Clone, Debug)]
pub struct HistoryRule {
    /// A channel name or a wildcard pattern (`/chat/*`, `/chat/**`).
    pub pattern: String,
    /// How many messages each channel keeps at most.
    pub size: usize,
    /// How long each message is kept; `None`: until pushed out by `size`.
    pub ttl: Option<Duration>,
}

/// The replay a subscribe asks for on one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayFrom {
    /// `-1`: only new messages.
    New,
    /// `-2`: every message retained.
    All,
    /// Every message retained after this id.
    After(i64),
}

impl ReplayFrom {
    pub fn from_id(id: i64) -> Option<Self> {
        match id {
            -1 => Some(Self::New),
            -2 => Some(Self::All),
            id if id >= 0 => Some(Self::After(id)),
            _ => None,
        }
    }
}

/// Why a replay is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayRefused {
    /// The channel keeps no history.
    NoHistory,
    /// The id is not one the channel can replay after: pushed out, from before a restart, or
    /// never given.
    InvalidId,
    /// More than the session may have replayed and undelivered (`Config::max_replayed`).
    TooMany,
}

struct Retained {
    id: u64,
    at: Instant,
    message: Shared,
}

#[derive(Default)]
struct ChannelHistory {
    retained: VecDeque<Retained>,
    /// The newest id pushed out (or the engine's first id less one): a replay after it loses
    /// nothing, one before it would.
    evicted: u64,
}

/// What a relayed message carries in place of its id, where the cluster's publish script
/// splices the id in: the message ends with `"replayId":?}}}` (no JSON text can end with `?}}}`,
/// since a `?` outside a string is not JSON, so a publisher's data can never pass for it).
pub const RELAYED_ID: &str = "?";

/// The replays a node fetched for one batch: by channel and the id asked after (-2 for all),
/// the messages, or why not.
pub type ReplayFeed = FxHashMap<(Box<str>, i64), Result<Vec<Shared>, ReplayRefused>>;

pub struct History {
    rules: Vec<HistoryRule>,
    /// A cluster's node: messages are numbered and kept by the cluster, not here.
    relay: bool,
    feed: ReplayFeed,
    /// How many channels may keep a history at once: past it, a new channel pushes out the
    /// one whose last message is the oldest, so that publishing on ever new names cannot grow
    /// memory without bound.
    max_channels: usize,
    /// The last id given (the first is the engine's start time in ms times 1,000, plus one).
    last: u64,
    channels: FxHashMap<Box<str>, ChannelHistory>,
    /// The newest id any channel dropped (emptied by its ttl, or pushed out) had given: a
    /// channel not kept now can replay after no earlier id, as it may have lost messages.
    dropped_up_to: u64,
    /// Messages retained over every channel.
    retained: usize,
}

impl History {
    pub fn new(rules: Vec<HistoryRule>, max_channels: usize, relay: bool) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let base = now_ms * 1000;
        Self {
            rules,
            relay,
            feed: ReplayFeed::default(),
            max_channels: max_channels.max(1),
            last: base,
            channels: FxHashMap::default(),
            dropped_up_to: base,
            retained: 0,
        }
    }

    /// Whether any channel keeps a history (then the replay extension is offered).
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The rule that gives `channel` its history, if any.
    pub fn rule(&self, channel: &str) -> Option<&HistoryRule> {
        self.rules
            .iter()
            .find(|rule| channel::matches(&rule.pattern, channel))
    }

    /// What the next replays read on a cluster's node (see `ReplayFeed`), in place of the last.
    pub fn set_feed(&mut self, feed: ReplayFeed) {
        self.feed = feed;
    }

    /// The message subscribers of `channel` receive for a publish of `data` (raw JSON): on a
    /// channel with a history it is given the next id, retained, and carries the id in
    /// `data.event` when `data` is an object.
    pub fn message(&mut self, channel: &str, data: &str, now: Instant) -> Shared {
        let Some(rule) = self.rule(channel) else {
            return delivered_message(channel, data.as_bytes());
        };
        let created = created_date(SystemTime::now());
        if self.relay {
            return delivered_with_event(channel, data, RELAYED_ID, &created);
        }
        let (size, ttl) = (rule.size.max(1), rule.ttl);
        self.last += 1;
        let id = self.last;
        let message = delivered_with_event(channel, data, &id.to_string(), &created);
        if !self.channels.contains_key(channel) && self.channels.len() >= self.max_channels {
            self.drop_stalest();
        }
        let dropped_up_to = self.dropped_up_to;
        let history = self
            .channels
            .entry(channel.into())
            .or_insert_with(|| ChannelHistory {
                retained: VecDeque::new(),
                evicted: dropped_up_to,
            });
        history.retained.push_back(Retained {
            id,
            at: now,
            message: message.clone(),
        });
        self.retained += 1;
        while history.retained.len() > size {
            let gone = history.retained.pop_front().expect("longer than size");
            history.evicted = gone.id;
            self.retained -= 1;
        }
        if let Some(ttl) = ttl {
            self.retained -= expire(history, now, ttl);
        }
        message
    }

    /// The messages retained on `channel` after `from`, in order. `New` asks for none on any
    /// channel; anything else on a channel without history is refused, as is an id the
    /// channel cannot replay after (see `ReplayRefused::InvalidId`).
    pub fn replay(
        &mut self,
        channel: &str,
        from: ReplayFrom,
        now: Instant,
    ) -> Result<Vec<Shared>, ReplayRefused> {
        if from == ReplayFrom::New {
            return Ok(Vec::new());
        }
        let Some(rule) = self.rule(channel) else {
            return Err(ReplayRefused::NoHistory);
        };
        if self.relay {
            let asked = match from {
                ReplayFrom::After(id) => id,
                _ => -2,
            };
            let fed = self.feed.get(&(channel.into(), asked)).cloned();
            return fed.unwrap_or(Err(ReplayRefused::InvalidId));
        }
        let ttl = rule.ttl;
        let (dropped_up_to, last) = (self.dropped_up_to, self.last);
        let Some(history) = self.channels.get_mut(channel) else {
            // Nothing kept on it: nothing lost after an id given since the last channel went.
            return match from {
                ReplayFrom::After(id) if (id as u64) < dropped_up_to || id as u64 > last => {
                    Err(ReplayRefused::InvalidId)
                }
                _ => Ok(Vec::new()),
            };
        };
        if let Some(ttl) = ttl {
            self.retained -= expire(history, now, ttl);
        }
        let after = match from {
            ReplayFrom::After(id) => {
                let id = id as u64;
                if id < history.evicted || id > last {
                    return Err(ReplayRefused::InvalidId);
                }
                id
            }
            _ => 0,
        };
        let start = history.retained.partition_point(|entry| entry.id <= after);
        Ok(history
            .retained
            .range(start..)
            .map(|entry| entry.message.clone())
            .collect())
    }

    /// Channels with a history, and the messages they retain.
    pub fn stats(&self) -> (usize, usize) {
        (self.channels.len(), self.retained)
    }

    /// The oldest id retained on any channel; 0 when none is.
    pub fn oldest(&self) -> u64 {
        self.channels
            .values()
            .filter_map(|history| history.retained.front().map(|entry| entry.id))
            .min()
            .unwrap_or(0)
    }

    /// Drops what outlived its time to live, and the channels left empty (their next message
    /// starts them again: an id from before is then refused, as it should be, since the
    /// messages after it are gone).
    pub fn sweep(&mut self, now: Instant) {
        let rules = &self.rules;
        let mut expired = 0;
        let mut dropped_up_to = self.dropped_up_to;
        self.channels.retain(|channel, history| {
            let ttl = rules
                .iter()
                .find(|rule| channel::matches(&rule.pattern, channel))
                .and_then(|rule| rule.ttl);
            if let Some(ttl) = ttl {
                expired += expire(history, now, ttl);
            }
            let keep = !history.retained.is_empty() || ttl.is_none();
            if !keep {
                dropped_up_to = dropped_up_to.max(history.evicted);
            }
            keep
        });
        self.dropped_up_to = dropped_up_to;
        self.retained -= expired;
        self.channels.shrink_if_sparse();
    }

    /// Makes room for a new channel: the one whose last message is the oldest goes.
    fn drop_stalest(&mut self) {
        let stalest = self
            .channels
            .iter()
            .min_by_key(|(_, history)| history.retained.back().map_or(history.evicted, |e| e.id))
            .map(|(channel, _)| channel.clone());
        if let Some(history) = stalest.and_then(|channel| self.channels.remove(&channel)) {
            let newest = history.retained.back().map_or(history.evicted, |e| e.id);
            self.dropped_up_to = self.dropped_up_to.max(newest);
            self.retained -= history.retained.len();
        }
    }
}

/// Drops the messages of one channel older than `ttl`: how many went.
fn expire(history: &mut ChannelHistory, now: Instant, ttl: Duration) -> usize {
    let mut gone = 0;
    while let Some(oldest) = history.retained.front() {
        if now.duration_since(oldest.at) < ttl {
            break;
        }
        history.evicted = oldest.id;
        history.retained.pop_front();
        gone += 1;
    }
    gone
}

/// Whether `pattern` may be given a history: a broadcast channel or a wildcard under one.
pub fn valid_pattern(pattern: &str) -> bool {
    matches!(
        channel::classify(pattern),
        Some(ChannelKind::Broadcast | ChannelKind::Wildcard)
    ) && channel::root(pattern) != ChannelKind::Meta
        && channel::root(pattern) != ChannelKind::Service
}

/// `createdDate` as Salesforce writes it: UTC, milliseconds, `2016-03-29T19:05:28.334Z`.
pub fn created_date(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, of_day) = (since.as_secs() / 86_400, since.as_secs() % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn history(size: usize, ttl: Option<Duration>) -> History {
        let rule = HistoryRule {
            pattern: "/chat/**".into(),
            size,
            ttl,
        };
        History::new(vec![rule], 2, false)
    }

    fn ids(messages: &[Shared]) -> Vec<u64> {
        messages
            .iter()
            .map(|m| {
                let value: serde_json::Value = serde_json::from_slice(m).unwrap();
                value["data"]["event"]["replayId"].as_u64().unwrap()
            })
            .collect()
    }

    #[test]
    fn dates_are_written_as_salesforce_does() {
        let at = UNIX_EPOCH + Duration::from_millis(1_459_278_328_334);
        assert_eq!(created_date(at), "2016-03-29T19:05:28.334Z");
        assert_eq!(created_date(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(created_date(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn replays_after_an_id_in_order_and_refuses_what_it_lost() {
        let now = Instant::now();
        let mut history = history(3, None);
        let sent: Vec<Shared> = (0..5)
            .map(|n| history.message("/chat/a", &format!("{{\"n\":{n}}}"), now))
            .collect();
        let all = ids(&sent);
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "ids grow by one");
        assert!(all[0] > 1_000_000_000_000_000, "far from zero");
        let replayed = history.replay("/chat/a", ReplayFrom::All, now).unwrap();
        assert_eq!(ids(&replayed), all[2..]);
        let after = ReplayFrom::After(all[2] as i64);
        assert_eq!(
            ids(&history.replay("/chat/a", after, now).unwrap()),
            all[3..]
        );
        // The newest pushed out was seen by whoever names it: nothing after it is lost.
        let at_edge = ReplayFrom::After(all[1] as i64);
        assert_eq!(
            ids(&history.replay("/chat/a", at_edge, now).unwrap()),
            all[2..]
        );
        for lost in [all[0] as i64, 5, all[4] as i64 + 1] {
            let refused = history.replay("/chat/a", ReplayFrom::After(lost), now);
            assert_eq!(refused, Err(ReplayRefused::InvalidId), "{lost}");
        }
        assert_eq!(
            history.replay("/other", ReplayFrom::All, now),
            Err(ReplayRefused::NoHistory)
        );
        assert_eq!(history.replay("/other", ReplayFrom::New, now), Ok(vec![]));
        assert_eq!(history.stats(), (1, 3));
        assert_eq!(history.oldest(), all[2]);
    }

    #[test]
    fn messages_outlive_their_ttl_no_more() {
        let start = Instant::now();
        let mut history = history(100, Some(Duration::from_secs(10)));
        let first = ids(&[history.message("/chat/a", "{}", start)])[0];
        history.message("/chat/a", "{}", start + Duration::from_secs(5));
        let later = start + Duration::from_secs(12);
        let kept = history.replay("/chat/a", ReplayFrom::All, later).unwrap();
        assert_eq!(ids(&kept), [first + 1]);
        history.sweep(start + Duration::from_secs(20));
        assert_eq!(history.stats(), (0, 0));
    }

    #[test]
    fn a_channel_pushed_out_refuses_the_ids_it_may_have_lost() {
        let now = Instant::now();
        let mut history = history(10, None);
        let a = ids(&[history.message("/chat/a", "{}", now)])[0];
        let b = ids(&[history.message("/chat/b", "{}", now)])[0];
        history.message("/chat/c", "{}", now); // past two channels: /chat/a goes
        assert_eq!(history.stats(), (2, 2));
        let before_a = ReplayFrom::After(a as i64 - 1);
        let refused = history.replay("/chat/a", before_a, now);
        assert_eq!(refused, Err(ReplayRefused::InvalidId));
        let after_a = ReplayFrom::After(a as i64);
        assert_eq!(history.replay("/chat/a", after_a, now), Ok(vec![]));
        let kept = history
            .replay("/chat/b", ReplayFrom::After(a as i64), now)
            .unwrap();
        assert_eq!(ids(&kept), [b]);
    }

    #[test]
    fn a_clusters_node_keeps_nothing_and_replays_what_it_was_fed() {
        let rule = HistoryRule {
            pattern: "/chat/**".into(),
            size: 10,
            ttl: None,
        };
        let mut history = History::new(vec![rule], 2, true);
        let now = Instant::now();
        let message = history.message("/chat/a", r#"{"a":1}"#, now);
        assert!(
            message.ends_with(br#""replayId":?}}}"#),
            "the id is the cluster's to give"
        );
        assert_eq!(history.stats(), (0, 0));
        let fed: Shared = Arc::from(&br#"{"channel":"/chat/a","data":{}}"#[..]);
        let mut feed = ReplayFeed::default();
        feed.insert(("/chat/a".into(), 7), Ok(vec![fed.clone()]));
        feed.insert(("/chat/a".into(), -2), Err(ReplayRefused::InvalidId));
        history.set_feed(feed);
        let after = history.replay("/chat/a", ReplayFrom::After(7), now);
        assert_eq!(after, Ok(vec![fed]));
        let all = history.replay("/chat/a", ReplayFrom::All, now);
        assert_eq!(all, Err(ReplayRefused::InvalidId));
        let unread = history.replay("/chat/a", ReplayFrom::After(8), now);
        assert_eq!(unread, Err(ReplayRefused::InvalidId), "not fed");
        let other = history.replay("/news", ReplayFrom::All, now);
        assert_eq!(other, Err(ReplayRefused::NoHistory));
    }

    #[test]
    fn channels_without_a_rule_are_not_kept() {
        let mut history = history(3, None);
        let plain = history.message("/news", r#"{"a":1}"#, Instant::now());
        assert_eq!(&*plain, br#"{"channel":"/news","data":{"a":1}}"#);
        assert_eq!(history.stats(), (0, 0));
    }
}
