//! A service's instances as queries read them: packed endpoints in one array, and the text
//! form of the whole list in one block.
//!
//! # What each instance costs here
//!
//! - [`Member`]: 36 bytes in the service's array (the endpoint, the number of its first lease),
//!   where the endpoint with a 48-byte inline text form took 88.
//! - Its text form (`1.2.3.4:80 `, about 15 bytes for IPv4) in the service's [`TextBlock`],
//!   plus 4 bytes for where it starts. A text answer is then cut from the block: the instances
//!   from the rotation's start to the end of the block, then from the block's start, so a
//!   reply is at most two copies, whatever the number of instances in it. The block grows as
//!   instances are added (their text appended) and is mended as they leave: the removal moves
//!   the last member into the leaving one's place, and the block moves the last text's bytes
//!   into the leaving text's place the same way, shifting the bytes between them and their
//!   starts (O(bytes), no formatting). So the block always follows the members and a text
//!   query never formats: rewriting the block at the next query after a removal, as it once
//!   did, cost a query 114 µs instead of 67 ns at 1,000 instances in the service.

use std::net::SocketAddr;

use super::Index;
use super::block::Block;

/// An endpoint as a member keeps it: the `SocketAddr` itself (32 bytes). Packing it in 19
/// bytes (16 address bytes, the port, the family) saved 13 bytes a member but cost a binary
/// query 70 instructions per instance answered to unpack (+16 % per reply at 10 instances, +45 %
/// at 200, measured with callgrind), so the binary path reads the address as it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Endpoint(SocketAddr);

impl Endpoint {
    pub(super) fn new(endpoint: SocketAddr) -> Self {
        Endpoint(endpoint)
    }

    #[inline]
    pub(super) fn get(self) -> SocketAddr {
        self.0
    }
}

/// An instance as its service lists it. The endpoint lives here rather than in the lease, so a
/// query reads one contiguous array instead of leases scattered over the table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Member {
    pub(super) endpoint: Endpoint,
    /// The first of the instance's leases.
    pub(super) head: Index,
}

/// The text forms of a service's instances, in the order of its members, each followed by a
/// space (the separator of a text answer). See the [module documentation](self).
#[derive(Debug, Default)]
pub(super) struct TextBlock(Block);

impl TextBlock {
    /// A member was added at the end.
    pub(super) fn push(&mut self, endpoint: SocketAddr) {
        self.0.push(|bytes| write_text(bytes, endpoint));
    }

    /// Member `k` was removed with `swap_remove` (the last member moved into its place): the
    /// last text moves into `k`'s place the same way, without formatting anything.
    pub(super) fn swap_remove(&mut self, k: usize) {
        self.0.swap_remove(k);
    }

    /// Member `k`'s text.
    pub(super) fn text(&self, k: usize) -> &str {
        let entry = self.0.entry(k);
        std::str::from_utf8(&entry[..entry.len() - 1]).unwrap_or("")
    }

    /// The text answer that starts at member `start`: as many members, in rotation, as fit in
    /// `room` bytes counting the spaces between them (the greedy cut: stop at the first that
    /// does not fit), as at most two slices; the answer is their concatenation. `start` must be
    /// a member.
    pub(super) fn answer(&self, start: usize, room: usize) -> (&[u8], &[u8]) {
        // Each text is followed by its space, the last one's not sent: one byte more fits.
        match self.0.cut(start, |len| len <= room + 1) {
            (0, ..) => (&[], &[]),
            (_, first, []) => (&first[..first.len() - 1], &[]),
            (_, first, second) => (first, &second[..second.len() - 1]),
        }
    }
}

fn write_text(bytes: &mut Vec<u8>, endpoint: SocketAddr) {
    use std::io::Write;
    #[cfg(test)]
    FORMATTED.with(|count| count.set(count.get() + 1));
    // Writing to a vector cannot fail.
    let _ = write!(bytes, "{endpoint} ");
}

#[cfg(test)]
thread_local! {
    /// How many endpoints this thread formatted into text blocks (each test runs on its own
    /// thread), to check that removals and queries format nothing.
    static FORMATTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many endpoints this thread formatted into text blocks so far.
#[cfg(test)]
pub(super) fn formatted() -> usize {
    FORMATTED.with(std::cell::Cell::get)
}

#[cfg(test)]
mod tests {
    use super::super::block::{Churned, churn};
    use super::*;

    #[test]
    fn endpoints_come_back_as_they_went_in() {
        for text in ["127.0.0.1:4000", "[::1]:80", "[fe80::1]:65535", "10.0.0.255:1"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(Endpoint::new(addr).get(), addr);
        }
        assert_eq!(std::mem::size_of::<Member>(), 36);
    }

    /// What the greedy fit over the members' texts writes from `start` in `room` bytes.
    fn greedy(members: &[SocketAddr], start: usize, room: usize) -> String {
        let mut want = String::new();
        for k in 0..members.len() {
            let text = members[(start + k) % members.len()].to_string();
            let cost = usize::from(!want.is_empty()) + text.len();
            if want.len() + cost > room {
                break;
            }
            if !want.is_empty() {
                want.push(' ');
            }
            want.push_str(&text);
        }
        want
    }

    /// The block holds the members' texts in order, and every cut is the greedy fit.
    fn assert_follows(block: &TextBlock, members: &[SocketAddr]) {
        let total: usize = members.iter().map(|m| m.to_string().len() + 1).sum();
        assert_eq!(block.0.bytes.len(), total, "{members:?}");
        for (k, m) in members.iter().enumerate() {
            assert_eq!(block.text(k), m.to_string(), "member {k} of {members:?}");
        }
        for start in 0..members.len() {
            for room in 0..=total + 1 {
                let (a, b) = block.answer(start, room);
                let want = greedy(members, start, room);
                assert_eq!([a, b].concat(), want.as_bytes(), "start {start}, room {room}, {members:?}");
            }
        }
    }

    fn endpoints(texts: &[&str]) -> Vec<SocketAddr> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn block_of(members: &[SocketAddr]) -> TextBlock {
        let mut block = TextBlock::default();
        for &m in members {
            block.push(m);
        }
        block
    }

    /// Texts of varied lengths, so a moved text is longer or shorter than the one it replaces.
    const TEXTS: [&str; 7] = [
        "10.0.0.1:1",
        "10.0.0.22:22",
        "[::1]:333",
        "10.0.0.4:4444",
        "[fe80::1%7]:65535",
        "1.2.3.4:5",
        "[2001:db8::17]:80",
    ];

    /// The answer is what the greedy fit over the instances' texts would write.
    #[test]
    fn answers_are_the_greedy_cut_in_rotation() {
        let members = endpoints(&TEXTS[..4]);
        assert_follows(&block_of(&members), &members);
    }

    /// Removals in varied orders (the last, the first, the middle, all) keep the block equal to
    /// the members' texts in their new order, and every cut the greedy fit.
    #[test]
    fn removals_keep_the_block_and_the_cuts() {
        let orders: [&[usize]; 6] = [
            &[6, 5, 4, 3, 2, 1, 0], // always the last
            &[0, 0, 0, 0, 0, 0, 0], // always the first
            &[3, 1, 4, 0, 2, 1, 0], // the middle
            &[1, 5, 2, 0, 0, 1, 0],
            &[5, 0, 3, 3, 1, 0, 0],
            &[2, 2, 2, 2, 2, 1, 0],
        ];
        for order in orders {
            let mut members = endpoints(&TEXTS);
            let mut block = block_of(&members);
            for &k in order {
                members.swap_remove(k);
                block.swap_remove(k);
                assert_follows(&block, &members);
            }
            assert!(block.0.bytes.is_empty() && block.0.starts == [0], "{order:?}");
            // An emptied block takes members again.
            let again = endpoints(&TEXTS[4..]);
            for &m in &again {
                block.push(m);
            }
            assert_follows(&block, &again);
        }
    }

    impl Churned for TextBlock {
        fn push(&mut self, endpoint: SocketAddr) {
            TextBlock::push(self, endpoint);
        }
        fn swap_remove(&mut self, k: usize) {
            TextBlock::swap_remove(self, k);
        }
    }

    /// Additions and removals interleaved, in a pseudo-random order over many members.
    #[test]
    fn churn_keeps_the_block_and_the_cuts() {
        churn(40, 25, 10, |block: &TextBlock, members| assert_follows(block, members));
    }

    /// A removal and the queries after it format nothing: the block is mended, not rewritten.
    #[test]
    fn removals_and_answers_format_nothing() {
        let members: Vec<SocketAddr> =
            (0..1000u16).map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80))).collect();
        let mut block = block_of(&members);
        let before = formatted();
        // The first, one in the middle, the last (of 998), another.
        for k in [0, 500, 997, 3] {
            block.swap_remove(k);
            assert!(!block.answer(k % 10, 1400).0.is_empty());
            assert!(!block.text(k.min(996)).is_empty());
        }
        assert_eq!(formatted(), before, "a removal or a query formatted endpoints");
    }
}
