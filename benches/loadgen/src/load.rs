//! S1/S2: clients in rooms, a paced publish rate, one measured run or a sweep of rates.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::bayeux::Publish;
use crate::cli::Args;
use crate::session::Config;
use crate::setup::{start_all, Plan};
use crate::stats::{CpuMeter, Latency, Scores};

/// A client the pacer can hand publishes to, and the copies each of them should produce.
struct Publisher {
    tx: mpsc::Sender<Publish>,
    copies: u16,
}

#[derive(Serialize, Clone, Debug)]
pub struct Step {
    pub target_rate: f64,
    pub published: u64,
    pub publishes_per_s: f64,
    pub expected: u64,
    pub delivered: u64,
    pub offered_deliveries_per_s: f64,
    pub delivered_per_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub not_sent: u64,
    pub refused: u64,
    pub errors: u64,
    pub rehandshakes: u64,
    pub latency: Latency,
    pub loadgen_cpu: f64,
    pub held: bool,
    /// 1 for the first try at this rate, 2 for its retry, ...
    pub attempt: u32,
}

pub async fn run(cfg: Arc<Config>, args: &Args) -> Result<Value, String> {
    let rooms = args.rooms.max(1);
    let plans = (0..args.clients)
        .map(|i| Plan {
            channels: vec![format!("/room/{}", i % rooms)],
            publish_to: Some(format!("/room/{}", i % rooms)),
        })
        .collect();
    let (handles, setup) = start_all(&cfg, plans, args.concurrency, args.quiet).await;
    // A room's expected copies per message: the members whose setup succeeded.
    let mut size = vec![0u16; rooms];
    for (i, h) in handles.iter().enumerate() {
        if h.is_some() {
            size[i % rooms] += 1;
        }
    }
    let publishers: Vec<Publisher> = handles
        .into_iter()
        .enumerate()
        .filter_map(|(i, h)| {
            Some(Publisher {
                tx: h?.publish?,
                copies: size[i % rooms],
            })
        })
        .collect();
    if publishers.is_empty() {
        return Err(format!(
            "no client could be set up: {:?}",
            setup.first_error
        ));
    }
    let mut pacer = Pacer {
        scores: cfg.scores.clone(),
        publishers,
        cursor: 0,
        quiet: args.quiet,
    };
    let steps = if args.sweep {
        sweep(&mut pacer, args).await?
    } else {
        vec![pacer.step(args.rate, args).await?]
    };
    let best = steps
        .iter()
        .filter(|s| s.held)
        .max_by(|a, b| a.target_rate.total_cmp(&b.target_rate));
    Ok(json!({
        "mode": if args.sweep { "sweep" } else { "run" },
        "setup": setup,
        "steps": steps,
        "best": best,
    }))
}

/// Raises the rate by --sweep-factor while it holds (lowers it while it fails), then bisects
/// between the last rate that held and the first that failed.
async fn sweep(pacer: &mut Pacer, args: &Args) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let (mut good, mut bad): (Option<f64>, Option<f64>) = (None, None);
    let mut rate = args.rate;
    let mut refined = 0;
    while (steps.len() as u32) < args.max_steps {
        // A failed step is tried again (--sweep-retries): other work on a shared machine can
        // only make a server look slower, so one bad stretch should not end the climb.
        let mut held = false;
        for attempt in 0..=args.sweep_retries {
            if attempt > 0 {
                pacer.settle().await;
            }
            let mut step = pacer.step(rate, args).await?;
            step.attempt = attempt + 1;
            held = step.held;
            steps.push(step);
            if held || steps.len() as u32 >= args.max_steps {
                break;
            }
        }
        if held {
            good = Some(rate);
        } else {
            bad = Some(rate);
            pacer.settle().await;
        }
        rate = match (good, bad) {
            (Some(_), None) => rate * args.sweep_factor,
            (None, Some(_)) if rate < 1.0 => break,
            (None, Some(_)) => rate / args.sweep_factor,
            (Some(g), Some(b)) => {
                if refined >= args.sweep_refine || b <= g {
                    break;
                }
                refined += 1;
                (g * b).sqrt()
            }
            (None, None) => unreachable!("a step ran"),
        };
    }
    Ok(steps)
}

struct Pacer {
    scores: Arc<Scores>,
    publishers: Vec<Publisher>,
    cursor: usize,
    quiet: bool,
}

impl Pacer {
    /// A warm-up, then a measured stretch at `rate`, then a drain for stragglers.
    async fn step(&mut self, rate: f64, args: &Args) -> Result<Step, String> {
        let capacity = |secs: f64| (rate * secs * 1.1) as usize + 1000;
        let warm = self.scores.open_phase(capacity(args.warmup))?;
        self.pace(warm, rate, args.warmup, &format!("warm {rate:.0}/s"))
            .await;
        let phase_id = self.scores.open_phase(capacity(args.duration))?;
        let before = [
            &self.scores.errors,
            &self.scores.refused,
            &self.scores.rehandshakes,
        ]
        .map(|c| c.load(Relaxed));
        let cpu = CpuMeter::start();
        self.pace(phase_id, rate, args.duration, &format!("load {rate:.0}/s"))
            .await;
        let loadgen_cpu = cpu.fraction();
        let phase = self.scores.phase(phase_id);
        let drain_end = Instant::now() + Duration::from_secs_f64(args.drain);
        while Instant::now() < drain_end {
            let (exp, ok, _) = phase.tally();
            if ok >= exp {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = [
            &self.scores.errors,
            &self.scores.refused,
            &self.scores.rehandshakes,
        ]
        .map(|c| c.load(Relaxed));
        let (expected, delivered, duplicates) = phase.tally();
        let published = phase.published.load(Relaxed) as u64;
        let not_sent = phase.not_sent.load(Relaxed);
        let latency = Latency::of(&phase.latency());
        let secs = args.duration;
        let lost = expected - delivered;
        let [errors, refused, rehandshakes] = [0, 1, 2].map(|i| after[i] - before[i]);
        let held = lost == 0
            && not_sent == 0
            && refused == 0
            && latency.p99_ms <= args.max_p99_ms
            && published as f64 >= 0.95 * rate * secs;
        Ok(Step {
            target_rate: rate,
            published,
            publishes_per_s: published as f64 / secs,
            expected,
            delivered,
            offered_deliveries_per_s: expected as f64 / secs,
            delivered_per_s: delivered as f64 / secs,
            lost,
            duplicates,
            not_sent,
            refused,
            errors,
            rehandshakes,
            latency,
            loadgen_cpu,
            held,
            attempt: 1,
        })
    }

    /// Hands `rate` publishes per second to the clients in turn for `secs` seconds.
    async fn pace(&mut self, phase_id: u32, rate: f64, secs: f64, label: &str) {
        let phase = self.scores.phase(phase_id);
        let pb = crate::progress::bar((secs * 1000.0) as u64, label, self.quiet);
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut handed = 0u64;
        let mut ticks = 0u64;
        loop {
            tick.tick().await;
            let elapsed = start.elapsed().as_secs_f64();
            if elapsed >= secs {
                break;
            }
            let due = (rate * elapsed) as u64;
            let t_us = self.scores.now_us();
            while handed < due {
                handed += 1;
                let p = &self.publishers[self.cursor % self.publishers.len()];
                self.cursor += 1;
                let Ok(permit) = p.tx.try_reserve() else {
                    phase.not_sent.fetch_add(1, Relaxed);
                    continue;
                };
                match phase.next_seq(p.copies) {
                    Some(seq) => permit.send(Publish {
                        phase: phase_id,
                        seq,
                        t_us,
                    }),
                    None => {
                        phase.not_sent.fetch_add(1, Relaxed);
                    }
                }
            }
            ticks += 1;
            if ticks.is_multiple_of(100) {
                pb.set_position((elapsed * 1000.0) as u64);
                pb.set_message(format!("copies {}", self.scores.copies.load(Relaxed)));
            }
        }
        pb.finish_and_clear();
    }

    /// After an overload, waits (at most 15 s) until copies stop arriving for a second.
    async fn settle(&self) {
        let end = Instant::now() + Duration::from_secs(15);
        let mut last = self.scores.copies.load(Relaxed);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.scores.copies.load(Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
    }
}
