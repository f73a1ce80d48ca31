//! Zero configuration on loopback: servers announce themselves, brokers hear them, clients find
//! the brokers, all over a multicast group on the loopback interface. Each test uses a group
//! port of its own, since tests run side by side.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::PATIENCE;
use crate::common::{Process, Udp, client, listed, stat, wait_until};

/// A group port no other test uses: a port the system just handed out for UDP.
fn group() -> String {
    let port = UdpSocket::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
    format!("239.255.77.1:{port}")
}

fn broker(group: &str) -> Process {
    Process::start(env!("CARGO_BIN_EXE_makler-broker"), &["--listen", "127.0.0.1:0", "--quiet", "--multicast", group])
}

fn announcing_server(service: &str, group: &str, interval: &str) -> Process {
    Process::start(
        env!("CARGO_BIN_EXE_makler-server"),
        &["--service", service, "--announce", "--announce-interval", interval, "--multicast", group],
    )
}

#[test]
fn a_broker_started_later_finds_an_announced_server_within_one_interval() {
    let group = group();
    let interval = Duration::from_millis(500);
    let server = announcing_server("echo", &group, "0.5");
    let broker = broker(&group);
    let started = Instant::now();
    let udp = Udp::new(broker.addr("udp"));
    // The first announcement the broker hears lists the server: counted, then asked (in that
    // order, so that a reply to the query comes after the announcement was taken). The schedule
    // (one every interval) is asserted on its own, in `client::announce_schedule`'s doc test.
    wait_until(Duration::from_secs(30), "the broker hears an announcement", || {
        (stat(&udp, "announcements") >= 1).then_some(())
    });
    assert_eq!(listed(&udp, "echo"), [server.addr("tcp")], "listed at the first announcement");
    let took = started.elapsed();
    eprintln!("listed after {took:?}");
    // Ten intervals, so that a loaded machine running a debug build meets it: this catches a
    // broker that waits for something else than the next announcement.
    assert!(took <= interval * 10, "took {took:?}");
}

#[test]
fn a_goodbye_removes_the_server_at_once_and_a_client_needs_no_broker_address() {
    let group = group();
    let broker = broker(&group);
    let udp = Udp::new(broker.addr("udp"));
    let mut upper = announcing_server("upper", &group, "1.5");
    wait_until(PATIENCE, "the broker lists the server", || {
        (listed(&udp, "upper") == [upper.addr("tcp")]).then_some(())
    });

    // The client finds the broker on the group and calls the server.
    let (code, out, err) = client(&["--multicast", &group, "upper", "hello"], "");
    assert_eq!((code, out.as_str()), (Some(0), "HELLO\n"), "{err}");

    assert!(upper.terminate().success());
    // The goodbye was sent before the exit; the broker takes it from the group socket, which
    // it may serve after this query's socket on a busy machine. Waited for patiently: had the
    // goodbye been lost, the TTL (5 s) would remove it too, and count an expiry.
    wait_until(Duration::from_secs(30), "the goodbye removes the server", || {
        (udp.text("query upper") == "NOT FOUND").then_some(())
    });
    assert_eq!(stat(&udp, "expired"), 0);
}

#[test]
fn a_server_without_a_broker_address_discovers_and_registers() {
    let group = group();
    let broker = broker(&group);
    let udp = Udp::new(broker.addr("udp"));
    let server = Process::start(env!("CARGO_BIN_EXE_makler-server"), &["--service", "time", "--multicast", &group]);
    wait_until(PATIENCE, "the server registered", || (listed(&udp, "time") == [server.addr("tcp")]).then_some(()));
    assert_eq!(stat(&udp, "announcements"), 0, "registered over unicast, not announced");
}

#[test]
fn with_no_broker_on_the_group_the_client_says_so() {
    let group = group();
    let (code, _, err) = client(&["--multicast", &group, "echo", "x"], "");
    assert_eq!(code, Some(4));
    assert!(err.contains(&format!("no broker answered on multicast group {group} on interface 127.0.0.1")), "{err}");
    assert!(err.contains("brokers may require a key"), "{err}");
}

#[test]
fn malformed_and_foreign_datagrams_on_the_group_change_nothing_and_are_counted() {
    let group = group();
    let broker = broker(&group);
    let udp = Udp::new(broker.addr("udp"));
    // The broker hears its own hello on the group, and ignores it.
    wait_until(PATIENCE, "the broker's own hello is counted", || (stat(&udp, "multicast_ignored") == 1).then_some(()));
    let ignored_before = 1;

    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&sender).set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    let to: SocketAddr = group.parse().unwrap();
    let garbage: [&[u8]; 5] = [
        b"query echo",                                                 // text has no place on the group
        &[0x81, 0x00, 0x09],                                           // an unknown message
        &[0x82, 0x00, 0x00],                                           // another version
        &[0x81, 0x00, 0x00, 0x01],                                     // a truncated announcement
        &[0x81, 0x00, 0x00, 0x01, 0x03, b'b', b'/', b'd', 0x00, 0x50], // announces "b/d": a bad name
    ];
    for datagram in garbage {
        sender.send_to(datagram, to).unwrap();
    }
    wait_until(PATIENCE, "all five are counted", || {
        (stat(&udp, "multicast_ignored") == ignored_before + 5).then_some(())
    });
    assert_eq!(stat(&udp, "instances"), 0);
    assert_eq!(stat(&udp, "rejected"), 0, "nothing on the group is answered with an error");
}

#[test]
fn a_balancer_without_a_broker_address_announces_itself_while_it_has_backends() {
    let group = group();
    let broker = broker(&group);
    let udp = Udp::new(broker.addr("udp"));
    let balancer = Process::start(
        env!("CARGO_BIN_EXE_makler-balancer"),
        &["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--service", "web", "--multicast", &group, "--quiet"],
    );
    assert_eq!(udp.text("query web"), "NOT FOUND", "no backend, no announcement");
    let control = balancer.addr("udp").to_string();
    let mut backend = Process::start(
        env!("CARGO_BIN_EXE_makler-server"),
        &["--service", "http", "--broker", &control, "--register-as", "web"],
    );
    wait_until(PATIENCE, "the broker hears of the balancer", || {
        (listed(&udp, "web") == [balancer.addr("tcp")]).then_some(())
    });
    assert!(backend.terminate().success());
    // The last backend gone, the balancer says goodbye.
    wait_until(PATIENCE, "the broker drops the balancer", || (udp.text("query web") == "NOT FOUND").then_some(()));
    assert_eq!(stat(&udp, "expired"), 0, "dropped by the goodbye, not by expiry");
}

fn broker_of(group: &str, cluster: &str) -> Process {
    Process::start(
        env!("CARGO_BIN_EXE_makler-broker"),
        &["--listen", "127.0.0.1:0", "--quiet", "--multicast", group, "--cluster", cluster],
    )
}

#[test]
fn brokers_of_different_clusters_on_one_group_do_not_peer() {
    let group = group();
    let (prod_a, prod_b, test) = (broker_of(&group, "prod"), broker_of(&group, "prod"), broker_of(&group, "test"));
    let (a, b, t) = (Udp::new(prod_a.addr("udp")), Udp::new(prod_b.addr("udp")), Udp::new(test.addr("udp")));
    // Hellos go out every 2 s: within a few, each has heard the others.
    wait_until(PATIENCE, "the prod brokers peer and hear the stranger", || {
        let seen = |udp: &Udp| udp.text("stats").contains(" peers_up=1/1 ") && stat(udp, "foreign_hellos") >= 1;
        (seen(&a) && seen(&b)).then_some(())
    });
    wait_until(PATIENCE, "the test broker hears both prod brokers", || (stat(&t, "foreign_hellos") >= 2).then_some(()));
    let stats = t.text("stats");
    assert!(stats.contains(" peers_up=0/0 ") && !stats.contains("\npeer "), "{stats}");
    // A registration at the stranger stays there; one at prod reaches prod only.
    assert_eq!(t.text("register echo 4000").len(), 36);
    assert_eq!(a.text("register web 8080").len(), 36);
    wait_until(PATIENCE, "prod replicates", || (listed(&b, "web").len() == 1).then_some(()));
    assert_eq!((b.text("query echo"), t.text("query web")), ("NOT FOUND".into(), "NOT FOUND".into()));
    let stats = a.text("stats");
    assert!(!stats.contains(&test.addr("udp").to_string()), "the stranger is no peer: {stats}");
}

#[test]
fn an_announced_servers_metadata_reaches_the_broker_and_older_brokers_still_get_an_announcement() {
    use makler::protocol::{Multicast, binary};
    let group = group();
    let to: std::net::SocketAddrV4 = group.parse().unwrap();
    // A listener on the group, as an older broker would hear it.
    let listener =
        makler::multicast::group_member(SocketAddr::from(([0, 0, 0, 0], to.port())), *to.ip(), Ipv4Addr::LOCALHOST)
            .unwrap();
    let listener: UdpSocket = listener.into();
    listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let broker = broker(&group);
    let udp = Udp::new(broker.addr("udp"));
    let server = Process::start(
        env!("CARGO_BIN_EXE_makler-server"),
        &["--service", "echo", "--announce", "--announce-interval", "0.5", "--multicast", &group, "--meta", "path=/"],
    );
    let endpoint = server.addr("tcp").to_string();
    wait_until(PATIENCE, "the broker lists the pairs", || {
        let reply = udp.text("instances echo");
        reply.lines().find(|l| l.starts_with(&format!("instance {endpoint} ")) && l.ends_with(" path=/")).map(drop)
    });
    // Each announcement goes with its pairs, then as the plain form older brokers take.
    let mut kinds = Vec::new();
    let mut buf = [0u8; 2048];
    while kinds.len() < 4 {
        let (n, _) = listener.recv_from(&mut buf).expect("the server's announcements on the group");
        match binary::decode::<Multicast<'_>>(&buf[..n]).map(|f| f.body) {
            Ok(Multicast::AnnounceMeta { meta, port, .. }) if port == server.addr("tcp").port() => {
                assert_eq!(meta, [("path", "/")]);
                kinds.push("meta");
            }
            Ok(Multicast::AnnounceCommitted { port, .. }) if port == server.addr("tcp").port() => kinds.push("plain"),
            _ => {}
        }
    }
    let first = kinds.iter().position(|k| *k == "meta").unwrap();
    assert_eq!(kinds[first + 1], "plain", "{kinds:?}");
}
