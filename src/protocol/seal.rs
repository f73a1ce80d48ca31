//! Sealed datagrams: peer, multicast and (keyed) client traffic authenticated with a shared key.
//!
//! With `--key-file`, every datagram between brokers and every datagram on the multicast group
//! travels in an envelope that a holder of the key made, and that no one has sent before; so do
//! the requests of clients given the key, and the broker's replies to them (`--require-key`
//! makes brokers refuse unsealed ones):
//!
//! ```text
//! +------+--------+------------+-----------+-------------+--------------------+-----------+
//! | 0xFC | key id | sender u64 | seq u64   | sent_ms u64 | the datagram       | tag       |
//! |      | 1 byte | LE         | LE        | LE          | (any form)         | 32 bytes  |
//! +------+--------+------------+-----------+-------------+--------------------+-----------+
//! ```
//!
//! - The **tag** is keyed BLAKE3 (the `blake3` crate; no home-made cryptography) over
//!   everything before it. The key is derived from the key file's contents with BLAKE3's key
//!   derivation, so any file of 16 bytes or more of random data will do; the key id, the first
//!   byte of the key's hash, tells a wrong key from a forged datagram in the counters.
//! - **Replay protection**: each sending process draws a random *sender* id when it starts and
//!   numbers its datagrams (*seq*). A receiver keeps, per sender id (it is signed, so a replay
//!   from another address or port is still the same sender), a window of the last 1,024
//!   numbers seen, and drops a datagram below the window or seen already. A datagram stamped
//!   (`sent_ms`) more than 30 s from the receiver's clock is dropped too, so captures of an
//!   earlier run, or fed to a receiver that restarted and forgot its windows, are refused.
//!   Hosts' clocks must agree within that.
//!
//! The sealer and the guard are pure: the caller passes the time in.
//!
//! ```
//! use makler::protocol::seal::{Key, ReplayGuard, Sealer};
//!
//! let key = Key::from_secret(b"sixteen or more bytes of secret").unwrap();
//! let mut sealer = Sealer::new(key, 1_000);
//! let mut sealed = Vec::new();
//! sealer.seal(b"\x81\x00\x02\x99\x01", 5_000, &mut sealed);
//! let mut guard = ReplayGuard::new();
//! assert_eq!(guard.open(&key, &sealed, 5_010).unwrap(), b"\x81\x00\x02\x99\x01");
//! assert!(guard.open(&key, &sealed, 5_020).is_err(), "a replay");
//! ```

use std::collections::HashMap;

/// The first byte of a sealed datagram (never UTF-8, not a client or peer version byte).
pub const SEAL_BYTE: u8 = 0xFC;

const HEADER: usize = 1 + 1 + 8 + 8 + 8;
const TAG: usize = 32;

/// Bytes a sealed datagram adds to the one inside.
pub const OVERHEAD: usize = HEADER + TAG;

/// How far a datagram's send time may be from the receiver's clock, in milliseconds.
pub const WINDOW_MS: u64 = 30_000;

/// Numbers of one epoch remembered per sender, below the newest.
const REPLAY_WINDOW: u64 = 1024;

/// Senders remembered at most.
const MAX_SENDERS: usize = 4096;

/// Whether a datagram is sealed.
pub fn is_sealed(datagram: &[u8]) -> bool {
    datagram.first() == Some(&SEAL_BYTE)
}

/// A shared key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key {
    id: u8,
    key: [u8; 32],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Key {
    /// The key derived from a secret (a key file's contents, white space at either end
    /// ignored). At least 16 bytes are required.
    pub fn from_secret(secret: &[u8]) -> Result<Key, String> {
        let secret = secret.trim_ascii();
        if secret.len() < 16 {
            return Err(format!(
                "the key is {} bytes; use at least 16 random bytes (for example: (umask 077; head -c 32 /dev/urandom | base64 > makler.key))",
                secret.len()
            ));
        }
        let key = blake3::derive_key("makler 2026-11 shared key for peers and multicast", secret);
        Ok(Key { id: blake3::hash(&key).as_bytes()[0], key })
    }

    /// Reads a key file. A file that others than its owner may read or write is refused, as
    /// ssh refuses such a private key: whoever can read it can forge every sealed datagram, so
    /// a secret readable by every account of a host is no secret. The error says how to fix it
    /// (`chmod 600 PATH`).
    pub fn load(path: &std::path::Path) -> Result<Key, String> {
        check_private(path)?;
        let secret = std::fs::read(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        Key::from_secret(&secret).map_err(|e| format!("key file {}: {e}", path.display()))
    }

    /// The key's id (the first byte of its hash).
    pub fn id(&self) -> u8 {
        self.id
    }

    /// A key of its own for another use of the same key file (BLAKE3's key derivation of this
    /// key under `context`): the DNS face's TSIG secret, which `dig` holds, must not be the
    /// key that seals everything else.
    pub fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.key)
    }

    fn tag(&self, data: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.key, data)
    }
}

/// Refuses a key file that its group or others may read or write (the file a symbolic link
/// points to is the one judged). Only Unix has such permission bits.
///
/// One exception: a credential systemd hands the service (`LoadCredential=`, in
/// `$CREDENTIALS_DIRECTORY`) is written 0400 and, for a `DynamicUser`, made readable by the
/// service's user with an ACL entry, whose mask shows in the group bits (0440) though no group
/// may read it; there, group bits are taken as that mask.
#[cfg(unix)]
fn check_private(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o007 != 0 || (mode & 0o070 != 0 && !in_credentials_directory(path)) {
        return Err(format!(
            "key file {path} has permissions {mode:04o}: others than its owner may read it, and with it forge sealed \
             datagrams; run `chmod 600 {path}`",
            path = path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &std::path::Path) -> Result<(), String> {
    Ok(())
}

/// Whether `path` is in the directory of credentials systemd made for this service.
#[cfg(unix)]
fn in_credentials_directory(path: &std::path::Path) -> bool {
    let Some(directory) = std::env::var_os("CREDENTIALS_DIRECTORY") else { return false };
    match (std::fs::canonicalize(path), std::fs::canonicalize(directory)) {
        (Ok(path), Ok(directory)) => path.starts_with(directory),
        _ => false,
    }
}

/// The time now as the envelope counts it: Unix time in milliseconds (and microseconds, for a
/// process's epoch). Only the programs' shells and client threads read it; state machines are
/// handed it.
pub fn unix_ms(now: std::time::SystemTime) -> u64 {
    now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seals datagrams for one sending process.
#[derive(Debug, Clone)]
pub struct Sealer {
    key: Key,
    sender: u64,
    seq: u64,
}

impl Sealer {
    /// A sealer for the sending process `sender`: a random id, new at every start.
    pub fn new(key: Key, sender: u64) -> Self {
        Sealer { key, sender, seq: 0 }
    }

    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Writes `datagram` sealed, stamped `now_ms` (Unix time in milliseconds), into `out`
    /// (cleared first).
    pub fn seal(&mut self, datagram: &[u8], now_ms: u64, out: &mut Vec<u8>) {
        self.seq += 1;
        out.clear();
        out.push(SEAL_BYTE);
        out.push(self.key.id);
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&now_ms.to_le_bytes());
        out.extend_from_slice(datagram);
        let tag = self.key.tag(out);
        out.extend_from_slice(tag.as_bytes());
    }

    /// Seals the datagram in `buf` in place.
    pub fn seal_in_place(&mut self, buf: &mut Vec<u8>, now_ms: u64) {
        let datagram = std::mem::take(buf);
        self.seal(&datagram, now_ms, buf);
    }
}

/// Why a sealed datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not sealed, or too short to be.
    #[error("not a sealed datagram")]
    NotSealed,
    /// Sealed with another key (another key id): check that every program has the same key file.
    #[error("sealed with another key")]
    WrongKey,
    /// The tag does not match: forged or damaged.
    #[error("the tag does not match")]
    BadTag,
    /// Sent more than 30 s from this host's time: a replay, or clocks that disagree.
    #[error("stamped outside the 30 s window")]
    Stale,
    /// Seen before: a replay.
    #[error("a replay")]
    Replay,
    /// The receiver remembers as many senders as it can, all of them sent within 30 s: the
    /// datagram is refused rather than a window forgotten. Try again later.
    #[error("too many senders at once")]
    Busy,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    newest: u64,
    /// The latest send time of a datagram taken (Unix time in milliseconds).
    latest_ms: u64,
    /// Bit k: number `newest - k` was seen.
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl Window {
    fn new(seq: u64) -> Self {
        let mut seen = [0; (REPLAY_WINDOW / 64) as usize];
        seen[0] = 1;
        Window { newest: seq, latest_ms: 0, seen }
    }

    fn bit(&mut self, back: u64) -> (&mut u64, u64) {
        (&mut self.seen[(back / 64) as usize], 1 << (back % 64))
    }

    /// Marks `seq` seen; false if it was, or is below the window.
    fn accept(&mut self, seq: u64) -> bool {
        if seq > self.newest {
            let shift = seq - self.newest;
            if shift >= REPLAY_WINDOW {
                self.seen = [0; (REPLAY_WINDOW / 64) as usize];
            } else {
                // Shift the whole window towards the old end by `shift` bits.
                let (words, bits) = ((shift / 64) as usize, (shift % 64) as u32);
                let old = self.seen;
                for (i, word) in self.seen.iter_mut().enumerate() {
                    let low = i.checked_sub(words).map_or(0, |j| old[j]);
                    let below = i.checked_sub(words + 1).map_or(0, |j| old[j]);
                    *word = if bits == 0 { low } else { (low << bits) | (below >> (64 - bits)) };
                }
            }
            self.newest = seq;
            self.seen[0] |= 1;
            return true;
        }
        let back = self.newest - seq;
        if back >= REPLAY_WINDOW {
            return false;
        }
        let (word, bit) = self.bit(back);
        if *word & bit != 0 {
            return false;
        }
        *word |= bit;
        true
    }
}

/// A sealed datagram whose key and tag are right and whose time is within the window: who sent
/// it, its number, and the datagram inside. Not yet checked against replays: a
/// [`ReplayGuard`] does that ([`ReplayGuard::admit`]), so that the caller may choose the guard
/// by what is inside (a broker keeps its peers' windows apart from its clients').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsealed<'a> {
    /// The sending process's random id.
    pub sender: u64,
    /// The datagram's number.
    pub seq: u64,
    /// When it was sent (Unix time in milliseconds).
    pub sent_ms: u64,
    /// The datagram inside.
    pub inner: &'a [u8],
}

/// Checks a sealed datagram received at `now_ms`: the key, the tag, the time (not replays).
pub fn unseal<'a>(key: &Key, sealed: &'a [u8], now_ms: u64) -> Result<Unsealed<'a>, SealError> {
    if !is_sealed(sealed) || sealed.len() < OVERHEAD {
        return Err(SealError::NotSealed);
    }
    if sealed[1] != key.id {
        return Err(SealError::WrongKey);
    }
    let (signed, tag) = sealed.split_at(sealed.len() - TAG);
    let tag: [u8; TAG] = tag.try_into().map_err(|_| SealError::NotSealed)?;
    // `blake3::Hash` compares in constant time.
    if key.tag(signed) != blake3::Hash::from(tag) {
        return Err(SealError::BadTag);
    }
    let word = |at: usize| u64::from_le_bytes(signed[at..at + 8].try_into().unwrap_or([0; 8]));
    let (sender, seq, sent_ms) = (word(2), word(10), word(18));
    if sent_ms.abs_diff(now_ms) > WINDOW_MS {
        return Err(SealError::Stale);
    }
    Ok(Unsealed { sender, seq, sent_ms, inner: &signed[HEADER..] })
}

/// Checks sealed datagrams from many senders: the key, the tag, the time, replays.
///
/// It remembers a bounded number of senders. When the table is full, a new sender takes the
/// place of one whose every datagram is already outside the 30 s window (so forgetting it lets
/// no replay through); when there is none, the new sender's datagram is refused
/// ([`SealError::Busy`]) rather than a live window forgotten. A broker keeps one guard for its
/// peers and another for its clients, so that many short-lived clients (each run of
/// `makler-client` is a new sender) neither grow its memory nor push its peers' windows out.
#[derive(Debug)]
pub struct ReplayGuard {
    senders: HashMap<u64, Window>,
    capacity: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::with_capacity(MAX_SENDERS)
    }
}

impl ReplayGuard {
    /// A guard that has seen nothing, for up to 4,096 senders at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A guard that has seen nothing and remembers up to `capacity` senders (at least one)
    /// sending within 30 s of one another (each costs about 160 bytes).
    pub fn with_capacity(capacity: usize) -> Self {
        ReplayGuard { senders: HashMap::new(), capacity: capacity.max(1) }
    }

    /// How many senders it remembers now.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether it remembers no sender.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Opens a sealed datagram received at `now_ms` (Unix time in milliseconds): returns the
    /// datagram inside, or why it must be dropped. A datagram is opened once: a second copy,
    /// from wherever it comes, is a replay.
    pub fn open<'a>(&mut self, key: &Key, sealed: &'a [u8], now_ms: u64) -> Result<&'a [u8], SealError> {
        let unsealed = unseal(key, sealed, now_ms)?;
        self.admit(&unsealed, now_ms)?;
        Ok(unsealed.inner)
    }

    /// Checks an [`unseal`]ed datagram against replays, received at `now_ms`, and remembers it.
    pub fn admit(&mut self, unsealed: &Unsealed<'_>, now_ms: u64) -> Result<(), SealError> {
        let Unsealed { sender, seq, sent_ms, .. } = *unsealed;
        if !self.senders.contains_key(&sender) && self.senders.len() >= self.capacity {
            // Forget the senders whose datagrams are all stale by now: a copy of any of them
            // is refused by its time, so no window is needed to refuse it.
            self.senders.retain(|_, window| window.latest_ms.saturating_add(WINDOW_MS) >= now_ms);
            if self.senders.len() >= self.capacity {
                return Err(SealError::Busy);
            }
        }
        let accepted = match self.senders.get_mut(&sender) {
            Some(window) => window.accept(seq),
            None => {
                self.senders.insert(sender, Window::new(seq));
                true
            }
        };
        if !accepted {
            return Err(SealError::Replay);
        }
        if let Some(window) = self.senders.get_mut(&sender) {
            window.latest_ms = window.latest_ms.max(sent_ms);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The bit window agrees with a plain set of every number seen.
        #[test]
        fn the_window_is_a_set_of_the_last_numbers(steps in proptest::collection::vec(0u64..3000, 1..400)) {
            let mut window = Window::new(steps[0]);
            let mut seen = std::collections::HashSet::from([steps[0]]);
            let mut newest = steps[0];
            for &seq in &steps[1..] {
                let fresh = seq + REPLAY_WINDOW > newest && !seen.contains(&seq);
                prop_assert_eq!(window.accept(seq), fresh, "seq {} newest {}", seq, newest);
                if fresh {
                    seen.insert(seq);
                    newest = newest.max(seq);
                }
            }
        }
    }

    fn key() -> Key {
        Key::from_secret(b"  a secret of sufficient length\n").unwrap()
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_may_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("makler-seal-mode-{}", std::process::id()));
        std::fs::write(&path, "a secret of sufficient length\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = Key::load(&path).unwrap_err();
            assert!(error.contains(&format!("chmod 600 {}", path.display())), "{mode:o}: {error}");
            assert!(error.contains(&format!("{mode:04o}")), "{error}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(Key::load(&path).unwrap().id(), key().id(), "{mode:o}");
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_sealed_datagram_opens_once_and_only_with_its_key() {
        let mut sealer = Sealer::new(key(), 42);
        let mut sealed = Vec::new();
        sealer.seal(b"hello", 1_000_000, &mut sealed);
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        let mut guard = ReplayGuard::new();
        let other = Key::from_secret(b"another secret of some length").unwrap();
        assert_eq!(guard.open(&other, &sealed, 1_000_000), Err(SealError::WrongKey));
        assert_eq!(guard.open(&key(), &sealed, 1_000_000), Ok(&b"hello"[..]));
        assert_eq!(guard.open(&key(), &sealed, 1_000_000), Err(SealError::Replay));
        assert_eq!(guard.open(&key(), b"hello", 1_000_000), Err(SealError::NotSealed));
        assert!(Key::from_secret(b"short").is_err());
    }

    #[test]
    fn any_changed_byte_breaks_the_tag() {
        let mut sealer = Sealer::new(key(), 42);
        let mut sealed = Vec::new();
        sealer.seal(b"\x81\x00\x01goodbye", 5_000, &mut sealed);
        for at in 2..sealed.len() {
            let mut forged = sealed.clone();
            forged[at] ^= 0x01;
            let result = ReplayGuard::new().open(&key(), &forged, 5_000);
            assert_eq!(result, Err(SealError::BadTag), "byte {at}");
        }
    }

    #[test]
    fn old_captures_and_replays_from_anywhere_are_refused() {
        let mut sealer = Sealer::new(key(), 42);
        let mut old = Vec::new();
        sealer.seal(b"x", 1_000, &mut old);
        // A restarted receiver has no window, but the capture is too old.
        assert_eq!(ReplayGuard::new().open(&key(), &old, 1_000 + WINDOW_MS + 1), Err(SealError::Stale));

        let mut guard = ReplayGuard::new();
        assert!(guard.open(&key(), &old, 2_000).is_ok());
        assert_eq!(guard.open(&key(), &old, 2_000), Err(SealError::Replay), "from any address");
    }

    #[test]
    fn reordered_datagrams_within_the_window_are_taken_once() {
        let mut sealer = Sealer::new(key(), 7);
        let sealed: Vec<Vec<u8>> = (0..3000)
            .map(|_| {
                let mut out = Vec::new();
                sealer.seal(b"d", 10, &mut out);
                out
            })
            .collect();
        let mut guard = ReplayGuard::new();
        // Deliver in a scrambled order: 1000 back, forward again, and everything twice.
        let mut order: Vec<usize> = (0..3000).collect();
        for chunk in order.chunks_mut(500) {
            chunk.reverse();
        }
        let mut taken = 0;
        for &i in order.iter().chain(&order) {
            if guard.open(&key(), &sealed[i], 10).is_ok() {
                taken += 1;
            }
        }
        assert_eq!(taken, 3000, "each once, none lost to the reordering");
        // A number that fell out of the window is refused even if never seen.
        let mut window = Window::new(5000);
        assert!(!window.accept(5000 - REPLAY_WINDOW));
        assert!(window.accept(5000 - REPLAY_WINDOW + 1));
    }

    #[test]
    fn a_full_guard_forgets_only_senders_whose_datagrams_are_all_stale() {
        let mut guard = ReplayGuard::with_capacity(2);
        let sealed = |sender: u64, at: u64| {
            let mut out = Vec::new();
            Sealer::new(key(), sender).seal(b"r", at, &mut out);
            out
        };
        let (one, two) = (sealed(1, 1_000), sealed(2, 2_000));
        assert!(guard.open(&key(), &one, 2_000).is_ok());
        assert!(guard.open(&key(), &two, 2_000).is_ok());
        // Both within the window: a third sender is refused, and the first's capture still is.
        assert_eq!(guard.open(&key(), &sealed(3, 2_000), 2_000), Err(SealError::Busy));
        assert_eq!(guard.open(&key(), &one, 2_000), Err(SealError::Replay));
        // Once the first sender's datagrams are stale, a newcomer takes its place.
        let now = 1_000 + WINDOW_MS + 1;
        assert!(guard.open(&key(), &sealed(3, now), now).is_ok());
        assert_eq!(guard.len(), 2);
        assert_eq!(guard.open(&key(), &one, now), Err(SealError::Stale), "forgotten, and refused by its time");
        assert_eq!(guard.open(&key(), &two, now), Err(SealError::Replay), "still remembered");
    }
}
