//! Child processes a benchmark starts (the broker, the echo reference): started with their
//! `listening udp=ADDR` line awaited under a deadline, and killed when the guard is dropped, so
//! that an error or a panic in the benchmark never leaves one running.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a child may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags of a benchmark's broker that lift every limit (per source, per network, probing, rate
/// limiting) and keep it off the multicast group: one generator, on loopback, registers and asks
/// everything.
pub const UNLIMITED_BROKER: [&str; 9] =
    ["--max-per-source", "0", "--max-per-network", "0", "--probe-interval", "0", "--rate-limit", "0", "--no-multicast"];

/// A running child process, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    addr: SocketAddr,
}

impl ChildProcess {
    /// Starts `program` with `args` and waits for its first stdout line, `listening udp=ADDR`.
    /// Its stdin is a pipe that stays open while the guard lives (a child that watches it can
    /// stop when this process dies); its stderr is passed through.
    pub fn start(program: &Path, args: &[&str]) -> io::Result<ChildProcess> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("stdout is not piped"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading, so that the child never blocks on a full pipe.
            for _ in lines {}
        });
        // The guard exists from here on: any early return below kills the child.
        let mut guard = ChildProcess { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => return Err(io::Error::other(format!("{} exited before printing its address", program.display()))),
            Err(_) => return Err(io::Error::other(format!("{} printed no address within 10 s", program.display()))),
        };
        guard.addr = line.trim().strip_prefix("listening udp=").and_then(|a| a.parse().ok()).ok_or_else(|| {
            io::Error::other(format!("{} printed {line:?} instead of its address", program.display()))
        })?;
        Ok(guard)
    }

    /// The address from its `listening` line.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it and waits until it is gone.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
