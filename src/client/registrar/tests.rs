use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::client::sim::SimNet;
use crate::protocol::{Check, Rejection, Request, Response};

const BROKER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7000);

/// A broker with TTL 3 s that forgets everything while `amnesia` is set and is silent
/// while `down` is.
fn broker(amnesia: Arc<AtomicBool>, down: Arc<AtomicBool>) -> SimNet {
    let mut next = 0u128;
    let mut known = std::collections::HashSet::new();
    SimNet::new().broker(BROKER, move |request| {
        if down.load(Ordering::SeqCst) {
            return None;
        }
        if amnesia.swap(false, Ordering::SeqCst) {
            known.clear();
        }
        Some(match request {
            Request::RegisterChecked { service: "bad", .. } => {
                Response::Error(Rejection::BadName { name: "bad".into(), why: "for the test".into() })
            }
            Request::RegisterChecked { .. } => {
                next += 1;
                known.insert(next);
                Response::Registered { id: Uuid::from_u128(next), ttl_ms: 3000 }
            }
            Request::Heartbeat { id } | Request::Deregister { id } => {
                if known.contains(&id.as_u128()) {
                    Response::Ok
                } else {
                    Response::NotFound
                }
            }
            _ => Response::NotFound,
        })
    })
}

/// A registrar core without jitter, so waits are exact.
fn core(net: SimNet) -> Core<SimNet> {
    core_with(net, Box::new(|| 0))
}

fn core_with(net: SimNet, random: Random) -> Core<SimNet> {
    let client = BrokerClient::with_transport(net, &[BROKER], RetryPolicy::default(), 0);
    Core::new(client, RegistrarConfig::default(), random)
}

fn add(core: &mut Core<SimNet>, service: &str) -> Result<SharedRef, ClientError> {
    let registration = Shared::new();
    core.add(1, service.into(), None, 4000, Arc::clone(&registration)).map(|()| registration)
}

fn id_of(registration: &SharedRef) -> Option<Uuid> {
    shared(registration).id
}

fn state(registration: &SharedRef) -> RegistrationState {
    shared(registration).state.clone()
}

/// Sleeps until the next try and makes it; returns how long the core then waits before the
/// one after (from the end of this try).
fn next_try(core: &mut Core<SimNet>) -> Duration {
    let due = core.next_due().unwrap();
    core.client.transport_mut().sleep_until(due);
    core.tick();
    core.next_due().map_or(Duration::MAX, |next| next - core.client.transport().now())
}

fn ms(core: &Core<SimNet>, at: Instant) -> u128 {
    at.duration_since(core.client.transport().start).as_millis()
}

#[test]
fn heartbeats_come_at_a_third_of_the_ttl() {
    let mut core = core(broker(Arc::default(), Arc::default()));
    let id = add(&mut core, "echo").unwrap();
    assert_eq!(id_of(&id), Some(Uuid::from_u128(1)));
    for beat in 1..=3u64 {
        let due = core.next_due().unwrap();
        assert_eq!(ms(&core, due), u128::from(beat) * 1000);
        core.client.transport_mut().sleep_until(due);
        core.tick();
    }
    assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 1000, 2000, 3000]);
    assert_eq!(id_of(&id), Some(Uuid::from_u128(1)), "same registration throughout");
}

#[test]
fn a_forgetful_broker_gets_the_registration_again() {
    let amnesia = Arc::new(AtomicBool::new(false));
    let mut core = core(broker(Arc::clone(&amnesia), Arc::default()));
    let id = add(&mut core, "echo").unwrap();
    amnesia.store(true, Ordering::SeqCst);
    let due = core.next_due().unwrap();
    core.client.transport_mut().sleep_until(due);
    core.tick();
    // The heartbeat got NOT FOUND and the entry was registered again at once.
    assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 1000, 1000]);
    assert_eq!(id_of(&id), Some(Uuid::from_u128(2)));
}

#[test]
fn a_broker_catching_up_is_asked_again_not_registered_at_again() {
    let catching_up = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&catching_up);
    let mut registered = 0;
    let net = SimNet::new().broker(BROKER, move |request| {
        Some(match request {
            _ if flag.load(Ordering::SeqCst) => Response::CatchingUp,
            Request::RegisterChecked { .. } => {
                registered += 1;
                Response::Registered { id: Uuid::from_u128(registered), ttl_ms: 3000 }
            }
            _ => Response::Ok,
        })
    });
    let mut core = core(net);
    let id = add(&mut core, "echo").unwrap();
    catching_up.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let due = core.next_due().unwrap();
        core.client.transport_mut().sleep_until(due);
        core.tick();
    }
    catching_up.store(false, Ordering::SeqCst);
    let due = core.next_due().unwrap();
    core.client.transport_mut().sleep_until(due);
    core.tick();
    // One register, then heartbeats only: soon again while the broker caught up.
    assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 1000, 1500, 2000, 2500]);
    assert_eq!(id_of(&id), Some(Uuid::from_u128(1)));
}

#[test]
fn a_silent_broker_is_retried_until_it_answers() {
    let down = Arc::new(AtomicBool::new(true));
    let mut core = core(broker(Arc::default(), Arc::clone(&down)));
    let id = add(&mut core, "echo").unwrap();
    assert_eq!(id_of(&id), None, "kept, though nobody answered");
    let due = core.next_due().unwrap();
    // Three tries of the default policy (0.7 s), then the retry delay.
    assert_eq!(ms(&core, due), 700 + 500);
    down.store(false, Ordering::SeqCst);
    core.client.transport_mut().sleep_until(due);
    core.tick();
    assert_eq!(id_of(&id), Some(Uuid::from_u128(1)));
}

#[test]
fn a_refused_registration_is_an_error_and_not_kept() {
    let mut core = core(broker(Arc::default(), Arc::default()));
    let registration = Shared::new();
    let result = core.add(1, "bad".into(), None, 4000, Arc::clone(&registration));
    assert!(matches!(result, Err(ClientError::Rejected(Rejection::BadName { .. }))));
    assert!(matches!(state(&registration), RegistrationState::Refused(Rejection::BadName { .. })));
    assert_eq!(core.next_due(), None);
}

#[test]
fn a_full_table_is_waited_out_with_backoff() {
    let room = Arc::new(AtomicBool::new(false));
    let has_room = Arc::clone(&room);
    let net = SimNet::new().broker(BROKER, move |request| {
        Some(match request {
            Request::RegisterChecked { .. } if has_room.load(Ordering::SeqCst) => {
                Response::Registered { id: Uuid::from_u128(7), ttl_ms: 3000 }
            }
            Request::RegisterChecked { .. } => Response::Error(Rejection::SourceQuota { max: 1024 }),
            _ => Response::Ok,
        })
    });
    let mut core = core(net);
    let id = add(&mut core, "echo").expect("kept, not refused");
    for _ in 0..6 {
        let due = core.next_due().unwrap();
        core.client.transport_mut().sleep_until(due);
        core.tick();
    }
    // 0.5 s doubling: 1, 2, 4, 8, 16, then at most 30 s between tries.
    assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(state(&id), RegistrationState::NoRoom(Rejection::SourceQuota { max: 1024 }));
    room.store(true, Ordering::SeqCst);
    let due = core.next_due().unwrap();
    core.client.transport_mut().sleep_until(due);
    core.tick();
    assert_eq!(id_of(&id), Some(Uuid::from_u128(7)));
}

#[test]
fn removing_deregisters() {
    let mut core = core(broker(Arc::default(), Arc::default()));
    let id = add(&mut core, "echo").unwrap();
    core.remove(1);
    assert_eq!(core.client.transport().sent_at_ms(BROKER), [0, 0]);
    assert_eq!(id_of(&id), None);
    assert_eq!(core.next_due(), None);
}

#[test]
fn a_silent_broker_is_asked_with_backoff_that_grows_and_caps() {
    let down = Arc::new(AtomicBool::new(true));
    let mut core = core(broker(Arc::default(), Arc::clone(&down)));
    let registration = add(&mut core, "echo").unwrap();
    assert_eq!(state(&registration), RegistrationState::NoBroker);
    let waits: Vec<u128> = (0..7).map(|_| next_try(&mut core).as_millis()).collect();
    // After the first wait of 0.5 s: doubling up to 10 s.
    assert_eq!(waits, [1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
    // Each try is three datagrams (0.7 s of retransmission), not one every 1.2 s.
    assert_eq!(core.client.transport().sent_at_ms(BROKER).len(), 8 * 3);
    down.store(false, Ordering::SeqCst);
    next_try(&mut core);
    assert_eq!(state(&registration), RegistrationState::Registered);
    // A success starts the backoff over.
    down.store(true, Ordering::SeqCst);
    assert_eq!(next_try(&mut core).as_millis(), 500, "heartbeat failed: first wait again");
    assert_eq!(state(&registration), RegistrationState::NoBroker);
}

#[test]
fn jitter_shortens_by_at_most_a_quarter() {
    let base = Duration::from_secs(8);
    assert_eq!(jittered(base, 0), base);
    assert!(jittered(base, u64::MAX) >= base.mul_f64(0.75));
    assert_eq!(jittered(base, 1 << 63), base.mul_f64(0.875));
    // With the operating system's random numbers, every wait stays within the bounds and the
    // waits differ.
    let down = Arc::new(AtomicBool::new(true));
    let mut core = core_with(broker(Arc::default(), down), Box::new(crate::random::u64));
    add(&mut core, "echo").unwrap();
    let mut waits = Vec::new();
    for failures in 1..12u32 {
        let wait = next_try(&mut core);
        let base = Duration::from_millis(500).saturating_mul(1 << failures.min(16)).min(NO_BROKER_BACKOFF);
        assert!(wait <= base && wait >= base.mul_f64(0.75), "{wait:?} against {base:?}");
        waits.push(wait);
    }
    let capped: std::collections::HashSet<_> = waits[5..].iter().collect();
    assert!(capped.len() > 1, "jitter varies the waits: {waits:?}");
}

/// A broker whose answer to `register` the test sets, and that knows every id it gave.
fn scripted(answer: Arc<Mutex<Option<Response>>>) -> SimNet {
    SimNet::new().broker(BROKER, move |request| {
        let answer = answer.lock().unwrap().clone();
        match request {
            Request::RegisterChecked { .. } => answer,
            // Heartbeats: forgotten while registering is refused, else fine; none while down.
            _ => {
                answer.map(|a| if matches!(a, Response::Registered { .. }) { Response::Ok } else { Response::NotFound })
            }
        }
    })
}

#[test]
fn the_state_follows_the_broker() {
    let answer = Arc::new(Mutex::new(None));
    let set = |response: Option<Response>| *answer.lock().unwrap() = response;
    let mut core = core(scripted(Arc::clone(&answer)));
    let registration = add(&mut core, "echo").unwrap();
    assert_eq!(state(&registration), RegistrationState::NoBroker);
    set(Some(Response::Error(Rejection::Full { max: 10 })));
    next_try(&mut core);
    assert_eq!(state(&registration), RegistrationState::NoRoom(Rejection::Full { max: 10 }));
    set(Some(Response::Error(Rejection::RateLimited)));
    next_try(&mut core);
    assert_eq!(state(&registration), RegistrationState::NoRoom(Rejection::RateLimited), "a rate limit passes");
    set(Some(Response::Registered { id: Uuid::from_u128(1), ttl_ms: 3000 }));
    next_try(&mut core);
    assert_eq!(state(&registration), RegistrationState::Registered);
    assert_eq!(id_of(&registration), Some(Uuid::from_u128(1)));
    set(None);
    next_try(&mut core);
    assert_eq!(state(&registration), RegistrationState::NoBroker, "heartbeats unanswered");
    assert_eq!(id_of(&registration), Some(Uuid::from_u128(1)), "kept for when the broker answers");
    // The broker comes back with a policy that refuses this source: the heartbeat is not found,
    // the registration again refused, for good.
    let refusal = Rejection::NotAllowed { why: "127.0.0.1 may not register here".into() };
    set(Some(Response::Error(refusal.clone())));
    next_try(&mut core);
    assert_eq!(state(&registration), RegistrationState::Refused(refusal));
    assert_eq!(id_of(&registration), None);
    assert_eq!(core.next_due(), None, "no longer tried");
}

#[test]
fn an_odd_answer_to_a_heartbeat_is_tried_again_not_given_up() {
    let net = SimNet::new().broker(BROKER, |request| {
        Some(match request {
            // Neither OK nor NOT FOUND: an answer that makes no sense for a heartbeat.
            Request::Heartbeat { .. } => Response::Registered { id: Uuid::from_u128(9), ttl_ms: 3000 },
            _ => Response::Registered { id: Uuid::from_u128(1), ttl_ms: 3000 },
        })
    });
    let mut core = core(net);
    let registration = add(&mut core, "echo").unwrap();
    assert_eq!(next_try(&mut core).as_millis(), 500);
    assert_eq!(state(&registration), RegistrationState::NoBroker);
    assert_eq!(id_of(&registration), Some(Uuid::from_u128(1)), "kept");
}

/// A broker that records every request, and cannot decode a checked registration of `old`
/// (as a broker older than declared checks).
fn recording(seen: Arc<Mutex<Vec<String>>>) -> SimNet {
    SimNet::new().broker(BROKER, move |request| {
        seen.lock().unwrap().push(format!("{request:?}"));
        Some(match request {
            Request::RegisterChecked { service: "old", .. } => {
                Response::Error(Rejection::Malformed { why: "unknown variant".into() })
            }
            _ => Response::Registered { id: Uuid::from_u128(1), ttl_ms: 3000 },
        })
    })
}

#[test]
fn registrations_declare_the_configured_check_and_fall_back_for_an_older_broker() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut core = core(recording(Arc::clone(&seen)));
    add(&mut core, "echo").unwrap();
    add(&mut core, "old").unwrap();
    let client = BrokerClient::with_transport(recording(Arc::clone(&seen)), &[BROKER], RetryPolicy::default(), 0);
    let config = RegistrarConfig { check: Check::Http("/health".into()), ..RegistrarConfig::default() };
    let mut core = Core::new(client, config, Box::new(|| 0));
    add(&mut core, "web").unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(
        seen[0].starts_with("RegisterChecked { service: \"echo\"") && seen[0].ends_with("check: Tcp }"),
        "{seen:?}"
    );
    assert!(seen[2].starts_with("Register { service: \"old\""), "sent again without the check: {seen:?}");
    assert!(seen[3].ends_with("check: Http(\"/health\") }"), "{seen:?}");
}

#[test]
fn registrations_carry_the_configured_metadata_and_fall_back_for_an_older_broker() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let net = SimNet::new().broker(BROKER, move |request| {
        recorded.lock().unwrap().push(format!("{request:?}"));
        Some(match request {
            Request::RegisterMeta { service: "old", .. } => {
                Response::Error(Rejection::Malformed { why: "unknown variant".into() })
            }
            _ => Response::Registered { id: Uuid::from_u128(1), ttl_ms: 3000 },
        })
    });
    let client = BrokerClient::with_transport(net, &[BROKER], RetryPolicy::default(), 0);
    let meta = crate::meta::Metadata::parse_words(["path=/", "version=2"]).unwrap();
    let config = RegistrarConfig { meta, ..RegistrarConfig::default() };
    let mut core = Core::new(client, config, Box::new(|| 0));
    add(&mut core, "web").unwrap();
    add(&mut core, "old").unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[0].starts_with("RegisterMeta { service: \"web\"")
            && seen[0].ends_with("check: Tcp, meta: [(\"path\", \"/\"), (\"version\", \"2\")] }"),
        "{seen:?}"
    );
    assert!(seen[2].starts_with("RegisterChecked { service: \"old\""), "sent again without the pairs: {seen:?}");
}
