//! How the registrar reads a failed request, and how long it waits before the next try.

use std::time::Duration;

use crate::client::ClientError;
use crate::protocol::Rejection;

/// The longest wait between tries while no broker answers: a broker that comes back (or a
/// server started long before its broker) is registered at within about this long.
pub const NO_BROKER_BACKOFF: Duration = Duration::from_secs(10);

/// The longest wait between registrations refused for want of room, so a full broker is not
/// pressed while registrations expire.
pub const NO_ROOM_BACKOFF: Duration = Duration::from_secs(30);

/// What a failed request means for the registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// No broker answered, or the socket failed: try again with backoff.
    NoBroker,
    /// A broker answered but had no room now: try again with backoff.
    NoRoom(Rejection),
    /// The brokers that answered are catching up from their peers: ask again soon.
    CatchingUp,
    /// The broker forgot the registration: register again.
    NotFound,
    /// Refused for good: stop trying.
    Refused(Rejection),
    /// An answer that makes no sense: stop trying.
    Failed(String),
}

/// Sorts an error: which refusals may pass by themselves (room comes back as registrations
/// expire, a rate limit lifts) and which stand until someone changes the name or the broker's
/// policy. A refusal this client does not know of is taken as standing, so it is reported
/// rather than pressed again and again.
pub(super) fn outcome(error: &ClientError) -> Outcome {
    match error {
        ClientError::Unreachable(_) | ClientError::Io(_) => Outcome::NoBroker,
        ClientError::CatchingUp => Outcome::CatchingUp,
        ClientError::NotFound => Outcome::NotFound,
        ClientError::Rejected(
            r @ (Rejection::Full { .. }
            | Rejection::SourceQuota { .. }
            | Rejection::NetworkQuota { .. }
            | Rejection::NearlyFull { .. }
            | Rejection::TooMany { .. }
            | Rejection::RateLimited),
        ) => Outcome::NoRoom(r.clone()),
        ClientError::Rejected(r) => Outcome::Refused(r.clone()),
        ClientError::Protocol(_) | ClientError::NoBrokers => Outcome::Failed(error.to_string()),
    }
}

/// `base` shortened by a random part of up to a quarter, so that servers started together (or
/// cut off by the same outage) spread their tries instead of arriving in step.
pub(super) fn jittered(base: Duration, random: u64) -> Duration {
    // The top 53 bits as a fraction in [0, 1).
    #[allow(clippy::cast_precision_loss)]
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    base.saturating_sub(base.mul_f64(fraction / 4.0))
}
