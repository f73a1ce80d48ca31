//! The balancer's own registration at the broker, on the shell's side of the control core.
//!
//! The control core ([`Control`]) decides when the balancer has something to offer and says so
//! with an [`Event`]; [`ControlLoop`] runs the core on the shell and acts on its events with the
//! threads that do the work: a [`Registrar`] (registrations kept alive at the brokers) and an
//! [`Announcer`] (on the multicast group). Neither ever blocks the control loop.

use std::net::SocketAddr;
use std::time::Instant;

use super::control::{Control, Event, FOLLOW, Face};
use crate::client::{Announcer, AnnouncerConfig, Registrar, Registration};
use crate::core::{ConnId, Core, ProbeCmd, ProbeId, ProbeOutcome, StreamStep, Transmit};

/// The balancer's own registration at the broker (and announcement on the multicast group),
/// present while it has backends.
pub(crate) struct SelfRegistration {
    pub registrar: Option<Registrar>,
    pub registration: Option<Registration>,
    pub announce: Option<AnnouncerConfig>,
    pub announcer: Option<Announcer>,
    pub service: String,
    pub ip: Option<std::net::IpAddr>,
    pub port: u16,
    pub log: bool,
}

impl SelfRegistration {
    /// Registers when a backend is up and it is not registered; deregisters when none is.
    /// Never blocks the control loop. Returns whether it is now as asked (false when starting
    /// failed, to be tried again).
    pub fn follow(&mut self, any_up: bool) -> bool {
        let mut settled = true;
        if let Some(config) = &self.announce {
            match (any_up, self.announcer.is_some()) {
                (true, false) => match Announcer::start(config.clone(), &self.service, self.ip, self.port) {
                    Ok(announcer) => self.announcer = Some(announcer),
                    Err(e) => {
                        log::error!("cannot announce: {e}");
                        settled = false;
                    }
                },
                // Stopping sends the goodbye and returns at once.
                (false, true) => drop(self.announcer.take()),
                _ => {}
            }
        }
        let Some(registrar) = &self.registrar else { return settled };
        match (any_up, self.registration.is_some()) {
            (true, false) => match registrar.register_in_background(&self.service, self.ip, self.port) {
                Ok(registration) => {
                    if self.log {
                        log::info!("first backend: registering as {}", self.service);
                    }
                    self.registration = Some(registration);
                }
                Err(e) => {
                    log::error!("cannot register: {e}");
                    settled = false;
                }
            },
            (false, true) => {
                if self.log {
                    log::info!("no backend left: deregistering {}", self.service);
                }
                if let Some(registration) = self.registration.take() {
                    registration.deregister_in_background();
                }
            }
            _ => {}
        }
        settled
    }

    /// Deregisters, stops announcing, and stops the registrar's thread.
    pub fn stop(mut self) {
        self.follow(false);
        if let Some(registrar) = self.registrar.take() {
            registrar.shutdown();
        }
    }
}

/// The control core as the shell runs it: every input goes to the core, and at the end of each
/// turn its events move the balancer's own registration.
pub(crate) struct ControlLoop {
    core: Control,
    registration: SelfRegistration,
    /// What the last event asked for.
    wanted: bool,
    /// When to try again what failed to start.
    retry_at: Option<Instant>,
}

impl ControlLoop {
    pub fn new(core: Control, registration: SelfRegistration) -> Self {
        ControlLoop { core, registration, wanted: false, retry_at: None }
    }

    /// Acts on the core's events, in order; retries what failed once [`FOLLOW`] has passed (as
    /// often as the core looks at the pool).
    fn act(&mut self, now: Instant) {
        let mut settled = None;
        while let Some(event) = self.core.poll_event() {
            self.wanted = event == Event::FirstBackendUp;
            settled = Some(self.registration.follow(self.wanted));
        }
        if settled.is_none() && self.retry_at.is_some_and(|at| at <= now) {
            settled = Some(self.registration.follow(self.wanted));
        }
        if let Some(settled) = settled {
            self.retry_at = (!settled).then_some(now + FOLLOW);
        }
    }

    /// Stops the balancer's own registration and announcement (the loop has stopped).
    pub fn stop(self) {
        self.registration.stop();
    }
}

impl Core for ControlLoop {
    type Face = Face;
    type Command = super::control::reload::Command;

    fn handle_command(&mut self, now: Instant, command: Self::Command) {
        self.core.handle_command(now, command);
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        face: Face,
        from: SocketAddr,
        datagram: &[u8],
        reply: &mut Vec<u8>,
    ) -> Option<Face> {
        self.core.handle_datagram(now, face, from, datagram, reply)
    }

    fn handle_stream(
        &mut self,
        now: Instant,
        face: Face,
        conn: ConnId,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> StreamStep {
        self.core.handle_stream(now, face, conn, input, output)
    }

    fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Transmit<Face>> {
        self.core.poll_transmit(now, out)
    }

    fn poll_probe(&mut self) -> Option<ProbeCmd> {
        self.core.poll_probe()
    }

    fn probe_preamble(&self) -> &[u8] {
        self.core.probe_preamble()
    }

    fn handle_probe(&mut self, now: Instant, id: ProbeId, outcome: ProbeOutcome) {
        self.core.handle_probe(now, id, outcome);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.core.poll_timeout(), self.retry_at].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        // A retry is due, or the core's own timeout (the retry is made at the turn's end).
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.core.handle_timeout(now);
        }
    }

    fn handle_send_error(&mut self, face: Face, to: SocketAddr, error: &std::io::Error) {
        self.core.handle_send_error(face, to, error);
    }

    fn handle_turn_end(&mut self, now: Instant) {
        self.core.handle_turn_end(now);
        self.act(now);
    }

    fn handle_wake(&mut self, now: Instant) {
        self.core.handle_wake(now);
    }

    fn handle_start(&mut self, now: Instant) {
        self.core.handle_start(now);
    }

    fn handle_close(&mut self, now: Instant) {
        self.core.handle_close(now);
    }
}
