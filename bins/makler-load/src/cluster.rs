//! The cluster benchmark (`makler-load cluster`): what a cluster of brokers costs and how fast
//! it agrees, at each number of brokers and table size, as one table.
//!
//! In every configuration the instances are registered at the first broker and heartbeated
//! there every TTL/3, as servers keep their leases alive, so that the figures include what
//! keeping the replicas alive costs. Per configuration:
//!
//! - **Peer traffic**: every broker's `peer_bytes_out` and `peer_bytes_in` over a window of
//!   steady heartbeats: bytes sent and received per broker per second (the mean, and the
//!   busiest broker's), and the keep-alive figure: the bytes each other broker receives per
//!   instance per TTL (per peer: the mean over the brokers that are not heartbeated).
//! - **Convergence**: a register at the first broker until every other one answers it, and its
//!   deregistration until none does: p50 and p99.
//! - **Catch-up**: the last broker killed (SIGKILL) and restarted, until it says it is complete
//!   and holds as many instances as the first.
//!
//! Real `makler-broker` processes on loopback for the small clusters ([`run_real`]); the
//! library's nodes on a simulated network for the large ones ([`cluster_sim`](crate::cluster_sim)),
//! where a 2-core machine cannot run the processes. Per-broker traffic must grow at most
//! linearly with the number of brokers: [`linearity`] sets each size against three brokers.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use crate::Summary;
pub use crate::cluster_real::run_real;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Numbers of brokers run as real processes.
    pub real: Vec<usize>,
    /// Numbers of brokers simulated.
    pub simulated: Vec<usize>,
    /// Table sizes.
    pub sizes: Vec<usize>,
    /// Services the instances are spread over.
    pub types: usize,
    /// The brokers' TTL; instances heartbeat every third of it.
    pub ttl: Duration,
    /// Heartbeats before the traffic is measured.
    pub settle: Duration,
    /// The window over which the traffic is measured.
    pub window: Duration,
    /// Samples of each convergence.
    pub samples: usize,
    /// The simulation's seed.
    pub seed: u64,
}

/// Parses a list of cluster sizes (`3,5,9`), each from 2 to 64, or `none`.
pub fn parse_brokers(text: &str) -> Result<Vec<usize>, String> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|item| match item.trim().parse::<usize>() {
            Ok(n) if (2..=64).contains(&n) => Ok(n),
            _ => Err(format!("{item:?}: expected a number of brokers from 2 to 64, or none")),
        })
        .collect()
}

/// Peer bytes of every broker over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Per broker, the first being the heartbeated one: bytes sent and received.
    pub bytes: Vec<(u64, u64)>,
    /// The window.
    pub seconds: f64,
    /// Instances the first broker held at the window's end (all of them, unless the machine
    /// could not answer every heartbeat).
    pub held: u64,
}

impl Traffic {
    /// The difference of two readings of `(peer_bytes_out, peer_bytes_in)` per broker, with
    /// the instances held at the end.
    pub fn between(before: &[(u64, u64)], after: &[(u64, u64)], window: Duration, held: u64) -> Traffic {
        let bytes = before.iter().zip(after).map(|(b, a)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))).collect();
        Traffic { bytes, seconds: window.as_secs_f64(), held }
    }

    /// Bytes sent and received per broker per second: the mean over the brokers.
    pub fn per_broker(&self) -> f64 {
        let total: u64 = self.bytes.iter().map(|(o, i)| o + i).sum();
        total as f64 / self.bytes.len().max(1) as f64 / self.seconds.max(1e-9)
    }

    /// Bytes sent and received per second by the busiest broker.
    pub fn busiest(&self) -> f64 {
        self.bytes.iter().map(|(o, i)| o + i).max().unwrap_or(0) as f64 / self.seconds.max(1e-9)
    }

    /// Bytes received per live instance per TTL at each broker that is not heartbeated (the
    /// mean over them), and the same with what they send (acknowledgements, hellos, digests).
    pub fn keep_alive(&self, ttl: Duration) -> (f64, f64) {
        let instances = self.held;
        let others = &self.bytes[1.min(self.bytes.len())..];
        let ttls = self.seconds / ttl.as_secs_f64();
        let per = |bytes: u64| bytes as f64 / others.len().max(1) as f64 / instances.max(1) as f64 / ttls.max(1e-9);
        (per(others.iter().map(|b| b.1).sum()), per(others.iter().map(|b| b.0 + b.1).sum()))
    }
}

/// Heartbeats a second during the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heartbeats {
    /// Every instance every TTL/3.
    pub target: f64,
    /// Sent.
    pub sent: f64,
    /// Answered `OK` (a lease that expired is answered "not found").
    pub ok: f64,
}

/// One configuration's figures.
#[derive(Debug, Clone)]
pub struct ClusterRow {
    /// Simulated rather than real processes.
    pub simulated: bool,
    /// Brokers in the cluster.
    pub brokers: usize,
    /// Instances registered (and heartbeated) at the first.
    pub instances: usize,
    /// Peer bytes over the window.
    pub traffic: Traffic,
    /// Register at the first broker until every other answers it.
    pub register: Summary,
    /// Deregister at the first broker until no other answers it.
    pub removal: Summary,
    /// A restarted broker until complete with the whole table.
    pub catch_up: Duration,
    /// The heartbeat load during the window.
    pub heartbeats: Heartbeats,
    /// Instances the first broker held at the end.
    pub alive: u64,
}

impl ClusterRow {
    /// Whether the first broker held at least 90 % of the instances at the window's end: a
    /// machine too busy to answer the heartbeats loses them, and its figures are the machine's.
    pub fn kept_alive(&self) -> bool {
        self.traffic.held as f64 >= self.instances as f64 * 0.9
    }
}

/// One line of the linearity check: per-broker traffic at `brokers` against three brokers of
/// the same kind (real or simulated) and table size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Simulated or real.
    pub simulated: bool,
    /// The table size.
    pub instances: usize,
    /// The cluster size.
    pub brokers: usize,
    /// Bytes per broker per second at `brokers` over the same at three.
    pub ratio: f64,
    /// The busiest broker's bytes per second over the same at three.
    pub busiest_ratio: f64,
    /// Both runs kept (nearly) every instance alive; otherwise the machine decided the
    /// traffic, and the ratio says nothing of the protocol.
    pub comparable: bool,
}

impl Growth {
    /// What linear growth allows: `brokers / 3`.
    pub fn linear(&self) -> f64 {
        self.brokers as f64 / 3.0
    }

    /// Whether per-broker traffic grew at most linearly.
    pub fn at_most_linear(&self) -> bool {
        self.ratio <= self.linear()
    }
}

/// Every row with more than three brokers set against the row of three of the same kind and
/// size (rows without such a reference are left out).
pub fn linearity(rows: &[ClusterRow]) -> Vec<Growth> {
    rows.iter()
        .filter(|r| r.brokers > 3)
        .filter_map(|r| {
            let base =
                rows.iter().find(|b| b.brokers == 3 && b.simulated == r.simulated && b.instances == r.instances)?;
            Some(Growth {
                simulated: r.simulated,
                instances: r.instances,
                brokers: r.brokers,
                ratio: r.traffic.per_broker() / base.traffic.per_broker().max(1e-9),
                busiest_ratio: r.traffic.busiest() / base.traffic.busiest().max(1e-9),
                comparable: r.kept_alive() && base.kept_alive(),
            })
        })
        .collect()
}

/// The header of the table.
pub fn write_header(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<5} {:>3} {:>7} {:>20} {:>10} {:>10} {:>15} {:>13} {:>13} {:>9} {:>7}",
        "where",
        "N",
        "inst",
        "hb/s target sent ok",
        "B/broker/s",
        "busiest",
        "keep B/i/TTL/p",
        "reg p50/p99",
        "rm p50/p99",
        "catch-up",
        "alive"
    )
}

/// One row of the table.
pub fn write_row(out: &mut impl Write, row: &ClusterRow, ttl: Duration) -> io::Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (keep_in, keep_all) = row.traffic.keep_alive(ttl);
    let h = row.heartbeats;
    writeln!(
        out,
        "{:<5} {:>3} {:>7} {:>20} {:>10.0} {:>10.0} {:>15} {:>13} {:>13} {:>9} {:>7}",
        if row.simulated { "sim" } else { "real" },
        row.brokers,
        row.instances,
        format!("{:.0} {:.0} {:.0}", h.target, h.sent, h.ok),
        row.traffic.per_broker(),
        row.traffic.busiest(),
        // Only where the first broker kept (nearly) every instance: otherwise the machine, not
        // the protocol, decided the figure.
        if row.kept_alive() { format!("{keep_in:.1} ({keep_all:.1})") } else { "- (lost)".to_owned() },
        format!("{:.1}/{:.1}", ms(row.register.p50), ms(row.register.p99)),
        format!("{:.1}/{:.1}", ms(row.removal.p50), ms(row.removal.p99)),
        format!("{:.0} ms", ms(row.catch_up)),
        row.alive
    )
}

/// The linearity lines.
pub fn write_linearity(out: &mut impl Write, rows: &[ClusterRow]) -> io::Result<()> {
    writeln!(out, "per-broker traffic against 3 brokers (at most linear: ratio <= N/3):")?;
    for g in linearity(rows) {
        writeln!(
            out,
            "  {:<4} {:>7} instances, N={:<2}: B/broker/s ratio {:.2} vs N/3 {:.2}: {}; busiest broker ratio {:.2} (its peers: {:.2}x)",
            if g.simulated { "sim" } else { "real" },
            g.instances,
            g.brokers,
            g.ratio,
            g.linear(),
            match (g.comparable, g.at_most_linear()) {
                (false, _) => "not comparable: instances were lost to unanswered heartbeats",
                (true, true) => "at most linear",
                (true, false) => "MORE THAN LINEAR",
            },
            g.busiest_ratio,
            (g.brokers - 1) as f64 / 2.0
        )?;
    }
    Ok(())
}

/// Runs the whole plan, printing each row as it is measured (or why it could not be) and then
/// the linearity check; returns the rows and how many configurations failed.
pub fn run(plan: &Plan, bin: &Path, out: &mut impl Write) -> io::Result<(Vec<ClusterRow>, usize)> {
    write_header(out)?;
    let (mut rows, mut failed) = (Vec::new(), 0);
    for &instances in &plan.sizes {
        let real = plan.real.iter().map(|&n| (false, n));
        for (simulated, brokers) in real.chain(plan.simulated.iter().map(|&n| (true, n))) {
            let result = if simulated {
                crate::cluster_sim::run(plan, brokers, instances)
            } else {
                run_real(plan, bin, brokers, instances)
            };
            match result {
                Ok(row) => {
                    write_row(out, &row, plan.ttl)?;
                    rows.push(row);
                }
                Err(e) => {
                    failed += 1;
                    let kind = if simulated { "sim" } else { "real" };
                    writeln!(out, "{kind:<5} {brokers:>3} {instances:>7} failed: {e}")?;
                }
            }
            out.flush()?;
        }
    }
    write_linearity(out, &rows)?;
    Ok((rows, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            real: vec![],
            simulated: vec![3, 5, 9],
            sizes: vec![300],
            types: 10,
            ttl: Duration::from_secs(6),
            settle: Duration::from_secs(2),
            window: Duration::from_secs(6),
            samples: 5,
            seed: 1,
        }
    }

    #[test]
    fn traffic_figures() {
        let t = Traffic::between(
            &[(0, 0), (10, 10), (0, 0)],
            &[(600, 60), (70, 310), (60, 300)],
            Duration::from_secs(2),
            10,
        );
        assert_eq!(t.bytes, vec![(600, 60), (60, 300), (60, 300)]);
        assert_eq!(t.per_broker(), (660.0 + 360.0 + 360.0) / 3.0 / 2.0);
        assert_eq!(t.busiest(), 330.0);
        // 300 B received by each other broker over 2 s, a third of a TTL of 6 s, for 10 instances.
        assert_eq!(t.keep_alive(Duration::from_secs(6)), (90.0, 108.0));
    }

    #[test]
    fn small_simulated_clusters_grow_at_most_linearly_and_converge() {
        let plan = plan();
        let mut out = Vec::new();
        let (rows, failed) = run(&plan, Path::new("/nonexistent"), &mut out).unwrap();
        assert_eq!(failed, 0);
        print!("{}", String::from_utf8_lossy(&out));
        assert_eq!(rows.len(), 3);
        for row in &rows {
            assert_eq!(row.alive, 300, "every instance kept alive: {row:?}");
            assert!(row.heartbeats.ok >= row.heartbeats.target * 0.99, "{row:?}");
            assert!(row.traffic.keep_alive(plan.ttl).0 > 0.0);
            assert!(row.register.p99 < Duration::from_millis(50), "{row:?}");
            assert!(row.removal.p99 < Duration::from_millis(50), "{row:?}");
            assert!(row.catch_up < Duration::from_secs(3), "{row:?}");
        }
        let growth = linearity(&rows);
        assert_eq!(growth.len(), 2);
        for g in growth {
            assert!(g.comparable && g.at_most_linear(), "{g:?}");
        }
    }
}
