//! Invariants checked on arbitrary input: the oracles of the fuzz targets (`fuzz/`, run with
//! `cargo fuzz`) and of the stable property tests (`tests/it/fuzz_props.rs`, `tests/it/dns_props.rs`),
//! which run the same checks on inputs from proptest.
//!
//! Compiled only with the `fuzzing` feature: fuzz/Cargo.toml turns it on, and so does this
//! package's dev-dependency on itself, so that the integration tests (which do not see the
//! library's `cfg(test)`) have it under plain `cargo test` while builds and dependents do not.
//! The example servers' session oracle is beside the session, in `bins/makler-server/`.
//!
//! Each takes arbitrary bytes and panics when an invariant breaks; none may panic otherwise,
//! whatever the bytes.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::core::Core;
use crate::node::{Face, Node, NodeConfig};
use crate::protocol::{self, Check, MAX_REPLY_LEN, Multicast, Request, Response, binary, peer, seal, text};

mod keyed;
mod mdns;

pub use keyed::keyed_session;
pub use mdns::mdns;

/// Every decoder on `data`: none panics, and what decodes encodes back to the same value.
pub fn decoders(data: &[u8]) {
    if let Ok((form, request)) = protocol::decode_request(data) {
        let mut again = Vec::new();
        match form {
            protocol::Form::Text => text::encode_request(&request, &mut again),
            protocol::Form::Binary { request_id } => binary::encode_request(request_id, &request, &mut again),
        }
        let (_, decoded) = protocol::decode_request(&again).expect("a re-encoded request decodes");
        assert_eq!(decoded, request);
    }
    if let Ok((id, response)) = binary::decode_response(data) {
        let mut again = Vec::new();
        binary::encode_response(id, &response, &mut again);
        assert_eq!(binary::decode_response(&again).expect("a re-encoded response decodes"), (id, response));
    }
    if let Ok(frame) = binary::decode::<Multicast<'_>>(data) {
        let mut again = Vec::new();
        binary::encode(frame.id, &frame.body, &mut again);
        assert_eq!(binary::decode::<Multicast<'_>>(&again).expect("re-encoded multicast decodes"), frame);
    }
    if let Ok(frame) = peer::decode(data) {
        let mut again = Vec::new();
        peer::encode(&frame, &mut again);
        assert_eq!(peer::decode(&again).expect("a re-encoded peer frame decodes"), frame);
    }
    let key = seal::Key::from_secret(b"the fuzzing key, long enough").expect("a key");
    let _ = seal::ReplayGuard::new().open(&key, data, 0);
    metadata(data);
    http_face(data);
}

/// The HTTP face (`--http`, [`crate::http::serve`]) of a broker holding one service, on `data`
/// as a connection's bytes: no panic; either it waits for more (answers nothing, consumes
/// nothing) or it answers once, one whole HTTP response whose `Content-Length` is its body's
/// length (no body after a `HEAD`), JSON where it says so, and closes.
pub fn http_face(data: &[u8]) {
    let mut node = Node::new(NodeConfig::default(), || Uuid::from_u128(1));
    let now = Instant::now();
    node.handle_start(now);
    let from = SocketAddr::from(([127, 0, 0, 1], 40_000));
    node.handle_datagram(now, Face::Client, from, b"register echo 127.0.0.1 4000 note=<b>", &mut Vec::new());
    let mut out = Vec::new();
    let step = node.handle_stream(now, Face::Http, 0, data, &mut out);
    assert!(step.consumed <= data.len());
    if out.is_empty() {
        assert_eq!((step.consumed, step.close), (0, false), "no answer, but the request was taken");
        return;
    }
    assert!(step.close && step.consumed > 0, "answered without taking the request: {step:?}");
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(end)) = response.parse(&out) else {
        panic!("not a whole HTTP response: {:?}", String::from_utf8_lossy(&out))
    };
    let header = |name: &str| {
        response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value))
    };
    let length: usize = header("content-length").and_then(|l| l.parse().ok()).expect("a Content-Length");
    let body = &out[end..];
    if body.is_empty() && length > 0 {
        assert!(data.starts_with(b"HEAD "), "a body left out after a {:?}", String::from_utf8_lossy(data));
    } else {
        assert_eq!(body.len(), length, "Content-Length is the body's");
        if header("content-type").as_deref() == Some("application/json") {
            serde_json::from_slice::<serde_json::Value>(body).expect("a JSON body");
        }
    }
}

/// Service metadata ([`crate::meta`]) from arbitrary bytes: a block that is accepted is kept
/// byte for byte; TXT strings (the bytes cut at every 0xFF) give metadata within the limits
/// that survives its own TXT strings and block, and shows as one line.
fn metadata(data: &[u8]) {
    use crate::meta::{MAX_PAIRS, MAX_TOTAL, Metadata};
    if let Ok(meta) = Metadata::from_block(data) {
        assert_eq!(meta.as_block(), data);
    }
    let strings: Vec<Vec<u8>> = data.split(|&b| b == 0xff).map(<[u8]>::to_vec).collect();
    let meta = Metadata::from_txt(&strings);
    assert!(meta.len() <= MAX_PAIRS && meta.byte_len() <= MAX_TOTAL);
    assert_eq!(Metadata::from_txt(&meta.to_txt()), meta);
    assert_eq!(Metadata::from_block(meta.as_block()).as_ref(), Ok(&meta));
    assert!(!meta.to_string().contains(['\n', '\r']));
    for pair in &meta {
        assert!(!pair.to_string().contains(char::is_whitespace), "{pair}");
    }
}

const TTL: Duration = Duration::from_secs(5);

/// A broker's node driven by a sequence of operations that `data` spells, checked after each
/// against a plain model of leases: no reply over the datagram limit, no expired instance
/// answered, and the table holding exactly the model's live instances.
pub fn node_session(data: &[u8]) {
    let mut ids = 0u128;
    let mut node = Node::new(NodeConfig::default(), move || {
        ids += 1;
        Uuid::from_u128(ids)
    });
    let t0 = Instant::now();
    node.handle_start(t0);
    let mut now = t0;
    // (service, endpoint, source) -> (id, deadline)
    let mut model: HashMap<(u8, SocketAddr, SocketAddr), (Uuid, Instant)> = HashMap::new();
    let mut bytes = data.iter().copied();
    let mut reply = Vec::new();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        let source = SocketAddr::from(([127, 0, 0, 1 + arg % 3], 40_000));
        let known: Vec<Uuid> = model.values().map(|&(id, _)| id).collect();
        let pick = |k: u8| known.get(usize::from(k) % known.len().max(1)).copied().unwrap_or(Uuid::nil());
        let request = match op % 8 {
            // Some declare a check, so that some reports are verified (and the probe answered).
            0 => format!(
                "register s{} {}{}",
                arg % 4,
                1 + u16::from(arg % 8),
                ["", " check=tcp", " check=http:/health", " check=none"][usize::from(arg >> 6)]
            ),
            1 => format!("heartbeat {}", pick(arg)),
            2 => format!("deregister {}", pick(arg)),
            // A quarter are binary listings with the checks: the page holds live instances only,
            // and every one of them, with a check each.
            3 if arg & 0x40 != 0 => {
                check_listing(&mut node, now, source, arg % 4, &model);
                continue;
            }
            // Half of them local only: with no bridges, answered the same.
            3 => format!("query s{}{}", arg % 4, if arg & 0x80 == 0 { "" } else { " local" }),
            4 => {
                now += Duration::from_millis(u64::from(arg) * 20);
                node.handle_timeout(now);
                model.retain(|_, &mut (_, deadline)| now < deadline);
                check_table(&node, &model);
                check_notifications(&mut node, now, &model);
                continue;
            }
            5 => {
                // A raw datagram: anything but a valid request that changes the table (the
                // structured operations cover those, with the model following).
                let raw: Vec<u8> = bytes.by_ref().take(usize::from(arg)).collect();
                let changes = matches!(
                    protocol::decode_request(&raw),
                    Ok((
                        _,
                        Request::Register { .. }
                            | Request::RegisterChecked { .. }
                            | Request::RegisterMeta { .. }
                            | Request::Heartbeat { .. }
                            | Request::Deregister { .. }
                    ))
                );
                if !changes {
                    reply.clear();
                    node.handle_datagram(now, Face::Client, source, &raw, &mut reply);
                    assert!(reply.len() <= MAX_REPLY_LEN, "{} bytes", reply.len());
                    check_unconfirmed(&raw, &reply);
                }
                check_table(&node, &model);
                check_notifications(&mut node, now, &model);
                continue;
            }
            6 => format!("report s{} 127.0.0.{}:{}", arg % 4, 1 + arg % 3, 1 + arg % 8),
            7 if arg & 0x80 != 0 => {
                check_unwatch(&mut node, now, source, arg % 4);
                check_table(&node, &model);
                check_notifications(&mut node, now, &model);
                continue;
            }
            _ => format!("watch s{}", arg % 4),
        };
        model.retain(|_, &mut (_, deadline)| now < deadline);
        reply.clear();
        node.handle_datagram(now, Face::Client, source, request.as_bytes(), &mut reply);
        if op % 8 == 7 {
            // A watch is answered with a cookie, within three times its bytes; echoed from the
            // same source, it watches.
            check_unconfirmed(request.as_bytes(), &reply);
            let answer = String::from_utf8(reply.clone()).expect("text answers are UTF-8");
            let cookie = answer.strip_prefix("COOKIE ").expect("a cookie first").trim().to_owned();
            let echo = format!("{request} {cookie}");
            reply.clear();
            node.handle_datagram(now, Face::Client, source, echo.as_bytes(), &mut reply);
            assert!(reply.starts_with(b"WATCHING "), "{echo}: {:?}", String::from_utf8_lossy(&reply));
        }
        // Every reported instance answers its probe (the simulated network tests dead ones).
        while let Some(command) = node.poll_probe() {
            if let crate::core::ProbeCmd::Start { id, .. } = command {
                node.handle_probe(now, id, crate::core::ProbeOutcome::Connected);
            }
        }
        assert!(reply.len() <= MAX_REPLY_LEN, "{} bytes", reply.len());
        let answer = String::from_utf8(reply.clone()).expect("text answers are UTF-8");
        let answer = answer.trim_end();
        match op % 8 {
            0 => {
                let endpoint = SocketAddr::new(source.ip(), 1 + u16::from(arg % 8));
                let id = Uuid::try_parse(answer).expect("a registration succeeds");
                let lease = model.entry((arg % 4, endpoint, source)).or_insert((id, now + TTL));
                assert_eq!(lease.0, id, "the same source gets the same id");
                lease.1 = now + TTL;
            }
            1 | 2 => {
                let id = pick(arg);
                let key = model.iter().find(|(_, (i, _))| *i == id).map(|(k, _)| *k);
                assert_eq!(answer == "OK", key.is_some(), "{request}: {answer}");
                match (op % 8, key) {
                    (1, Some(key)) => drop(model.insert(key, (id, now + TTL))),
                    (2, Some(key)) => drop(model.remove(&key)),
                    _ => {}
                }
            }
            3 => {
                let mut answered: Vec<SocketAddr> = if answer == "NOT FOUND" {
                    Vec::new()
                } else {
                    answer.split(' ').map(|a| a.parse().expect("ip:port")).collect()
                };
                answered.sort();
                let mut expected: Vec<SocketAddr> =
                    model.keys().filter(|k| k.0 == arg % 4).map(|k| k.1).collect::<HashSet<_>>().into_iter().collect();
                expected.sort();
                assert_eq!(answered, expected, "no expired instance, none missing");
            }
            7 => assert!(!answer.starts_with("ERROR"), "{request}: {answer}"),
            _ => {}
        }
        check_table(&node, &model);
        check_notifications(&mut node, now, &model);
    }
}

/// `unwatch s{service}` from `source`: ends a watch only with the watcher's cookie. A bare one,
/// and one with the watcher's cookie sent from another port (a forger's, which cannot know it,
/// given it anyway), are refused and end nothing; the watcher's own ends its watch if it had
/// one.
fn check_unwatch(node: &mut Node, now: Instant, source: SocketAddr, service: u8) {
    let ask = |node: &mut Node, from: SocketAddr, line: &str| {
        let mut reply = Vec::new();
        node.handle_datagram(now, Face::Client, from, line.as_bytes(), &mut reply);
        String::from_utf8(reply).expect("text answers are UTF-8")
    };
    let watches = |node: &Node| node.stats(now)["watches"];
    let before = watches(node);
    let answer = ask(node, source, &format!("watch s{service}"));
    let cookie = answer.trim_end().strip_prefix("COOKIE ").expect("a cookie").to_owned();
    let forger = SocketAddr::new(source.ip(), source.port() + 1);
    let bare = ask(node, source, &format!("unwatch s{service}"));
    assert_eq!(bare, "ERROR cookie required: unwatch <service> <cookie>\n");
    let forged = ask(node, forger, &format!("unwatch s{service} {cookie}"));
    assert_eq!(forged, "ERROR bad cookie: watch <service> for a fresh one\n");
    assert_eq!(watches(node), before, "a refused unwatch ends nothing");
    let real = ask(node, source, &format!("unwatch s{service} {cookie}"));
    match real.as_str() {
        "OK\n" => assert_eq!(watches(node) + 1, before, "the watch ended"),
        "NOT FOUND\n" => assert_eq!(watches(node), before),
        _ => panic!("unwatch with the cookie: {real:?}"),
    }
}

/// A watch's answer while its source has not shown that it receives (no cookie, or one that
/// does not match) is a cookie of at most three times the request's bytes, or nothing.
fn check_unconfirmed(request: &[u8], reply: &[u8]) {
    let cookie = match protocol::decode_request(request) {
        Ok((_, Request::Watch { .. })) => true,
        Ok((protocol::Form::Text, Request::WatchEcho { .. } | Request::WatchMeta { .. })) => {
            reply.starts_with(b"COOKIE ")
        }
        Ok((protocol::Form::Binary { .. }, Request::WatchEcho { .. } | Request::WatchMeta { .. })) => {
            matches!(binary::decode_response(reply), Ok((_, Response::WatchCookie { .. })))
        }
        _ => false,
    };
    if cookie {
        let gain = crate::service::MAX_UNCONFIRMED_GAIN;
        assert!(reply.len() <= gain * request.len(), "{} bytes for {}", reply.len(), request.len());
    }
}

/// `InstancesChecked` (binary) for service `s{service}`: one page (the session's services hold
/// at most 24 instances), exactly the model's live instances, a declared check for each.
fn check_listing(
    node: &mut Node,
    now: Instant,
    source: SocketAddr,
    service: u8,
    model: &HashMap<(u8, SocketAddr, SocketAddr), (Uuid, Instant)>,
) {
    let name = format!("s{service}");
    let mut request = Vec::new();
    binary::encode_request(9, &Request::InstancesChecked { service: &name, cursor: 0 }, &mut request);
    let mut reply = Vec::new();
    node.handle_datagram(now, Face::Client, source, &request, &mut reply);
    assert!(reply.len() <= MAX_REPLY_LEN, "{} bytes", reply.len());
    let mut live: Vec<SocketAddr> =
        model.keys().filter(|k| k.0 == service).map(|k| k.1).collect::<HashSet<_>>().into_iter().collect();
    live.sort();
    match binary::decode_response(&reply).expect("a binary answer") {
        (9, Response::InstanceListChecked { page, checks }) => {
            assert_eq!(page.next, None, "one page");
            assert_eq!(checks.len(), page.instances.len(), "a check for each instance");
            assert_eq!(page.total, live.len() as u64);
            let mut listed: Vec<SocketAddr> = page.instances.iter().map(|i| i.endpoint).collect();
            listed.sort();
            assert_eq!(listed, live, "no expired instance, none missing");
        }
        (9, Response::NotFound) => assert!(live.is_empty(), "{live:?} not listed"),
        other => panic!("InstancesChecked answered {other:?}"),
    }
}

/// Every notification the node queued is within the limit and tells the model's live set.
fn check_notifications(node: &mut Node, now: Instant, model: &HashMap<(u8, SocketAddr, SocketAddr), (Uuid, Instant)>) {
    let mut out = Vec::new();
    while node.poll_transmit(now, &mut out).is_some() {
        assert!(out.len() <= MAX_REPLY_LEN, "{} bytes", out.len());
        if peer::is_peer(&out) {
            // A raw datagram was a bridge's query, which anyone may ask: its answer names live
            // instances only.
            let frame = peer::decode(&out).expect("the node's peer frames decode");
            let peer::Peer::Answer { instances, .. } = frame.body else { panic!("unasked: {frame:?}") };
            for instance in instances {
                assert!(model.keys().any(|k| k.1 == instance), "{instance} is not live");
            }
            continue;
        }
        let line = std::str::from_utf8(&out).expect("text notifications");
        let mut words = line.trim_end().split(' ');
        assert_eq!(words.next(), Some("CHANGED"), "{line}");
        let service = words.next().and_then(|s| s.strip_prefix('s')).and_then(|n| n.parse::<u8>().ok());
        let service = service.expect("a service of the session");
        assert!(words.next().is_some_and(|seq| seq.starts_with("seq=")), "{line}");
        let told: Vec<SocketAddr> = words.map(|a| a.parse().expect("ip:port")).collect();
        let mut live: Vec<SocketAddr> =
            model.keys().filter(|k| k.0 == service).map(|k| k.1).collect::<HashSet<_>>().into_iter().collect();
        live.sort();
        assert_eq!(told, live, "{line}");
    }
}

fn check_table(node: &Node, model: &HashMap<(u8, SocketAddr, SocketAddr), (Uuid, Instant)>) {
    let instances: HashSet<(u8, SocketAddr)> = model.keys().map(|k| (k.0, k.1)).collect();
    assert_eq!(node.registry().len(), instances.len());
    assert_eq!(node.registry().lease_count(), model.len());
}

/// Arbitrary datagrams on a broker's multicast face: no panic, the only answer is a
/// discovery's, within the limit, and an instance announced with a commitment stays: no
/// datagram that does not know its secret says goodbye for it, whatever it copies (the same
/// origin, service and address, from the same source).
pub fn group(data: &[u8]) {
    let config = NodeConfig {
        group: Some(crate::node::GroupConfig {
            group: "239.255.77.1:7077".parse().expect("an address"),
            origin: 1,
            hello_interval: Duration::from_secs(2),
        }),
        ..NodeConfig::default()
    };
    let mut node = Node::new(config, Uuid::new_v4);
    let now = Instant::now();
    node.handle_start(now);
    let mut reply = Vec::new();
    let from = SocketAddr::from(([127, 0, 0, 1], 5000));
    let commitment = protocol::goodbye_commitment(&GROUP_SECRET);
    let announce = Multicast::AnnounceCommitted {
        origin: 2,
        service: "kept",
        ip: None,
        port: 4000,
        commitment,
        check: Check::Tcp,
    };
    let mut datagram = Vec::new();
    binary::encode(0, &announce, &mut datagram);
    node.handle_datagram(now, Face::Group, from, &datagram, &mut reply);
    let kept = SocketAddr::from(([127, 0, 0, 1], 4000));
    let announcer = protocol::Source::Announcer { ip: from.ip(), origin: 2 };
    assert!(node.registry().lease_id("kept", kept, announcer).is_some());
    for datagram in data.split(|&b| b == 0xFF) {
        reply.clear();
        if node.handle_datagram(now, Face::Group, from, datagram, &mut reply).is_some() {
            assert!(reply.len() <= MAX_REPLY_LEN);
            assert!(matches!(binary::decode_response(&reply), Ok((_, Response::BrokerHere { .. }))));
        }
        let held = node.registry().lease_id("kept", kept, announcer);
        assert!(held.is_some(), "a goodbye without the secret removed it");
    }
}

/// The secret of the [`group`] oracle's announcement: never in its input.
const GROUP_SECRET: [u8; 32] = [0x5e; 32];

/// Arbitrary datagrams on a balancer's control port: no panic, no answer over the limit.
pub fn control(data: &[u8]) {
    crate::balancer::fuzz_control(data);
}

/// Arbitrary bytes as DNS queries: [`crate::node::dns::answer`] never panics; it answers
/// only what is at least a header long and not a response; its reply decodes, is a response
/// with the query's id, and is never larger than allowed: 512 bytes over UDP, or the EDNS
/// size the query asks up to 1,232, and a query that does not decode gets no more bytes than
/// it sent; 65,535 over TCP. Then the same bytes through a node's DNS faces, with rate
/// limiting on, UDP and TCP framing alike: no panic, no reply over the UDP limit.
pub fn dns(data: &[u8]) {
    use crate::node::dns::{self, DnsConfig, Transport, Zone};
    use hickory_proto::op::{Message, MessageType};

    let now = Instant::now();
    let mut node = Node::new(
        NodeConfig {
            dns: Some(DnsConfig::default()),
            rate_limit: crate::limit::RateLimit { rate: 2, ..crate::limit::RateLimit::default() },
            ..NodeConfig::default()
        },
        Uuid::new_v4,
    );
    node.handle_start(now);
    let mut reply = Vec::new();
    let client = SocketAddr::from(([127, 0, 0, 1], 40_000));
    for i in 0..40u16 {
        let line =
            format!("register {} 127.0.{}.{} {}", ["web", "big"][usize::from(i % 2)], i / 200, i % 200 + 1, 1000 + i);
        reply.clear();
        node.handle_datagram(now, Face::Client, client, line.as_bytes(), &mut reply);
    }
    reply.clear();
    node.handle_datagram(now, Face::Client, client, b"register web ::1 999", &mut reply);

    let mut zone = Zone::new(&DnsConfig::default()).expect("the default zone");
    let mut registry = crate::registry::Registry::new(crate::registry::Config::default(), Uuid::new_v4);
    let source = crate::registry::Source::Unicast(client);
    for i in 0..40u16 {
        let endpoint = SocketAddr::from(([127, 0, 1, 1 + (i % 200) as u8], 1000 + i));
        registry.register(now, ["web", "big"][usize::from(i % 2)], endpoint, source).expect("room");
    }
    let decoded = Message::from_vec(data).ok();
    let edns = decoded.as_ref().and_then(|m| m.edns.as_ref()).map(|e| e.max_payload());
    let udp_limit = usize::from(
        edns.map_or(dns::PLAIN_UDP_PAYLOAD, |size| size.clamp(dns::PLAIN_UDP_PAYLOAD, dns::MAX_UDP_PAYLOAD)),
    );
    for (transport, limit) in [(Transport::Udp, udp_limit), (Transport::Tcp, dns::MAX_TCP_MESSAGE)] {
        if !dns::answer(&mut zone, &mut registry, now, data, transport, &mut reply) {
            continue;
        }
        assert!(data.len() >= 12 && data[2] & 0x80 == 0, "answered a non-query");
        assert!(reply.len() <= limit, "{} bytes over {transport:?}, limit {limit}", reply.len());
        if decoded.is_none() {
            assert!(reply.len() <= data.len(), "an undecodable query drew {} bytes for {}", reply.len(), data.len());
        }
        let message = Message::from_vec(&reply).expect("the reply decodes");
        assert_eq!(message.metadata.message_type, MessageType::Response);
        assert_eq!(message.id.to_be_bytes(), [data[0], data[1]]);
    }
    if dns::truncated(data, &mut reply) {
        assert!(reply.len() <= usize::from(dns::PLAIN_UDP_PAYLOAD));
    }

    for from in [SocketAddr::from(([192, 0, 2, 1], 53_000)), client] {
        for _ in 0..3 {
            reply.clear();
            if node.handle_datagram(now, Face::Dns, from, data, &mut reply).is_some() {
                assert!(reply.len() <= udp_limit, "{} bytes", reply.len());
            }
        }
    }
    let mut framed = u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes().to_vec();
    framed.extend_from_slice(data);
    framed.extend_from_slice(data);
    let mut output = Vec::new();
    let mut input = framed.as_slice();
    while !input.is_empty() {
        let step = node.handle_stream(now, Face::DnsTcp, 0, input, &mut output);
        assert!(step.consumed <= input.len());
        if step.close || step.consumed == 0 {
            break;
        }
        input = &input[step.consumed..];
    }
}

/// A broker with two bridges, driven by a sequence of operations that `data` spells: client
/// queries for services it does not have (bridged), answers from the bridges and from
/// strangers (structured with arbitrary ids and instances, or raw bytes), queries from other
/// networks, and time. Checked after each: every datagram within the limit, every client
/// answer a reply to a query that client sent (at most one per query), the client answers in
/// the client's form, nothing stored in the table, and the waiting queries bounded.
pub fn bridge_session(data: &[u8]) {
    use crate::node::BridgeConfig;
    use crate::protocol::peer::{Peer, PeerFrame};
    let bridges = [SocketAddr::from(([127, 0, 1, 1], 7000)), SocketAddr::from(([127, 0, 1, 2], 7000))];
    let config = NodeConfig {
        bridges: BridgeConfig { bridges: bridges.to_vec(), ..BridgeConfig::default() },
        // The one local registration outlives any session.
        registry: crate::registry::Config { ttl: Duration::from_secs(1 << 30), ..crate::registry::Config::default() },
        ..NodeConfig::default()
    };
    let mut node = Node::new(config, Uuid::new_v4);
    let mut now = Instant::now();
    node.handle_start(now);
    node.handle_datagram(
        now,
        Face::Client,
        SocketAddr::from(([127, 0, 0, 9], 1)),
        b"register local 80",
        &mut Vec::new(),
    );
    // Queries sent and not yet answered, per client.
    let mut waiting: HashMap<SocketAddr, u32> = HashMap::new();
    let mut asked_ids: Vec<u32> = Vec::new();
    let (mut reply, mut out) = (Vec::new(), Vec::new());
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        let client = SocketAddr::from(([127, 0, 2, arg % 8], 40_000));
        let bridge = bridges[usize::from(arg % 2)];
        let datagram: Vec<u8> = match op % 6 {
            0 => {
                *waiting.entry(client).or_default() += 1;
                format!("query s{}", arg % 5).into_bytes()
            }
            1 | 2 => {
                let id = asked_ids.get(usize::from(arg) % asked_ids.len().max(1)).copied().unwrap_or(u32::from(arg));
                let count = usize::from(bytes.next().unwrap_or(0) % 200);
                let instances =
                    (0..count).map(|k| SocketAddr::from(([10, 0, (k / 250) as u8, k as u8], 4000))).collect();
                let mut frame = Vec::new();
                peer::encode(&PeerFrame { node: 7, body: Peer::Answer { id, instances } }, &mut frame);
                let from = if op % 6 == 1 { bridge } else { client };
                reply.clear();
                assert!(node.handle_datagram(now, Face::Client, from, &frame, &mut reply).is_none());
                Vec::new()
            }
            3 => {
                let mut frame = Vec::new();
                let service = format!("s{}", arg % 5);
                peer::encode(
                    &PeerFrame { node: 7, body: Peer::Query { id: u32::from(arg), service: &service } },
                    &mut frame,
                );
                frame
            }
            4 => {
                now += Duration::from_millis(u64::from(arg) * 5);
                node.handle_timeout(now);
                Vec::new()
            }
            _ => bytes.by_ref().take(usize::from(arg)).collect(),
        };
        if !datagram.is_empty() {
            reply.clear();
            if node.handle_datagram(now, Face::Client, client, &datagram, &mut reply).is_some() {
                assert!(reply.len() <= MAX_REPLY_LEN, "{} bytes", reply.len());
                if op % 6 == 0 {
                    *waiting.entry(client).or_default() -= 1;
                }
            }
        }
        while let Some(transmit) = node.poll_transmit(now, &mut out) {
            assert!(out.len() <= MAX_REPLY_LEN, "{} bytes", out.len());
            if bridges.contains(&transmit.to) {
                match peer::decode(&out) {
                    Ok(PeerFrame { body: Peer::Query { id, .. }, .. }) => asked_ids.push(id),
                    other => panic!("to a bridge: {other:?}"),
                }
            } else if peer::is_peer(&out) {
                assert!(matches!(peer::decode(&out), Ok(PeerFrame { body: Peer::Answer { .. }, .. })));
            } else {
                let answer = std::str::from_utf8(&out).expect("a text answer to a text query");
                assert!(answer == "NOT FOUND\n" || answer.starts_with("10.0."), "{answer:?}");
                let count = waiting.get_mut(&transmit.to).expect("an answer to a client that asked");
                assert!(*count > 0, "more answers than queries for {}", transmit.to);
                *count -= 1;
            }
        }
        assert_eq!(node.registry().len(), 1, "bridged answers are never stored");
    }
}
