//! The test as a service manager (systemd's socket activation): it binds and holds the
//! sockets, and starts a program with them as descriptors 3, 4, … and the variables systemd sets.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use command_fds::{CommandFdExt, FdMapping};

use super::Process;

/// The manager's socket: a loopback listener with a deep queue, held by the test.
pub fn held_listener() -> TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(1024).unwrap();
    socket.into()
}

/// Starts `program` with `sockets` as descriptors 3, 4, … in that order, `LISTEN_FDS` their
/// number and `LISTEN_FDNAMES` their names (left unset when every name is empty). `LISTEN_PID`
/// must be the program's own pid, known only once it runs, so a shell sets it and `exec`s the
/// program under the same pid; `pid` sets another instead (a socket meant for someone else).
pub fn activated(program: &str, args: &[&str], sockets: Vec<(&str, OwnedFd)>, pid: Option<&str>) -> Process {
    let mut command = Command::new("sh");
    let script = match pid {
        None => "LISTEN_PID=$$ exec \"$0\" \"$@\"",
        Some(_) => "exec \"$0\" \"$@\"",
    };
    command.arg("-c").arg(script).arg(program).args(args);
    command.env("LISTEN_FDS", sockets.len().to_string()).stdin(Stdio::null()).stderr(Stdio::inherit());
    if sockets.iter().any(|(name, _)| !name.is_empty()) {
        let names: Vec<&str> = sockets.iter().map(|&(name, _)| name).collect();
        command.env("LISTEN_FDNAMES", names.join(":"));
    }
    if let Some(pid) = pid {
        command.env("LISTEN_PID", pid);
    }
    let mappings = sockets.into_iter().zip(3..).map(|((_, parent_fd), child_fd)| FdMapping { parent_fd, child_fd });
    command.fd_mappings(mappings.collect()).unwrap();
    Process::spawn(command)
}
