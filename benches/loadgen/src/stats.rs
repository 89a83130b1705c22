//! Scoring: every published message has a phase and a sequence; receivers count copies per
//! sequence, so loss and duplicates are exact, and latency goes into one histogram per phase.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::bayeux::Stamp;

/// Phases a run may open (warm-ups, sweep steps, bursts).
pub const MAX_PHASES: usize = 128;

pub struct Phase {
    /// Copies expected of each sequence (the publisher's room size); 0 = never sent.
    expected: Box<[AtomicU16]>,
    got: Box<[AtomicU16]>,
    /// Sequences handed to a client so far.
    pub published: AtomicU32,
    /// Publishes the pacer could not hand over because the client still had a backlog.
    pub not_sent: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
    /// When the last copy arrived, microseconds since start.
    pub last_arrival_us: AtomicU64,
}

impl Phase {
    fn new(capacity: usize) -> Self {
        let zeros = || (0..capacity).map(|_| AtomicU16::new(0)).collect();
        Phase {
            expected: zeros(),
            got: zeros(),
            published: AtomicU32::new(0),
            not_sent: AtomicU64::new(0),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()),
            last_arrival_us: AtomicU64::new(0),
        }
    }

    /// Takes the next sequence for a message that `copies` subscribers should receive.
    pub fn next_seq(&self, copies: u16) -> Option<u32> {
        let seq = self.published.fetch_add(1, Relaxed);
        match self.expected.get(seq as usize) {
            Some(slot) => {
                slot.store(copies, Relaxed);
                Some(seq)
            }
            None => {
                self.published.fetch_sub(1, Relaxed);
                None
            }
        }
    }

    /// Copies expected, copies delivered once, extra copies.
    pub fn tally(&self) -> (u64, u64, u64) {
        let n = self.published.load(Relaxed) as usize;
        let (mut exp, mut ok, mut dup) = (0u64, 0u64, 0u64);
        for i in 0..n.min(self.expected.len()) {
            let e = self.expected[i].load(Relaxed) as u64;
            let g = self.got[i].load(Relaxed) as u64;
            exp += e;
            ok += g.min(e);
            dup += g.saturating_sub(e);
        }
        (exp, ok, dup)
    }

    pub fn latency(&self) -> Histogram<u64> {
        self.latency_us.lock().unwrap().clone()
    }
}

/// Everything the clients share: the clock and the phases.
pub struct Scores {
    pub start: Instant,
    phases: Vec<OnceLock<Phase>>,
    next_phase: AtomicU32,
    /// Deliveries that carried no stamp of ours, or one from an unknown phase.
    pub foreign: AtomicU64,
    /// Transport errors: failed requests, closed sockets, unexpected replies.
    pub errors: AtomicU64,
    /// Replies with `successful: false`, and publishes lost to a failed request.
    pub refused: AtomicU64,
    /// Copies of our messages received, in any phase.
    pub copies: AtomicU64,
    /// Sessions the server forgot and that handshook again.
    pub rehandshakes: AtomicU64,
}

impl Scores {
    pub fn new() -> Self {
        Scores {
            start: Instant::now(),
            phases: (0..MAX_PHASES).map(|_| OnceLock::new()).collect(),
            next_phase: AtomicU32::new(0),
            foreign: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rehandshakes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            copies: AtomicU64::new(0),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Opens a phase able to hold `capacity` publishes.
    pub fn open_phase(&self, capacity: usize) -> Result<u32, String> {
        let id = self.next_phase.fetch_add(1, Relaxed);
        let slot = self.phases.get(id as usize).ok_or("too many phases")?;
        let _ = slot.set(Phase::new(capacity.min(50_000_000)));
        Ok(id)
    }

    pub fn phase(&self, id: u32) -> &Phase {
        self.phases[id as usize].get().expect("phase opened")
    }

    /// Scores one delivered copy that arrived at `now` (from `now_us`, read once per reply).
    pub fn deliver(&self, stamp: Stamp, now: u64) {
        self.copies.fetch_add(1, Relaxed);
        let phase = self.phases.get(stamp.p as usize).and_then(OnceLock::get);
        let Some(phase) = phase else {
            self.foreign.fetch_add(1, Relaxed);
            return;
        };
        if let Some(got) = phase.got.get(stamp.s as usize) {
            got.fetch_add(1, Relaxed);
            phase.last_arrival_us.fetch_max(now, Relaxed);
            let lat = now.saturating_sub(stamp.t).max(1);
            phase.latency_us.lock().unwrap().saturating_record(lat);
        } else {
            self.foreign.fetch_add(1, Relaxed);
        }
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
}

/// Latency summary in milliseconds.
#[derive(Serialize, Clone, Debug)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// CPU used by this process over a stretch of wall time, as a fraction of one core.
pub struct CpuMeter {
    wall: Instant,
    cpu: f64,
}

impl CpuMeter {
    pub fn start() -> Self {
        CpuMeter {
            wall: Instant::now(),
            cpu: crate::net::cpu_seconds(),
        }
    }
    pub fn fraction(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        ((crate::net::cpu_seconds() - self.cpu) / wall * 1000.0).round() / 1000.0
    }
}
