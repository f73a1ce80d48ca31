//! Measuring several targets in alternating rounds (A, B, C, A, B, C, …), so that a change in
//! the machine's speed during the benchmark (other work starting or stopping) affects all alike,
//! and every target's rate as a ratio to the first one's in the same round.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::udp::{Workload, run_parallel};
use crate::{Measurement, cpu_time, median_range, process_cpu_time};

/// One thing to measure: a workload at an address.
pub struct Target {
    /// Its name in the tables.
    pub label: String,
    /// Where to send.
    pub addr: SocketAddr,
    /// What to send, and how to judge the replies.
    pub workload: Box<dyn Workload>,
    /// The processes that answer, when known: their CPU time per reply is reported.
    pub server_pids: Vec<u32>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("label", &self.label).field("addr", &self.addr).finish()
    }
}

/// How hard the load pushes: client threads, each with its own socket and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Client threads.
    pub threads: usize,
    /// Requests in flight per thread.
    pub window: usize,
}

impl Shape {
    /// Requests in flight in all.
    pub fn in_flight(&self) -> usize {
        self.threads * self.window
    }
}

/// The timing of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Measured time per target (split over the rounds).
    pub per_target: Duration,
    /// How many rounds.
    pub rounds: u32,
    /// An unmeasured run per target before the first round (caches, the page cache, the
    /// scheduler's view of the processes).
    pub warmup: Duration,
}

/// What one target measured over all rounds.
#[derive(Debug, Clone)]
pub struct TargetResult {
    /// The target's label.
    pub label: String,
    /// All rounds together.
    pub total: Measurement,
    /// Each round's rate (good replies per second).
    pub round_rates: Vec<f64>,
    /// CPU time the load generator used while measuring this target, per good reply.
    pub client_cpu_per_reply: Option<Duration>,
    /// CPU time the answering process used, per good reply (when its pid is known).
    pub server_cpu_per_reply: Option<Duration>,
}

impl TargetResult {
    /// The median and range over the rounds of this target's rate over `reference`'s rate in
    /// the same round.
    pub fn ratio_to(&self, reference: &TargetResult) -> (f64, f64, f64) {
        let ratios: Vec<f64> =
            self.round_rates.iter().zip(&reference.round_rates).map(|(a, b)| a / b.max(1e-9)).collect();
        median_range(&ratios)
    }
}

/// Measures every target with `shape`, alternating in `schedule.rounds` rounds. Fails on a
/// target that does not answer, or answers wrongly.
pub fn alternate(targets: &[Target], shape: Shape, schedule: Schedule) -> io::Result<Vec<TargetResult>> {
    let rounds = schedule.rounds.max(1);
    let per_round = schedule.per_target / rounds;
    if !schedule.warmup.is_zero() {
        for target in targets {
            run_parallel(target.addr, shape.threads, shape.window, schedule.warmup, target.workload.as_ref())?;
        }
    }
    let mut results: Vec<TargetResult> = targets
        .iter()
        .map(|t| TargetResult {
            label: t.label.clone(),
            total: Measurement::default(),
            round_rates: Vec::new(),
            client_cpu_per_reply: None,
            server_cpu_per_reply: None,
        })
        .collect();
    let add = |sum: Option<Duration>, before: Option<Duration>, after: Option<Duration>| match (sum, before, after) {
        (Some(sum), Some(before), Some(after)) => Some(sum + after.saturating_sub(before)),
        _ => None,
    };
    let server_cpu = |pids: &[u32]| {
        let times = pids.iter().map(|pid| process_cpu_time(&pid.to_string())).collect::<Option<Vec<_>>>();
        times.filter(|t| !t.is_empty()).map(|t| t.into_iter().sum::<Duration>())
    };
    let mut cpu = vec![(Some(Duration::ZERO), Some(Duration::ZERO)); targets.len()];
    for _ in 0..rounds {
        for ((target, result), cpu) in targets.iter().zip(&mut results).zip(&mut cpu) {
            let (client, server) = (cpu_time(), server_cpu(&target.server_pids));
            let m = run_parallel(target.addr, shape.threads, shape.window, per_round, target.workload.as_ref())?;
            *cpu = (add(cpu.0, client, cpu_time()), add(cpu.1, server, server_cpu(&target.server_pids)));
            if m.latencies.count() == 0 {
                return Err(io::Error::other(format!(
                    "{} at {} answered nothing right ({} lost, {} bad)",
                    target.label, target.addr, m.lost, m.bad
                )));
            }
            result.round_rates.push(m.rate());
            result.total.add(m);
        }
    }
    for (result, (client, server)) in results.iter_mut().zip(cpu) {
        let replies = result.total.latencies.count().max(1) as u32;
        result.client_cpu_per_reply = client.map(|c| c / replies);
        result.server_cpu_per_reply = server.map(|c| c / replies);
    }
    Ok(results)
}
