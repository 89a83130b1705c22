//! Starting many clients at once, with bounded concurrency and a progress bar.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::cli::Transport;
use crate::session::{Config, Handle};
use crate::{client_lp, client_ws};

/// What one client does: the channels it subscribes to and where it publishes, if anywhere.
pub struct Plan {
    pub channels: Vec<String>,
    pub publish_to: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct SetupReport {
    pub clients: usize,
    pub ok: usize,
    pub failed: usize,
    pub seconds: f64,
    pub first_error: Option<String>,
}

/// Starts one client per plan; returns the handles in plan order (None where setup failed).
pub async fn start_all(
    cfg: &Arc<Config>,
    plans: Vec<Plan>,
    concurrency: usize,
    quiet: bool,
) -> (Vec<Option<Handle>>, SetupReport) {
    let started = Instant::now();
    let n = plans.len();
    let pb = crate::progress::bar(n as u64, "sessions", quiet);
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for plan in plans {
        let (cfg, gate, pb) = (cfg.clone(), gate.clone(), pb.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let result = match cfg.transport {
                Transport::LongPolling => {
                    client_lp::start(cfg.clone(), plan.channels, plan.publish_to).await
                }
                Transport::Websocket => {
                    client_ws::start(cfg.clone(), plan.channels, plan.publish_to).await
                }
            };
            pb.inc(1);
            result
        }));
    }
    let mut handles = Vec::with_capacity(n);
    let mut first_error = None;
    for task in tasks {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(h) => handles.push(Some(h)),
            Err(e) => {
                first_error.get_or_insert(e);
                handles.push(None);
            }
        }
    }
    pb.finish_and_clear();
    let ok = handles.iter().filter(|h| h.is_some()).count();
    let report = SetupReport {
        clients: n,
        ok,
        failed: n - ok,
        seconds: started.elapsed().as_secs_f64(),
        first_error,
    };
    (handles, report)
}
