//! Handing an instance over between two responders (see
//! [`handover`](super::responder::handover)): what a browser on the link hears.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::RecordType;

use super::responder::handover::HANDOVER_WAIT;
use super::responder_tests::{MS, advert, live, peer, question, responder, run, sent, web_name};
use super::*;

/// What a browser hears: every datagram either responder multicast, with its time.
type Heard = Vec<(Instant, &'static str, Message)>;

fn endpoint() -> SocketAddr {
    "10.0.0.5:8080".parse().unwrap()
}

/// Delivers what `from` sent to `to` (as from `from_addr`), noting it as heard.
fn deliver(at: Instant, name: &'static str, from: Vec<(SocketAddr, Message)>, to: &mut Responder, heard: &mut Heard) {
    for (dest, message) in from {
        if dest == GROUP_V4 {
            to.handle_datagram(at, peer(), &message.to_vec().unwrap());
            heard.push((at, name, message));
        }
    }
}

fn goodbyes(heard: &Heard) -> Vec<String> {
    let records = heard.iter().flat_map(|(_, who, m)| m.answers.iter().map(move |r| (who, r)));
    records.filter(|(_, r)| r.ttl == 0).map(|(who, r)| format!("{who}: {} {}", r.name, r.record_type())).collect()
}

#[test]
fn a_handover_between_responders_sends_no_goodbye_and_leaves_no_gap() {
    let (mut old, t0) = live();
    old.set_own_address("10.0.0.1".parse().unwrap());
    let mut new = responder(9);
    let mut heard: Heard = Vec::new();
    // The owner changes: the new one takes over, the old one hands over.
    assert!(new.take_over(t0, advert("web", "10.0.0.5:8080")));
    old.hand_over(t0, "web", endpoint());
    assert!(old.is_leaving("web", endpoint()));
    assert!(sent(&mut old).is_empty(), "no goodbye when the handover starts");
    // Until the new owner's announcement is heard, the old owner still answers.
    old.handle_datagram(
        t0,
        "10.0.0.77:5353".parse().unwrap(),
        &question(web_name("10-0-0-5:8080"), RecordType::SRV, false).to_vec().unwrap(),
    );
    let answered = sent(&mut old);
    assert_eq!(answered.len(), 1, "the old owner answers during the handover");
    // Its own answer, looped back, is not the new owner's announcement.
    deliver(t0, "old", answered, &mut new, &mut heard);
    old.handle_datagram(t0 + MS, "10.0.0.1:5353".parse().unwrap(), &heard[0].2.to_vec().unwrap());
    assert!(old.is_leaving("web", endpoint()), "its own echo does not end the handover");
    // The new owner announces at once: no probes.
    new.handle_timeout(t0 + MS);
    let first = sent(&mut new);
    assert!(!first.is_empty() && first.iter().all(|(_, m)| m.message_type == MessageType::Response), "{first:?}");
    assert!(first.iter().any(|(_, m)| m.answers.iter().any(|r| r.record_type() == RecordType::SRV && r.ttl == 120)));
    deliver(t0 + MS, "new", first, &mut old, &mut heard);
    assert_eq!(old.label("web", endpoint()), None, "the old owner drops it once it hears the new one");
    // Neither says goodbye afterwards; the new one goes on announcing.
    let until = t0 + Duration::from_secs(10);
    let later_old = run(&mut old, until);
    let later_new = run(&mut new, until);
    assert!(later_old.is_empty(), "{later_old:?}");
    assert_eq!(later_new.len(), 2, "the other two announcements");
    heard.extend(later_new.into_iter().map(|(at, _, m)| (at, "new", m)));
    assert!(goodbyes(&heard).is_empty(), "a browser hears no goodbye: {:?}", goodbyes(&heard));
}

#[test]
fn without_its_own_address_a_responder_takes_a_prompt_echo_for_its_own() {
    let (mut old, t0) = live();
    old.hand_over(t0, "web", endpoint());
    let query = question(web_name("10-0-0-5:8080"), RecordType::SRV, false).to_vec().unwrap();
    old.handle_datagram(t0, "10.0.0.77:5353".parse().unwrap(), &query);
    let echo = sent(&mut old).remove(0).1.to_vec().unwrap();
    old.handle_datagram(t0 + MS, peer(), &echo);
    assert!(old.is_leaving("web", endpoint()), "an echo within 200 ms of our own multicast");
    old.handle_datagram(t0 + 300 * MS, peer(), &echo);
    assert_eq!(old.label("web", endpoint()), None, "the same records later are the new owner's");
}

#[test]
fn a_handover_nobody_takes_ends_with_a_goodbye() {
    let (mut old, t0) = live();
    old.hand_over(t0, "web", endpoint());
    let sent_then = run(&mut old, t0 + HANDOVER_WAIT - MS);
    assert!(sent_then.is_empty());
    let goodbye = run(&mut old, t0 + HANDOVER_WAIT);
    let ttls: Vec<u32> = goodbye.iter().flat_map(|(_, _, m)| m.answers.iter().map(|r| r.ttl)).collect();
    assert!(!ttls.is_empty() && ttls.iter().all(|&ttl| ttl == 0), "{goodbye:?}");
    assert_eq!(old.label("web", endpoint()), None);
    // Owned again during a handover: it stays, and no goodbye comes.
    let (mut old, t0) = live();
    old.hand_over(t0, "web", endpoint());
    old.add(t0 + MS, advert("web", "10.0.0.5:8080"));
    assert!(run(&mut old, t0 + HANDOVER_WAIT * 2).is_empty());
    assert!(!old.is_leaving("web", endpoint()) && old.label("web", endpoint()).is_some());
}
