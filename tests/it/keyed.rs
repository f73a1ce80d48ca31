//! Keyed writes (`--require-key`): the attack (an unsealed register from anyone who reaches the
//! broker), and what still works: sealed requests from the programs given the key, the text form
//! by hand where no key is required.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::PATIENCE;
use crate::common::{self, Udp, balancer, broker, listed, wait_until};
use makler::client::{BrokerClient, ClientError};
use makler::protocol::Rejection;
use makler::protocol::seal::{Key, ReplayGuard, Sealer, unix_ms};

/// A key file of its own for each test, and its key.
fn key_file(name: &str) -> (std::path::PathBuf, Key) {
    let path = std::env::temp_dir().join(format!("makler-keyed-{name}-{}", std::process::id()));
    common::write_key_file(&path, "the secret of the keyed-writes tests\n");
    let key = Key::load(&path).unwrap();
    (path, key)
}

fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// A value from the first line of `stats`, asked with the key.
fn keyed_stat(at: SocketAddr, key: Key, name: &str) -> u64 {
    let mut client = BrokerClient::new(&[at]).unwrap();
    client.set_key(key);
    client.stats().unwrap().get(name).unwrap_or_else(|| panic!("no {name}"))
}

/// Sends `replay` to `to` from a socket of its own, runs `fence` (which asks `to` something
/// and checks it: the answer leaves after any answer to the replay), and asserts that nothing
/// came back to that socket: no wait on a pause that a loaded machine may outlast.
#[track_caller]
fn assert_unanswered(replay: &[u8], to: SocketAddr, fence: impl FnOnce()) {
    let replayer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    replayer.send_to(replay, to).unwrap();
    fence();
    replayer.set_nonblocking(true).unwrap();
    let mut buf = [0; 2048];
    let got = replayer.recv_from(&mut buf);
    assert!(got.is_err(), "a replay gets no answer: {got:?}");
}

#[test]
fn under_require_key_an_unsealed_register_is_refused_and_a_sealed_one_registers_once() {
    let (path, key) = key_file("writes");
    let broker = broker(&["--key-file", path.to_str().unwrap(), "--require-key", "writes"]);
    let at = broker.addr("udp");
    let attacker = Udp::new(at);
    // The attack: anyone who reaches the broker adds its address to a service.
    assert_eq!(attacker.text("register web 127.0.0.1 8080"), "ERROR key required");
    assert_eq!(attacker.text("heartbeat 00000000-0000-0000-0000-000000000001"), "ERROR key required");
    assert_eq!(attacker.text("watch web"), "ERROR key required");
    assert!(listed(&attacker, "web").is_empty(), "not in the table; queries stay open by hand");

    // Sealed by hand, it registers, and the reply is sealed with the same key.
    let mut sealer = Sealer::new(key, 0x5eed);
    let mut sealed = Vec::new();
    sealer.seal(b"register web 127.0.0.1 8080", now_ms(), &mut sealed);
    let reply = attacker.raw(&sealed);
    let id = ReplayGuard::new().open(&key, &reply, now_ms()).expect("a sealed reply").to_vec();
    assert_eq!(id.len(), 37, "{:?}", String::from_utf8_lossy(&id));
    assert_eq!(listed(&attacker, "web"), ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);

    // The same sealed datagram again (captured and replayed): dropped, unanswered, counted.
    // Once the stats asked after it are answered, an answer to it would have come: none has.
    assert_unanswered(&sealed, at, || assert_eq!(keyed_stat(at, key, "sealed_dropped"), 1));
    assert_eq!(keyed_stat(at, key, "refused_key"), 3);
    assert_eq!(keyed_stat(at, key, "instances"), 1);

    // makler-server given the key registers; a client without it is told in one line.
    let server = common::server("echo", at, &["--no-multicast", "--key-file", path.to_str().unwrap()]);
    wait_until(PATIENCE, "the keyed server registers", || {
        (listed(&attacker, "echo") == [server.addr("tcp")]).then_some(())
    });
    let mut unkeyed = BrokerClient::new(&[at]).unwrap();
    let refused = unkeyed.register("echo", None, 1).unwrap_err();
    assert!(matches!(refused, ClientError::Rejected(Rejection::KeyRequired)), "{refused}");
    assert!(refused.to_string().contains("give --key-file"), "{refused}");
    drop(server);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn require_key_all_refuses_unsealed_queries_and_a_keyed_client_gets_answers() {
    let (path, key) = key_file("all");
    let broker = broker(&["--key-file", path.to_str().unwrap(), "--require-key", "all"]);
    let at = broker.addr("udp");
    let udp = Udp::new(at);
    assert_eq!(udp.text("query web"), "ERROR key required");
    assert_eq!(udp.text("services"), "ERROR key required");
    assert_eq!(udp.text("stats"), "ERROR key required");
    let mut client = BrokerClient::new(&[at]).unwrap();
    client.set_key(key);
    client.register("web", None, 8080).unwrap();
    assert_eq!(client.query("web").unwrap(), ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
    assert_eq!(keyed_stat(at, key, "refused_key"), 3);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn require_key_without_a_key_file_is_refused_at_startup() {
    let broker = [env!("CARGO_BIN_EXE_makler-broker"), "--quiet"];
    let balancer = [env!("CARGO_BIN_EXE_makler-balancer"), "--service=web"];
    for [program, extra] in [broker, balancer] {
        let output = std::process::Command::new(program)
            .args(["--require-key", "writes", "--no-multicast", extra])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{program}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--require-key needs --key-file"), "{program}: {stderr}");
    }
}

/// A DNS query for `web.makler.` A, with `id`.
fn dns_query(id: u16) -> hickory_proto::op::Message {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii("web.makler.").unwrap(), RecordType::A));
    message
}

/// A TSIG signer of `secret` under the DNS face's key name.
fn tsig_signer(secret: &[u8]) -> hickory_proto::rr::TSigner {
    use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
    let name = hickory_proto::rr::Name::from_ascii(makler::node::dns::tsig::KEY_NAME).unwrap();
    hickory_proto::rr::TSigner::new(secret.to_vec(), TsigAlgorithm::HmacSha256, name, 300).unwrap()
}

/// Under `--require-key all` the DNS face takes TSIG (RFC 8945) as its seal: an unsigned query
/// gets REFUSED, one signed with another secret or out of time NOTAUTH, all counted in
/// `refused_key`; one signed with the key file's TSIG secret gets its answer, signed with it in
/// turn. `--dns-unsealed` answers unsigned queries as before.
#[test]
fn require_key_all_holds_on_the_dns_face_through_tsig() {
    use hickory_proto::op::{Message, ResponseCode};
    let (path, key) = key_file("dns");
    let key_path = path.to_str().unwrap();
    let broker = broker(&["--key-file", key_path, "--require-key", "all", "--dns", "127.0.0.1:0"]);
    let at = broker.addr("udp");
    let mut client = BrokerClient::new(&[at]).unwrap();
    client.set_key(key);
    client.register("web", None, 8080).unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dns = broker.addr("dns");
    let ask = |bytes: &[u8]| {
        socket.send_to(bytes, dns).unwrap();
        let mut buf = [0; 1500];
        let (n, _) = socket.recv_from(&mut buf).expect("a DNS answer within 5 s");
        buf[..n].to_vec()
    };
    let now_s = now_ms() / 1000;

    let unsigned = Message::from_vec(&ask(&dns_query(1).to_vec().unwrap())).unwrap();
    assert_eq!((unsigned.metadata.response_code, unsigned.answers.len()), (ResponseCode::Refused, 0));

    let secret = makler::node::dns::tsig::secret(&key);
    let mut signed = dns_query(2);
    let mut verifier = signed.finalize(&tsig_signer(&secret), now_s).unwrap().expect("a verifier");
    let answer = verifier.verify(&ask(&signed.to_vec().unwrap())).expect("the answer is signed with the key");
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer.answers.len(), 1, "{answer:?}");

    for (signer, time) in [(tsig_signer(&[7; 32]), now_s), (tsig_signer(&secret), now_s - 3600)] {
        let mut forged = dns_query(3);
        forged.finalize(&signer, time).unwrap();
        let refused = Message::from_vec(&ask(&forged.to_vec().unwrap())).unwrap();
        assert_eq!((refused.metadata.response_code, refused.answers.len()), (ResponseCode::NotAuth, 0));
    }
    assert_eq!(keyed_stat(at, key, "refused_key"), 3);

    // makler key dns prints that secret, as dig -y takes it.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_makler"))
        .args(["key", "dns", "--key-file", key_path])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let expected = format!("hmac-sha256:makler-tsig:{}\n", data_encoding::BASE64.encode(&secret));
    assert_eq!(String::from_utf8_lossy(&printed.stdout), expected);

    let open =
        common::broker(&["--key-file", key_path, "--require-key", "all", "--dns", "127.0.0.1:0", "--dns-unsealed"]);
    socket.send_to(&dns_query(4).to_vec().unwrap(), open.addr("dns")).unwrap();
    let mut buf = [0; 1500];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer");
    // No instance there: NXDOMAIN, answered unsigned.
    assert_eq!(Message::from_vec(&buf[..n]).unwrap().metadata.response_code, ResponseCode::NXDomain);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_balancers_control_port_takes_only_sealed_registrations_under_require_key() {
    let (path, key) = key_file("balancer");
    let balancer =
        balancer("web", None, &["--no-multicast", "--key-file", path.to_str().unwrap(), "--require-key", "writes"]);
    let control = balancer.addr("udp");
    let outsider = Udp::new(control);
    assert_eq!(outsider.text("register web 127.0.0.1 8080"), "ERROR key required");
    let mut backend = BrokerClient::new(&[control]).unwrap();
    backend.set_key(key);
    backend.register("web", None, 8080).unwrap();
    let mut sealer = Sealer::new(key, 0xba1);
    let mut sealed = Vec::new();
    sealer.seal(b"register web 127.0.0.1 8081", now_ms(), &mut sealed);
    outsider.raw(&sealed);
    assert_unanswered(&sealed, control, || {
        let stats = Udp::new(control).text("stats");
        assert!(stats.starts_with("backends=2 ") && stats.contains(" sealed_dropped=1"), "{stats}");
    });
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_keyed_watch_is_taken_and_its_notifications_come_sealed() {
    use makler::client::{Watch, WatchEvent};
    let (path, key) = key_file("watch");
    let broker = broker(&["--key-file", path.to_str().unwrap(), "--require-key", "writes"]);
    let at = broker.addr("udp");
    let refused = Watch::start(&[at], "web").unwrap_err();
    assert!(matches!(refused, ClientError::Rejected(Rejection::KeyRequired)), "{refused}");
    let mut watch = Watch::start_keyed(&[at], "web", Some(key)).unwrap();
    let mut client = BrokerClient::new(&[at]).unwrap();
    client.set_key(key);
    client.register("web", None, 8080).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let event = watch.next(deadline).unwrap().expect("a notification, sealed, taken");
    let instances = match event {
        WatchEvent::Changed { instances, .. } | WatchEvent::Resynced { instances, .. } => instances,
    };
    assert_eq!(instances, ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_keyed_client_and_server_work_end_to_end_under_require_key_all() {
    let (path, key) = key_file("e2e");
    let key_path = path.to_str().unwrap();
    let broker = broker(&["--key-file", key_path, "--require-key", "all"]);
    let at = broker.addr("udp").to_string();
    let server = common::server("echo", broker.addr("udp"), &["--no-multicast", "--key-file", key_path]);
    wait_until(PATIENCE, "the keyed server registers", || {
        (keyed_stat(broker.addr("udp"), key, "instances") == 1).then_some(())
    });
    let (code, out, err) = common::client(&["--broker", &at, "--no-multicast", "--key-file", key_path, "echo"], "hi\n");
    assert_eq!((code, out.as_str()), (Some(0), "hi\n"), "{err}");
    let (code, _, err) = common::client(&["--broker", &at, "--no-multicast", "echo"], "hi\n");
    assert_ne!(code, Some(0));
    assert!(err.contains("key required") && err.lines().count() == 1, "{err}");
    // A server without the key stops as for any refusal for good (exit 6).
    let mut unkeyed = common::server("echo", broker.addr("udp"), &["--no-multicast"]);
    let status = wait_until(PATIENCE, "the unkeyed server exits", || unkeyed.child.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(6));
    drop(server);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_keyed_balancer_registers_at_a_broker_that_requires_the_key() {
    let (path, _) = key_file("chain");
    let key_path = path.to_str().unwrap();
    let broker = broker(&["--key-file", key_path, "--require-key", "writes"]);
    let udp = Udp::new(broker.addr("udp"));
    let args = ["--no-multicast", "--key-file", key_path, "--require-key", "writes", "--health-interval", "0.2"];
    let balancer = balancer("web", Some(broker.addr("udp")), &args);
    // A backend given the key registers at the balancer, which then registers at the broker.
    let _backend = common::server("http", balancer.addr("udp"), &["--no-multicast", "--key-file", key_path]);
    wait_until(PATIENCE, "the balancer is registered at the broker", || {
        (listed(&udp, "web") == [balancer.addr("tcp")]).then_some(())
    });
    let _ = std::fs::remove_file(&path);
}
