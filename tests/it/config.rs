//! `--config FILE`, `--check-config` and `--log-level`: the programs run by a TOML file whose
//! keys are their long flags, a flag overrides the file, a bad file is refused with the key and
//! line, and `--check-config` checks without binding anything.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::PATIENCE;
use crate::common::{Logged, Process, Udp, listed, wait_until};

const BROKER: &str = env!("CARGO_BIN_EXE_makler-broker");
const BALANCER: &str = env!("CARGO_BIN_EXE_makler-balancer");
const SERVER: &str = env!("CARGO_BIN_EXE_makler-server");

/// A directory of this test's own, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("makler-config-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `text` to `name` in the directory and returns its path as an argument.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `program` with `args` to completion, without the test's RUST_LOG (whose lines would be
/// on stderr); returns (exit code, stdout, stderr).
fn run(program: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(program).args(args).stdin(Stdio::null()).env_remove("RUST_LOG").output().expect("runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code(), text(output.stdout), text(output.stderr))
}

/// Two loopback UDP addresses nobody answers on, as peers.
fn silent_peers() -> (UdpSocket, UdpSocket, String) {
    let (a, b) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
    let list = format!("\"{}\", \"{}\"", a.local_addr().unwrap(), b.local_addr().unwrap());
    (a, b, list)
}

fn broker_file(peers: &str) -> String {
    format!(
        "# a broker run by its file alone\n\
         listen = \"127.0.0.1:0\"\n\
         ttl = 60\n\
         peers = [{peers}]\n\
         allow-register = [\"10.0.0.0/8\"]\n\
         no-multicast = true\n"
    )
}

#[test]
fn a_broker_started_with_only_a_file_behaves_by_it() {
    let dir = Dir::new("broker");
    let (a, b, peers) = silent_peers();
    let file = dir.file("broker.toml", &broker_file(&peers));
    let broker = Logged::start(BROKER, &["--config", &file]);
    let udp = Udp::new(broker.process.addr("udp"));
    assert_eq!(udp.text("register web 80"), "ERROR not allowed: 127.0.0.1 may not register here");
    broker.wait_for_log("ttl 60s");
    broker.wait_for_log(&format!("peers {},{}", a.local_addr().unwrap(), b.local_addr().unwrap()));
}

#[test]
fn a_flag_overrides_the_files_value() {
    let dir = Dir::new("override");
    let (_a, b, peers) = silent_peers();
    let file = dir.file("broker.toml", &broker_file(&peers));
    let only = b.local_addr().unwrap().to_string();
    let broker =
        Logged::start(BROKER, &["--config", &file, "--allow-register", "127.0.0.0/8", "--ttl=30", "--peers", &only]);
    let udp = Udp::new(broker.process.addr("udp"));
    assert_eq!(udp.text("register web 80").len(), 36, "the command line's allow list, not the file's");
    assert_eq!(listed(&udp, "web").len(), 1);
    broker.wait_for_log("ttl 30s");
    broker.wait_for_log(&format!("peers {only}\n"));
}

#[test]
fn an_unknown_key_is_refused_with_its_line() {
    let dir = Dir::new("unknown");
    let file = dir.file("broker.toml", "ttl = 60\n\nlisten_on = \"127.0.0.1:0\"\n");
    let (code, out, err) = run(BROKER, &["--config", &file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty(), "nothing started: {out}");
    assert_eq!(
        err,
        format!(
            "makler-broker: {file}:3: unknown key `listen_on` (the keys are the long flag names, as --help lists them)\n"
        )
    );
    let file = dir.file("refused.toml", "config = \"other.toml\"\n");
    let (code, _, err) = run(BROKER, &["--config", &file]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(":1: `config` cannot be set in a config file"), "{err}");
}

#[test]
fn a_bad_value_is_refused_naming_its_key() {
    let dir = Dir::new("bad-value");
    for (text, key, why) in [
        ("listen = \"127.0.0.1:0\"\nttl = 0.01\n", "2: ttl: ", "at least 0.1"),
        ("allow-register = [\"10.0.0.0/33\"]\n", "1: allow-register: ", "not a network"),
        ("quiet = \"yes\"\n", "1: quiet: ", "expected true or false"),
        ("ttl = \n", "", "TOML parse error at line 1"),
    ] {
        let file = dir.file("broker.toml", text);
        let (code, _, err) = run(BROKER, &["--config", &file]);
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(err.starts_with(&format!("makler-broker: {file}")), "{text}: {err}");
        assert!(err.contains(&format!("{file}:{key}")) && err.contains(why), "{text}: {err}");
    }
}

#[test]
fn check_config_checks_without_binding() {
    let dir = Dir::new("check");
    // Held by the test all along: a broker that tried to bind it would fail.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    let file = dir.file("broker.toml", &format!("listen = \"{at}\"\nttl = 60\nallow-register = [\"10.0.0.0/8\"]\n"));
    let (code, out, err) = run(BROKER, &["--config", &file, "--check-config"]);
    assert_eq!((code, out.as_str(), err.as_str()), (Some(0), "config ok\n", ""));
    let (code, _, err) = run(BROKER, &["--config", &file, "--no-multicast"]);
    assert_eq!(code, Some(1), "without --check-config it binds, and finds the port taken: {err}");
    assert!(err.contains("cannot listen on udp"), "{err}");
    // Problems: one a flag's parser finds (exit 2 at once), and those the program checks.
    let bad = dir.file("bad.toml", &format!("listen = \"{at}\"\nttl = -3\n"));
    let (code, out, err) = run(BROKER, &["--config", &bad, "--check-config"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty() && err.contains(":2: ttl: "), "{out} {err}");
    let (code, out, err) = run(BROKER, &["--config", &file, "--check-config", "--require-key", "writes"]);
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert_eq!(err, "makler-broker: --require-key needs --key-file (the key requests must be sealed with)\n");
    let (code, out, err) = run(BALANCER, &["--service", "web", "--listen", &at.to_string(), "--check-config"]);
    assert_eq!((code, out.as_str(), err.as_str()), (Some(0), "config ok\n", ""));
    let (code, out, err) = run(BALANCER, &["--service", "web", "--health-interval=-1", "--check-config"]);
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert!(err.starts_with("makler-balancer: --health-interval "), "{err}");
    // What only a bind finds out: an address no interface of this host has (TEST-NET-1).
    for (flag, said) in
        [("--multicast-if", "--multicast-if 192.0.2.77 is not"), ("--mdns", "cannot use mDNS on 192.0.2.77")]
    {
        let (code, out, err) = run(BROKER, &["--listen", &at.to_string(), flag, "192.0.2.77", "--check-config"]);
        assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
        assert!(err.starts_with(&format!("makler-broker: {said}")), "{err}");
    }
    for (program, args) in [
        (BALANCER, &["--service", "web", "--multicast-if", "192.0.2.77", "--check-config"][..]),
        (SERVER, &["--service", "echo", "--announce", "--multicast-if", "192.0.2.77", "--check-config"]),
    ] {
        let (code, out, err) = run(program, args);
        assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
        assert!(err.contains(": --multicast-if 192.0.2.77 is not"), "{err}");
    }
    // Not when the group is not used.
    for (program, service) in [(BALANCER, "web"), (SERVER, "echo")] {
        let args = ["--service", service, "--broker", "127.0.0.1:9", "--multicast-if", "192.0.2.77", "--check-config"];
        let (code, out, err) = run(program, &args);
        assert_eq!((code, out.as_str(), err.as_str()), (Some(0), "config ok\n", ""));
    }
    let (code, _, err) = run(SERVER, &["--service", "echo", "--announce", "--no-multicast", "--check-config"]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err, "makler-server: --announce needs multicast (drop --no-multicast)\n");
    assert!(UdpSocket::bind(at).is_err(), "still the test's");
}

#[test]
fn a_start_refuses_what_check_config_refuses_with_the_same_code() {
    // Both exit 2 with the same line, and the start binds nothing (no `listening` line).
    let pairs: Vec<String> = (0..40).map(|i| format!("--meta=k{i}=v")).collect();
    let mut too_much: Vec<&str> = vec!["--service", "echo", "--broker", "127.0.0.1:9", "--no-multicast"];
    too_much.extend(pairs.iter().map(String::as_str));
    for args in [&["--service", "echo", "--announce", "--no-multicast"][..], &too_much] {
        let (code, out, checked) = run(SERVER, &[args, &["--check-config"]].concat());
        assert_eq!((code, out.as_str()), (Some(2), ""), "{checked}");
        let (code, out, err) = run(SERVER, args);
        assert_eq!((code, out.as_str(), err.as_str()), (Some(2), "", checked.as_str()), "{args:?}");
    }
}

#[test]
fn every_example_file_passes_check_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/config");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let program = match name.as_str() {
            "broker.toml" => BROKER,
            "balancer.toml" => BALANCER,
            "server.toml" => SERVER,
            other => panic!("dist/config/{other}: which program is it for? (name it here)"),
        };
        let (code, out, err) = run(program, &["--config", path.to_str().unwrap(), "--check-config"]);
        assert_eq!((code, out.as_str(), err.as_str()), (Some(0), "config ok\n", ""), "dist/config/{name}");
        // An example leaves RUST_LOG in charge (a log-level key would override it).
        let output = Command::new(program)
            .args(["--config", path.to_str().unwrap(), "--check-config"])
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(err.contains("logging with the filter \"debug\""), "dist/config/{name}: {err}");
        // The settings shown commented out are valid too (but for the key file, which must exist,
        // and the interface, which must be this host's).
        let text = std::fs::read_to_string(&path).unwrap();
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(setting)
                    if setting.contains(" = ")
                        && !["key-file", "require-key", "multicast-if"].iter().any(|key| setting.starts_with(key)) =>
                {
                    setting
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        assert_ne!(uncommented, text, "dist/config/{name} shows no commented setting");
        let dir = Dir::new(&format!("example-{name}"));
        let all = dir.file(&name, &uncommented);
        let (code, out, err) = run(program, &["--config", &all, "--check-config"]);
        assert_eq!((code, out.as_str(), err.as_str()), (Some(0), "config ok\n", ""), "dist/config/{name} uncommented");
        seen.push(name);
    }
    seen.sort();
    assert_eq!(seen, ["balancer.toml", "broker.toml", "server.toml"]);
}

#[test]
fn the_balancer_and_the_server_read_files_too() {
    let dir = Dir::new("balancer-server");
    let broker = crate::common::broker(&[]);
    let udp = Udp::new(broker.addr("udp"));
    let balancer = dir.file(
        "balancer.toml",
        &format!(
            "service = \"web\"\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nbroker = [\"{}\"]\n\
             no-multicast = true\nhealth-interval = 0\nttl = 60\n",
            broker.addr("udp")
        ),
    );
    let balancer = Logged::start(BALANCER, &["--config", &balancer]);
    let control = balancer.process.addr("udp");
    let server = dir.file(
        "server.toml",
        &format!(
            "service = \"echo\"\nbroker = [\"{control}\"]\nno-multicast = true\nmeta = [\"version=2\"]\ncheck = \"none\"\n"
        ),
    );
    let _server = Logged::start(SERVER, &["--config", &server]);
    // The server registers at the balancer, which then registers itself at the broker as web.
    let lb = wait_until(PATIENCE, "the balancer registers as web", || listed(&udp, "web").first().copied());
    assert_eq!(lb, balancer.process.addr("tcp"));
}

#[test]
fn log_level_shows_debug_lines_and_overrides_rust_log() {
    let broker = Logged::start(BROKER, &["--listen", "127.0.0.1:0", "--no-multicast", "--log-level", "debug"]);
    broker.wait_for_log("DEBUG makler-broker: logging with the filter \"debug\"");
    let dir = Dir::new("log-level");
    let file = dir.file("broker.toml", "listen = \"127.0.0.1:0\"\nno-multicast = true\nlog-level = \"warn\"\n");
    let mut command = Command::new(BROKER);
    command.args(["--config", &file]).env("RUST_LOG", "debug").stdin(Stdio::null()).stderr(Stdio::piped());
    let mut quiet = Process::spawn(command);
    quiet.terminate();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut quiet.child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(!log.contains("DEBUG") && !log.contains("INFO"), "the file's warn, not RUST_LOG's debug: {log}");
    let (code, _, err) = run(BROKER, &["--log-level", "verbose"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("\"verbose\" is not a level"), "{err}");
}

#[test]
fn help_says_log_level_overrides_quiet() {
    for program in [BROKER, BALANCER, SERVER] {
        let (code, help, _) = run(program, &["--help"]);
        assert_eq!(code, Some(0));
        let quiet = help.split("-q, --quiet").nth(1).expect("--quiet listed");
        let quiet = &quiet[..quiet.find("\n\n").unwrap_or(quiet.len())];
        assert!(quiet.contains("--log-level or RUST_LOG"), "{program}: {quiet}");
    }
}

/// `--config` naming a FIFO nobody writes to (or a directory, or a device) is refused at once,
/// by a start and by `--check-config`, rather than waited on for ever.
#[test]
fn a_config_that_is_no_regular_file_is_refused_without_waiting() {
    let dir = Dir::new("not-regular");
    let fifo = dir.0.join("broker.toml");
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs").success());
    let fifo = fifo.to_str().unwrap().to_owned();
    let directory = dir.0.to_str().unwrap().to_owned();
    for (path, what) in [(fifo.as_str(), "a FIFO"), (directory.as_str(), "a directory"), ("/dev/null", "a device")] {
        for check in [false, true] {
            let mut args = vec!["--config", path, "--listen", "127.0.0.1:0", "--no-multicast"];
            if check {
                args.push("--check-config");
            }
            let mut child = Command::new(BROKER)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .env_remove("RUST_LOG")
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    panic!("{args:?} still runs after 10 s: the file is waited on");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let output = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&output.stderr);
            assert_eq!(status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(
                err,
                format!("makler-broker: cannot read the config file {path}: {what}, not a regular file\n"),
                "{args:?}"
            );
            assert!(output.stdout.is_empty(), "nothing started: {args:?}");
        }
    }
}
