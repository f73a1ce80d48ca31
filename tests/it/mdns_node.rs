//! The broker's `--mdns` and `--mdns-import` against real peers: python-zeroconf (PyPI
//! `zeroconf`, what Home Assistant uses) as browser, announcer and name squatter, and a second
//! broker, across two network namespaces joined by a veth pair (the scaffolding of
//! [`mdns_peers`](super::mdns_peers): 10.98.0.1 and 10.98.0.2; all traffic stays inside them).
//! Brokers run inside a namespace (`ip netns exec … makler-broker --mdns eth0`), and so do the
//! requests to them (a few lines of Python). Needs root and `zeroconf` (ignored, saying so,
//! otherwise).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::common::PATIENCE;
use super::common::Process;
pub(super) use super::common::wait_until;
use super::mdns_peers::{Link, link};

/// Sends each argument after the first (an `ip:port`) as one UDP datagram to it and prints
/// each reply on a line (`-` when none came within 1 s).
const UDP: &str = r#"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
for request in sys.argv[2:]:
    s.sendto(request.encode(), (host, int(port)))
    try:
        print(s.recv(65536).decode().strip(), flush=True)
    except socket.timeout:
        print("-", flush=True)
"#;

/// A python-zeroconf browser of the type in `argv[2]` on the address in `argv[1]` until the
/// file `argv[3]` exists (at most 60 s): prints `BROWSING` once it started, `FOUND <name> <port>
/// <addresses> <server> <properties>` once it resolved an instance and `GONE <name>` when it
/// left, then, at the end, `NAMES <every name seen, sorted>`.
const BROWSER: &str = r#"
import os, sys, time
from zeroconf import Zeroconf, ServiceBrowser, ServiceStateChange, IPVersion
addr, kind, stop = sys.argv[1], sys.argv[2] + ".local.", sys.argv[3]
zc = Zeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
added, names = [], set()
def on_change(zeroconf, service_type, name, state_change):
    names.add(name)
    if state_change is ServiceStateChange.Added:
        added.append(name)
    elif state_change is ServiceStateChange.Removed:
        print("GONE", name, flush=True)
ServiceBrowser(zc, kind, handlers=[on_change])
print("BROWSING", flush=True)
began, resolved = time.time(), set()
while time.time() < began + 60 and not os.path.exists(stop):
    for name in [n for n in added if n not in resolved]:
        info = zc.get_service_info(kind, name, timeout=3000)
        if info:
            props = ",".join(sorted(k.decode() + "=" + (v or b"").decode() for k, v in info.properties.items() if k))
            print("FOUND", name, info.port, ",".join(info.parsed_addresses()), info.server, props or "-", flush=True)
            resolved.add(name)
    time.sleep(0.05)
print("NAMES", " ".join(sorted(names)), flush=True)
zc.close()
"#;

/// A python-zeroconf announcer on `argv[1]`: the instance `argv[2]` of type `argv[3]` on port
/// `argv[4]` at that address, host `zc-host.local.`, TXT `v=1`, until the file `argv[5]` exists
/// (at most 60 s), then its goodbye. Prints `REGISTERED` and `UNREGISTERED`.
const ANNOUNCER: &str = r#"
import os, socket, sys, time
from zeroconf import Zeroconf, ServiceInfo, IPVersion
addr, label, kind, port, stop = sys.argv[1], sys.argv[2], sys.argv[3] + ".local.", int(sys.argv[4]), sys.argv[5]
zc = Zeroconf(interfaces=[addr], ip_version=IPVersion.V4Only)
info = ServiceInfo(kind, label + "." + kind, addresses=[socket.inet_aton(addr)], port=port,
                   properties={"v": "1"}, server="zc-host.local.")
zc.register_service(info, allow_name_change=False)
print("REGISTERED", flush=True)
began = time.time()
while time.time() < began + 60 and not os.path.exists(stop):
    time.sleep(0.05)
zc.unregister_service(info)
print("UNREGISTERED", flush=True)
time.sleep(0.5)
zc.close()
"#;

pub(super) fn address(side: char) -> &'static str {
    if side == 'a' { "10.98.0.1" } else { "10.98.0.2" }
}

/// The link's temporary directory: `<temp>/<namespace a>.d`.
fn temp_dir(link: &Link) -> PathBuf {
    std::env::temp_dir().join(format!("{}.d", link.ns('a')))
}

/// The path of `what` in the link's temporary directory (made if need be; see [`files`]).
pub(super) fn temp(link: &Link, what: &str) -> PathBuf {
    let dir = temp_dir(link);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir.join(what)
}

/// Deletes the link's temporary directory (logs, stop files, configurations) when dropped.
pub(super) struct Files(PathBuf);

impl Drop for Files {
    fn drop(&mut self) {
        // Only ever the directory `temp_dir` names, nothing above it.
        let name = self.0.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("mk") && name.ends_with(".d") {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The guard of the link's temporary directory: made after the link, so that it goes before.
pub(super) fn files(link: &Link) -> Files {
    Files(temp_dir(link))
}

/// A broker in namespace `side` on `<its address>:7000`, with `--mdns eth0` and `args`; its
/// stderr (the log) goes to a file, read by [`log`].
pub(super) fn broker(link: &Link, side: char, args: &[&str]) -> (Process, PathBuf) {
    let log = temp(link, &format!("broker-{side}.log"));
    let listen = format!("{}:7000", address(side));
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &link.ns(side), env!("CARGO_BIN_EXE_makler-broker")])
        .args(["--listen", &listen, "--no-multicast", "--mdns", "eth0", "--ttl", "60"])
        .args(args)
        .env("RUST_LOG", "makler=info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"));
    (Process::spawn(command), log)
}

pub(super) fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Sends `requests` from namespace `side` to the broker there, returning its replies.
pub(super) fn ask(link: &Link, side: char, requests: &[&str]) -> Vec<String> {
    let to = format!("{}:7000", address(side));
    let mut args = vec!["-c", UDP, to.as_str()];
    args.extend_from_slice(requests);
    let output = link.spawn(side, "python3", &args, &[]).wait_with_output().expect("python3 runs");
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

/// A Python program in a namespace whose output lines are read as they come, each with when
/// it came, and which stops (its loop ends) when told to.
pub(super) struct Script {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    pub(super) stop: PathBuf,
    seen: Vec<String>,
}

/// Stands for the stop file's path in [`Script::run`]'s arguments.
pub(super) const STOP: &str = "{stop}";

impl Script {
    /// Starts the Python `script` in namespace `side` with `args` and the stop file last.
    fn start(link: &Link, side: char, name: &str, script: &str, args: &[&str]) -> Script {
        let mut all = vec!["-c", script];
        all.extend_from_slice(args);
        all.push(STOP);
        Script::run(link, side, name, "python3", &all)
    }

    /// Starts `program` in namespace `side` with `args`, where [`STOP`] stands for the stop
    /// file's path (also in the environment as `STOP`).
    pub(super) fn run(link: &Link, side: char, name: &str, program: &str, args: &[&str]) -> Script {
        let stop = temp(link, &format!("{name}.stop"));
        let _ = std::fs::remove_file(&stop);
        let stop_arg = stop.to_str().expect("a UTF-8 path").to_owned();
        let args: Vec<&str> = args.iter().map(|&a| if a == STOP { stop_arg.as_str() } else { a }).collect();
        let mut child = link.spawn(side, program, &args, &[("STOP", &stop_arg)]);
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        Script { child, lines, stop, seen: Vec::new() }
    }

    /// Waits up to `limit` for a line starting with `prefix`: when it came, and the line.
    #[track_caller]
    pub(super) fn wait_for(&mut self, prefix: &str, limit: Duration) -> (Instant, String) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return (at, line);
                    }
                }
                Err(_) => panic!("no {prefix} line within {limit:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Tells it to stop and returns every line it wrote.
    pub(super) fn finish(mut self) -> Vec<String> {
        std::fs::write(&self.stop, b"").expect("the stop file");
        let _ = self.child.wait();
        while let Ok((_, line)) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Script {
    /// Tells it to stop, and gives it 5 s to (a script that starts daemons stops them on its
    /// way out) before it is killed.
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, b"");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A zeroconf browser of `kind` in namespace `side`, started (it said `BROWSING`).
pub(super) fn browse(link: &Link, side: char, kind: &str) -> Script {
    let mut script = Script::start(link, side, &format!("browse{kind}"), BROWSER, &[address(side), kind]);
    script.wait_for("BROWSING", Duration::from_secs(20));
    script
}

/// A zeroconf announcer in namespace `side`, registered (it said `REGISTERED`).
pub(super) fn announce(link: &Link, side: char, label: &str, kind: &str, port: &str) -> Script {
    let mut script =
        Script::start(link, side, &format!("announce{kind}"), ANNOUNCER, &[address(side), label, kind, port]);
    script.wait_for("REGISTERED", Duration::from_secs(20));
    script
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_zeroconf), ignore = "python-zeroconf is not installed (python3 -m pip install zeroconf)")]
fn a_zeroconf_browser_sees_a_registered_service_with_its_port_and_sees_it_go() {
    let link = link("na");
    let _files = files(&link);
    let (_broker, log_path) = broker(&link, 'a', &[]);
    let mut browser = browse(&link, 'b', "_web._tcp");
    let registered = Instant::now();
    let id = ask(&link, 'a', &["register web 8080 path=/ version=2"]).remove(0);
    assert_eq!(id.len(), 36, "an id: {id:?}\n{}", log(&log_path));
    let (seen, found) = browser.wait_for("FOUND", Duration::from_secs(10));
    assert_eq!(
        found, "FOUND 10-98-0-1:8080._web._tcp.local. 8080 10.98.0.1 10-98-0-1.makler.local. path=/,version=2",
        "its port, and its metadata as TXT"
    );
    let deregistered = Instant::now();
    assert_eq!(ask(&link, 'a', &[&format!("deregister {id}")]), ["OK"]);
    let (gone_at, gone) = browser.wait_for("GONE", Duration::from_secs(10));
    assert_eq!(gone, "GONE 10-98-0-1:8080._web._tcp.local.");
    // Counted from before the request was sent (a Python process started in the namespace),
    // to when the browser's line was read: the issue asks 2 s for each change; the bound
    // leaves room for a loaded machine, and the figures are printed.
    let (seen, gone) = ((seen - registered).as_secs_f64(), (gone_at - deregistered).as_secs_f64());
    println!("zeroconf saw the registered service after {seen:.2} s, its deregistration after {gone:.2} s");
    assert!(seen < 4.0 && gone < 4.0, "seen after {seen:.2} s, gone after {gone:.2} s");
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_zeroconf), ignore = "python-zeroconf is not installed (python3 -m pip install zeroconf)")]
#[cfg_attr(not(has_dig), ignore = "dig is not installed (apt-get install bind9-dnsutils)")]
fn a_zeroconf_announcement_is_imported_answered_by_query_and_dns_and_gone_after_its_goodbye() {
    let link = link("nb");
    let _files = files(&link);
    let (_broker, log_path) = broker(&link, 'a', &["--mdns-import", "_zc._tcp", "--dns", "10.98.0.1:8600"]);
    let mut announcer = announce(&link, 'b', "zc-web", "_zc._tcp", "9090");
    let query = |request: &str| ask(&link, 'a', &[request]).remove(0);
    wait_until(PATIENCE, "the announced instance is imported", || {
        (query("query zc") == "10.98.0.2:9090").then_some(())
    });
    let dig = Command::new("ip")
        .args(["netns", "exec", &link.ns('a'), "dig", "+short", "@10.98.0.1", "-p", "8600", "_zc._tcp.makler.", "SRV"])
        .output()
        .expect("dig runs");
    let srv = String::from_utf8_lossy(&dig.stdout);
    assert!(srv.split_whitespace().nth(2) == Some("9090"), "SRV: {srv}");
    let instances = ask(&link, 'a', &["instances zc"]).join("\n");
    assert!(instances.contains("10.98.0.2:9090") && instances.contains("v=1"), "its TXT as metadata: {instances}");
    std::fs::write(&announcer.stop, b"").unwrap();
    announcer.wait_for("UNREGISTERED", Duration::from_secs(10));
    wait_until(PATIENCE, "the instance goes after its goodbye", || {
        query("query zc").starts_with("NOT FOUND").then_some(())
    });
    let log = log(&log_path);
    assert!(log.contains("mdns: imported zc 10.98.0.2:9090 (\"zc-web\") v=1"), "its TXT as metadata: {log}");
    assert!(log.contains("mdns: zc 10.98.0.2:9090 left the link"), "{log}");
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_zeroconf), ignore = "python-zeroconf is not installed (python3 -m pip install zeroconf)")]
fn a_name_zeroconf_holds_makes_the_broker_claim_another() {
    let link = link("nc");
    let _files = files(&link);
    // zeroconf on 10.98.0.2 holds the name the broker will want for web 10.98.0.1:8080.
    let _squatter = announce(&link, 'b', "10-98-0-1:8080", "_web._tcp", "9999");
    let (_broker, log_path) = broker(&link, 'a', &[]);
    let mut browser = browse(&link, 'b', "_web._tcp");
    ask(&link, 'a', &["register web 8080"]);
    let (_, found) = browser.wait_for("FOUND 10-98-0-1:8080 (2)", Duration::from_secs(15));
    assert!(found.starts_with("FOUND 10-98-0-1:8080 (2)._web._tcp.local. 8080 10.98.0.1 "), "{found}");
    let log = log(&log_path);
    assert!(log.contains("claiming \"10-98-0-1:8080 (2)\""), "{log}");
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_zeroconf), ignore = "python-zeroconf is not installed (python3 -m pip install zeroconf)")]
fn two_peer_brokers_import_and_advertise_without_loops_and_hand_over() {
    let link = link("nd");
    let _files = files(&link);
    let peers = ["--peers", "10.98.0.1:7000,10.98.0.2:7000", "--mdns-import", "_web._tcp,_zc._tcp"];
    let (mut a, path_a) = broker(&link, 'a', &peers);
    let (mut b, path_b) = broker(&link, 'b', &peers);
    let _announcer = announce(&link, 'b', "zc-web", "_zc._tcp", "9090");
    let web = browse(&link, 'b', "_web._tcp");
    let zc = browse(&link, 'a', "_zc._tcp");
    // Four instances registered at broker a, replicated to b; each advertised by its owner.
    let ports = ["8080", "8081", "8082", "8083"];
    let requests: Vec<String> = ports.iter().map(|p| format!("register web {p}")).collect();
    let requests: Vec<&str> = requests.iter().map(String::as_str).collect();
    ask(&link, 'a', &requests);
    let advertised = |port: &str| format!("mdns: advertising web 10.98.0.1:{port} as");
    wait_until(PATIENCE, "every instance advertised and zc imported by both", || {
        let (a, b) = (log(&path_a), log(&path_b));
        let imported = [&a, &b].iter().all(|log| log.contains("mdns: imported zc 10.98.0.2:9090"));
        let all = ports.iter().all(|p| a.contains(&advertised(p)) || b.contains(&advertised(p)));
        (imported && all).then_some(())
    });
    // Time for a loop to show, were there one: a re-import, a second advertiser, a rename.
    std::thread::sleep(Duration::from_secs(3));
    let (web, zc) = (web.finish(), zc.finish());
    let (log_a, log_b) = (log(&path_a), log(&path_b));
    for port in ports {
        let by = [&log_a, &log_b].iter().filter(|log| log.contains(&advertised(port))).count();
        assert_eq!(by, 1, "{port} advertised by one broker, its owner\n{log_a}\n{log_b}");
    }
    let expected: Vec<String> = ports.iter().map(|p| format!("10-98-0-1:{p}._web._tcp.local.")).collect();
    assert_eq!(web.last().map(String::as_str), Some(&*format!("NAMES {}", expected.join(" "))), "{web:?}");
    assert_eq!(
        zc.last().map(String::as_str),
        Some("NAMES zc-web._zc._tcp.local."),
        "nothing imported is advertised back"
    );
    for log in [&log_a, &log_b] {
        assert!(!log.contains("mdns: imported web"), "nothing makler advertises is imported: {log}");
        assert!(!log.contains("claiming"), "no name conflict between the brokers: {log}");
    }
    for side in ['a', 'b'] {
        let answers = ask(&link, side, &["query web", "query zc"]);
        let mut web: Vec<&str> = answers[0].split(' ').collect();
        web.sort_unstable();
        assert_eq!(web, ["10.98.0.1:8080", "10.98.0.1:8081", "10.98.0.1:8082", "10.98.0.1:8083"], "at {side}");
        assert_eq!(answers[1], "10.98.0.2:9090", "at {side}");
    }
    // A broker that stops says goodbye for what it advertised and bye to its peer, which then
    // owns everything and advertises it.
    let b_advertises = ports.iter().any(|p| log_b.contains(&advertised(p)));
    let (stopping, survivor) = if b_advertises { (&mut b, &path_a) } else { (&mut a, &path_b) };
    assert!(stopping.terminate().success());
    wait_until(PATIENCE, "the survivor advertises every instance", || {
        let log = log(survivor);
        ports.iter().all(|p| log.contains(&advertised(p))).then_some(())
    });
}

/// `--mdns` on an address no interface has: its network (netmask) cannot be read, and a
/// responder that took every source would reflect traffic for anyone who can reach port 5353,
/// so the broker refuses to start, before `listening`, saying why, with exit code 1.
#[test]
fn mdns_refuses_to_start_when_the_interfaces_network_is_unknown() {
    let nowhere: std::net::Ipv4Addr = "198.51.100.77".parse().unwrap();
    assert_eq!(makler::mdns::socket::link_network(nowhere), None, "no interface here has {nowhere}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_makler-broker"))
        .args(["--listen", "127.0.0.1:0", "--no-multicast", "--mdns", "198.51.100.77"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A broker that started anyway would run until killed: it fails the test, not hangs it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the broker started with --mdns on an unknown network");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("listening"), "it never listened: {stdout}");
    assert!(
        stderr.contains(
            "makler-broker: cannot use mDNS on 198.51.100.77: no interface has that address (its netmask is unknown)"
        ),
        "{stderr}"
    );
}
