//! Service metadata end to end: `makler-server --meta` registers with it at one of two peered
//! brokers, both list it, another source's lease on the instance carries its own, bad pairs stop
//! the server at start, and the balancer's control port takes a register carrying a pair
//! (`weight=3`) as it takes any other.

use std::net::{SocketAddr, UdpSocket};

use crate::common::PATIENCE;
use crate::common::{Process, Udp, balancer, server, wait_until};

/// Free UDP ports on loopback, reserved just long enough to read them back.
fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    sockets.iter().map(|s| s.local_addr().unwrap().port()).collect()
}

fn broker_at(port: u16, peers: &str) -> Process {
    let listen = format!("127.0.0.1:{port}");
    let args = ["--listen", listen.as_str(), "--peers", peers, "--no-multicast", "--quiet"];
    Process::start(env!("CARGO_BIN_EXE_makler-broker"), &args)
}

/// The `instances` line of `endpoint` at the broker behind `udp`, once it has one.
fn line_of(udp: &Udp, service: &str, endpoint: &str) -> Option<String> {
    let reply = udp.text(&format!("instances {service}"));
    reply.lines().find(|line| line.starts_with(&format!("instance {endpoint} "))).map(str::to_owned)
}

#[test]
fn a_servers_metadata_reaches_both_brokers_and_bad_pairs_stop_it_at_start() {
    let ports = free_ports(2);
    let addrs: Vec<SocketAddr> = ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
    let peers = format!("{},{}", addrs[0], addrs[1]);
    let _brokers: Vec<Process> = ports.iter().map(|&port| broker_at(port, &peers)).collect();
    let (a, b) = (Udp::new(addrs[0]), Udp::new(addrs[1]));

    let server = server("echo", addrs[0], &["--meta", "path=/", "--meta", "version=2"]);
    let endpoint = server.addr("tcp").to_string();
    for (name, udp) in [("a", &a), ("b", &b)] {
        wait_until(PATIENCE, &format!("broker {name} lists the pairs"), || {
            line_of(udp, "echo", &endpoint).filter(|line| line.ends_with(" check=tcp path=/ version=2"))
        });
    }
    // A register with other pairs from another source: a lease of its own; the instance keeps
    // showing the smallest id's pairs, and the new lease's reach the peer too.
    let udp = Udp::new(addrs[1]);
    let line = format!("register echo {} {} path=/v3", server.addr("tcp").ip(), server.addr("tcp").port());
    assert_eq!(udp.text(&line).len(), 36);
    wait_until(PATIENCE, "broker a holds two leases", || {
        line_of(&a, "echo", &endpoint).filter(|line| line.contains(" leases=2 "))
    });

    // Bad pairs are refused at start, with the rule broken.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_makler-server"))
        .args(["--service", "echo", "--broker", &addrs[0].to_string(), "--meta", "check=1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("metadata key \"check\" is reserved"), "{stderr}");
}

#[test]
fn the_balancers_control_port_takes_a_register_with_a_pair() {
    let balancer = balancer("web", None, &[]);
    let control = Udp::new(balancer.addr("udp"));
    let backend = crate::common::server("http", balancer.addr("udp"), &["--no-register"]);
    let at = backend.addr("tcp");
    let reply = control.text(&format!("register web {} {} weight=3", at.ip(), at.port()));
    assert_eq!(reply.len(), 36, "{reply}");
    wait_until(PATIENCE, "the backend is listed", || {
        control.text("stats").contains(&format!("backend {at} ")).then_some(())
    });
}
