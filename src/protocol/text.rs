//! The text form: one request per datagram as a line of UTF-8, made for `socat` and `nc`.
//!
//! ```text
//! register <service> <port>          -> <uuid>            (the IP is the datagram's source)
//! register <service> <ip> <port>     -> <uuid>
//! register … <port> check=<check>    -> <uuid>            (check=tcp, check=http:<path>, check=none)
//! register … <port> <key>=<value> …  -> <uuid>            (metadata, beside check= in any order)
//! heartbeat <uuid>                   -> OK | NOT FOUND
//! query <service>                    -> <ip:port> <ip:port> ... | NOT FOUND
//! request <service>                  -> the same as query
//! deregister <uuid>                  -> OK | NOT FOUND
//! report <service> <ip:port>         -> OK | NOT FOUND
//! stats                              -> instances=<n> services=<n> ...
//! services [<cursor>]                -> services=<n> [next=<cursor>], then `service <name> instances=<n>` lines
//! list [<cursor>]                    -> the same as services
//! instances <service> [<cursor>]     -> instances=<n> [next=<cursor>], then `instance <ip:port> …` lines
//! watch <service>                    -> COOKIE <cookie>   (16 hexadecimal digits, to echo:)
//! watch <service> <cookie>           -> WATCHING <service> seq=<n> ttl_ms=<ms> <ip:port> ... | COOKIE <cookie>
//!                                       then, pushed on every change: CHANGED <service> seq=<n> <ip:port> ...
//! unwatch <service>                  -> OK | NOT FOUND
//! anything else                      -> ERROR <reason>
//! ```
//!
//! Verbs are case-insensitive, words are separated by spaces or tabs, and a trailing newline is
//! optional. Every reply is one line ending in a newline.
//!
//! ```
//! use makler::protocol::{text, Request, Response};
//!
//! let request = text::decode_request(b"QUERY echo\r\n").unwrap();
//! assert_eq!(request, Request::Query { service: "echo" });
//!
//! let mut out = Vec::new();
//! text::encode_response(&Response::NotFound, &mut out);
//! assert_eq!(out, b"NOT FOUND\n");
//! ```

use std::io::Write;
use std::net::IpAddr;

use uuid::Uuid;

use super::{Check, Rejection, Request, Response, excerpt};

/// How many characters of an unparsable word an error message repeats.
const ECHO_CHARS: usize = 40;

const WATCH_USAGE: &str = "watch <service> | watch <service> <cookie (16 hexadecimal digits)>";

const REGISTER_USAGE: &str =
    "register <service> [<ip>] <port> [check=tcp|check=http:<path>|check=none] [<key>=<value> ...]";

/// Decodes one text request. Never panics; every failure is a [`Rejection`] whose text says
/// what is wrong.
pub fn decode_request(datagram: &[u8]) -> Result<Request<'_>, Rejection> {
    let line = std::str::from_utf8(datagram).map_err(|_| Rejection::NotUtf8)?;
    let line = line.trim_end_matches(|c: char| c.is_ascii_whitespace());
    if line.contains(['\n', '\r']) {
        return Err(Rejection::MultipleLines);
    }
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().ok_or(Rejection::Empty)?;
    if verb.eq_ignore_ascii_case("register") {
        return decode_register(words);
    }
    let args: Args<'_> = Args::collect(words);

    if verb.eq_ignore_ascii_case("heartbeat") {
        match args.as_slice() {
            [id] => Ok(Request::Heartbeat { id: parse_id(id)? }),
            _ => Err(usage("heartbeat <uuid>")),
        }
    } else if verb.eq_ignore_ascii_case("query") || verb.eq_ignore_ascii_case("request") {
        match args.as_slice() {
            [service] => Ok(Request::Query { service }),
            [service, local] if local.eq_ignore_ascii_case("local") => Ok(Request::QueryLocal { service }),
            _ => Err(usage(&format!("{} <service> [local]", verb.to_ascii_lowercase()))),
        }
    } else if verb.eq_ignore_ascii_case("deregister") {
        match args.as_slice() {
            [id] => Ok(Request::Deregister { id: parse_id(id)? }),
            _ => Err(usage("deregister <uuid>")),
        }
    } else if verb.eq_ignore_ascii_case("report") {
        match args.as_slice() {
            [service, endpoint] => Ok(Request::Report { service, endpoint: parse_endpoint(endpoint)? }),
            _ => Err(usage("report <service> <ip:port>")),
        }
    } else if verb.eq_ignore_ascii_case("stats") {
        match args.as_slice() {
            [] => Ok(Request::Stats),
            _ => Err(usage("stats")),
        }
    } else if verb.eq_ignore_ascii_case("services") || verb.eq_ignore_ascii_case("list") {
        let usage_line = || usage(&format!("{} [<cursor>]", verb.to_ascii_lowercase()));
        match args.as_slice() {
            [] => Ok(Request::Services { cursor: 0 }),
            [cursor] => Ok(Request::Services { cursor: parse_cursor(cursor).ok_or_else(usage_line)? }),
            _ => Err(usage_line()),
        }
    } else if verb.eq_ignore_ascii_case("instances") {
        let usage_line = || usage("instances <service> [<cursor>]");
        match args.as_slice() {
            [service] => Ok(Request::Instances { service, cursor: 0 }),
            [service, cursor] => {
                Ok(Request::Instances { service, cursor: parse_cursor(cursor).ok_or_else(usage_line)? })
            }
            _ => Err(usage_line()),
        }
    } else if verb.eq_ignore_ascii_case("watch") {
        match args.as_slice() {
            [service] => Ok(Request::Watch { service }),
            [service, cookie] => match parse_cookie(cookie) {
                Some(cookie) => Ok(Request::WatchEcho { service, cookie }),
                None => Err(usage(WATCH_USAGE)),
            },
            _ => Err(usage(WATCH_USAGE)),
        }
    } else if verb.eq_ignore_ascii_case("unwatch") {
        match args.as_slice() {
            [service] => Ok(Request::Unwatch { service }),
            _ => Err(usage("unwatch <service>")),
        }
    } else {
        Err(Rejection::UnknownCommand { verb: excerpt(verb, ECHO_CHARS) })
    }
}

/// `register <service> [<ip>] <port> [key=value …]`: the positional words, then the options
/// (the first word with a `=` starts them; no IP, port or service name has one).
fn decode_register<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<Request<'a>, Rejection> {
    let service = words.next().ok_or_else(|| usage(REGISTER_USAGE))?;
    let mut positional: Args<'a> = Args { words: [""; 4], len: 0 };
    let mut words = words.peekable();
    while let Some(word) = words.next_if(|word| !word.contains('=')) {
        if positional.len == 2 {
            return Err(usage(REGISTER_USAGE));
        }
        positional.words[positional.len] = word;
        positional.len += 1;
    }
    let (ip, port) = match positional.as_slice() {
        [port] => (None, parse_port(port)?),
        [ip, port] => (Some(parse_ip(ip)?), parse_port(port)?),
        _ => return Err(usage(REGISTER_USAGE)),
    };
    match super::check::Options::parse(words)? {
        super::check::Options { check: None, meta } if meta.is_empty() => Ok(Request::Register { service, ip, port }),
        super::check::Options { check: Some(check), meta } if meta.is_empty() => {
            Ok(Request::RegisterChecked { service, ip, port, check })
        }
        super::check::Options { check, meta } => {
            Ok(Request::RegisterMeta { service, ip, port, check: check.unwrap_or_default(), meta })
        }
    }
}

/// Writes the text form of `request` as one line ending in `\n` at the end of `out`, the way a
/// person would type it.
pub fn encode_request(request: &Request<'_>, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = match request {
        Request::Register { service, ip: None, port } => writeln!(out, "register {service} {port}"),
        Request::Register { service, ip: Some(ip), port } => writeln!(out, "register {service} {ip} {port}"),
        Request::Heartbeat { id } => writeln!(out, "heartbeat {}", id.hyphenated()),
        Request::Query { service } => writeln!(out, "query {service}"),
        Request::Deregister { id } => writeln!(out, "deregister {}", id.hyphenated()),
        Request::Stats => writeln!(out, "stats"),
        Request::Report { service, endpoint } => writeln!(out, "report {service} {endpoint}"),
        Request::Services { cursor: 0 } => writeln!(out, "services"),
        Request::Services { cursor } => writeln!(out, "services {cursor}"),
        // The text listing shows each instance's check: `instances` is both.
        Request::Instances { service, cursor: 0 } | Request::InstancesChecked { service, cursor: 0 } => {
            writeln!(out, "instances {service}")
        }
        Request::Instances { service, cursor } | Request::InstancesChecked { service, cursor } => {
            writeln!(out, "instances {service} {cursor}")
        }
        Request::Watch { service } => writeln!(out, "watch {service}"),
        Request::Unwatch { service } => writeln!(out, "unwatch {service}"),
        Request::QueryLocal { service } => writeln!(out, "query {service} local"),
        Request::WatchEcho { service, cookie } => writeln!(out, "watch {service} {cookie:016x}"),
        Request::RegisterChecked { service, ip: None, port, check } => {
            writeln!(out, "register {service} {port} check={check}")
        }
        Request::RegisterChecked { service, ip: Some(ip), port, check } => {
            writeln!(out, "register {service} {ip} {port} check={check}")
        }
        Request::InstancesMeta { service, cursor: 0 } => writeln!(out, "instances {service}"),
        Request::InstancesMeta { service, cursor } => writeln!(out, "instances {service} {cursor}"),
        Request::RegisterMeta { service, ip, port, check, meta } => {
            let _ = write!(out, "register {service}");
            if let Some(ip) = ip {
                let _ = write!(out, " {ip}");
            }
            let _ = write!(out, " {port}");
            if !check.is_none() {
                let _ = write!(out, " check={check}");
            }
            for (key, value) in meta {
                let _ = write!(out, " {key}={value}");
            }
            writeln!(out)
        }
    };
}

/// ` <ip:port>` for each instance, then the newline.
fn write_instances(instances: &[std::net::SocketAddr], out: &mut Vec<u8>) -> std::io::Result<()> {
    for instance in instances {
        write!(out, " {instance}")?;
    }
    writeln!(out)
}

/// Writes the text form of `response`, one line ending in `\n`, at the end of `out`.
pub fn encode_response(response: &Response, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = match response {
        Response::Registered { id, .. } => writeln!(out, "{}", id.hyphenated()),
        Response::Ok => writeln!(out, "OK"),
        Response::Instances(instances) => {
            for (i, instance) in instances.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                let _ = write!(out, "{instance}");
            }
            writeln!(out)
        }
        Response::NotFound => writeln!(out, "NOT FOUND"),
        Response::CatchingUp => writeln!(out, "NOT FOUND (catching up)"),
        // A summary line, then a line per peer.
        Response::Stats(s) => {
            write_counters(&s.counters, &[], out);
            for p in &s.peers {
                let _ = write!(out, "peer {} {}", p.addr, if p.up { "up" } else { "down" });
                let _ = match p.last_heard_ms {
                    Some(ms) => write!(out, " last_heard_ms={ms}"),
                    None => write!(out, " last_heard_ms=never"),
                };
                let _ = writeln!(out, " complete={} instances={}", if p.complete { "yes" } else { "no" }, p.instances);
            }
            for b in &s.bridges {
                let _ = writeln!(
                    out,
                    "bridge {} {} asked={} found={} timeouts={}",
                    b.addr,
                    if b.up { "up" } else { "down" },
                    b.asked,
                    b.found,
                    b.timeouts
                );
            }
            Ok(())
        }
        Response::BrokerHere { addr } => writeln!(out, "BROKER {addr}"),
        Response::Watching { service, seq, ttl_ms, instances } => {
            let _ = write!(out, "WATCHING {service} seq={seq} ttl_ms={ttl_ms}");
            write_instances(instances, out)
        }
        Response::Changed { service, seq, instances } => {
            let _ = write!(out, "CHANGED {service} seq={seq}");
            write_instances(instances, out)
        }
        Response::WatchCookie { cookie } => writeln!(out, "COOKIE {cookie:016x}"),
        // A summary line, then a line per service or instance.
        Response::Services(page) => {
            let _ = write!(out, "services={}", page.total);
            encode_next(page.next, out);
            for service in &page.services {
                encode_service_line(service, out);
            }
            Ok(())
        }
        Response::InstanceList(page) => {
            let _ = write!(out, "instances={}", page.total);
            encode_next(page.next, out);
            for instance in &page.instances {
                encode_instance_line(instance, out);
            }
            Ok(())
        }
        Response::InstanceListChecked { page, checks } => {
            let _ = write!(out, "instances={}", page.total);
            encode_next(page.next, out);
            for (instance, check) in page.instances.iter().zip(checks.iter().chain(std::iter::repeat(&Check::None))) {
                encode_instance_line(&super::InstanceInfo { check: check.clone(), ..instance.clone() }, out);
            }
            Ok(())
        }
        Response::InstanceListMeta { page, checks, meta } => {
            let _ = write!(out, "instances={}", page.total);
            encode_next(page.next, out);
            for (k, instance) in page.instances.iter().enumerate() {
                let check = checks.get(k).cloned().unwrap_or_default();
                let meta = meta.get(k).map(|pairs| super::listing::metadata_of(pairs)).unwrap_or_default();
                encode_instance_line(&super::InstanceInfo { check, meta, ..instance.clone() }, out);
            }
            Ok(())
        }
        Response::Error(rejection) => writeln!(out, "ERROR {rejection}"),
        // The one reply of several lines: a summary, then a line per backend.
        Response::BalancerStats(s) => {
            let threads: Vec<String> = s.accepted_per_thread.iter().map(u64::to_string).collect();
            write_counters(&s.counters, &[("threads", threads.join("/"))], out);
            for b in &s.backends {
                encode_backend_line(b, out);
            }
            Ok(())
        }
    };
}

/// Writes the counters' line of a `stats` reply (`name=value …`, then `more`) at the end of `out`.
fn write_counters(counters: &[super::Counter], more: &[(&str, String)], out: &mut Vec<u8>) {
    let words = super::stats::text_words(counters);
    for (i, (name, value)) in words.iter().chain(more).enumerate() {
        let space = if i == 0 { "" } else { " " };
        let _ = write!(out, "{space}{name}={value}");
    }
    out.push(b'\n');
}

/// Writes one backend's line of a balancer's `stats` reply at the end of `out`.
pub fn encode_backend_line(b: &super::BackendStats, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        out,
        "backend {} {} active={} total={} bytes_to={} bytes_from={} failures={}",
        b.addr,
        if b.up { "up" } else { "down" },
        b.active,
        b.total,
        b.bytes_to,
        b.bytes_from,
        b.failures
    );
}

/// Ends a listing's summary line: ` next=<cursor>` when another page follows.
fn encode_next(next: Option<u32>, out: &mut Vec<u8>) {
    let _ = match next {
        Some(cursor) => writeln!(out, " next={cursor}"),
        None => writeln!(out),
    };
}

/// Writes one service's line of a `services` reply at the end of `out`.
pub fn encode_service_line(service: &super::ServiceCount, out: &mut Vec<u8>) {
    let _ = writeln!(out, "service {} instances={}", service.name, service.instances);
}

/// Writes one instance's line of an `instances` reply at the end of `out`: its fixed fields,
/// then its metadata pairs, if any (escaped as [`crate::meta::Metadata`]'s `Display` says).
pub fn encode_instance_line(i: &super::InstanceInfo, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "instance {} age_ms={} expires_ms={} leases={} source={} check={}",
        i.endpoint, i.age_ms, i.expires_ms, i.leases, i.source, i.check
    );
    if !i.meta.is_empty() {
        let _ = write!(out, " {}", i.meta);
    }
    out.push(b'\n');
}

/// A page cursor: decimal digits, as `next=` wrote it.
/// A watch cookie: 1 to 16 hexadecimal digits (the broker writes 16), nothing else.
fn parse_cookie(word: &str) -> Option<u64> {
    if word.is_empty() || word.len() > 16 || !word.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(word, 16).ok()
}

fn parse_cursor(word: &str) -> Option<u32> {
    word.bytes().all(|b| b.is_ascii_digit()).then(|| word.parse().ok()).flatten()
}

/// The words after the verb; at most four are kept, which is more than any verb takes, so a
/// long line of words costs nothing and still gets a usage error.
struct Args<'a> {
    words: [&'a str; 4],
    len: usize,
}

impl<'a> Args<'a> {
    fn collect(words: impl Iterator<Item = &'a str>) -> Self {
        let mut args = Args { words: [""; 4], len: 0 };
        for word in words {
            if args.len == args.words.len() {
                break;
            }
            args.words[args.len] = word;
            args.len += 1;
        }
        args
    }

    fn as_slice(&self) -> &[&'a str] {
        &self.words[..self.len]
    }
}

fn usage(usage: &str) -> Rejection {
    Rejection::Usage { usage: usage.to_owned() }
}

/// A port in its one canonical form: decimal digits, no sign, no leading zero, 1 to 65535.
fn parse_port(word: &str) -> Result<u16, Rejection> {
    let canonical = word.bytes().all(|b| b.is_ascii_digit()) && !word.starts_with('0');
    match word.parse::<u16>() {
        Ok(port) if canonical && port != 0 => Ok(port),
        _ => Err(Rejection::BadPort { port: excerpt(word, ECHO_CHARS) }),
    }
}

fn parse_ip(word: &str) -> Result<IpAddr, Rejection> {
    let bare = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')).unwrap_or(word);
    bare.parse().map_err(|_| Rejection::BadIp { ip: excerpt(word, ECHO_CHARS) })
}

fn parse_endpoint(word: &str) -> Result<std::net::SocketAddr, Rejection> {
    word.parse().map_err(|_| Rejection::BadEndpoint { endpoint: excerpt(word, ECHO_CHARS) })
}

fn parse_id(word: &str) -> Result<Uuid, Rejection> {
    Uuid::try_parse(word).map_err(|_| Rejection::BadId { id: excerpt(word, ECHO_CHARS) })
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            decode_request(b"heartbeat 67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
            Request::Heartbeat { id }
        );
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
        for request in [checked(None, Check::Tcp), checked(Some("::1"), Check::Http("/h")), checked(None, Check::None)]
        {
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
            let usage = "watch <service> | watch <service> <cookie (16 hexadecimal digits)>";
            assert_eq!(decode_request(bad), Err(Rejection::Usage { usage: usage.into() }), "{bad:?}");
        }
        let mut out = Vec::new();
        encode_request(&Request::WatchEcho { service: "web", cookie: 0xc0ffee }, &mut out);
        assert_eq!(out, b"watch web 0000000000c0ffee\n");
        assert_eq!(reply(&Response::WatchCookie { cookie: 0xc0ffee }), "COOKIE 0000000000c0ffee\n");
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
}
