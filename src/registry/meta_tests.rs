//! Metadata in the table: kept per lease in a side map, replaced by a refresh that carries
//! some, kept by one that does not, taken from peers under the merge rule.

use std::net::SocketAddr;

use super::*;
use crate::meta::Metadata;
use crate::protocol::Source;
use crate::protocol::{Request, Response, text};
use crate::service::{self, Plain};

fn registry() -> Registry {
    let mut next = 0u128;
    Registry::new(Config::default(), move || {
        next += 1;
        Uuid::from_u128(next)
    })
}

fn meta(words: &[&str]) -> Metadata {
    Metadata::parse_words(words.iter().copied()).unwrap()
}

const WEB: &str = "web";

fn endpoint() -> SocketAddr {
    "10.0.0.5:8080".parse().unwrap()
}

fn source(port: u16) -> Source {
    Source::Unicast(SocketAddr::from(([10, 0, 0, 5], port)))
}

#[test]
fn a_lease_without_metadata_adds_nothing_and_a_refresh_replaces_them() {
    let t0 = Instant::now();
    let mut r = registry();
    r.register(t0, WEB, endpoint(), source(1)).unwrap();
    assert_eq!((r.meta_count(), r.metadata(WEB, endpoint())), (0, None));

    let id = r.register_meta(t0, WEB, endpoint(), source(1), Check::None, meta(&["path=/", "v=1"])).unwrap().id;
    assert_eq!(r.metadata(WEB, endpoint()).unwrap().to_string(), "path=/ v=1");
    let change = std::iter::from_fn(|| r.poll_change()).last().unwrap();
    assert!(change.meta_changed, "{change:?}");

    // A plain register (a heartbeat-like refresh from an old client) keeps them.
    r.register(t0, WEB, endpoint(), source(1)).unwrap();
    assert_eq!(r.meta_of(id).unwrap().to_string(), "path=/ v=1");
    // The same pairs again: no change to send.
    r.register_meta(t0, WEB, endpoint(), source(1), Check::None, meta(&["path=/", "v=1"])).unwrap();
    assert!(!std::iter::from_fn(|| r.poll_change()).last().unwrap().meta_changed);
    // Other pairs: the last register wins; none: they go.
    r.register_meta(t0, WEB, endpoint(), source(1), Check::None, meta(&["v=2"])).unwrap();
    assert_eq!(r.metadata(WEB, endpoint()).unwrap().to_string(), "v=2");
    r.register_meta(t0, WEB, endpoint(), source(1), Check::None, Metadata::default()).unwrap();
    assert_eq!((r.meta_count(), r.metadata(WEB, endpoint())), (0, None));

    // Gone with the lease.
    let id = r.register_meta(t0, WEB, endpoint(), source(1), Check::None, meta(&["v=3"])).unwrap().id;
    r.deregister(t0, id).unwrap();
    assert_eq!(r.meta_count(), 0);
}

#[test]
fn an_instance_shows_the_metadata_of_its_smallest_lease_id_that_has_some() {
    let t0 = Instant::now();
    let mut r = registry();
    r.register(t0, WEB, endpoint(), source(1)).unwrap();
    r.register_meta(t0, WEB, endpoint(), source(2), Check::None, meta(&["b=2"])).unwrap();
    r.register_meta(t0, WEB, endpoint(), source(3), Check::None, meta(&["c=3"])).unwrap();
    assert_eq!(r.metadata(WEB, endpoint()).unwrap().to_string(), "b=2");
}

#[test]
fn peers_metadata_follows_the_merge_rule() {
    let t0 = Instant::now();
    let mut r = registry();
    let block = meta(&["a=1"]);
    let view = |ttl: u64, block: Option<&'static [u8]>| LeaseView {
        id: Uuid::from_u128(77),
        service: WEB,
        endpoint: endpoint(),
        source: source(1),
        ttl_left: Duration::from_secs(ttl),
        aliases: &[],
        check: Check::None,
        meta: block,
    };
    let a1: &'static [u8] = Box::leak(block.as_block().to_vec().into_boxed_slice());
    assert_eq!(r.apply_remote(t0, view(2, Some(a1))), Applied::Inserted);
    assert_eq!(r.metadata(WEB, endpoint()).unwrap().to_string(), "a=1");
    // A peer that does not say keeps them; an older renewal does not change them.
    assert_eq!(r.apply_remote(t0, view(3, None)), Applied::Refreshed);
    assert_eq!(r.apply_remote(t0, view(1, Some(&[]))), Applied::Unchanged);
    assert_eq!(r.metadata(WEB, endpoint()).unwrap().to_string(), "a=1");
    // A malformed block is no word on metadata.
    assert_eq!(r.apply_remote(t0, view(4, Some(b"\x05ab"))), Applied::Refreshed);
    assert_eq!(r.metadata(WEB, endpoint()).unwrap().to_string(), "a=1");
    // A newer renewal with none clears them; the view says so.
    assert_eq!(r.apply_remote(t0, view(5, Some(&[]))), Applied::Refreshed);
    assert_eq!(r.metadata(WEB, endpoint()), None);
    assert_eq!(r.view(t0, Uuid::from_u128(77)).unwrap().meta, Some(&[][..]));
}

#[test]
fn text_registrations_and_listings_carry_metadata() {
    let t0 = Instant::now();
    let mut table = Plain::new(registry(), crate::service::DEFAULT_MAX_DATAGRAM);
    let from: SocketAddr = "10.0.0.5:50000".parse().unwrap();
    let mut out = Vec::new();
    let mut ask = |line: &[u8], out: &mut Vec<u8>| {
        service::handle(&mut table, t0, from, line, out);
        String::from_utf8_lossy(out).into_owned()
    };
    assert_eq!(ask(b"register web 8080 path=/ version=2", &mut out).len(), 37);
    let listing = ask(b"instances web", &mut out);
    assert!(listing.ends_with(" source=10.0.0.5:50000 check=none path=/ version=2\n"), "{listing}");
    assert_eq!(ask(b"register web 8080 =x", &mut out), "ERROR bad metadata \"=x\": the key is empty\n");
    // The binary listing with metadata.
    let mut datagram = Vec::new();
    crate::protocol::binary::encode_request(3, &Request::InstancesMeta { service: "web", cursor: 0 }, &mut datagram);
    ask(&datagram, &mut out);
    let (_, response) = crate::protocol::binary::decode_response(&out).unwrap();
    let Response::InstanceListMeta { page, checks, meta } = response else { panic!("{response:?}") };
    assert_eq!((page.instances.len(), checks.len()), (1, 1));
    assert_eq!(meta, [vec![("path".to_owned(), Some(b"/".to_vec())), ("version".to_owned(), Some(b"2".to_vec()))]]);
    let mut line = Vec::new();
    text::encode_response(&Response::InstanceListMeta { page, checks, meta }, &mut line);
    assert!(String::from_utf8(line).unwrap().ends_with("check=none path=/ version=2\n"));
}
