//! The systemd units in `dist/systemd/`: `systemd-analyze verify` finds nothing wrong with
//! them, and each unit's `ExecStart` line, expanded with its environment file as systemd would,
//! starts a program that comes up (on free loopback ports instead of the files' fixed ones).
//! The first is ignored, saying so, where `systemd-analyze` is not installed (Debian: `systemd`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::PATIENCE;
use crate::common::{Process, Udp, listed, wait_until};

const UNITS: [&str; 3] = ["makler-broker", "makler-balancer", "makler-server"];

/// The units whose sockets systemd holds (socket activation): a `.socket` unit each.
const SOCKETS: [&str; 2] = ["makler-broker", "makler-balancer"];

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd")
}

/// Where cargo put the programs (the units say /usr/local/bin).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_makler-broker")).parent().unwrap().to_path_buf()
}

/// The value of `key=` in a unit.
fn directive<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

/// A unit as installed here: programs from the build, environment files from `dist/`.
fn localized(unit: &str) -> String {
    unit.replace("/usr/local/bin/", &format!("{}/", bin_dir().display()))
        .replace("/etc/makler/", &format!("{}/", dist().display()))
}

/// `KEY="VALUE"` lines of an environment file, as systemd reads them.
fn environment(path: &str) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.split_once('=').unwrap_or_else(|| panic!("{path}: bad line {l:?}"));
            (key.to_owned(), value.trim_matches('"').to_owned())
        })
        .collect()
}

/// A port free for both TCP and UDP on loopback.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The words of `ExecStart`, `$VAR` split into words as systemd does, and every fixed port
/// replaced by a free one (the same port everywhere it appears).
fn command(unit: &str, ports: &mut HashMap<u16, u16>) -> Vec<String> {
    let env = environment(directive(unit, "EnvironmentFile"));
    let mut words = Vec::new();
    for word in directive(unit, "ExecStart").split_whitespace() {
        match word.strip_prefix('$') {
            Some(name) => {
                let value = env.get(name).unwrap_or_else(|| panic!("${name} is not in the environment file"));
                words.extend(value.split_whitespace().map(str::to_owned));
            }
            None => words.push(word.to_owned()),
        }
    }
    for word in &mut words {
        if let Ok(addr) = word.parse::<SocketAddr>() {
            let port = *ports.entry(addr.port()).or_insert_with(free_port);
            *word = SocketAddr::new(addr.ip(), port).to_string();
        }
    }
    words
}

#[test]
#[cfg_attr(not(has_systemd_analyze), ignore = "systemd-analyze is not installed (apt-get install systemd)")]
fn systemd_analyze_verify_finds_nothing_wrong() {
    let dir = std::env::temp_dir().join(format!("makler-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for name in UNITS {
        let unit = std::fs::read_to_string(dist().join(format!("{name}.service"))).unwrap();
        let path = dir.join(format!("{name}.service"));
        std::fs::write(&path, localized(&unit)).unwrap();
        paths.push(path);
    }
    for name in SOCKETS {
        let unit = std::fs::read_to_string(dist().join(format!("{name}.socket"))).unwrap();
        let path = dir.join(format!("{name}.socket"));
        std::fs::write(&path, unit).unwrap();
        paths.push(path);
    }
    let output = Command::new("systemd-analyze").arg("verify").args(&paths).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    // Only what concerns these units (a host's own units may have warnings of their own).
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("makler")).collect();
    assert!(output.status.success() && ours.is_empty(), "systemd-analyze verify:\n{said}");
}

#[test]
fn every_unit_starts_its_program_with_its_environment_file() {
    let mut ports = HashMap::new();
    let mut started = Vec::new();
    for name in UNITS {
        let unit = localized(&std::fs::read_to_string(dist().join(format!("{name}.service"))).unwrap());
        assert!(unit.contains("\nRestart=on-failure\n") && unit.contains("\nDynamicUser=yes\n"), "{name}");
        let words = command(&unit, &mut ports);
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        // Comes up: prints its `listening` line.
        started.push(Process::start(&words[0], &args));
    }
    let [broker, balancer, server] = &started[..] else { unreachable!() };
    assert!(broker.listening.iter().any(|(key, _)| key == "metrics"));
    assert!(balancer.listening.iter().any(|(key, _)| key == "tcp"));
    let udp = Udp::new(broker.addr("udp"));
    wait_until(PATIENCE, "the server registers at the broker", || {
        (listed(&udp, "echo") == [server.addr("tcp")]).then_some(())
    });
}

#[test]
fn socket_units_listen_where_the_environment_files_say() {
    for (name, pairs) in [
        ("makler-balancer", &[("ListenStream", "--listen"), ("ListenDatagram", "--control")][..]),
        ("makler-broker", &[("ListenDatagram", "--listen")][..]),
    ] {
        let socket = std::fs::read_to_string(dist().join(format!("{name}.socket"))).unwrap();
        let service = localized(&std::fs::read_to_string(dist().join(format!("{name}.service"))).unwrap());
        assert_eq!(directive(&service, "Sockets"), format!("{name}.socket"), "{name} uses its socket unit");
        assert_eq!(directive(&service, "Requires"), format!("{name}.socket"));
        let env = environment(directive(&service, "EnvironmentFile"));
        let args: Vec<&str> = env.values().flat_map(|v| v.split_whitespace()).collect();
        for (key, flag) in pairs {
            let addr = directive(&socket, key);
            let given = args.windows(2).find(|w| w[0] == *flag).map(|w| w[1]);
            assert_eq!(given, Some(addr), "{name}.socket's {key} and {flag} in its environment file");
        }
    }
}
