//! S3: every client subscribes to one channel; one more client publishes a burst of messages;
//! the result is the time until every copy has arrived.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bayeux::Publish;
use crate::cli::Args;
use crate::session::Config;
use crate::setup::{start_all, Plan};
use crate::stats::{CpuMeter, Latency};

const CHANNEL: &str = "/burst/0";

pub async fn run(cfg: Arc<Config>, args: &Args) -> Result<Value, String> {
    let plans = (0..args.clients)
        .map(|_| Plan {
            channels: vec![CHANNEL.into()],
            publish_to: None,
        })
        .chain([Plan {
            channels: vec![],
            publish_to: Some(CHANNEL.into()),
        }])
        .collect();
    let (mut handles, setup) = start_all(&cfg, plans, args.concurrency, args.quiet).await;
    let publisher = handles
        .pop()
        .flatten()
        .and_then(|h| h.publish)
        .ok_or_else(|| {
            format!(
                "the publisher could not be set up ({} of {} sessions failed; first error: {})",
                setup.failed,
                setup.clients,
                setup.first_error.as_deref().unwrap_or("none")
            )
        })?;
    let subscribers = handles.iter().filter(|h| h.is_some()).count();
    let copies = u16::try_from(subscribers).map_err(|_| "at most 65,535 subscribers")?;
    // Let every subscriber's connect reach the server and be held before the burst.
    tokio::time::sleep(Duration::from_secs(1 + subscribers as u64 / 5000)).await;

    let scores = &cfg.scores;
    let phase_id = scores.open_phase(args.burst_messages)?;
    let phase = scores.phase(phase_id);
    let cpu = CpuMeter::start();
    let t0 = scores.now_us();
    let started = Instant::now();
    for _ in 0..args.burst_messages {
        let seq = phase.next_seq(copies).ok_or("phase full")?;
        let p = Publish {
            phase: phase_id,
            seq,
            t_us: scores.now_us(),
        };
        publisher.send(p).await.map_err(|_| "publisher gone")?;
    }
    let pb = crate::progress::bar(
        subscribers as u64 * args.burst_messages as u64,
        "copies",
        args.quiet,
    );
    let deadline = started + Duration::from_secs_f64(args.burst_timeout);
    let (mut expected, mut delivered) = (0, 0);
    while Instant::now() < deadline {
        (expected, delivered, _) = phase.tally();
        pb.set_position(delivered);
        if delivered >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pb.finish_and_clear();
    let (_, _, duplicates) = phase.tally();
    let last = phase.last_arrival_us.load(Relaxed);
    let all_in = delivered >= expected;
    let seconds = last.saturating_sub(t0) as f64 / 1e6;
    drop(handles);
    Ok(json!({
        "mode": "burst",
        "setup": setup,
        "subscribers": subscribers,
        "messages": args.burst_messages,
        "expected": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "duplicates": duplicates,
        "all_delivered": all_in,
        "seconds_to_last_copy": seconds,
        "copies_per_s": if seconds > 0.0 { delivered as f64 / seconds } else { 0.0 },
        "latency": Latency::of(&phase.latency()),
        "refused": scores.refused.load(Relaxed),
        "errors": scores.errors.load(Relaxed),
        "loadgen_cpu": cpu.fraction(),
    }))
}
