//! The text form's decoder and encoder: every verb, the errors, checks and metadata.

use std::net::SocketAddr;

use super::*;

fn reply(response: &Response) -> String {
    let mut out = Vec::new();
    encode_response(response, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn every_verb_in_every_case() {
    assert_eq!(
        decode_request(b"register echo 4000").unwrap(),
        Request::Register { service: "echo", ip: None, port: 4000 }
    );
    assert_eq!(
        decode_request(b"Register echo 10.0.0.7 4000\n").unwrap(),
        Request::Register { service: "echo", ip: Some("10.0.0.7".parse().unwrap()), port: 4000 }
    );
    assert_eq!(
        decode_request(b"REGISTER echo [::1] 4000\r\n").unwrap(),
        Request::Register { service: "echo", ip: Some("::1".parse().unwrap()), port: 4000 }
    );
    let id = Uuid::from_u128(0x67e55044_10b1_426f_9247_bb680e5fe0c8);
    assert_eq!(decode_request(b"heartbeat 67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(), Request::Heartbeat { id });
    assert_eq!(
        decode_request(b"deregister 67e55044-10b1-426f-9247-bb680e5fe0c8\n").unwrap(),
        Request::Deregister { id }
    );
    assert_eq!(decode_request(b"query echo").unwrap(), Request::Query { service: "echo" });
    assert_eq!(decode_request(b"request\techo  ").unwrap(), Request::Query { service: "echo" });
    assert_eq!(decode_request(b"query echo local").unwrap(), Request::QueryLocal { service: "echo" });
    assert_eq!(decode_request(b"REQUEST echo Local").unwrap(), Request::QueryLocal { service: "echo" });
    assert!(matches!(
        decode_request(b"query echo remote"),
        Err(Rejection::Usage { usage }) if usage == "query <service> [local]"
    ));
    assert_eq!(decode_request(b"  stats\n").unwrap(), Request::Stats);
    assert_eq!(decode_request(b"services").unwrap(), Request::Services { cursor: 0 });
    assert_eq!(decode_request(b"LIST 17").unwrap(), Request::Services { cursor: 17 });
    assert_eq!(decode_request(b"instances echo").unwrap(), Request::Instances { service: "echo", cursor: 0 });
    assert_eq!(decode_request(b"instances echo 3").unwrap(), Request::Instances { service: "echo", cursor: 3 });
}

#[test]
fn listings_are_a_summary_line_then_a_line_each() {
    use crate::protocol::{InstanceInfo, InstancePage, ServiceCount, ServicePage, Source};
    let page =
        ServicePage { total: 3, services: vec![ServiceCount { name: "echo".into(), instances: 2 }], next: Some(4) };
    assert_eq!(reply(&Response::Services(page)), "services=3 next=4\nservice echo instances=2\n");
    assert_eq!(reply(&Response::Services(ServicePage::default())), "services=0\n");
    let page = InstancePage {
        total: 1,
        instances: vec![InstanceInfo {
            endpoint: "127.0.0.1:4000".parse().unwrap(),
            age_ms: 1500,
            expires_ms: 3500,
            leases: 1,
            source: Source::Unicast("127.0.0.1:50000".parse().unwrap()),
            check: crate::protocol::Check::Tcp,
            meta: crate::meta::Metadata::default(),
        }],
        next: None,
    };
    assert_eq!(
        reply(&Response::InstanceList(page)),
        "instances=1\ninstance 127.0.0.1:4000 age_ms=1500 expires_ms=3500 leases=1 source=127.0.0.1:50000 check=tcp\n"
    );
    let err = |line: &[u8]| format!("ERROR {}", decode_request(line).unwrap_err());
    assert_eq!(err(b"services x"), "ERROR usage: services [<cursor>]");
    assert_eq!(err(b"instances"), "ERROR usage: instances <service> [<cursor>]");
    assert_eq!(err(b"instances echo -1"), "ERROR usage: instances <service> [<cursor>]");
}

#[test]
fn errors_say_what_is_wrong() {
    let err = |line: &[u8]| format!("ERROR {}", decode_request(line).unwrap_err());
    assert_eq!(err(b""), "ERROR empty request");
    assert_eq!(err(b" \n"), "ERROR empty request");
    assert_eq!(err(b"\xff\xfe"), "ERROR request is not valid UTF-8");
    assert_eq!(err(b"query a\nquery b"), "ERROR one request per datagram: found more than one line");
    assert_eq!(
        err(b"fetch echo"),
        "ERROR unknown command \"fetch\": expected register, heartbeat, query, request, deregister, report, stats, services, list, instances, watch or unwatch"
    );
    assert_eq!(err(b"query"), "ERROR usage: query <service> [local]");
    assert_eq!(err(b"request a b"), "ERROR usage: request <service> [local]");
    assert_eq!(
        err(b"register echo"),
        "ERROR usage: register <service> [<ip>] <port> [check=tcp|check=http:<path>|check=none] [<key>=<value> ...]"
    );
    assert_eq!(err(b"register a b c d e f"), format!("ERROR usage: {REGISTER_USAGE}"));
    assert_eq!(err(b"register echo 0"), "ERROR bad port \"0\": expected a number from 1 to 65535");
    assert_eq!(err(b"register echo 65536"), "ERROR bad port \"65536\": expected a number from 1 to 65535");
    assert_eq!(err(b"register echo +80"), "ERROR bad port \"+80\": expected a number from 1 to 65535");
    assert_eq!(err(b"register echo 00080"), "ERROR bad port \"00080\": expected a number from 1 to 65535");
    assert_eq!(err(b"register echo 1.2.3 80"), "ERROR bad address \"1.2.3\": expected an IPv4 or IPv6 address");
    assert_eq!(
        err(b"heartbeat 1234"),
        "ERROR bad id \"1234\": expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8"
    );
    assert_eq!(err(b"stats now"), "ERROR usage: stats");
}

#[test]
fn registrations_declare_checks() {
    use crate::protocol::Check;
    let checked = |ip: Option<&str>, check| Request::RegisterChecked {
        service: "echo",
        ip: ip.map(|ip| ip.parse().unwrap()),
        port: 4000,
        check,
    };
    assert_eq!(decode_request(b"register echo 4000 check=tcp").unwrap(), checked(None, Check::Tcp));
    assert_eq!(
        decode_request(b"register echo 10.0.0.7 4000 check=http:/health\n").unwrap(),
        checked(Some("10.0.0.7"), Check::Http("/health"))
    );
    assert_eq!(decode_request(b"register echo 4000 check=none").unwrap(), checked(None, Check::None));
    let err = |line: &[u8]| format!("ERROR {}", decode_request(line).unwrap_err());
    assert_eq!(err(b"register echo 4000 check=http:x"), "ERROR bad check \"http:x\": a path starts with /");
    assert_eq!(err(b"register echo 4000 check=tcp 5"), "ERROR usage: options are key=value, not \"5\"");
    assert_eq!(err(b"register echo 1 2 3 check=tcp"), format!("ERROR usage: {REGISTER_USAGE}"));
    assert_eq!(err(b"register echo check=tcp"), format!("ERROR usage: {REGISTER_USAGE}"));
    for request in [checked(None, Check::Tcp), checked(Some("::1"), Check::Http("/h")), checked(None, Check::None)] {
        let mut line = Vec::new();
        encode_request(&request, &mut line);
        assert_eq!(decode_request(&line).unwrap(), request, "{}", String::from_utf8_lossy(&line));
    }
}

#[test]
fn registrations_carry_metadata() {
    use crate::protocol::Check;
    assert_eq!(
        decode_request(b"register web 8080 path=/ version=2").unwrap(),
        Request::RegisterMeta {
            service: "web",
            ip: None,
            port: 8080,
            check: Check::None,
            meta: vec![("path", "/"), ("version", "2")]
        }
    );
    let request = decode_request(b"register web ::1 8080 a= check=tcp b=x=y").unwrap();
    assert_eq!(
        request,
        Request::RegisterMeta {
            service: "web",
            ip: Some("::1".parse().unwrap()),
            port: 8080,
            check: Check::Tcp,
            meta: vec![("a", ""), ("b", "x=y")]
        }
    );
    let mut line = Vec::new();
    encode_request(&request, &mut line);
    assert_eq!(line, b"register web ::1 8080 check=tcp a= b=x=y\n");
    assert_eq!(decode_request(&line).unwrap(), request);
    let err = |line: &[u8]| format!("ERROR {}", decode_request(line).unwrap_err());
    assert_eq!(err(b"register web 80 =x"), "ERROR bad metadata \"=x\": the key is empty");
    assert_eq!(err(b"register web 80 a=1 A=2"), "ERROR metadata key \"A\" given twice");
    assert_eq!(
        err(b"register web 80 Check=tcp"),
        "ERROR metadata key \"Check\" is reserved: check= declares the health check"
    );
    assert_eq!(
        err("register web 80 k\u{e9}=1".as_bytes()),
        "ERROR bad metadata key \"k\u{e9}\": printable ASCII other than '=' (0x21-0x7E)"
    );
    let long = format!("register web 80 k={}", "v".repeat(254));
    assert_eq!(err(long.as_bytes()), "ERROR metadata pair too long: 256 bytes, at most 255");
    let many: String = (0..33).map(|i| format!(" k{i}=1")).collect();
    assert_eq!(err(format!("register web 80{many}").as_bytes()), "ERROR too much metadata: at most 32 pairs");
    let many: String = (0..34).map(|i| format!(" k{i}=1")).collect();
    assert_eq!(err(format!("register web 80{many}").as_bytes()), "ERROR usage: at most 33 key=value options");
    // The balancer's weight is a pair like any other.
    assert_eq!(decode_request(b"register web 80 weight=3").unwrap().metadata(), [("weight", "3")]);
}

#[test]
fn echoed_words_are_short_and_escaped() {
    let long = format!("x\u{1b}{}", "y".repeat(200));
    let message = format!("{}", decode_request(long.as_bytes()).unwrap_err());
    assert!(message.len() < 200, "{message}");
    assert!(message.contains("\\u{1b}") && message.contains('…'), "{message}");
}

#[test]
fn a_watch_echoes_its_cookie_in_16_hexadecimal_digits() {
    assert_eq!(
        decode_request(b"watch web 00c0ffee00c0ffee\n").unwrap(),
        Request::WatchEcho { service: "web", cookie: 0xc0ffee00c0ffee }
    );
    for bad in [&b"watch web xyz"[..], b"watch web +1", b"watch web 00c0ffee00c0ffee0", b"watch web 1 2"] {
        let usage = "watch <service> | watch <service> <cookie (16 hexadecimal digits)> [meta]";
        assert_eq!(decode_request(bad), Err(Rejection::Usage { usage: usage.into() }), "{bad:?}");
    }
    let mut out = Vec::new();
    encode_request(&Request::WatchEcho { service: "web", cookie: 0xc0ffee }, &mut out);
    assert_eq!(out, b"watch web 0000000000c0ffee\n");
    assert_eq!(reply(&Response::WatchCookie { cookie: 0xc0ffee }), "COOKIE 0000000000c0ffee\n");
}

#[test]
fn an_unwatch_carries_the_watchs_cookie() {
    assert_eq!(
        decode_request(b"unwatch web 00c0ffee00c0ffee\n").unwrap(),
        Request::UnwatchEcho { service: "web", cookie: 0xc0ffee00c0ffee }
    );
    // Without it the request reads, and the broker refuses it (`cookie required`).
    assert_eq!(decode_request(b"unwatch web").unwrap(), Request::Unwatch { service: "web" });
    for bad in [&b"unwatch web xyz"[..], b"unwatch web 00c0ffee00c0ffee0", b"unwatch web 1 2", b"unwatch"] {
        let usage = "unwatch <service> <cookie (16 hexadecimal digits)>";
        assert_eq!(decode_request(bad), Err(Rejection::Usage { usage: usage.into() }), "{bad:?}");
    }
    let mut out = Vec::new();
    encode_request(&Request::UnwatchEcho { service: "web", cookie: 0xc0ffee }, &mut out);
    assert_eq!(out, b"unwatch web 0000000000c0ffee\n");
    assert_eq!(
        reply(&Response::Error(Rejection::CookieRequired)),
        "ERROR cookie required: unwatch <service> <cookie>\n"
    );
    assert_eq!(reply(&Response::Error(Rejection::BadCookie)), "ERROR bad cookie: watch <service> for a fresh one\n");
}

#[test]
fn replies_are_single_lines() {
    let id = Uuid::from_u128(0x67e55044_10b1_426f_9247_bb680e5fe0c8);
    assert_eq!(reply(&Response::Registered { id, ttl_ms: 5000 }), "67e55044-10b1-426f-9247-bb680e5fe0c8\n");
    assert_eq!(reply(&Response::Ok), "OK\n");
    assert_eq!(reply(&Response::NotFound), "NOT FOUND\n");
    let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let b: SocketAddr = "[::1]:4001".parse().unwrap();
    assert_eq!(reply(&Response::Instances(vec![a, b])), "127.0.0.1:4000 [::1]:4001\n");
    assert_eq!(reply(&Response::Error(Rejection::Full { max: 3 })), "ERROR full: 3 instances registered\n");
}
