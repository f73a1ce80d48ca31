//! The mDNS responder's and browser's oracle.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;

use crate::mdns::names::{instance_label, parse_instance_label};
use crate::mdns::{Advert, Browser, BrowserConfig, GROUP_V4, MAX_PACKET, PORT, Responder, ResponderConfig};

/// Arbitrary bytes as datagrams on the mDNS socket (each a length byte, the next byte choosing
/// the sender's port, then that many bytes), to a live responder and a browser: none panics;
/// everything either sends decodes, fits [`MAX_PACKET`], and goes to the group or to the sender
/// of a datagram; the responder's own output, handed to the browser, never upsets it either.
/// And an instance label that parses is the one spelling of its endpoint.
pub fn mdns(data: &[u8]) {
    if let Some(endpoint) = parse_instance_label(data) {
        let text = std::str::from_utf8(data).expect("a label that parses is UTF-8");
        assert!(text.starts_with(&instance_label(endpoint)), "{text:?} is not how {endpoint} is written");
    }
    let t0 = Instant::now();
    let mut responder = Responder::new(ResponderConfig { group: GROUP_V4, seed: 3 });
    let endpoint: SocketAddr = "10.0.0.5:8080".parse().expect("an address");
    responder.add(t0, Advert { service: "web".to_owned(), endpoint, txt: vec![b"v=1".to_vec()] });
    let types = vec!["_web._tcp".to_owned()];
    let mut browser = Browser::new(t0, BrowserConfig { group: GROUP_V4, types, seed: 3 });
    let mut now = t0;
    let mut senders = vec![GROUP_V4];
    let mut out = Vec::new();
    let mut step = |now: Instant, responder: &mut Responder, browser: &mut Browser, senders: &[SocketAddr]| {
        if responder.poll_timeout().is_some_and(|at| at <= now) {
            responder.handle_timeout(now);
        }
        if browser.poll_timeout().is_some_and(|at| at <= now) {
            browser.handle_timeout(now);
        }
        while let Some(to) = responder.poll_transmit(&mut out) {
            check(&out, to, senders);
            browser.handle_datagram(now, SocketAddr::from(([10, 0, 0, 1], PORT)), &out);
        }
        while let Some(to) = browser.poll_transmit(&mut out) {
            check(&out, to, senders);
        }
        while responder.poll_event().is_some() || browser.poll_event().is_some() {}
    };
    // Live first: probed and announced.
    while now < t0 + Duration::from_secs(5) {
        step(now, &mut responder, &mut browser, &senders);
        now += Duration::from_millis(250);
    }
    let mut rest = data;
    while let [len, port, tail @ ..] = rest {
        let (datagram, next) = tail.split_at(usize::from(*len).min(tail.len()));
        let from = SocketAddr::from(([10, 0, 0, 9], if port % 2 == 0 { PORT } else { 40_000 + u16::from(*port) }));
        senders.push(from);
        responder.handle_datagram(now, from, datagram);
        browser.handle_datagram(now, from, datagram);
        step(now, &mut responder, &mut browser, &senders);
        now += Duration::from_millis(u64::from(*port) * 4);
        rest = next;
    }
    step(now + Duration::from_secs(1), &mut responder, &mut browser, &senders);
    responder.remove_all(now);
    step(now + Duration::from_secs(2), &mut responder, &mut browser, &senders);
}

fn check(bytes: &[u8], to: SocketAddr, senders: &[SocketAddr]) {
    assert!(bytes.len() <= MAX_PACKET, "{} bytes sent", bytes.len());
    Message::from_vec(bytes).expect("what is sent decodes");
    assert!(senders.contains(&to), "sent to {to}, which sent nothing");
}
