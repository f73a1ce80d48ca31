//! Property tests of both codecs: no input makes a decoder panic, and what is encoded decodes
//! to the same message.

use std::net::{IpAddr, SocketAddr};

use makler::protocol::{self, BrokerStats, Form, Rejection, Request, Response, binary, text};
use proptest::prelude::*;
use uuid::Uuid;

fn service() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)]
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    (ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Requests with owned names; [`as_request`] borrows them.
#[derive(Debug, Clone)]
enum Owned {
    Register(String, Option<IpAddr>, u16),
    RegisterChecked(String, Option<IpAddr>, u16, Option<String>, bool),
    Heartbeat(Uuid),
    Query(String),
    Deregister(Uuid),
    Stats,
}

fn owned_request() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (service(), proptest::option::of(ip()), 1u16..).prop_map(|(s, ip, p)| Owned::Register(s, ip, p)),
        (service(), proptest::option::of(ip()), 1u16.., proptest::option::of("/[!-~]{0,40}"), any::<bool>())
            .prop_map(|(s, ip, p, path, tcp)| Owned::RegisterChecked(s, ip, p, path, tcp)),
        uuid().prop_map(Owned::Heartbeat),
        service().prop_map(Owned::Query),
        uuid().prop_map(Owned::Deregister),
        Just(Owned::Stats),
    ]
}

fn as_request(owned: &Owned) -> Request<'_> {
    match owned {
        Owned::Register(service, ip, port) => Request::Register { service, ip: *ip, port: *port },
        Owned::RegisterChecked(service, ip, port, path, tcp) => Request::RegisterChecked {
            service,
            ip: *ip,
            port: *port,
            check: match (path, tcp) {
                (Some(path), _) => protocol::Check::Http(path),
                (None, true) => protocol::Check::Tcp,
                (None, false) => protocol::Check::None,
            },
        },
        Owned::Heartbeat(id) => Request::Heartbeat { id: *id },
        Owned::Query(service) => Request::Query { service },
        Owned::Deregister(id) => Request::Deregister { id: *id },
        Owned::Stats => Request::Stats,
    }
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (uuid(), any::<u32>()).prop_map(|(id, ttl_ms)| Response::Registered { id, ttl_ms }),
        Just(Response::Ok),
        proptest::collection::vec(addr(), 1..50).prop_map(Response::Instances),
        Just(Response::NotFound),
        any::<[u64; 8]>().prop_map(|[a, b, c, d, e, f, g, h]| Response::Stats(Box::new(BrokerStats {
            counters: [
                ("instances", a),
                ("services", b),
                ("received", c),
                ("rejected", d),
                ("expired", e),
                ("send_failures", f),
                ("announcements", g),
                ("multicast_ignored", h),
                ("complete", a % 2),
                ("replicated_out", b ^ c),
                ("peer_count", 2),
                ("peers_up", 1),
            ]
            .into_iter()
            .map(|(name, value)| makler::protocol::Counter::new(name, value))
            .collect(),
            peers: vec![
                makler::protocol::PeerStats {
                    addr: "127.0.0.1:7000".parse().unwrap(),
                    up: true,
                    complete: false,
                    instances: h,
                    last_heard_ms: Some(g),
                },
                makler::protocol::PeerStats {
                    addr: "[::1]:7001".parse().unwrap(),
                    up: false,
                    complete: true,
                    instances: 0,
                    last_heard_ms: None,
                },
            ],
            ..BrokerStats::default()
        }))),
        Just(Response::CatchingUp),
        addr().prop_map(|addr| Response::BrokerHere { addr }),
        any::<u32>().prop_map(|max| Response::Error(Rejection::Full { max })),
        ".{0,40}".prop_map(|why| Response::Error(Rejection::Malformed { why })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_bytes_make_a_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = protocol::decode_request(&bytes);
        let _ = text::decode_request(&bytes);
        let _ = binary::decode_response(&bytes);
    }

    #[test]
    fn no_bytes_on_the_group_make_the_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = binary::decode::<protocol::Multicast<'_>>(&bytes);
        let mut datagram = vec![binary::VERSION_BYTE];
        datagram.extend_from_slice(&bytes);
        let _ = binary::decode::<protocol::Multicast<'_>>(&datagram);
    }

    #[test]
    fn multicast_messages_round_trip(id in any::<u32>(), origin in any::<u64>(), owned in owned_request(), addr in addr()) {
        let message = match as_request(&owned) {
            Request::Register { service, ip, port } => protocol::Multicast::Announce { origin, service, ip, port },
            Request::Query { service } => protocol::Multicast::Goodbye { origin, service, ip: None, port: 1 },
            Request::Heartbeat { .. } => protocol::Multicast::Discover { origin },
            Request::Deregister { .. } => protocol::Multicast::ClusterHello { origin, addr, cluster: "makler" },
            _ => protocol::Multicast::BrokerHello { origin, addr },
        };
        let mut datagram = Vec::new();
        binary::encode(id, &message, &mut datagram);
        let frame = binary::decode::<protocol::Multicast<'_>>(&datagram).unwrap();
        prop_assert_eq!((frame.id, frame.body), (id, message));
    }

    #[test]
    fn no_binary_body_makes_a_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut datagram = vec![binary::VERSION_BYTE];
        datagram.extend_from_slice(&bytes);
        if let Err(e) = protocol::decode_request(&datagram) {
            prop_assert!(matches!(e.form, Form::Binary { .. }), "form {:?}", e.form);
        }
        let _ = binary::decode_response(&datagram);
    }

    #[test]
    fn no_text_line_makes_the_decoder_panic(line in "\\PC{0,100}") {
        if let Err(e) = protocol::decode_request(line.as_bytes()) {
            prop_assert_eq!(e.form, Form::Text);
        }
    }

    #[test]
    fn binary_requests_round_trip(id in any::<u32>(), owned in owned_request()) {
        let request = as_request(&owned);
        let mut datagram = Vec::new();
        binary::encode_request(id, &request, &mut datagram);
        prop_assert_eq!(protocol::decode_request(&datagram), Ok((Form::Binary { request_id: id }, request)));
    }

    #[test]
    fn text_requests_round_trip(owned in owned_request()) {
        let request = as_request(&owned);
        let mut line = Vec::new();
        text::encode_request(&request, &mut line);
        prop_assert_eq!(protocol::decode_request(&line), Ok((Form::Text, request)));
    }

    #[test]
    fn binary_responses_round_trip(id in any::<u32>(), response in response()) {
        let mut datagram = Vec::new();
        protocol::encode_reply(Form::Binary { request_id: id }, &response, &mut datagram);
        prop_assert_eq!(binary::decode_response(&datagram), Ok((id, response)));
    }

    #[test]
    fn truncated_binary_frames_are_refused(id in any::<u32>(), owned in owned_request(), cut in any::<prop::sample::Index>()) {
        let mut datagram = Vec::new();
        binary::encode_request(id, &as_request(&owned), &mut datagram);
        let cut = 1 + cut.index(datagram.len() - 1);
        prop_assert!(protocol::decode_request(&datagram[..cut]).is_err());
    }
}
