//! Random numbers, from the operating system.
//!
//! The one source of randomness in the crate: ids that must differ between processes and
//! between runs (a broker's incarnation, a sender's id on the multicast group, the first
//! request id of a client) and the broker a client tries first. The state machines take none
//! of it: they are handed ids and generators by the shell that runs them, so they stay
//! deterministic under test.

/// A random number from the operating system's CSPRNG (through `getrandom`, as `uuid` draws
/// its v4 ids): unpredictable to others, and different in every process and every call, with
/// no seeding of our own to get wrong.
///
/// # Panics
///
/// If the operating system cannot provide random numbers at all (which `uuid`'s v4 ids, used
/// everywhere here, would not survive either).
pub(crate) fn u64() -> u64 {
    getrandom::u64().expect("the operating system's random number generator failed")
}

/// A 32-byte key from the operating system's CSPRNG, for what the broker keys for itself alone
/// (the watches' cookies).
///
/// # Panics
///
/// As [`u64`]: when the operating system cannot provide random numbers at all.
pub(crate) fn key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the operating system's random number generator failed");
    key
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_differ() {
        let draws: std::collections::HashSet<u64> = (0..64).map(|_| super::u64()).collect();
        assert_eq!(draws.len(), 64);
    }
}
