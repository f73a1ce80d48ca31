//! How the balancer chooses a backend for each connection (`--policy`), and how backends'
//! weights shape the choice.
//!
//! - **round-robin** (the default): each backend in turn. With weights, nginx's smooth weighted
//!   round robin: over a cycle of as many picks as the weights add up to, each backend is picked
//!   as often as its weight, its picks spread over the cycle rather than in a run.
//! - **least-conn**: the backend with the fewest connections in flight for its weight (HAProxy's
//!   `leastconn`): in-flight ÷ weight, compared by cross-multiplying. Ties are broken by a
//!   rotating position over the tied backends' weights, so backends that are equally loaded (idle
//!   ones, say) still share the connections as (weighted) round robin would.
//! - **random-two**: two distinct backends drawn at random (with weights: each drawn as often as
//!   its weight), and the one with fewer connections in flight for its weight wins (the power of
//!   two choices, as sozu offers); never the busier of the two.
//!
//! The counts in flight are atomics on each backend, raised when a connection is assigned and
//! lowered when it ends ([`Lease`](super::pool::Lease)): no lock on the forwarding path.

use std::fmt;
use std::str::FromStr;

/// How a backend is chosen for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Each backend in turn (smooth weighted round robin with weights).
    #[default]
    RoundRobin,
    /// The fewest connections in flight for its weight.
    LeastConn,
    /// The less loaded of two drawn at random.
    RandomTwo,
}

impl Policy {
    /// The names `--policy` takes, in the order `--help` lists them.
    pub const NAMES: [&'static str; 3] = ["round-robin", "least-conn", "random-two"];

    /// Its name, as `--policy` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => Self::NAMES[0],
            Policy::LeastConn => Self::NAMES[1],
            Policy::RandomTwo => Self::NAMES[2],
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "round-robin" => Ok(Policy::RoundRobin),
            "least-conn" => Ok(Policy::LeastConn),
            "random-two" => Ok(Policy::RandomTwo),
            _ => Err(format!("unknown policy {text:?}: expected round-robin, least-conn or random-two")),
        }
    }
}

/// The largest weight a backend may carry (HAProxy's bound).
pub const MAX_WEIGHT: u32 = 256;

/// A backend's weight from the text of a registration's `weight=` value: 1 to [`MAX_WEIGHT`].
pub fn parse_weight(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(weight @ 1..=MAX_WEIGHT) => Ok(weight),
        _ => Err(format!("bad weight {text:?}: expected a whole number from 1 to {MAX_WEIGHT}")),
    }
}

/// A backend's weight from its metadata's `weight` pair, given as [`Metadata::get`] gives it
/// (`None`: no such key; `Some(None)`: the key alone): 1 without one, else [`parse_weight`]'s
/// verdict on the value. The one reading of a declared weight, for backends registered at the
/// control port and for those taken from a watched service (`--backends-from`) alike.
///
/// [`Metadata::get`]: crate::meta::Metadata::get
pub fn declared_weight(value: Option<Option<&[u8]>>) -> Result<u32, String> {
    let Some(value) = value else { return Ok(1) };
    parse_weight(&String::from_utf8_lossy(value.unwrap_or_default()))
}

/// The smooth weighted round robin's cycle is computed (at publication, in time linear in the
/// number of backends times the cycle's length) up to this much work; beyond, picks walk the
/// positions of the weights with a stride instead (exact shares, less smooth).
const MAX_CYCLE_WORK: u64 = 1 << 22;

/// The weighted order of a list whose backends do not all weigh the same (weights divided by
/// their greatest common divisor). Each backend holds as many positions in `0..total` as its
/// weight: a pick of a position is a pick by weight.
#[derive(Debug)]
pub(super) struct Weighted {
    /// One cycle of nginx's smooth weighted round robin: list indices, each as often as its
    /// weight. `None` when too long to compute (see [`MAX_CYCLE_WORK`]).
    cycle: Option<Box<[u32]>>,
    /// Running sums of the weights: backend `i` holds positions `cumulative[i - 1]..cumulative[i]`.
    cumulative: Box<[u64]>,
    /// Without a cycle: the k-th pick is position `k × stride mod total` (stride prime to
    /// total, so every position once a cycle).
    stride: u64,
}

impl Weighted {
    /// The weighted order of backends weighing `weights`, or `None` when they all weigh the
    /// same (plain round robin is then the same thing, cheaper).
    pub fn new(weights: &[u32]) -> Option<Weighted> {
        let first = *weights.first()?;
        if weights.iter().all(|&w| w == first) {
            return None;
        }
        let divisor = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w.max(1))));
        let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1)) / divisor).collect();
        let mut cumulative = Vec::with_capacity(reduced.len());
        let mut total = 0;
        for &w in &reduced {
            total += w;
            cumulative.push(total);
        }
        let cycle =
            (total.saturating_mul(reduced.len() as u64) <= MAX_CYCLE_WORK).then(|| smooth_cycle(&reduced, total));
        let mut stride = ((total as f64 * 0.618) as u64).max(1);
        while gcd(stride, total) != 1 {
            stride += 1;
        }
        Some(Weighted { cycle, cumulative: cumulative.into(), stride })
    }

    /// The weights' sum (reduced): the cycle's length.
    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(1)
    }

    /// The list index of the `k`-th pick of the weighted round robin.
    pub fn nth(&self, k: usize) -> usize {
        match &self.cycle {
            Some(cycle) => cycle[k % cycle.len()] as usize,
            None => {
                let total = self.total();
                let k = k as u64 % total;
                self.at(((u128::from(k) * u128::from(self.stride)) % u128::from(total)) as u64)
            }
        }
    }

    /// The list index of the backend holding `position` (below [`total`](Self::total)).
    pub fn at(&self, position: u64) -> usize {
        self.cumulative.partition_point(|&end| end <= position).min(self.cumulative.len() - 1)
    }
}

/// nginx's smooth weighted round robin, one cycle of it: each pick raises every backend's
/// current weight by its weight, takes the highest (the first of equals) and lowers that one's
/// by the total.
fn smooth_cycle(weights: &[u64], total: u64) -> Box<[u32]> {
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        cycle.push(best as u32);
    }
    cycle.into()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A cheap generator for random-two's draws (xorshift64*), one per forwarding thread, seeded
/// from the operating system: the draws need to be spread, not unpredictable.
#[derive(Debug, Clone)]
pub struct Draw(u64);

impl Draw {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Draw(seed | 1)
    }

    /// A generator seeded by the operating system.
    pub fn from_os() -> Self {
        Draw::new(crate::random::u64())
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0), by multiplication rather than a modulo.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in Policy::NAMES {
            assert_eq!(name.parse::<Policy>().unwrap().to_string(), name);
        }
        assert_eq!(Policy::default(), Policy::RoundRobin);
        assert!("leastconn".parse::<Policy>().unwrap_err().contains("expected round-robin"));
        assert_eq!(parse_weight("3"), Ok(3));
        assert!(parse_weight("0").is_err() && parse_weight("257").is_err() && parse_weight("x").is_err());
        assert_eq!(declared_weight(None), Ok(1), "no weight= pair");
        assert_eq!(declared_weight(Some(Some(b"3"))), Ok(3));
        assert!(declared_weight(Some(None)).is_err(), "the key alone is no weight");
        assert!(declared_weight(Some(Some(b"\xff"))).is_err() && declared_weight(Some(Some(b"-1"))).is_err());
    }

    #[test]
    fn the_smooth_cycle_is_nginxs() {
        // nginx's own example: weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
        let weighted = Weighted::new(&[5, 1, 1]).unwrap();
        let picks: Vec<usize> = (0..7).map(|k| weighted.nth(k)).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        assert!(Weighted::new(&[3, 3, 3]).is_none(), "equal weights: plain round robin");
        // 2:4 is 1:2.
        assert_eq!(Weighted::new(&[2, 4]).unwrap().total(), 3);
    }

    #[test]
    fn without_a_cycle_the_stride_gives_exact_shares() {
        let weights: Vec<u32> = (0..5000).map(|i| 1 + (i % 7)).collect();
        let weighted = Weighted::new(&weights).unwrap();
        assert!(weighted.cycle.is_none());
        let total = weighted.total() as usize;
        let mut counts = vec![0u32; weights.len()];
        for k in 0..total {
            counts[weighted.nth(k)] += 1;
        }
        assert!(counts.iter().zip(&weights).all(|(&n, &w)| n == w));
    }

    #[test]
    fn draws_are_below_their_bound_and_spread() {
        let mut draw = Draw::new(7);
        let mut seen = [0u32; 3];
        for _ in 0..3000 {
            seen[draw.below(3) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
