//! A service's members encoded once, in one block of bytes, for answers cut from it: the
//! mechanics the text block ([`TextBlock`](super::members::TextBlock)) and the binary block
//! ([`BinaryBlock`]) share.
//!
//! A [`Block`] holds one encoding per member, in the members' order, and where each starts. An
//! answer in rotation is the members from the rotation's start to the end of the block, then
//! from the block's start: at most two copies, whatever the number of members in it. How many
//! fit is found by bisection over the starts (the bytes of the first `n` members from the start
//! grow with `n`), or not at all when the whole block fits, so cutting an answer reads no member. A removal moves the last member's
//! bytes into the leaving one's place, as `Vec::swap_remove` moves the member (O(bytes), no
//! encoding), so the block always follows the members.
//!
//! # The binary block
//!
//! A binary query's answer is a frame (the version byte, the request id, the variant, the
//! list's length) and then the postcard encodings of its instances one after the other: the
//! list's bytes are the instances' bytes, concatenated. So the [`BinaryBlock`] keeps each
//! member's postcard encoding (7–8 bytes for IPv4, 19–20 for IPv6) and a binary answer is the
//! frame's few bytes and two copies, where encoding the reply cost the broker about 0.4 µs of
//! its 3.5 µs per binary query (PERFORMANCE.md). It costs 4 bytes for a member's start and its
//! encoding, about 11 bytes per IPv4 instance, and is built at a service's first binary query
//! only (a service never queried in binary keeps an empty `Option`, 8 bytes per service).

use std::net::SocketAddr;

/// Members' encodings, in the members' order. See the [module documentation](self).
#[derive(Debug, Default)]
pub(super) struct Block {
    pub(super) bytes: Vec<u8>,
    /// Where each member's bytes start in `bytes`, and (last) the block's length: one more
    /// entry than members (once a member was added).
    pub(super) starts: Vec<u32>,
}

impl Block {
    /// A member was added at the end; `write` appends its encoding (at least one byte).
    #[inline]
    pub(super) fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        write(&mut self.bytes);
        self.starts.push(offset(self.bytes.len()));
    }

    /// Member `k` was removed with `swap_remove` (the last member moved into its place): the
    /// last member's bytes move into `k`'s place the same way, without encoding anything.
    pub(super) fn swap_remove(&mut self, k: usize) {
        let last = self.starts.len() - 2;
        let at = |k: usize| self.starts[k] as usize;
        let (from, to, moved) = (at(k), at(k + 1), at(last + 1) - at(last));
        if k < last {
            // [k's bytes][between][last's bytes] becomes [last's bytes][between].
            self.bytes[from..].rotate_right(moved);
            self.bytes.drain(from + moved..to + moved);
            // The members after `k` (and the end) shift by the difference in length.
            for start in &mut self.starts[k + 1..=last] {
                *start = offset(*start as usize + moved - (to - from));
            }
        } else {
            self.bytes.truncate(from);
        }
        self.starts.pop();
    }

    /// Member `k`'s bytes.
    pub(super) fn entry(&self, k: usize) -> &[u8] {
        &self.bytes[self.starts[k] as usize..self.starts[k + 1] as usize]
    }

    /// The answer that starts at member `start`: the most members, in rotation, whose bytes
    /// together `fit` (true up to some total and false beyond it), as their number and at most
    /// two slices (the answer is their concatenation; the second is empty unless the answer
    /// wraps around). `start` must be a member.
    #[inline]
    pub(super) fn cut(&self, start: usize, fits: impl Fn(usize) -> bool) -> (usize, &[u8], &[u8]) {
        let len = self.starts.len() - 1;
        let at = |k: usize| self.starts[k] as usize;
        let cost = |count: usize| {
            let end = start + count;
            if end <= len { at(end) - at(start) } else { at(len) - at(start) + at(end - len) }
        };
        if fits(at(len)) {
            // Every member fits (as with a few instances per service): no bisection.
            return (len, &self.bytes[at(start)..at(len)], &self.bytes[..at(start)]);
        }
        let count = partition(len, |count| fits(cost(count)));
        let end = start + count;
        if end <= len {
            (count, &self.bytes[at(start)..at(end)], &[])
        } else {
            (count, &self.bytes[at(start)..at(len)], &self.bytes[..at(end - len)])
        }
    }
}

/// The postcard encodings of a service's members, for binary answers. See the
/// [module documentation](self).
#[derive(Debug, Default)]
pub(super) struct BinaryBlock(Block);

impl BinaryBlock {
    /// The block of `members`, in their order (a service's first binary query builds it).
    /// Its arrays are trimmed to their length: a block for each service queried in binary
    /// costs the bytes it holds, not up to twice as many.
    pub(super) fn of(members: impl Iterator<Item = SocketAddr>) -> Self {
        let mut block = BinaryBlock::default();
        for member in members {
            block.push(member);
        }
        block.0.bytes.shrink_to_fit();
        block.0.starts.shrink_to_fit();
        block
    }

    /// A member was added at the end.
    pub(super) fn push(&mut self, endpoint: SocketAddr) {
        self.0.push(|bytes| encode(bytes, endpoint));
    }

    /// Member `k` was removed with `swap_remove`; see [`Block::swap_remove`].
    pub(super) fn swap_remove(&mut self, k: usize) {
        self.0.swap_remove(k);
    }

    /// The binary answer that starts at member `start`: as many members, in rotation, as fit in
    /// `room` bytes (the greedy cut: stop at the first that does not fit), as their number and
    /// their postcard encodings in at most two slices. `start` must be a member.
    #[inline]
    pub(super) fn answer(&self, start: usize, room: usize) -> (usize, &[u8], &[u8]) {
        self.0.cut(start, |len| len <= room)
    }
}

fn encode(bytes: &mut Vec<u8>, endpoint: SocketAddr) {
    #[cfg(test)]
    ENCODED.with(|count| count.set(count.get() + 1));
    // Writing to a vector cannot fail, and postcard encodes every address.
    let _ = postcard::to_io(&endpoint, bytes);
}

#[cfg(test)]
thread_local! {
    /// How many endpoints this thread encoded into binary blocks (each test runs on its own
    /// thread), to check that removals and queries encode nothing.
    static ENCODED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many endpoints this thread encoded into binary blocks so far.
#[cfg(test)]
pub(super) fn encoded() -> usize {
    ENCODED.with(std::cell::Cell::get)
}

/// A block under churn, in tests: [`BinaryBlock`] and `members::TextBlock` alike.
#[cfg(test)]
pub(super) trait Churned: Default {
    /// A member was added at the end.
    fn push(&mut self, endpoint: SocketAddr);
    /// Member `k` was removed with `swap_remove`.
    fn swap_remove(&mut self, k: usize);
}

/// Additions and removals interleaved in a pseudo-random (fixed) order, 300 of them, over
/// `pool` endpoints (IPv4, IPv6, scoped IPv6; ports of one to three varint bytes) while fewer
/// than `most` are in: `check` sees a block kept alongside the members every `every` steps and
/// at the end. Both kinds of block are churned by it.
#[cfg(test)]
pub(super) fn churn<B: Churned>(pool: u16, most: usize, every: usize, check: impl Fn(&B, &[SocketAddr])) {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound as u64) as usize
    };
    let all: Vec<SocketAddr> = (0..pool)
        .map(|i| match i % 3 {
            0 => SocketAddr::from(([10, 0, (i % 7) as u8, i as u8], i * 997)),
            1 => SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, i], i)),
            _ => format!("[fe80::{i:x}%{}]:{}", i * 31, 65535 - i).parse().unwrap(),
        })
        .collect();
    let (mut members, mut block) = (Vec::new(), B::default());
    for step in 0..300 {
        if members.is_empty() || (next(3) > 0 && members.len() < most) {
            let m = all[next(all.len())];
            members.push(m);
            block.push(m);
        } else {
            let k = next(members.len());
            members.swap_remove(k);
            block.swap_remove(k);
        }
        if step % every == 0 {
            check(&block, &members);
        }
    }
    check(&block, &members);
}

/// The largest `n` in `0..=max` with `fits(n)`, for `fits` true up to some point and false
/// after (`fits(0)` is taken to hold).
fn partition(max: usize, fits: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    lo
}

fn offset(len: usize) -> u32 {
    u32::try_from(len).unwrap_or_else(|_| unreachable!("a service's block is far below 4 GB"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Form;
    use crate::protocol::fit::instance_len;

    /// What the old encoder wrote from `start` in `room` bytes: the greedy fit over the members
    /// sized one by one (as `fit::instances` sizes them), then postcard's encoding of that list
    /// without its length, and the list's length.
    fn encoded_greedy(members: &[SocketAddr], start: usize, room: usize) -> (usize, Vec<u8>) {
        let mut list = Vec::new();
        let mut left = room;
        for k in 0..members.len() {
            let member = members[(start + k) % members.len()];
            let cost = instance_len(Form::Binary { request_id: 0 }, member);
            if cost > left {
                break;
            }
            left -= cost;
            list.push(member);
        }
        let whole = postcard::to_stdvec(&list).unwrap();
        let length = postcard::to_stdvec(&list.len()).unwrap().len();
        (list.len(), whole[length..].to_vec())
    }

    /// The block holds the members' encodings in order, and every cut, for every start and
    /// every room, is byte for byte what the old encoder wrote.
    fn assert_follows(block: &BinaryBlock, members: &[SocketAddr]) {
        let total: usize = members.iter().map(|m| postcard::to_stdvec(m).unwrap().len()).sum();
        assert_eq!(block.0.bytes.len(), total, "{members:?}");
        for (k, m) in members.iter().enumerate() {
            assert_eq!(block.0.entry(k), postcard::to_stdvec(m).unwrap(), "member {k} of {members:?}");
        }
        for start in 0..members.len() {
            for room in 0..=total + 1 {
                let (count, a, b) = block.answer(start, room);
                let (want_count, want) = encoded_greedy(members, start, room);
                assert_eq!((count, [a, b].concat()), (want_count, want), "start {start}, room {room}, {members:?}");
            }
        }
    }

    /// IPv4 and IPv6 (with and without a scope), ports of one, two and three varint bytes, so
    /// a moved encoding is longer or shorter than the one it replaces.
    const ENDPOINTS: [&str; 9] = [
        "10.0.0.1:1",
        "10.0.0.22:127",
        "[::1]:128",
        "10.0.0.4:16383",
        "[fe80::1%7]:65535",
        "1.2.3.4:16384",
        "[2001:db8::17]:80",
        "127.0.0.1:200",
        "[::ffff:1.2.3.4]:4000",
    ];

    fn endpoints(texts: &[&str]) -> Vec<SocketAddr> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn answers_are_the_old_encoding_for_every_start_and_room() {
        let members = endpoints(&ENDPOINTS);
        assert_follows(&BinaryBlock::of(members.iter().copied()), &members);
        let one = endpoints(&ENDPOINTS[4..5]);
        assert_follows(&BinaryBlock::of(one.iter().copied()), &one);
    }

    /// Removals in varied orders (the last, the first, the middle, all) keep the block equal to
    /// the members' encodings in their new order without encoding anything, and every cut the
    /// old encoding. Fails if the block is not mended on removal.
    #[test]
    fn removals_mend_the_block_and_encode_nothing() {
        let orders: [&[usize]; 5] = [
            &[8, 7, 6, 5, 4, 3, 2, 1, 0], // always the last
            &[0, 0, 0, 0, 0, 0, 0, 0, 0], // always the first
            &[3, 1, 4, 0, 2, 1, 2, 1, 0], // the middle
            &[1, 7, 5, 2, 0, 0, 1, 1, 0],
            &[2, 2, 2, 2, 2, 2, 2, 1, 0],
        ];
        for order in orders {
            let mut members = endpoints(&ENDPOINTS);
            let mut block = BinaryBlock::of(members.iter().copied());
            let before = encoded();
            for &k in order {
                members.swap_remove(k);
                block.swap_remove(k);
                assert_follows(&block, &members);
            }
            assert_eq!(encoded(), before, "a removal or an answer encoded endpoints");
            assert!(block.0.bytes.is_empty() && block.0.starts == [0], "{order:?}");
            let again = endpoints(&ENDPOINTS[5..]);
            for &m in &again {
                block.push(m);
            }
            assert_follows(&block, &again);
        }
    }

    impl Churned for BinaryBlock {
        fn push(&mut self, endpoint: SocketAddr) {
            BinaryBlock::push(self, endpoint);
        }
        fn swap_remove(&mut self, k: usize) {
            BinaryBlock::swap_remove(self, k);
        }
    }

    /// Additions and removals interleaved, in a pseudo-random order over many members, past a
    /// reply's worth (so cuts stop short of the whole block).
    #[test]
    fn churn_keeps_the_block_and_the_cuts() {
        churn(60, 40, 20, |block: &BinaryBlock, members| assert_follows(block, members));
    }
}
