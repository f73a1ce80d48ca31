//! A started program whose log (stderr) the test reads: one helper for every module that waits on
//! log lines.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{PATIENCE, Process, wait_until};

/// A process whose log lines (stderr) are kept for the test to read. The caller's `RUST_LOG` is
/// not passed on, so that the lines a test waits for are the program's defaults.
pub struct Logged {
    pub process: Process,
    log: Arc<Mutex<String>>,
}

impl Logged {
    #[track_caller]
    pub fn start(program: &str, args: &[&str]) -> Logged {
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stderr(Stdio::piped()).env_remove("RUST_LOG");
        let mut process = Process::spawn(command);
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = process.child.stderr.take().expect("stderr is piped");
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Logged { process, log }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// How many times `what` is in the log.
    pub fn count(&self, what: &str) -> usize {
        self.log().matches(what).count()
    }

    /// Waits for `what` in the log: a line of a process that has exited may still be on its
    /// way through the pipe and the reading thread.
    #[track_caller]
    pub fn wait_for_log(&self, what: &str) {
        self.wait_for(what, 1);
    }

    /// Waits until `what` is in the log `n` times.
    #[track_caller]
    pub fn wait_for(&self, what: &str, n: usize) {
        wait_until(PATIENCE, &format!("{what:?} is logged {n} times"), || (self.count(what) >= n).then_some(()));
    }

    /// Sends SIGHUP (as `systemctl reload` does) and waits for the reload's last line.
    #[track_caller]
    pub fn reload(&mut self, last: &str) {
        let before = self.count(last);
        let pid = self.process.child.id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill runs").success());
        self.wait_for(last, before + 1);
        assert!(self.process.child.try_wait().expect("waits").is_none(), "SIGHUP ends nothing:\n{}", self.log());
    }
}
