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
//!   instances are added (their text appended), and is rewritten at the next text query after
//!   an instance left (an instance's removal moves the last one into its place).

use std::net::SocketAddr;

use super::Index;

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
pub(super) struct TextBlock {
    bytes: Vec<u8>,
    /// Where each member's text starts in `bytes`, and (last) the block's length: one more
    /// entry than members.
    starts: Vec<u32>,
    /// The block no longer follows the members (one was removed); rewritten when next read.
    stale: bool,
}

impl TextBlock {
    /// A member was added at the end.
    pub(super) fn push(&mut self, endpoint: SocketAddr) {
        if self.stale {
            return;
        }
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        write_text(&mut self.bytes, endpoint);
        self.starts.push(offset(self.bytes.len()));
    }

    /// A member was removed (another moved into its place): rewrite before the next read.
    pub(super) fn invalidate(&mut self) {
        self.stale = true;
    }

    /// Brings the block up to date with `members` if it is stale.
    pub(super) fn refresh(&mut self, members: &[Member]) {
        if !self.stale {
            return;
        }
        self.bytes.clear();
        self.starts.clear();
        self.starts.push(0);
        for member in members {
            write_text(&mut self.bytes, member.endpoint.get());
            self.starts.push(offset(self.bytes.len()));
        }
        self.stale = false;
    }

    /// Member `k`'s text (the block must be fresh).
    pub(super) fn text(&self, k: usize) -> &str {
        let (from, to) = (self.starts[k] as usize, self.starts[k + 1] as usize - 1);
        std::str::from_utf8(&self.bytes[from..to]).unwrap_or("")
    }

    /// The text answer that starts at member `start`: as many members, in rotation, as fit in
    /// `room` bytes counting the spaces between them (the greedy cut: stop at the first that
    /// does not fit), as at most two slices; the answer is their concatenation. The block must
    /// be fresh and `start` a member.
    pub(super) fn answer(&self, start: usize, room: usize) -> (&[u8], &[u8]) {
        let len = self.starts.len() - 1;
        let at = |k: usize| self.starts[k] as usize;
        // The bytes of the first `count` members from `start`, with the space after each:
        // monotonic in `count`, so the largest count that fits is found by bisection.
        let cost = |count: usize| {
            let end = start + count;
            if end <= len { at(end) - at(start) } else { at(len) - at(start) + at(end - len) }
        };
        let count = partition(len, |count| cost(count) <= room + 1);
        if count == 0 {
            return (&[], &[]);
        }
        let end = start + count;
        if end <= len {
            (&self.bytes[at(start)..at(end) - 1], &[])
        } else {
            (&self.bytes[at(start)..at(len)], &self.bytes[..at(end - len) - 1])
        }
    }
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

fn write_text(bytes: &mut Vec<u8>, endpoint: SocketAddr) {
    use std::io::Write;
    // Writing to a vector cannot fail.
    let _ = write!(bytes, "{endpoint} ");
}

fn offset(len: usize) -> u32 {
    u32::try_from(len).unwrap_or_else(|_| unreachable!("a service's text is far below 4 GB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(endpoint: &str) -> Member {
        Member { endpoint: Endpoint::new(endpoint.parse().unwrap()), head: 0 }
    }

    #[test]
    fn endpoints_come_back_as_they_went_in() {
        for text in ["127.0.0.1:4000", "[::1]:80", "[fe80::1]:65535", "10.0.0.255:1"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(Endpoint::new(addr).get(), addr);
        }
        assert_eq!(std::mem::size_of::<Member>(), 36);
    }

    /// The answer is what the greedy fit over the instances' texts would write.
    #[test]
    fn answers_are_the_greedy_cut_in_rotation() {
        let members: Vec<Member> =
            ["10.0.0.1:1", "10.0.0.22:22", "[::1]:333", "10.0.0.4:4444"].iter().map(|m| member(m)).collect();
        let mut block = TextBlock::default();
        for m in &members {
            block.push(m.endpoint.get());
        }
        for start in 0..members.len() {
            for room in 0..60 {
                let mut want = String::new();
                for k in 0..members.len() {
                    let text = members[(start + k) % members.len()].endpoint.get().to_string();
                    let cost = usize::from(!want.is_empty()) + text.len();
                    if want.len() + cost > room {
                        break;
                    }
                    if !want.is_empty() {
                        want.push(' ');
                    }
                    want.push_str(&text);
                }
                let (a, b) = block.answer(start, room);
                assert_eq!([a, b].concat(), want.as_bytes(), "start {start}, room {room}");
            }
        }
        block.invalidate();
        block.refresh(&members[1..]);
        assert_eq!(block.text(0), "10.0.0.22:22");
        assert_eq!(block.text(1), "[::1]:333");
    }
}
