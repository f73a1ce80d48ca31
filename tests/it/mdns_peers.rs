//! makler's mDNS responder and browser (`makler::mdns`) against a real peer: python-zeroconf
//! (PyPI `zeroconf`, what Home Assistant uses), across two network namespaces joined by a veth
//! pair (made here, deleted when done; all traffic stays inside them, and every multicast
//! socket names its interface).
//!
//! The responder and browser are not wired to the broker yet, so this test runs them itself:
//! it starts its own binary again inside a namespace (`ip netns exec … <this test binary>
//! mdns_peers::peer_helper`), where the helper drives the state machine over a real socket on
//! port 5353 and prints what it saw. Needs root and `zeroconf` (ignored, saying so, otherwise).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use makler::mdns::{self, Advert, Browser, BrowserConfig, BrowserEvent, Responder, ResponderConfig};

/// Two namespaces, `mk<pid><tag>a` (10.98.0.1) and `…b` (10.98.0.2), one veth pair between
/// them. Dropping it deletes both, and the pair with them.
pub(crate) struct Link {
    prefix: String,
}

impl Link {
    pub(crate) fn ns(&self, side: char) -> String {
        format!("{}{side}", self.prefix)
    }

    fn create(tag: &str) -> Result<Link, String> {
        let link = Link { prefix: format!("mk{}{tag}", std::process::id()) };
        let (a, b) = (link.ns('a'), link.ns('b'));
        let mut steps = vec![format!("netns add {a}"), format!("netns add {b}")];
        steps.push(format!("-n {a} link add eth0 type veth peer name eth0 netns {b}"));
        for (ns, i) in [(&a, 1), (&b, 2)] {
            steps.push(format!("-n {ns} addr add 10.98.0.{i}/24 dev eth0"));
            steps.push(format!("-n {ns} link set eth0 up multicast on"));
            steps.push(format!("-n {ns} link set lo up"));
            steps.push(format!("-n {ns} route add 224.0.0.0/4 dev eth0"));
        }
        for step in steps {
            let output =
                Command::new("ip").args(step.split(' ')).output().map_err(|e| format!("cannot run ip: {e}"))?;
            if !output.status.success() {
                return Err(format!("ip {step}: {}", String::from_utf8_lossy(&output.stderr).trim()));
            }
        }
        Ok(link)
    }

    /// Starts `program` with `args` in namespace `side`, its output piped.
    pub(crate) fn spawn(&self, side: char, program: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(side), program])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip runs")
    }

    /// Starts this test binary's [`peer_helper`] in namespace `side` as `role`.
    fn helper(&self, side: char, role: &str) -> std::process::Child {
        let exe = std::env::current_exe().expect("the test binary's path");
        let exe = exe.to_str().expect("a UTF-8 path");
        let addr = if side == 'a' { "10.98.0.1" } else { "10.98.0.2" };
        let args = ["mdns_peers::peer_helper", "--exact", "--ignored", "--nocapture", "--test-threads=1"];
        self.spawn(side, exe, &args, &[("MAKLER_MDNS_ROLE", role), ("MAKLER_MDNS_ADDR", addr)])
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for side in ['a', 'b'] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(side)]).output();
        }
    }
}

#[track_caller]
pub(crate) fn link(tag: &str) -> Link {
    Link::create(tag).unwrap_or_else(|e| panic!("cannot make network namespaces here: {e}"))
}

/// The line that has `word`, from `word` on (libtest writes `test … ... ` before a helper's
/// first line).
pub(crate) fn line<'a>(out: &'a str, word: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.find(word).map(|at| &l[at..]))
}

/// Reads `child`'s output up to the line with `word` (taking the pipe; what follows is left
/// to `wait_with_output`), and returns what it read; panics if the output ends first.
fn ready(child: &mut std::process::Child, word: &str) -> String {
    use std::io::Read;
    let mut stdout = child.stdout.take().expect("piped");
    let (mut read, mut byte) = (Vec::new(), [0u8; 1]);
    // A byte at a time, so that nothing after the line is taken from the pipe.
    while !String::from_utf8_lossy(&read).lines().any(|l| l.contains(word)) || read.last() != Some(&b'\n') {
        match stdout.read(&mut byte) {
            Ok(1) => read.push(byte[0]),
            _ => panic!("no {word} from the peer: {}", String::from_utf8_lossy(&read)),
        }
    }
    child.stdout = Some(stdout);
    String::from_utf8_lossy(&read).into_owned()
}

pub(crate) fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A python-zeroconf browser of `_web._tcp` on 10.98.0.2: prints `READY` once it browses (its
/// times count from then), `FOUND <name> <port> <addresses> <server> <properties>` once it
/// resolved an instance, `GONE <name>` when it left; stops after a GONE or 30 s.
const ZEROCONF_BROWSER: &str = r#"
import time
from zeroconf import Zeroconf, ServiceBrowser, ServiceStateChange, IPVersion
zc = Zeroconf(interfaces=["10.98.0.2"], ip_version=IPVersion.V4Only)
added, gone = [], []
def on_change(zeroconf, service_type, name, state_change):
    if state_change is ServiceStateChange.Added:
        added.append(name)
    elif state_change is ServiceStateChange.Removed:
        gone.append(name)
ServiceBrowser(zc, "_web._tcp.local.", handlers=[on_change])
print("READY", flush=True)
began = time.time()
start, resolved = time.time(), set()
while time.time() < start + 30 and not gone:
    for name in [n for n in added if n not in resolved]:
        info = zc.get_service_info("_web._tcp.local.", name, timeout=3000)
        if info:
            props = ",".join(sorted(k.decode() + "=" + (v or b"").decode() for k, v in info.properties.items()))
            print("FOUND", name, info.port, ",".join(info.parsed_addresses()), info.server, props, flush=True)
            print("AFTER-ADD %.2f" % (time.time() - began), flush=True)
            resolved.add(name)
    time.sleep(0.05)
if gone:
    print("AFTER-BYE %.2f" % (time.time() - began), flush=True)
for name in gone:
    print("GONE", name, flush=True)
zc.close()
"#;

/// A python-zeroconf announcer on 10.98.0.1: `zc-web._zc._tcp.local.` on port 9090 with
/// `v=1`, for 3 s, then its goodbye.
const ZEROCONF_ANNOUNCER: &str = r#"
import socket, time
from zeroconf import Zeroconf, ServiceInfo, IPVersion
zc = Zeroconf(interfaces=["10.98.0.1"], ip_version=IPVersion.V4Only)
info = ServiceInfo("_zc._tcp.local.", "zc-web._zc._tcp.local.", addresses=[socket.inet_aton("10.98.0.1")],
                   port=9090, properties={"v": "1"}, server="zc-host.local.")
zc.register_service(info)
print("REGISTERED", flush=True)
time.sleep(3)
zc.unregister_service(info)
time.sleep(0.5)
zc.close()
"#;

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_zeroconf), ignore = "python-zeroconf is not installed (python3 -m pip install zeroconf)")]
fn a_zeroconf_browser_sees_the_responders_instance_come_and_go() {
    let link = link("r");
    let mut browser = link.spawn('b', "python3", &["-c", ZEROCONF_BROWSER], &[]);
    // The responder starts once the browser browses (python takes seconds to start on a loaded
    // machine, and the responder lives 6 s).
    let ready = ready(&mut browser, "READY");
    let responder = link.helper('a', "respond");
    let (browsed, responded) = (browser.wait_with_output().unwrap(), responder.wait_with_output().unwrap());
    let (rest, err) = text(&browsed);
    let out = ready + &rest;
    let (helper_out, helper_err) = text(&responded);
    assert!(responded.status.success(), "the responder: {helper_out}{helper_err}");
    let found = line(&out, "FOUND").unwrap_or_else(|| panic!("no FOUND: {out}{err}"));
    assert_eq!(found, "FOUND 10-98-0-1:8080._web._tcp.local. 8080 10.98.0.1 10-98-0-1.makler.local. path=/,v=1");
    assert_eq!(line(&out, "GONE"), Some("GONE 10-98-0-1:8080._web._tcp.local."), "{out}{err}");
    // How soon the browser saw each change, counted from when it was ready (the responder
    // starts after that, and says goodbye 4 s after its own start; the browser checks every
    // 50 ms). The issue asks 2 s, asserted on injected time in `src/mdns/responder_tests.rs`
    // and `browser_tests.rs`; the bound here is ten times that, for a loaded machine (it
    // includes the responder's start), and the figures are printed.
    let at = |what: &str| -> f64 {
        let text = line(&out, what).unwrap_or_else(|| panic!("no {what}: {out}"));
        text.rsplit(' ').next().and_then(|t| t.parse().ok()).expect("seconds")
    };
    let (found, gone) = (at("AFTER-ADD"), at("AFTER-BYE") - 4.0);
    println!("a zeroconf browser saw the instance {found:.2} s after it was added, its goodbye {gone:.2} s after");
    assert!(found < 20.0 && gone < 20.0, "found after {found:.2} s, gone after {gone:.2} s: {out}");
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_zeroconf), ignore = "python-zeroconf is not installed (python3 -m pip install zeroconf)")]
fn a_zeroconf_announcement_is_found_by_the_browser_and_gone_after_its_goodbye() {
    let link = link("i");
    let mut browser = link.helper('b', "browse");
    // The announcer starts once the browser listens; the browser waits for the goodbye (the
    // announcer's python may take seconds to start on a loaded machine).
    let ready = ready(&mut browser, "READY");
    let announcer = link.spawn('a', "python3", &["-c", ZEROCONF_ANNOUNCER], &[]);
    let (browsed, announced) = (browser.wait_with_output().unwrap(), announcer.wait_with_output().unwrap());
    let (rest, err) = text(&browsed);
    let out = ready + &rest;
    let (zc_out, zc_err) = text(&announced);
    assert!(announced.status.success(), "the announcer: {zc_out}{zc_err}");
    let found = line(&out, "FOUND").unwrap_or_else(|| panic!("no FOUND: {out}{err}"));
    assert_eq!(found, "FOUND _zc._tcp zc-web zc-host.local. 9090 10.98.0.1 v=1");
    assert_eq!(line(&out, "GONE"), Some("GONE _zc._tcp zc-web"), "{out}{err}");
}

/// A python-zeroconf announcer on 10.98.0.2 that holds the name the responder will want,
/// `10-98-0-1:8080._web._tcp.local.` (port 9999, host `other.local.`), for 8 s.
const ZEROCONF_SQUATTER: &str = r#"
import socket, time
from zeroconf import Zeroconf, ServiceInfo, IPVersion
zc = Zeroconf(interfaces=["10.98.0.2"], ip_version=IPVersion.V4Only)
info = ServiceInfo("_web._tcp.local.", "10-98-0-1:8080._web._tcp.local.", addresses=[socket.inet_aton("10.98.0.2")],
                   port=9999, properties={"who": "zeroconf"}, server="other.local.")
zc.register_service(info, allow_name_change=False)
print("REGISTERED", flush=True)
time.sleep(8)
zc.unregister_service(info)
zc.close()
"#;

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_zeroconf), ignore = "python-zeroconf is not installed (python3 -m pip install zeroconf)")]
fn a_name_that_zeroconf_holds_makes_the_responder_rename() {
    use std::io::BufRead;
    let link = link("c");
    let mut squatter = link.spawn('b', "python3", &["-c", ZEROCONF_SQUATTER], &[]);
    let mut lines = std::io::BufReader::new(squatter.stdout.take().expect("piped"));
    let mut first = String::new();
    lines.read_line(&mut first).expect("the announcer's first line");
    assert_eq!(first.trim(), "REGISTERED");
    let responder = link.helper('a', "respond");
    let responded = responder.wait_with_output().unwrap();
    let _ = squatter.kill();
    let _ = squatter.wait();
    let (out, err) = text(&responded);
    assert!(responded.status.success(), "{out}{err}");
    let renamed = line(&out, "EVENT Renamed").unwrap_or_else(|| panic!("no rename: {out}{err}"));
    assert!(renamed.contains(r#"label: "10-98-0-1:8080 (2)""#), "{renamed}");
    let announced = line(&out, "EVENT Announced").unwrap_or_else(|| panic!("never announced: {out}{err}"));
    assert!(announced.contains(r#"label: "10-98-0-1:8080 (2)""#), "{announced}");
}

/// Runs inside a namespace for the tests above (see the module documentation); does nothing
/// elsewhere.
#[test]
#[ignore = "run by the other tests of this module, inside a network namespace"]
fn peer_helper() {
    let (Ok(role), Ok(addr)) = (std::env::var("MAKLER_MDNS_ROLE"), std::env::var("MAKLER_MDNS_ADDR")) else { return };
    let addr: Ipv4Addr = addr.parse().expect("an IPv4 address");
    let socket = mdns_socket(addr);
    match role.as_str() {
        "respond" => respond(&socket, addr),
        "browse" => browse(&socket),
        other => panic!("no role {other}"),
    }
}

/// The mDNS socket on `ifaddr`'s interface: port 5353, the group joined there, multicast sent
/// there, its own datagrams not looped back.
fn mdns_socket(ifaddr: Ipv4Addr) -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket.bind(&SocketAddr::from(([0, 0, 0, 0], mdns::PORT)).into()).unwrap();
    socket.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &ifaddr).unwrap();
    socket.set_multicast_if_v4(&ifaddr).unwrap();
    socket.set_multicast_all_v4(false).unwrap();
    socket.set_multicast_loop_v4(false).unwrap();
    socket.set_multicast_ttl_v4(255).unwrap();
    socket.into()
}

/// Receives for up to `wait` (at least 1 ms), handing a datagram to `input`.
fn receive(socket: &UdpSocket, wait: Duration, input: impl FnOnce(SocketAddr, &[u8])) {
    let mut buf = [0u8; 9000];
    socket.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).unwrap();
    if let Ok((len, from)) = socket.recv_from(&mut buf) {
        input(from, &buf[..len]);
    }
}

/// Advertises `web` at `addr`:8080 for 4 s, then says goodbye.
fn respond(socket: &UdpSocket, addr: Ipv4Addr) {
    let start = Instant::now();
    let mut responder = Responder::new(ResponderConfig { group: mdns::GROUP_V4, seed: 42 });
    let endpoint = SocketAddr::from((addr, 8080));
    let txt = vec![b"v=1".to_vec(), b"path=/".to_vec()];
    responder.add(start, Advert { service: "web".to_owned(), endpoint, txt });
    let mut out = Vec::new();
    let mut removed = false;
    while start.elapsed() < Duration::from_secs(6) {
        if !removed && start.elapsed() > Duration::from_secs(4) {
            responder.remove(Instant::now(), "web", endpoint);
            removed = true;
        }
        let wait =
            responder.poll_timeout().map_or(Duration::from_millis(50), |t| t.saturating_duration_since(Instant::now()));
        receive(socket, wait.min(Duration::from_millis(50)), |from, bytes| {
            responder.handle_datagram(Instant::now(), from, bytes)
        });
        let now = Instant::now();
        if responder.poll_timeout().is_some_and(|t| t <= now) {
            responder.handle_timeout(now);
        }
        while let Some(to) = responder.poll_transmit(&mut out) {
            socket.send_to(&out, to).unwrap();
        }
        while let Some(event) = responder.poll_event() {
            println!("EVENT {event:?}");
        }
    }
}

/// Browses `_zc._tcp` for up to 30 s, printing `READY` first, then `FOUND <type> <label>
/// <host> <port> <addresses> <pairs>` and `GONE <type> <label>`; stops after a GONE.
fn browse(socket: &UdpSocket) {
    let start = Instant::now();
    let config = BrowserConfig { group: mdns::GROUP_V4, types: vec!["_zc._tcp".to_owned()], seed: 7 };
    let mut browser = Browser::new(start, config);
    let mut out = Vec::new();
    println!("READY");
    while start.elapsed() < Duration::from_secs(30) {
        let wait =
            browser.poll_timeout().map_or(Duration::from_millis(50), |t| t.saturating_duration_since(Instant::now()));
        receive(socket, wait.min(Duration::from_millis(50)), |from, bytes| {
            browser.handle_datagram(Instant::now(), from, bytes)
        });
        let now = Instant::now();
        if browser.poll_timeout().is_some_and(|t| t <= now) {
            browser.handle_timeout(now);
        }
        while let Some(to) = browser.poll_transmit(&mut out) {
            socket.send_to(&out, to).unwrap();
        }
        while let Some(event) = browser.poll_event() {
            match event {
                BrowserEvent::Found(i) | BrowserEvent::Changed(i) => {
                    let addresses: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
                    let pairs: Vec<String> = i
                        .pairs()
                        .into_iter()
                        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v.unwrap_or_default())))
                        .collect();
                    println!(
                        "FOUND {} {} {} {} {} {}",
                        i.service_type,
                        i.label,
                        i.host,
                        i.port,
                        addresses.join(","),
                        pairs.join(",")
                    );
                }
                BrowserEvent::Gone { service_type, label } => {
                    println!("GONE {service_type} {label}");
                    return;
                }
            }
        }
    }
}
