//! The rough edges a new user hit (issue 25), each with the test that would have caught it:
//! every program names itself in `--version`, takes host names in every address flag, exits
//! with the codes README's table gives, and spells its timeouts one way.

use crate::common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};

use crate::common::Process;

/// The five programs of this package, by name and path.
const PROGRAMS: [(&str, &str); 5] = [
    ("makler-broker", env!("CARGO_BIN_EXE_makler-broker")),
    ("makler-balancer", env!("CARGO_BIN_EXE_makler-balancer")),
    ("makler-server", env!("CARGO_BIN_EXE_makler-server")),
    ("makler-client", env!("CARGO_BIN_EXE_makler-client")),
    ("makler", env!("CARGO_BIN_EXE_makler")),
];

/// Runs `program` with `args` to completion; returns (exit code, stdout, stderr).
fn run(program: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(program).args(args).stdin(Stdio::null()).output().expect("runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code(), text(output.stdout), text(output.stderr))
}

#[test]
fn every_program_names_itself_in_its_version() {
    for (name, path) in PROGRAMS {
        for flag in ["--version", "-V"] {
            let (code, out, _) = run(path, &[flag]);
            assert_eq!(code, Some(0), "{name} {flag}");
            let expected = format!("{name} {} (commit ", env!("CARGO_PKG_VERSION"));
            assert!(out.starts_with(&expected), "{name} {flag}: {out:?}");
        }
    }
}

#[test]
fn every_address_flag_takes_a_host_name_and_says_the_same_about_a_bad_one() {
    let broker = env!("CARGO_BIN_EXE_makler-broker");
    let named = Process::start(
        broker,
        &["--listen", "localhost:0", "--dns", "localhost:0", "--metrics", "localhost:0", "--no-multicast", "-q"],
    );
    for face in ["udp", "dns", "metrics"] {
        assert!(named.addr(face).ip().is_loopback(), "{face}");
    }
    let at = format!("localhost:{}", named.addr("udp").port());
    let balancer = Process::start(
        env!("CARGO_BIN_EXE_makler-balancer"),
        &["--listen", "localhost:0", "--control", "localhost:0", "--service", "web", "--broker", &at, "-q"],
    );
    assert!(balancer.addr("tcp").ip().is_loopback() && balancer.addr("udp").ip().is_loopback());
    // `makler report`'s endpoint too: a host name reaches the broker, which knows no such
    // instance.
    let (code, _, err) = run(env!("CARGO_BIN_EXE_makler"), &["--broker", &at, "report", "echo", "localhost:4000"]);
    assert_eq!(code, Some(3), "{err}");

    // The same refusal, with the same hint, from every address flag.
    let hint = "\"7000\": expected IP:PORT such as 127.0.0.1:7000";
    let bad: [(&str, &[&str]); 8] = [
        (broker, &["--listen", "7000"]),
        (broker, &["--dns", "7000"]),
        (broker, &["--metrics", "7000"]),
        (broker, &["--peers", "127.0.0.1:7001,7000"]),
        (broker, &["--bridge", "7000"]),
        (env!("CARGO_BIN_EXE_makler-balancer"), &["--control", "7000", "--service", "web"]),
        (env!("CARGO_BIN_EXE_makler-client"), &["--broker", "7000", "echo"]),
        (env!("CARGO_BIN_EXE_makler"), &["--broker", "127.0.0.1:7000", "report", "echo", "7000"]),
    ];
    for (program, args) in bad {
        let (code, _, err) = run(program, args);
        assert_eq!(code, Some(2), "{program} {args:?}: {err}");
        assert!(err.contains(hint), "{program} {args:?}: {err}");
    }
}

#[test]
fn exit_codes_are_those_of_the_table_in_every_program() {
    // 2: bad usage, in every program.
    for (name, path) in PROGRAMS {
        let (code, _, _) = run(path, &["--no-such-flag"]);
        assert_eq!(code, Some(2), "{name}");
    }
    let broker = common::broker(&[]);
    let at = broker.addr("udp").to_string();
    let client = env!("CARGO_BIN_EXE_makler-client");
    let makler = env!("CARGO_BIN_EXE_makler");
    // 3: not found; 6: the broker refused (here a name it does not take).
    assert_eq!(run(client, &["--broker", &at, "nosuch", "hi"]).0, Some(3));
    assert_eq!(run(makler, &["--broker", &at, "show", "nosuch"]).0, Some(3));
    let (code, _, err) = run(client, &["--broker", &at, "bad/name", "hi"]);
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("the broker refused"), "{err}");
    assert_eq!(run(makler, &["--broker", &at, "show", "bad/name"]).0, Some(6));
    // 4: no broker answered.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    assert_eq!(run(client, &["--broker", &silent, "--no-multicast", "echo", "hi"]).0, Some(4));
    assert_eq!(run(makler, &["--broker", &silent, "--broker-timeout", "0.05", "list"]).0, Some(4));

    // README's table is where they are written down: one row per program, each code the
    // program gives named in its row.
    let readme = include_str!("../../README.md");
    let table = readme.split("### Exit codes").nth(1).expect("README has an Exit codes section");
    let row = |program: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| `{program}`")))
            .unwrap_or_else(|| panic!("no row for {program}"))
    };
    let cells =
        |program: &str| row(program).split('|').map(str::trim).skip(2).take(7).map(str::to_owned).collect::<Vec<_>>();
    for (program, given) in [("makler-client", [0, 1, 2, 3, 4, 5, 6]), ("makler", [0, 1, 2, 3, 4, 6, 6])] {
        let cells = cells(program);
        for code in given {
            assert!(!cells[code].is_empty(), "README's row for {program} leaves exit code {code} empty");
        }
    }
}

#[test]
fn timeouts_have_one_name_each_and_the_old_spelling_still_works() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let makler = env!("CARGO_BIN_EXE_makler");
    for flag in ["--broker-timeout", "--timeout"] {
        let (code, _, err) = run(makler, &["--broker", &silent, flag, "0.05", "list"]);
        assert_eq!(code, Some(4), "{flag}: {err}");
    }
    // Each help lists the new name as the flag, the old one only as an old spelling.
    let flags =
        |help: &str| help.lines().map(str::trim).filter(|l| l.starts_with("--")).map(str::to_owned).collect::<Vec<_>>();
    let (_, help, _) = run(makler, &["--help"]);
    assert!(flags(&help).iter().any(|l| l.starts_with("--broker-timeout")), "{help}");
    assert!(!flags(&help).iter().any(|l| l.starts_with("--timeout")), "{help}");
    let (_, help, _) = run(env!("CARGO_BIN_EXE_makler-client"), &["--help"]);
    assert!(flags(&help).iter().any(|l| l.starts_with("--server-timeout")), "{help}");
    assert!(!flags(&help).iter().any(|l| l.starts_with("--timeout")), "{help}");
    // `-q` is taken by every program, with one meaning: only warnings and errors.
    for (name, path) in PROGRAMS {
        let (_, help, _) = run(path, &["--help"]);
        assert!(help.contains("-q, --quiet"), "{name}");
        assert!(help.contains("Log only warnings and errors"), "{name}: {help}");
    }
}

#[test]
fn a_sigterm_right_after_the_listening_line_stops_a_program_cleanly() {
    // The signal handlers are in place before the line is printed: a SIGTERM sent as soon as
    // it is read stops the program as any other (exit 0), rather than kill it unlogged.
    let broker = common::broker(&[]);
    let at = broker.addr("udp").to_string();
    let runs: [(&str, &[&str]); 3] = [
        (env!("CARGO_BIN_EXE_makler-broker"), &["--listen", "127.0.0.1:0", "--no-multicast", "-q"]),
        (env!("CARGO_BIN_EXE_makler-server"), &["--service", "echo", "--broker", &at, "--no-multicast", "-q"]),
        (
            env!("CARGO_BIN_EXE_makler-balancer"),
            &["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--service", "web", "--no-register", "-q"],
        ),
    ];
    for (program, args) in runs {
        for _ in 0..5 {
            let mut process = Process::start(program, args);
            let status = process.terminate();
            assert!(status.success(), "{program}: {status}");
        }
    }
}
