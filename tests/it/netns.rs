//! Across hosts: three network namespaces on one bridge (made here, deleted when done). Zero
//! configuration (a broker, an announcing server and a client, each multicasting on its own
//! interface), and redundant brokers on two hosts (one catching up from the other, with
//! `--peers` and by finding each other on the group). Needs root (ignored, saying so,
//! otherwise).

use std::process::Command;

use crate::common::PATIENCE;
use crate::common::{Process, wait_until};

/// The namespaces of one test: `mk<pid><tag>br` holds the bridge, `mk<pid><tag>h1..3` the hosts
/// 10.99.0.1..3. Dropping it deletes them all, and with them their interfaces.
struct Lan {
    prefix: String,
}

impl Lan {
    fn host(&self, i: u8) -> String {
        format!("{}h{i}", self.prefix)
    }

    fn create(tag: &str) -> Result<Lan, String> {
        let lan = Lan { prefix: format!("mk{}{tag}", std::process::id()) };
        let bridge = format!("{}br", lan.prefix);
        let mut steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), bridge.clone()],
            vec![
                "-n".into(),
                bridge.clone(),
                "link".into(),
                "add".into(),
                "br0".into(),
                "type".into(),
                "bridge".into(),
                "mcast_snooping".into(),
                "0".into(),
            ],
            vec!["-n".into(), bridge.clone(), "link".into(), "set".into(), "br0".into(), "up".into()],
        ];
        for i in 1..=3u8 {
            let host = lan.host(i);
            let port = format!("p{i}");
            let run = |args: &str| -> Vec<String> { args.split(' ').map(str::to_owned).collect() };
            steps.push(run(&format!("netns add {host}")));
            steps.push(run(&format!("-n {host} link add eth0 type veth peer name {port} netns {bridge}")));
            steps.push(run(&format!("-n {bridge} link set {port} master br0 up")));
            steps.push(run(&format!("-n {host} addr add 10.99.0.{i}/24 dev eth0")));
            steps.push(run(&format!("-n {host} link set eth0 up")));
            steps.push(run(&format!("-n {host} link set lo up")));
            steps.push(run(&format!("-n {host} route add 224.0.0.0/4 dev eth0")));
        }
        for step in steps {
            let output = Command::new("ip").args(&step).output().map_err(|e| format!("cannot run ip: {e}"))?;
            if !output.status.success() {
                return Err(format!("ip {}: {}", step.join(" "), String::from_utf8_lossy(&output.stderr).trim()));
            }
        }
        Ok(lan)
    }

    /// Starts `program` in host `i`.
    fn start(&self, i: u8, program: &str, args: &[&str]) -> Process {
        let host = self.host(i);
        let mut all = vec!["netns", "exec", host.as_str(), program];
        all.extend_from_slice(args);
        Process::start("ip", &all)
    }

    /// Runs `makler-client` in host `i` to completion: (exit code, stdout, stderr).
    fn client(&self, i: u8, args: &[&str]) -> (Option<i32>, String, String) {
        self.run(i, env!("CARGO_BIN_EXE_makler-client"), args)
    }

    /// Runs `program` in host `i` to completion: (exit code, stdout, stderr).
    fn run(&self, i: u8, program: &str, args: &[&str]) -> (Option<i32>, String, String) {
        let output =
            Command::new("ip").args(["netns", "exec", &self.host(i), program]).args(args).output().expect("ip runs");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (output.status.code(), text(output.stdout), text(output.stderr))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for name in [format!("{}br", self.prefix), self.host(1), self.host(2), self.host(3)] {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// The three hosts.
#[track_caller]
fn lan(tag: &str) -> Lan {
    Lan::create(tag).unwrap_or_else(|e| panic!("cannot make network namespaces here: {e}"))
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
fn broker_server_and_client_on_three_hosts_find_each_other() {
    let lan = lan("z");
    let group = "239.255.77.1:7077";
    let _broker = lan.start(
        1,
        env!("CARGO_BIN_EXE_makler-broker"),
        &["--listen", "10.99.0.1:7000", "--multicast", group, "--multicast-if", "10.99.0.1", "--quiet"],
    );
    let mut server = lan.start(
        2,
        env!("CARGO_BIN_EXE_makler-server"),
        &[
            "--service",
            "upper",
            "--listen",
            "10.99.0.2:0",
            "--announce",
            "--announce-interval",
            "0.5",
            "--multicast",
            group,
            "--multicast-if",
            "10.99.0.2",
        ],
    );
    assert_eq!(server.addr("tcp").ip().to_string(), "10.99.0.2");

    // The client on the third host knows no address: it finds the broker on the group, the
    // broker knows the server from its announcements.
    let client = ["--multicast", group, "--multicast-if", "10.99.0.3", "upper", "across hosts"];
    let answer = wait_until(PATIENCE, "the client gets an answer", || {
        let (code, out, _) = lan.client(3, &client);
        (code == Some(0)).then_some(out)
    });
    assert_eq!(answer, "ACROSS HOSTS\n");

    // The server's goodbye crosses the bridge too.
    assert!(server.terminate().success());
    let (code, _, err) = lan.client(3, &client);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("is not registered at broker 10.99.0.1:7000"), "{err}");
}

/// A server on host 2 registers by unicast at the broker on host 1 only; a second broker starts
/// on host 3 afterwards, catches up from the first, and answers a client that asks it alone.
fn second_broker_catches_up(tag: &str, peers: bool) {
    let lan = lan(tag);
    let group = "239.255.77.1:7077";
    let broker = |host: u8| {
        let listen = format!("10.99.0.{host}:7000");
        let interface = format!("10.99.0.{host}");
        let mut args =
            vec!["--listen".to_owned(), listen, "--quiet".to_owned(), "--multicast".to_owned(), group.to_owned()];
        args.extend(["--multicast-if".to_owned(), interface]);
        if peers {
            args.extend(["--peers".to_owned(), "10.99.0.1:7000,10.99.0.3:7000".to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lan.start(host, env!("CARGO_BIN_EXE_makler-broker"), &args)
    };
    let _first = broker(1);
    let server = lan.start(
        2,
        env!("CARGO_BIN_EXE_makler-server"),
        &["--service", "upper", "--listen", "10.99.0.2:0", "--broker", "10.99.0.1:7000", "--no-multicast"],
    );
    let at_first = ["--broker", "10.99.0.1:7000", "--no-multicast", "upper", "first"];
    wait_until(PATIENCE, "the first broker knows the server", || (lan.client(2, &at_first).0 == Some(0)).then_some(()));

    let _second = broker(3);
    let at_second = ["--broker", "10.99.0.3:7000", "--no-multicast", "upper", "second"];
    let answer = wait_until(PATIENCE, "the second broker answers", || {
        let (code, out, _) = lan.client(3, &at_second);
        (code == Some(0)).then_some(out)
    });
    assert_eq!(answer, "SECOND\n");
    drop(server);
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
fn a_second_broker_on_another_host_catches_up_and_answers() {
    second_broker_catches_up("p", true);
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
fn brokers_on_one_group_find_each_other_without_peers_across_hosts() {
    second_broker_catches_up("d", false);
}

/// Two sites on separate multicast groups, connected only by a bridge: the server on host 2
/// announces itself at site 1 (broker on host 1); the broker of site 2 (host 3) has
/// `--bridge` to site 1's broker, and a client at site 2 that asks its own broker reaches the
/// server. Neither broker takes the other as a peer: site 2's table stays empty.
#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
fn two_sites_connected_only_by_a_bridge() {
    let lan = lan("b");
    let site_broker = |host: u8, group: &str, extra: &[&str]| {
        let (listen, interface) = (format!("10.99.0.{host}:7000"), format!("10.99.0.{host}"));
        let mut args = vec!["--listen", listen.as_str(), "--quiet", "--multicast", group];
        args.extend(["--multicast-if", interface.as_str()]);
        args.extend_from_slice(extra);
        lan.start(host, env!("CARGO_BIN_EXE_makler-broker"), &args)
    };
    let (site1, site2) = ("239.255.77.1:7077", "239.255.77.2:7077");
    let _broker1 = site_broker(1, site1, &[]);
    let _broker2 = site_broker(3, site2, &["--bridge", "10.99.0.1:7000"]);
    let _server = lan.start(
        2,
        env!("CARGO_BIN_EXE_makler-server"),
        &[
            "--service",
            "upper",
            "--listen",
            "10.99.0.2:0",
            "--announce",
            "--multicast",
            site1,
            "--multicast-if",
            "10.99.0.2",
        ],
    );
    let at_site2 = ["--broker", "10.99.0.3:7000", "--no-multicast", "upper", "across sites"];
    let answer = wait_until(PATIENCE, "a client at site 2 reaches the server at site 1", || {
        let (code, out, _) = lan.client(3, &at_site2);
        (code == Some(0)).then_some(out)
    });
    assert_eq!(answer, "ACROSS SITES\n");
    let (code, stats, err) =
        lan.run(3, env!("CARGO_BIN_EXE_makler"), &["--broker", "10.99.0.3:7000", "stats", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["instances"], 0, "site 2 stores nothing: {stats}");
    assert_eq!(stats["peer_count"], 0, "the sites are not peers: {stats}");
    assert_eq!(stats["bridges"][0]["addr"], "10.99.0.1:7000", "{stats}");
    assert_eq!(stats["bridges"][0]["up"], true, "{stats}");
    assert!(stats["bridged_found"].as_u64() >= Some(1), "{stats}");
}
