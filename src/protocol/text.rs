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
//! watch <service> <cookie> meta      -> the same, each reply followed by `meta <ip:port> <key>=<value> ...`
//!                                       lines; a change of metadata is a change
//! unwatch <service> <cookie>         -> OK | NOT FOUND | ERROR bad cookie …
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

const WATCH_USAGE: &str = "watch <service> | watch <service> <cookie (16 hexadecimal digits)> [meta]";

const UNWATCH_USAGE: &str = "unwatch <service> <cookie (16 hexadecimal digits)>";

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
            [service, cookie, meta] if meta.eq_ignore_ascii_case("meta") => match parse_cookie(cookie) {
                Some(cookie) => Ok(Request::WatchMeta { service, cookie }),
                None => Err(usage(WATCH_USAGE)),
            },
            _ => Err(usage(WATCH_USAGE)),
        }
    } else if verb.eq_ignore_ascii_case("unwatch") {
        match args.as_slice() {
            [service] => Ok(Request::Unwatch { service }),
            [service, cookie] => match parse_cookie(cookie) {
                Some(cookie) => Ok(Request::UnwatchEcho { service, cookie }),
                None => Err(usage(UNWATCH_USAGE)),
            },
            _ => Err(usage(UNWATCH_USAGE)),
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
        Request::WatchMeta { service, cookie } => writeln!(out, "watch {service} {cookie:016x} meta"),
        Request::UnwatchEcho { service, cookie } => writeln!(out, "unwatch {service} {cookie:016x}"),
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
        // The line of a `Watching` or `Changed`, then a `meta` line per instance with metadata.
        Response::WatchingMeta { service, seq, ttl_ms, instances, meta } => {
            let _ = write!(out, "WATCHING {service} seq={seq} ttl_ms={ttl_ms}");
            let _ = write_instances(instances, out);
            write_meta_lines(instances, meta, out);
            Ok(())
        }
        Response::ChangedMeta { service, seq, instances, meta } => {
            let _ = write!(out, "CHANGED {service} seq={seq}");
            let _ = write_instances(instances, out);
            write_meta_lines(instances, meta, out);
            Ok(())
        }
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

/// `meta <ip:port> <key>=<value> …` for each instance that has metadata (escaped as
/// [`crate::meta::Metadata`]'s `Display` says).
fn write_meta_lines(instances: &[std::net::SocketAddr], meta: &[super::listing::MetaPairs], out: &mut Vec<u8>) {
    for (instance, pairs) in instances.iter().zip(meta) {
        let meta = super::listing::metadata_of(pairs);
        if !meta.is_empty() {
            let _ = writeln!(out, "meta {instance} {meta}");
        }
    }
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
mod tests;
