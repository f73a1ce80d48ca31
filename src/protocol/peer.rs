//! The peer protocol: what brokers of one redundant service say to each other.
//!
//! Binary only: a version byte, then a [postcard] encoding of a [`PeerFrame`].
//!
//! ```text
//! +---------+--------------------------------------------------+
//! | 0xF9    | postcard(PeerFrame { node: u64, body: Peer })     |
//! +---------+--------------------------------------------------+
//! ```
//!
//! The version byte is `0xF8 | version`. Bytes `0xF8..=0xFF` never occur in UTF-8 and are not
//! binary client versions (`0x80..=0xBF`), so peer datagrams arrive on the same port as client
//! requests and are told apart by their first byte. `node` is the sender's incarnation: a
//! random id drawn when it starts, so a restarted broker is recognised as new. Leases travel
//! with the time they have *left*, in milliseconds, so clocks of different hosts need not agree.
//! Variants are only ever appended. `protocol.md` documents every message with an example.
//!
//! ```
//! use makler::protocol::peer::{self, Peer, PeerFrame};
//!
//! let hello = PeerFrame { node: 7, body: Peer::Hello { addr: "127.0.0.1:7000".parse().unwrap(), complete: true, instances: 3 } };
//! let mut datagram = Vec::new();
//! peer::encode(&hello, &mut datagram);
//! assert_eq!(datagram[0], peer::VERSION_BYTE);
//! assert_eq!(peer::decode(&datagram).unwrap(), hello);
//! ```

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Check, RemoveReason, Source};

/// The peer protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// The first byte of every peer datagram of [`VERSION`].
pub const VERSION_BYTE: u8 = 0xF8 | VERSION;

/// The largest peer datagram sent: it fits an Ethernet frame without fragments.
pub const MAX_DATAGRAM: usize = 1400;

/// Whether a datagram is a peer datagram of any version (starts with a byte in `0xF8..=0xFF`).
pub fn is_peer(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(0xF8..=0xFF))
}

/// One peer datagram after the version byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerFrame<'a> {
    /// The sender's incarnation (random per start).
    pub node: u64,
    /// The message.
    #[serde(borrow)]
    pub body: Peer<'a>,
}

/// A message between brokers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Peer<'a> {
    /// Sent to every peer every hello interval, and at start: "I am alive". A peer unheard of
    /// for the peer timeout is down.
    Hello {
        /// The address clients use for the sender.
        addr: SocketAddr,
        /// The sender holds the whole table (it is not catching up).
        complete: bool,
        /// Its live instances (for `stats` and logs).
        instances: u64,
    },
    /// Changes made at the sender: new and renewed leases, removals. Answered with [`Peer::Ack`];
    /// resent a few times until acknowledged.
    Delta {
        /// Numbers the sender's deltas to this peer, for the acknowledgement.
        seq: u32,
        /// The changes.
        #[serde(borrow)]
        entries: Vec<Entry<'a>>,
    },
    /// "Delta `seq` arrived."
    Ack {
        /// The delta's number.
        seq: u32,
    },
    /// A broker that is catching up asks the receiver for its table, from `cursor` on, in up
    /// to `pages` [`Peer::Page`]s.
    SyncRequest {
        /// Where to start (0: the beginning). Valid only for the incarnation it came from.
        cursor: u32,
        /// How many pages to send at once.
        pages: u8,
    },
    /// A page of the sender's table.
    Page {
        /// Where this page starts.
        cursor: u32,
        /// Where the next page starts; `None`: this is the last.
        next: Option<u32>,
        /// The leases.
        #[serde(borrow)]
        leases: Vec<Lease<'a>>,
    },
    /// A client reported this instance dead: the receiver, which owns its checks, verifies it.
    Report {
        /// The service.
        service: &'a str,
        /// The instance.
        endpoint: SocketAddr,
    },
    /// The sender is shutting down: take it as down at once.
    Bye,
    /// A broker of another network asks for a service it does not have (see `--bridge`).
    /// Answered with [`Peer::Answer`] from the receiver's own table only: a bridged query is
    /// never bridged again, so brokers that bridge to each other cannot loop.
    Query {
        /// Chosen by the asker; the answer carries it.
        id: u32,
        /// The service.
        service: &'a str,
    },
    /// The answer to a [`Peer::Query`]: the live instances, in rotation (as many as fit), or
    /// none.
    Answer {
        /// The query's id.
        id: u32,
        /// The instances; empty: not found.
        instances: Vec<SocketAddr>,
    },
    /// Anti-entropy: sent every digest interval by a complete broker to every live, complete
    /// peer: a summary of its table (see `registry::digest`). A receiver whose own summary
    /// differs at two digests in a row answers with its [`Peer::Buckets`].
    Digest {
        /// How many leases the sender holds.
        leases: u64,
        /// The XOR of their element hashes.
        root: u64,
    },
    /// Anti-entropy: the sender's bucket hashes, from bucket `first` on (as many as fit; the
    /// rest follow in further datagrams). The receiver sends its [`Peer::Elements`] for every
    /// bucket whose hash differs from its own.
    Buckets {
        /// The first bucket in the list.
        first: u16,
        /// Each bucket's hash, in order.
        hashes: Vec<u64>,
    },
    /// Anti-entropy: *all* the sender's element hashes from `from` to `to` (inclusive, within one
    /// bucket), ascending. The receiver pushes (as a [`Peer::Delta`]) the leases it holds in that
    /// range that are not listed, and asks with [`Peer::Want`] for those listed it lacks.
    Elements {
        /// The first hash of the range.
        from: u64,
        /// The last hash of the range.
        to: u64,
        /// The hashes.
        hashes: Vec<u64>,
    },
    /// Anti-entropy: "send me the leases with these element hashes" (answered with a
    /// [`Peer::Delta`] of them).
    Want {
        /// The element hashes.
        hashes: Vec<u64>,
    },
    /// A page of the sender's table whose leases carry their declared checks: what a broker
    /// that knows checks sends for [`Peer::Page`].
    PageChecked {
        /// Where this page starts.
        cursor: u32,
        /// Where the next page starts; `None`: this is the last.
        next: Option<u32>,
        /// The leases.
        #[serde(borrow)]
        leases: Vec<CheckedLease<'a>>,
    },
    /// Sent with every hello by a broker that reads [`Entry::UpsertSlot`] and
    /// [`Entry::Renew`]: only a peer that said so is sent them (an older broker drops this as
    /// an unknown variant, and goes on getting [`Entry::Upsert`]s).
    Features {
        /// Bit 0: slot renewals. Bit 1: metadata ([`Entry::UpsertMeta`], [`Peer::PageMeta`]).
        /// Bit 2: the sender advertises with mDNS (`--mdns`); its link follows in a
        /// [`Peer::MdnsLink`]. Other bits are reserved (0), and ignored by a receiver.
        bits: u32,
    },
    /// "These slots of yours, renewed in your delta, name no lease I know": the receiver of
    /// an [`Entry::Renew`] asks its sender for the leases, which come back as
    /// [`Entry::UpsertSlot`]s. The slots are a [slot list](encode_slots).
    Unknown {
        /// The slots.
        #[serde(borrow)]
        slots: &'a [u8],
    },
    /// A page of the sender's table whose leases carry their checks and metadata: what a
    /// broker sends for [`Peer::Page`] to a peer that announced metadata in its
    /// [`Peer::Features`] (bit 1).
    PageMeta {
        /// Where this page starts.
        cursor: u32,
        /// Where the next page starts; `None`: this is the last.
        next: Option<u32>,
        /// The leases.
        #[serde(borrow)]
        leases: Vec<MetaLease<'a>>,
    },
    /// Sent after [`Peer::Features`] (with bit 2) by a broker that advertises with mDNS: the
    /// network of the link it advertises on, so that each instance is advertised by one broker
    /// *of that link* (the owner among the brokers that say the same network). `0.0.0.0/0`: a
    /// link whose network is not known (tests; the broker refuses such an interface). An older
    /// broker drops it as an unknown variant.
    MdnsLink {
        /// The link's network address.
        network: std::net::Ipv4Addr,
        /// Its prefix length (0–32).
        prefix: u8,
    },
}

/// One change in a [`Peer::Delta`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry<'a> {
    /// A lease, new or renewed: the receiver merges it (see `registry::remote`).
    Upsert(#[serde(borrow)] Lease<'a>),
    /// A lease removed on purpose.
    Remove {
        /// Its id (one entry per id, aliases included).
        id: Uuid,
        /// Why.
        reason: RemoveReason,
    },
    /// [`Entry::Upsert`] of a lease that declares a check; an `Upsert` declares none (so a
    /// lease without a check travels as it always did).
    UpsertChecked(#[serde(borrow)] CheckedLease<'a>),
    /// A lease, new or renewed, with its *slot*: a number the sender gave it, which names the
    /// lease in the sender's [`Entry::Renew`]s to this receiver for as long as it lives there.
    /// Sent only to peers that announced [`Peer::Features`].
    UpsertSlot {
        /// The lease's slot at the sender.
        slot: u32,
        /// The lease and its check.
        #[serde(borrow)]
        lease: CheckedLease<'a>,
    },
    /// Renewals as slots: every lease named by a slot in the list has `ttl_ms` left. A slot
    /// the receiver cannot map to a lease it holds is asked for with [`Peer::Unknown`].
    Renew {
        /// Milliseconds the leases have left (the least of them, rounded down).
        ttl_ms: u32,
        /// The slots, a [slot list](encode_slots).
        #[serde(borrow)]
        slots: &'a [u8],
    },
    /// [`Entry::UpsertSlot`] with the lease's metadata (empty: it carries none, and a receiver
    /// that held some drops them). Sent only to peers that announced metadata in their
    /// [`Peer::Features`] (bit 1); the others get `UpsertSlot`s, which leave a lease's metadata
    /// as it is.
    UpsertMeta {
        /// The lease's slot at the sender.
        slot: u32,
        /// The lease and its check.
        #[serde(borrow)]
        lease: CheckedLease<'a>,
        /// Its metadata: for each pair a length byte, then `key=value` (a DNS-SD TXT record's
        /// data, see `crate::meta`).
        #[serde(borrow)]
        meta: &'a [u8],
    },
}

/// Appends a varint (7 bits a byte, least significant first, high bit: more follows).
fn push_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Encodes ascending, distinct slots as a *slot list*: the first slot as a varint, then each
/// next one as a varint of its distance from the previous minus one. Slots given at
/// [`Entry::UpsertSlot`] are dense, so a renewal costs one byte whenever the slots renewed
/// together are less than 128 apart. Slots out of order are skipped.
///
/// ```
/// use makler::protocol::peer::{decode_slots, encode_slots};
///
/// let mut list = Vec::new();
/// encode_slots([3, 4, 10, 300], &mut list);
/// assert_eq!(list, [0x03, 0x00, 0x05, 0xa1, 0x02]);
/// assert_eq!(decode_slots(&list).collect::<Vec<_>>(), [3, 4, 10, 300]);
/// ```
pub fn encode_slots(slots: impl IntoIterator<Item = u32>, out: &mut Vec<u8>) {
    let mut previous: Option<u32> = None;
    for slot in slots {
        match previous {
            None => push_varint(out, slot),
            Some(p) if slot > p => push_varint(out, slot - p - 1),
            Some(_) => continue,
        }
        previous = Some(slot);
    }
}

/// Appends `slot` to a slot list whose last slot is `previous` (`None`: the list is empty);
/// `slot` must be larger than `previous`.
pub fn push_slot(out: &mut Vec<u8>, previous: Option<u32>, slot: u32) {
    push_varint(out, previous.map_or(slot, |p| slot.wrapping_sub(p).wrapping_sub(1)));
}

/// The bytes [`encode_slots`] adds for `slot` after `previous` (`None`: the first).
pub fn slot_size(previous: Option<u32>, slot: u32) -> usize {
    let value = previous.map_or(slot, |p| slot.wrapping_sub(p).wrapping_sub(1));
    match value {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        _ => 5,
    }
}

/// Decodes a slot list. Never panics: it stops at the first malformed varint or at a slot
/// past `u32::MAX`.
pub fn decode_slots(list: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let mut at = 0;
    let mut previous: Option<u32> = None;
    std::iter::from_fn(move || {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let &byte = list.get(at)?;
            at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                at = list.len();
                return None;
            }
        }
        let slot = match previous {
            None => value,
            Some(p) => u64::from(p) + value + 1,
        };
        let Ok(slot) = u32::try_from(slot) else {
            at = list.len();
            return None;
        };
        previous = Some(slot);
        Some(slot)
    })
}

/// A lease with the health check its holder declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedLease<'a> {
    /// The lease.
    #[serde(borrow)]
    pub lease: Lease<'a>,
    /// Its declared check.
    #[serde(borrow)]
    pub check: Check<&'a str>,
}

/// A lease with its check and metadata, as [`Peer::PageMeta`] carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaLease<'a> {
    /// The lease and its check.
    #[serde(borrow)]
    pub lease: CheckedLease<'a>,
    /// Its metadata, as in [`Entry::UpsertMeta`].
    #[serde(borrow)]
    pub meta: &'a [u8],
}

/// A lease as peers send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease<'a> {
    /// The lease's id.
    pub id: Uuid,
    /// Its service.
    pub service: &'a str,
    /// Its endpoint.
    pub endpoint: SocketAddr,
    /// Who holds it.
    pub source: Source,
    /// Milliseconds it has left.
    pub ttl_ms: u32,
    /// Other ids it is known by.
    pub aliases: Vec<Uuid>,
}

/// Why a peer datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a peer datagram at all.
    #[error("not a peer datagram")]
    NotPeer,
    /// A peer that speaks another version; upgrade the older broker.
    #[error("unsupported peer protocol version {0}")]
    UnsupportedVersion(u8),
    /// The body is not a valid encoding.
    #[error("malformed peer datagram: {0}")]
    Malformed(postcard::Error),
    /// Bytes were left over.
    #[error("{0} trailing bytes after the peer message")]
    TrailingBytes(usize),
}

/// Decodes a peer datagram. Never panics, whatever the bytes.
pub fn decode(datagram: &[u8]) -> Result<PeerFrame<'_>, Error> {
    let (&first, body) = datagram.split_first().ok_or(Error::NotPeer)?;
    if !is_peer(datagram) {
        return Err(Error::NotPeer);
    }
    if first != VERSION_BYTE {
        return Err(Error::UnsupportedVersion(first & 0x07));
    }
    let (frame, rest) = postcard::take_from_bytes::<PeerFrame<'_>>(body).map_err(Error::Malformed)?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes(rest.len()));
    }
    Ok(frame)
}

/// Appends the encoding of `frame` (version byte included) to `out`.
pub fn encode(frame: &PeerFrame<'_>, out: &mut Vec<u8>) {
    out.push(VERSION_BYTE);
    // postcard fails only for types serde cannot describe without a length (none here).
    if let Ok(extended) = postcard::to_extend(frame, std::mem::take(out)) {
        *out = extended;
    }
}

/// The encoded size of a value, for packing entries into a datagram.
pub fn size_of<T: Serialize>(value: &T) -> usize {
    postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(value, Default::default())
        .unwrap_or(usize::MAX)
}

/// Bytes of a `Delta` or `Page` datagram that are not entries, at the most: the version byte,
/// the incarnation (up to 10), the variant (1), `seq` or `cursor` and `next` (up to 6 each),
/// and the list's length (up to 3).
pub const FRAME_OVERHEAD: usize = 1 + 10 + 1 + 6 + 6 + 3;

/// Packs list items (delta entries, page leases) into one datagram, encoding each as it comes,
/// so that items borrowed from a table need not be copied first.
///
/// The list must be the last field of the frame: [`write`](Self::write) encodes the frame
/// with an empty list and puts the real count and the items in the empty list's place.
#[derive(Debug, Default)]
pub struct ListPacker {
    items: Vec<u8>,
    count: usize,
    /// Header bytes beyond [`FRAME_OVERHEAD`] (frames with larger fields before the list).
    extra: usize,
}

impl ListPacker {
    /// A packer for a frame whose fields before the list take up to `extra` bytes more than
    /// [`FRAME_OVERHEAD`] allows for.
    pub fn with_extra_header(extra: usize) -> Self {
        ListPacker { extra, ..ListPacker::default() }
    }

    /// Room left for items in a datagram of [`MAX_DATAGRAM`] bytes.
    pub fn room(&self) -> usize {
        (MAX_DATAGRAM - FRAME_OVERHEAD - self.extra).saturating_sub(self.items.len())
    }

    /// Adds `item` if it fits; returns false (adding nothing) when it does not.
    pub fn push<T: Serialize>(&mut self, item: &T) -> bool {
        if size_of(item) > self.room() {
            return false;
        }
        if let Ok(extended) = postcard::to_extend(item, std::mem::take(&mut self.items)) {
            self.items = extended;
            self.count += 1;
        }
        true
    }

    /// How many items are packed.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is packed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes `frame` (whose list must be empty and its last field) with the packed items as
    /// its list into `out` (cleared first). The packer keeps its items, so the same list can go
    /// out under several headers; [`clear`](Self::clear) empties it.
    pub fn write(&self, frame: &PeerFrame<'_>, out: &mut Vec<u8>) {
        out.clear();
        encode(frame, out);
        // The empty list is its length, a single 0 byte, at the very end.
        debug_assert_eq!(out.last(), Some(&0));
        out.pop();
        let mut count = self.count;
        loop {
            let byte = (count & 0x7f) as u8;
            count >>= 7;
            if count == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(&self.items);
    }

    /// Empties the packer.
    pub fn clear(&mut self) {
        self.items.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests;
