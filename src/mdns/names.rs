//! DNS-SD instance names (RFC 6763 §4): the one label that names an instance of a service, the
//! same on the unicast DNS face (`<instance>._<service>._tcp.<domain>`) and on the link
//! (`<instance>._<service>._tcp.local.`).
//!
//! The label is the instance's endpoint, written without dots: `10-0-0-5:8080` for IPv4 (the
//! dots of the address as dashes), `[fd00::1]:443` for IPv6. It is readable (what a Bonjour
//! browser lists is where the service listens), stable (the same for as long as the instance
//! lives, on every broker of a cluster, with no state to keep), unique within a service, and
//! read back without a table.
//!
//! Why no dots: a label may hold any bytes, and RFC 6763 §4.3 escapes dots and backslashes
//! inside a label as `\.` and `\\` in presentation form ([`escape_label`]; hickory-proto's
//! `Name` keeps a label's bytes whole). But python-zeroconf, the implementation Home Assistant
//! uses, joins a name's labels with `.` and splits on `.` again when it asks for the instance's
//! SRV: a dotted label would be listed and never resolved. With no dot, every peer reads it.
//!
//! On the link a name may be taken: the responder then claims `10-0-0-5:8080 (2)`, `(3)`, …
//! (RFC 6762 §9), which [`parse_instance_label`] reads back too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The longest label (RFC 1035).
pub const MAX_LABEL: usize = 63;

/// The instance label of `endpoint` (see the [module documentation](self)). At most 47 bytes
/// (`[` 39 `]:` 5), so a ` (NNN)` suffix still fits a label.
pub fn instance_label(endpoint: SocketAddr) -> String {
    match endpoint.ip() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{a}-{b}-{c}-{d}:{}", endpoint.port())
        }
        IpAddr::V6(_) => SocketAddr::new(endpoint.ip(), endpoint.port()).to_string(),
    }
}

/// The label `base` renamed for its `n`th claim after a conflict: `base (n)`.
pub fn renamed(base: &str, n: u32) -> String {
    if n <= 1 { base.to_owned() } else { format!("{base} ({n})") }
}

/// The endpoint an instance label names, if it is one: exactly as [`instance_label`] writes
/// it (one spelling per instance), with or without a ` (n)` suffix.
pub fn parse_instance_label(label: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(label).ok()?;
    let base = match text.strip_suffix(')').and_then(|t| t.rsplit_once(" (")) {
        Some((base, n)) if n.parse::<u32>().is_ok_and(|n| n >= 2) && !n.starts_with('0') => base,
        _ => text,
    };
    let endpoint: SocketAddr = if base.starts_with('[') {
        base.parse().ok()?
    } else {
        let (ip, port) = base.rsplit_once(':')?;
        SocketAddr::new(IpAddr::V4(ip.replace('-', ".").parse::<Ipv4Addr>().ok()?), port.parse().ok()?)
    };
    (instance_label(endpoint) == base).then_some(endpoint)
}

/// A label in presentation form, escaped as RFC 6763 §4.3 asks: `.` as `\.`, `\` as `\\`;
/// other bytes as they are (UTF-8 text stays readable).
pub fn escape_label(label: &str) -> String {
    let mut out = String::with_capacity(label.len() + 4);
    for c in label.chars() {
        if c == '.' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_have_one_spelling() {
        for (text, endpoint) in [
            ("10-0-0-5:8080", "10.0.0.5:8080"),
            ("[::1]:8003", "[::1]:8003"),
            ("[fd00::ab:cdef]:443", "[fd00::ab:cdef]:443"),
        ] {
            let endpoint: SocketAddr = endpoint.parse().unwrap();
            assert_eq!(instance_label(endpoint), text);
            assert_eq!(parse_instance_label(text.as_bytes()), Some(endpoint));
            assert_eq!(parse_instance_label(renamed(text, 2).as_bytes()), Some(endpoint));
            assert_eq!(parse_instance_label(renamed(text, 17).as_bytes()), Some(endpoint));
        }
        let longest = instance_label("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".parse().unwrap());
        assert!(renamed(&longest, 999).len() <= MAX_LABEL, "{longest}");
        for bad in [
            "[::01]:80",
            "10.0.0.5:08080",
            "[0:0::1]:80",
            "10.0.0.5",
            "x:80",
            "10.0.0.5:80 (1)",
            "10.0.0.5:80 (02)",
            "",
        ] {
            assert_eq!(parse_instance_label(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(renamed("a", 1), "a");
    }

    #[test]
    fn presentation_escapes_dots_and_backslashes() {
        assert_eq!(escape_label("10.0.0.5:8080"), r"10\.0\.0\.5:8080");
        assert_eq!(escape_label(r"a\b c"), r"a\\b c");
    }
}
