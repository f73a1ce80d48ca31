//! `makler-load query`: query load at several targets, in alternating rounds, for the same
//! service names: the broker in its binary and text forms, and DNS servers asked for SRV
//! records. The first target is the reference.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::dns::DnsLoad;
use crate::rounds::Target;
use crate::udp::Workload;
use crate::wire::{BrokerLoad, EchoLoad, Form, Op, Table};

/// The protocols a query target can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SRV queries for `_NAME._tcp.ZONE.`.
    Dns,
    /// The broker's binary `Query`.
    Binary,
    /// The broker's `query NAME`.
    Text,
    /// The binary `Query` sent to an echo server (`makler-load echo-server`): good when the
    /// very request comes back, as in `makler-load udp`'s reference rounds.
    Echo,
}

/// One target of `makler-load query`, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// The name in the table (the protocol when none was given).
    pub label: String,
    /// What it speaks.
    pub protocol: Protocol,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The processes that answer, for their CPU time per reply (none: not reported).
    pub pids: Vec<u32>,
}

impl std::str::FromStr for TargetSpec {
    type Err = String;

    /// `[LABEL:]PROTOCOL=ADDR[/PID,PID…]`, e.g. `nsd:dns=127.0.0.1:5353/812,813` or
    /// `binary=[::1]:7000`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage =
            || format!("{text:?}: expected [LABEL:]PROTOCOL=ADDR[/PID,…] with PROTOCOL dns, binary, text or echo");
        let (left, right) = text.split_once('=').ok_or_else(usage)?;
        let (addr, pids) = match right.split_once('/') {
            Some((addr, pids)) => {
                let pids = pids.split(',').map(|p| p.trim().parse::<u32>()).collect::<Result<Vec<_>, _>>();
                (addr, pids.map_err(|_| usage())?)
            }
            None => (right, Vec::new()),
        };
        let (label, protocol) = match left.split_once(':') {
            Some((label, protocol)) => (Some(label), protocol),
            None => (None, left),
        };
        let protocol = match protocol {
            "dns" => Protocol::Dns,
            "binary" => Protocol::Binary,
            "text" => Protocol::Text,
            "echo" => Protocol::Echo,
            _ => return Err(usage()),
        };
        let addr = makler::cli::parse_addr(addr)?;
        let label = match label {
            Some(label) if !label.is_empty() => label.to_owned(),
            _ => left.trim_start_matches(':').to_owned(),
        };
        Ok(TargetSpec { label, protocol, addr, pids })
    }
}

/// The targets for `specs`, all asking for `names` (in `zone` for DNS).
pub fn targets(specs: &[TargetSpec], names: Vec<String>, zone: &str) -> Result<Vec<Target>, String> {
    if names.is_empty() {
        return Err("the names file holds no name".into());
    }
    let dns = DnsLoad::new(&names, zone)?;
    let table = Arc::new(Table { names, ..Table::default() });
    Ok(specs
        .iter()
        .map(|spec| {
            let workload: Box<dyn Workload> = match spec.protocol {
                Protocol::Dns => Box::new(dns.clone()),
                Protocol::Binary => Box::new(BrokerLoad::new(Arc::clone(&table), Form::Binary, Op::Query)),
                Protocol::Text => Box::new(BrokerLoad::new(Arc::clone(&table), Form::Text, Op::Query)),
                Protocol::Echo => Box::new(EchoLoad::new(Arc::clone(&table))),
            };
            Target { label: spec.label.clone(), addr: spec.addr, workload, server_pids: spec.pids.clone() }
        })
        .collect())
}

/// The names in a names file: one per line, blank lines and `#` comments skipped.
pub fn read_names(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_specs() {
        let spec: TargetSpec = "nsd:dns=127.0.0.1:5353".parse().unwrap();
        let addr = "127.0.0.1:5353".parse().unwrap();
        assert_eq!(spec, TargetSpec { label: "nsd".into(), protocol: Protocol::Dns, addr, pids: vec![] });
        let spec: TargetSpec = "nsd:dns=127.0.0.1:5353/12,13".parse().unwrap();
        assert_eq!(spec.pids, vec![12, 13]);
        assert!("dns=127.0.0.1:53/x".parse::<TargetSpec>().is_err());
        let spec: TargetSpec = "text=[::1]:7000".parse().unwrap();
        assert_eq!((spec.label.as_str(), spec.protocol), ("text", Protocol::Text));
        assert!("smtp=127.0.0.1:25".parse::<TargetSpec>().is_err());
        let spec: TargetSpec = "echo=127.0.0.1:7/9".parse().unwrap();
        assert_eq!((spec.label.as_str(), spec.protocol, spec.pids), ("echo", Protocol::Echo, vec![9]));
        assert!("dns:127.0.0.1:53".parse::<TargetSpec>().is_err());
        assert!("dns=localhost".parse::<TargetSpec>().is_err());
        // A host name, as every address flag takes one.
        let spec: TargetSpec = "dns=localhost:53".parse().unwrap();
        assert!(spec.addr.ip().is_loopback() && spec.addr.port() == 53);
    }

    #[test]
    fn names_files() {
        assert_eq!(read_names("# services\nsvc0\n\n svc1 \n"), vec!["svc0", "svc1"]);
        assert!(targets(&[], Vec::new(), "makler.test").is_err());
    }
}
