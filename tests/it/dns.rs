//! The broker's DNS face, asked by `dig` (Debian's bind9-dnsutils): a client makler did not
//! write. A test that needs dig is ignored, saying so, where dig is not installed.

use std::net::SocketAddr;
use std::process::Command;

use crate::common::PATIENCE;
use crate::common::{Process, Udp, broker, wait_until};

/// A broker with a DNS face on a free port, and the addresses of both faces.
fn dns_broker(args: &[&str]) -> (Process, Udp, SocketAddr) {
    let mut all = vec!["--dns", "127.0.0.1:0"];
    // Instances registered by hand are not renewed: unless a test is about expiry, they live
    // longer than a slow machine can take over its queries.
    if !args.contains(&"--ttl") {
        all.extend(["--ttl", "120"]);
    }
    all.extend_from_slice(args);
    let process = broker(&all);
    let (udp, dns) = (Udp::new(process.addr("udp")), process.addr("dns"));
    (process, udp, dns)
}

/// Runs dig against `dns` with `args` (dig's own timeout and retries bound it) and returns its
/// output.
#[track_caller]
fn dig(dns: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("dig")
        .arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string(), "+time=5", "+tries=3"])
        .args(args)
        .output()
        .expect("dig runs");
    String::from_utf8(output.stdout).expect("dig writes UTF-8")
}

/// dig's `+short` lines.
#[track_caller]
fn short(dns: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short"];
    all.extend_from_slice(args);
    dig(dns, &all).lines().map(str::to_owned).collect()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// The status, flags and section counts of a full dig answer, e.g.
/// `("NOERROR", "qr aa rd", 3)`.
fn header(output: &str) -> (String, String, usize) {
    let status = output.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("none");
    let flags = output.split(";; flags: ").nth(1).and_then(|s| s.split(';').next()).unwrap_or("");
    let answers = output.split("ANSWER: ").nth(1).and_then(|s| s.split(',').next()).and_then(|s| s.parse().ok());
    (status.to_owned(), flags.to_owned(), answers.unwrap_or(0))
}

fn register(udp: &Udp, line: &str) {
    let reply = udp.text(line);
    assert_eq!(reply.len(), 36, "{line}: {reply}");
}

#[test]
#[cfg_attr(not(has_dig), ignore = "dig is not installed (apt-get install bind9-dnsutils)")]
fn dig_finds_services_by_srv_a_and_aaaa() {
    let (_broker, udp, dns) = dns_broker(&[]);
    register(&udp, "register web 127.0.0.1 8001");
    register(&udp, "register web 127.0.0.2 8002");
    register(&udp, "register web ::1 8003");

    let srv = sorted(short(dns, &["_web._tcp.makler", "SRV"]));
    assert_eq!(
        srv,
        [
            "1 1 8001 7f000001-8001.addr.makler.",
            "1 1 8002 7f000002-8002.addr.makler.",
            "1 1 8003 00000000000000000000000000000001-8003.addr.makler.",
        ]
    );
    let full = dig(dns, &["_web._tcp.makler", "SRV"]);
    assert_eq!(header(&full), ("NOERROR".to_owned(), "qr aa rd".to_owned(), 3), "{full}");
    assert!(full.contains("recursion requested but not available"), "{full}");
    for line in [
        "7f000001-8001.addr.makler. 0\tIN\tA\t127.0.0.1",
        "00000000000000000000000000000001-8003.addr.makler. 0 IN AAAA ::1",
    ] {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(full.lines().any(|l| l.split_whitespace().eq(words.iter().copied())), "no {line:?} in {full}");
    }
    assert!(full.contains(";; ADDITIONAL SECTION:"), "{full}");

    assert_eq!(sorted(short(dns, &["web.makler", "A"])), ["127.0.0.1", "127.0.0.2"]);
    assert_eq!(short(dns, &["web.makler", "AAAA"]), ["::1"]);
    // The targets resolve on their own.
    assert_eq!(short(dns, &["7f000002-8002.addr.makler", "A"]), ["127.0.0.2"]);
    // Over TCP too, on the same port.
    assert_eq!(short(dns, &["+tcp", "web.makler", "AAAA"]), ["::1"]);
}

#[test]
#[cfg_attr(not(has_dig), ignore = "dig is not installed (apt-get install bind9-dnsutils)")]
fn unknown_names_other_zones_and_missing_types() {
    let (_broker, udp, dns) = dns_broker(&[]);
    register(&udp, "register web 127.0.0.1 8001");
    for name in ["nope.makler", "_nope._tcp.makler", "x.y.makler"] {
        let out = dig(dns, &[name, "A"]);
        assert_eq!(header(&out), ("NXDOMAIN".to_owned(), "qr aa rd".to_owned(), 0), "{out}");
        assert!(out.contains("SOA\tmakler. hostmaster.makler."), "the SOA in the authority section: {out}");
    }
    for name in ["example.com", "web.consul"] {
        let out = dig(dns, &[name, "A"]);
        assert_eq!(header(&out), ("REFUSED".to_owned(), "qr rd".to_owned(), 0), "{out}");
    }
    // The service exists, with no record of these types.
    for (name, qtype) in [("_web._tcp.makler", "A"), ("web.makler", "AAAA"), ("web.makler", "TXT")] {
        let out = dig(dns, &[name, qtype]);
        assert_eq!(header(&out), ("NOERROR".to_owned(), "qr aa rd".to_owned(), 0), "{out}");
    }
    // Other questions the face cannot answer.
    assert_eq!(header(&dig(dns, &["+noedns", "+opcode=status", "web.makler"])).0, "NOTIMP");
    assert_eq!(header(&dig(dns, &["+edns=1", "+noednsnegotiation", "web.makler"])).0, "BADVERS");
    assert_eq!(header(&dig(dns, &["-c", "CH", "version.bind", "TXT"])).0, "REFUSED");
}

#[test]
#[cfg_attr(not(has_dig), ignore = "dig is not installed (apt-get install bind9-dnsutils)")]
fn successive_queries_rotate_over_the_instances() {
    let (_broker, udp, dns) = dns_broker(&[]);
    for i in 1..=3 {
        register(&udp, &format!("register web 127.0.0.{i} 800{i}"));
    }
    let firsts: Vec<String> = (0..6).map(|_| short(dns, &["web.makler", "A"])[0].clone()).collect();
    assert_eq!(firsts[..3], firsts[3..], "{firsts:?}");
    assert_eq!(sorted(firsts[..3].to_vec()), ["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    // SRV and A answers take the same rotation.
    let next_srv = short(dns, &["_web._tcp.makler", "SRV"]);
    assert!(next_srv[0].ends_with(&format!("{}-800{}.addr.makler.", hex(&firsts[0]), &firsts[0][8..])), "{next_srv:?}");
}

/// The hex form of a dotted IPv4 address.
fn hex(ip: &str) -> String {
    ip.split('.').map(|b| format!("{:02x}", b.parse::<u8>().expect("an octet"))).collect()
}

#[test]
#[cfg_attr(not(has_dig), ignore = "dig is not installed (apt-get install bind9-dnsutils)")]
fn a_long_answer_is_cut_with_tc_over_udp_and_whole_over_tcp() {
    let (_broker, udp, dns) = dns_broker(&[]);
    for i in 1..=40 {
        register(&udp, &format!("register big 127.0.1.{i} {}", 9000 + i));
    }
    let cut = dig(dns, &["+notcp", "+ignore", "+noedns", "_big._tcp.makler", "SRV"]);
    let (status, flags, answers) = header(&cut);
    assert_eq!((status.as_str(), flags.as_str()), ("NOERROR", "qr aa tc rd"), "{cut}");
    assert!(answers > 0 && answers < 40, "{cut}");
    let size: usize = cut.split("MSG SIZE  rcvd: ").nth(1).and_then(|s| s.trim().parse().ok()).expect("a size");
    assert!(size <= 512, "{size}");
    // With EDNS more fits, up to 1,232 bytes.
    let edns = dig(dns, &["+notcp", "+ignore", "+bufsize=4096", "_big._tcp.makler", "SRV"]);
    let (_, flags, more) = header(&edns);
    assert!(flags.contains("tc") && more > answers && more < 40, "{edns}");
    // Over TCP the whole answer, and dig's default retries over TCP when it sees TC.
    for args in [&["+tcp"][..], &[][..]] {
        let all = dig(dns, &[args, &["_big._tcp.makler", "SRV"]].concat());
        assert_eq!(header(&all), ("NOERROR".to_owned(), "qr aa rd".to_owned(), 40), "{all}");
    }
    assert_eq!(short(dns, &["+tcp", "big.makler", "A"]).len(), 40);
}

#[test]
#[cfg_attr(not(has_dig), ignore = "dig is not installed (apt-get install bind9-dnsutils)")]
fn instances_registered_and_expired_between_queries() {
    // A TTL of 3 s: each dig is a process start, which a loaded machine can stretch to a good
    // part of a second, and the second instance must outlive the heartbeats between them.
    let (_broker, udp, dns) = dns_broker(&["--ttl", "3", "--probe-interval", "0"]);
    register(&udp, "register web 127.0.0.1 8001");
    assert_eq!(short(dns, &["web.makler", "A"]), ["127.0.0.1"]);
    register(&udp, "register web 127.0.0.2 8002");
    assert_eq!(sorted(short(dns, &["web.makler", "A"])), ["127.0.0.1", "127.0.0.2"]);
    // Keep the second alive; the first expires.
    let id = udp.text("register web 127.0.0.2 8002");
    wait_until(PATIENCE, "the first instance expires", || {
        assert_eq!(udp.text(&format!("heartbeat {id}")), "OK");
        (short(dns, &["_web._tcp.makler", "SRV"]) == ["1 1 8002 7f000002-8002.addr.makler."]).then_some(())
    });
    wait_until(PATIENCE, "the service is gone", || {
        (header(&dig(dns, &["web.makler", "A"])).0 == "NXDOMAIN").then_some(())
    });
}

#[test]
#[cfg_attr(not(has_dig), ignore = "dig is not installed (apt-get install bind9-dnsutils)")]
fn domain_and_ttl_are_configurable() {
    let (_broker, udp, dns) = dns_broker(&["--dns-domain", "Service.Consul", "--dns-ttl", "30"]);
    register(&udp, "register web 127.0.0.1 8001");
    let out = dig(dns, &["+noall", "+answer", "_web._tcp.service.consul", "SRV"]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["_web._tcp.service.consul.", "30", "IN", "SRV", "1", "1", "8001", "7f000001-8001.addr.service.consul."]
    );
    assert_eq!(header(&dig(dns, &["web.makler", "A"])).0, "REFUSED");
}

#[test]
fn a_bad_domain_stops_the_broker() {
    let output = Command::new(env!("CARGO_BIN_EXE_makler-broker"))
        .args(["--listen", "127.0.0.1:0", "--no-multicast", "--dns", "127.0.0.1:0", "--dns-domain", "."])
        .output()
        .expect("the broker runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least one label"));
}

#[test]
#[cfg_attr(not(has_dig), ignore = "dig is not installed (apt-get install bind9-dnsutils)")]
fn dig_browses_service_types_and_instances_with_dns_sd() {
    let (_broker, udp, dns) = dns_broker(&[]);
    register(&udp, "register web 127.0.0.1 8001");
    register(&udp, "register db ::1 5432");
    let types = sorted(short(dns, &["_services._dns-sd._udp.makler", "PTR"]));
    assert_eq!(types, ["_db._tcp.makler.", "_web._tcp.makler."]);
    for browse in ["b._dns-sd._udp.makler", "lb._dns-sd._udp.makler"] {
        assert_eq!(short(dns, &[browse, "PTR"]), ["makler."], "{browse}");
    }
    // PTR → instance names, escaped as RFC 6763 §4.3 asks, with SRV and TXT as additional.
    let web = short(dns, &["_web._tcp.makler", "PTR"]);
    assert_eq!(web, [r"127-0-0-1:8001._web._tcp.makler."]);
    let full = dig(dns, &["_web._tcp.makler", "PTR"]);
    assert_eq!(header(&full), ("NOERROR".to_owned(), "qr aa rd".to_owned(), 1), "{full}");
    for line in [
        r#"127-0-0-1:8001._web._tcp.makler. 0 IN SRV 1 1 8001 7f000001-8001.addr.makler."#,
        r#"127-0-0-1:8001._web._tcp.makler. 0 IN TXT """#,
        "7f000001-8001.addr.makler. 0 IN A 127.0.0.1",
    ] {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(full.lines().any(|l| l.split_whitespace().eq(words.iter().copied())), "no {line:?} in {full}");
    }
    // Each instance name resolves on its own: SRV, then TXT (one empty string until metadata).
    assert_eq!(short(dns, &[&web[0], "SRV"]), ["1 1 8001 7f000001-8001.addr.makler."]);
    assert_eq!(short(dns, &[&web[0], "TXT"]), [r#""""#]);
    let db = short(dns, &["_db._tcp.makler", "PTR"]);
    assert_eq!(db.len(), 1, "{db:?}");
    assert_eq!(short(dns, &[&db[0], "SRV"]), ["1 1 5432 00000000000000000000000000000001-5432.addr.makler."]);
    assert_eq!(header(&dig(dns, &[r"127-0-0-1:8002._web._tcp.makler", "SRV"])).0, "NXDOMAIN");
}

/// dig holds the DNS face's TSIG key (`makler key dns`): under `--require-key all` it is
/// answered, and dig verifies the answer's signature; without the key it gets REFUSED.
#[test]
#[cfg_attr(not(has_dig), ignore = "dig is not installed (apt-get install bind9-dnsutils)")]
fn dig_with_the_tsig_key_is_answered_under_require_key_all() {
    let path = std::env::temp_dir().join(format!("makler-dns-tsig-{}", std::process::id()));
    crate::common::write_key_file(&path, "the secret of the DNS TSIG test\n");
    let key_path = path.to_str().unwrap();
    let (_broker, udp, dns) = dns_broker(&["--key-file", key_path, "--require-key", "all"]);
    let mut client = makler::client::BrokerClient::new(&[udp.peer]).unwrap();
    client.set_key(makler::protocol::seal::Key::load(&path).unwrap());
    client.register("web", None, 8080).unwrap();
    let printed =
        Command::new(env!("CARGO_BIN_EXE_makler")).args(["key", "dns", "--key-file", key_path]).output().unwrap();
    let tsig = String::from_utf8(printed.stdout).unwrap();
    let signed = dig(dns, &["-y", tsig.trim(), "web.makler", "A"]);
    assert_eq!(header(&signed), ("NOERROR".to_owned(), "qr aa rd".to_owned(), 1), "{signed}");
    assert!(signed.contains("TSIG PSEUDOSECTION") && !signed.contains("Couldn't verify"), "{signed}");
    let unsigned = dig(dns, &["web.makler", "A"]);
    assert_eq!(header(&unsigned).0, "REFUSED", "{unsigned}");
    let _ = std::fs::remove_file(&path);
}
