//! Service metadata: the `key=value` pairs a registration may carry, kept as DNS-SD keeps them.
//!
//! A registration says more than where its instance is: `register web 8080 path=/ version=2`.
//! The pairs replicate with the lease, show in listings and watches, and are served as the
//! instance's DNS-SD TXT record (RFC 6763 §6), so they follow DNS-SD's rules:
//!
//! - a **pair** is one TXT string, `key=value`, at most [`MAX_PAIR`] (255) bytes in all, the
//!   most one TXT string can hold (§6.1); a string with no `=` is a **boolean attribute**, the
//!   key alone (§6.4); `key=` is a key with an empty value, which is not the same;
//! - a **key** is 1 to [`MAX_KEY`] bytes of printable ASCII (`0x21`–`0x7E`) other than `=`
//!   (§6.4; DNS-SD allows spaces in keys, makler does not, so a key is always one word of the
//!   text form). Keys compare without regard to case and appear at most once;
//! - a **value** registered through makler (text or binary form) is UTF-8 without white space
//!   or control characters, so that every registration can be written as one text line; values
//!   read from a TXT record ([`Metadata::from_txt`]) may be any bytes (§6.5), and are escaped
//!   where they are shown ([`Metadata`]'s `Display`);
//! - an **instance** holds at most [`MAX_PAIRS`] (32) pairs and [`MAX_TOTAL`] (1,024) bytes of TXT
//!   data (each pair's bytes plus its length byte). RFC 6763 §6.2 asks for TXT records under
//!   1,300 bytes so that one fits an Ethernet packet; 1,024 leaves room for the registration
//!   around it, so a `register` carrying the most metadata still fits one 1,400-byte request
//!   datagram, and so does the lease that carries it to peer brokers. 32 pairs hold the TXT
//!   records printers and AirPlay devices announce (their keys are many and short).
//!
//! [`Metadata`] keeps all of an instance's pairs in one boxed block, in the TXT record's own wire
//! form (a length byte, then the string, for each pair, in registration order): no allocation
//! when there is none, one when there is, 16 bytes inline either way, and serving TXT is a copy.
//!
//! ```
//! use makler::meta::Metadata;
//!
//! let meta = Metadata::parse_words(["path=/", "version=2"]).unwrap();
//! assert_eq!(meta.get("Path"), Some(Some(&b"/"[..])));
//! assert_eq!(meta.to_string(), "path=/ version=2");
//! assert_eq!(meta.to_txt(), vec![b"path=/".to_vec(), b"version=2".to_vec()]);
//! assert_eq!(Metadata::from_txt(&meta.to_txt()), meta);
//! assert!(Metadata::parse_words(["=x"]).is_err());
//! ```

use std::fmt;

/// The longest pair, `key=value`, in bytes: the most one TXT string holds (RFC 6763 §6.1).
pub const MAX_PAIR: usize = 255;

/// The longest key, in bytes. RFC 6763 §6.4 asks for keys of nine characters or fewer; 64 is
/// room for any descriptive name while leaving the pair's bytes to its value.
pub const MAX_KEY: usize = 64;

/// The most pairs one instance holds.
pub const MAX_PAIRS: usize = 32;

/// The most TXT data one instance holds, in bytes: every pair's bytes plus one length byte each
/// (the TXT record's RDATA length). See the [module documentation](self) for why.
pub const MAX_TOTAL: usize = 1024;

/// The boolean attribute a reply puts last in an instance's metadata when it had to leave
/// pairs out to fit one datagram ([`Metadata::truncated`]): escaped for the text form, 1,024
/// bytes of TXT data may take four times as many, more than a reply holds, and a listing page
/// must still show its first instance so that paging goes on. Clients read it as "ask again
/// elsewhere (DNS-SD TXT, the binary form) for the rest".
pub const TRUNCATED: &str = "meta_truncated";

/// Why metadata was refused. Each variant says which rule was broken; its
/// [`Display`](std::fmt::Display) is made to follow `ERROR ` in a text reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// A pair whose key is empty (`=value`): give the pair a key.
    #[error("bad metadata {pair:?}: the key is empty")]
    EmptyKey {
        /// The pair as sent (shortened).
        pair: String,
    },
    /// A key with a byte DNS-SD does not allow in one (space, control, non-ASCII); use
    /// printable ASCII.
    #[error("bad metadata key {key:?}: printable ASCII other than '=' (0x21-0x7E)")]
    BadKey {
        /// The key as sent (shortened).
        key: String,
    },
    /// A key longer than [`MAX_KEY`]; shorten it.
    #[error("metadata key too long: {len} bytes, at most {max}")]
    KeyTooLong {
        /// The key's length in bytes.
        len: u32,
        /// [`MAX_KEY`].
        max: u32,
    },
    /// A value with white space or a control character; values are one word of the text form.
    #[error("bad metadata value for {key:?}: no spaces or control characters")]
    BadValue {
        /// The key whose value it is.
        key: String,
    },
    /// A pair longer than [`MAX_PAIR`] bytes; shorten its value.
    #[error("metadata pair too long: {len} bytes, at most {max}")]
    PairTooLong {
        /// The pair's length in bytes (`key=value`).
        len: u32,
        /// [`MAX_PAIR`].
        max: u32,
    },
    /// The same key twice (keys compare without regard to case); send each key once.
    #[error("metadata key {key:?} given twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// More pairs than [`MAX_PAIRS`]; send fewer.
    #[error("too much metadata: at most {max} pairs")]
    TooManyPairs {
        /// [`MAX_PAIRS`].
        max: u32,
    },
    /// More bytes than [`MAX_TOTAL`] in all; send less.
    #[error("too much metadata: {len} bytes, at most {max}")]
    TooLarge {
        /// The TXT data's length in bytes (each pair plus a length byte).
        len: u32,
        /// [`MAX_TOTAL`].
        max: u32,
    },
    /// A stored block (from a peer) that is not a sequence of valid pairs.
    #[error("malformed metadata block")]
    Malformed,
}

/// How many characters of a refused key or pair an error repeats.
const ECHO_CHARS: usize = 40;

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(ECHO_CHARS).collect();
    if text.chars().nth(ECHO_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// One pair of a [`Metadata`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair<'a> {
    /// The key, as registered (printable ASCII, see the [module documentation](self)).
    pub key: &'a str,
    /// The value; `None` for a boolean attribute (a TXT string without `=`).
    pub value: Option<&'a [u8]>,
}

impl<'a> Pair<'a> {
    /// The value as text, when it is UTF-8 (an empty string for a boolean attribute).
    pub fn value_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.value.unwrap_or_default()).ok()
    }
}

impl fmt::Display for Pair<'_> {
    /// `key=value` (or `key` alone), the value escaped as [`Metadata`]'s `Display` says.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key)?;
        let Some(value) = self.value else { return Ok(()) };
        f.write_str("=")?;
        for chunk in value.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_whitespace() || c.is_control() || c == '\\' {
                    for b in c.encode_utf8(&mut [0; 4]).bytes() {
                        write!(f, "\\x{b:02x}")?;
                    }
                } else {
                    write!(f, "{c}")?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Splits one `key=value` word (a pair of the text form) and checks the pair's rules (see the
/// [module documentation](self)); `key=` is a key with an empty value.
pub fn parse_pair(word: &str) -> Result<(&str, &str), MetaError> {
    let (key, value) = word.split_once('=').unwrap_or((word, ""));
    check_pair(key, Some(value.as_bytes()))?;
    Ok((key, value))
}

/// Checks one pair against the rules for pairs registered through makler.
fn check_pair(key: &str, value: Option<&[u8]>) -> Result<(), MetaError> {
    check_key(key.as_bytes(), value)?;
    let len = key.len() + value.map_or(0, |v| 1 + v.len());
    if len > MAX_PAIR {
        return Err(MetaError::PairTooLong { len: len as u32, max: MAX_PAIR as u32 });
    }
    let value = value.unwrap_or_default();
    match std::str::from_utf8(value) {
        Ok(text) if !text.chars().any(|c| c.is_whitespace() || c.is_control()) => Ok(()),
        _ => Err(MetaError::BadValue { key: key.to_owned() }),
    }
}

/// Checks a key: 1 to [`MAX_KEY`] bytes of printable ASCII without `=`.
fn check_key(key: &[u8], value: Option<&[u8]>) -> Result<(), MetaError> {
    if key.is_empty() {
        let mut pair = b"=".to_vec();
        pair.extend_from_slice(value.unwrap_or_default());
        return Err(MetaError::EmptyKey { pair: excerpt(&pair) });
    }
    if key.len() > MAX_KEY {
        return Err(MetaError::KeyTooLong { len: key.len() as u32, max: MAX_KEY as u32 });
    }
    if !key.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'=') {
        return Err(MetaError::BadKey { key: excerpt(key) });
    }
    Ok(())
}

/// An instance's metadata: its `key=value` pairs in the order they were given, in one boxed
/// block (see the [module documentation](self)). `Metadata::default()` holds none and
/// allocates nothing.
///
/// Its `Display` writes the pairs separated by spaces, as the text form takes them; in a value,
/// white space, control characters, bytes that are not UTF-8 and `\` are written `\xHH`, so the
/// result is always one line of words.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata {
    /// For each pair: its length in one byte, then `key=value` (or `key`). Always valid: every
    /// constructor checks it.
    block: Box<[u8]>,
}

impl Metadata {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The TXT data's size in bytes (each pair plus a length byte), what [`MAX_TOTAL`] bounds;
    /// also the heap bytes the pairs take.
    pub fn byte_len(&self) -> usize {
        self.block.len()
    }

    /// The block in the TXT record's wire form: for each pair, a length byte then the string.
    /// Empty when there are no pairs (a TXT record wants one empty string then: see
    /// [`Metadata::to_txt`]). [`Metadata::from_block`] reads it back.
    pub fn as_block(&self) -> &[u8] {
        &self.block
    }

    /// The pairs, in order.
    pub fn iter(&self) -> Pairs<'_> {
        Pairs { rest: &self.block }
    }

    /// The value of `key` (compared without regard to case): `Some(None)` for a boolean
    /// attribute, `None` when the key is absent.
    pub fn get(&self, key: &str) -> Option<Option<&[u8]>> {
        self.iter().find(|pair| pair.key.eq_ignore_ascii_case(key)).map(|pair| pair.value)
    }

    /// The value of `key` as text, when it is present with a UTF-8 value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).flatten().and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Metadata from `key=value` words, as the text form writes them after the port. Every
    /// rule of the [module documentation](self) is checked; the first broken one is the error.
    pub fn parse_words<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Self, MetaError> {
        let mut builder = Builder::default();
        for word in words {
            let (key, value) = parse_pair(word)?;
            builder.push(key, Some(value.as_bytes()))?;
        }
        Ok(builder.finish())
    }

    /// Metadata from `(key, value)` pairs, as the binary form carries them; the same rules as
    /// [`Metadata::parse_words`].
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, MetaError> {
        let mut builder = Builder::default();
        for (key, value) in pairs {
            check_pair(key, Some(value.as_bytes()))?;
            builder.push(key, Some(value.as_bytes()))?;
        }
        Ok(builder.finish())
    }

    /// Metadata from a block [`Metadata::as_block`] wrote (as a peer broker sends it): refused
    /// unless every pair is valid, keys unique and the limits kept. Values may be any bytes, as
    /// in a TXT record.
    pub fn from_block(block: &[u8]) -> Result<Self, MetaError> {
        let mut builder = Builder::default();
        let mut rest = block;
        while let Some((&len, tail)) = rest.split_first() {
            let string = tail.get(..usize::from(len)).ok_or(MetaError::Malformed)?;
            rest = &tail[usize::from(len)..];
            let (key, value) = split_txt(string);
            check_key(key, value)?;
            let key = std::str::from_utf8(key).map_err(|_| MetaError::Malformed)?;
            builder.push(key, value)?;
        }
        Ok(builder.finish())
    }

    /// The TXT record's strings (RFC 6763 §6): one per pair, `key=value` or `key`, in order;
    /// one empty string when there are none (§6.1: a TXT record is never empty).
    pub fn to_txt(&self) -> Vec<Vec<u8>> {
        if self.is_empty() {
            return vec![Vec::new()];
        }
        let mut strings = Vec::with_capacity(self.len());
        let mut rest = &self.block[..];
        while let Some((&len, tail)) = rest.split_first() {
            strings.push(tail[..usize::from(len)].to_vec());
            rest = &tail[usize::from(len)..];
        }
        strings
    }

    /// Metadata from a TXT record's strings, as DNS-SD reads them (RFC 6763 §6): a string
    /// without `=` is a boolean attribute; strings that are empty, start with `=`, have a key
    /// makler does not take (see the [module documentation](self)) or repeat an earlier key are
    /// skipped (§6.4: "silently ignore"), and so are those past the limits. Values may be any
    /// bytes. Never fails and never panics: the strings come from outside.
    pub fn from_txt(strings: &[Vec<u8>]) -> Self {
        let mut builder = Builder::default();
        for string in strings {
            if string.is_empty() || string.len() > MAX_PAIR {
                continue;
            }
            let (key, value) = split_txt(string);
            if check_key(key, value).is_err() {
                continue;
            }
            let Ok(key) = std::str::from_utf8(key) else { continue };
            // Skipped: a repeated key, and what would pass a limit.
            let _ = builder.push(key, value);
        }
        builder.finish()
    }

    /// The first `keep` pairs, then the attribute [`TRUNCATED`]: what a reply shows of
    /// metadata too long for it. For display only (the marker may take the total a few bytes
    /// past [`MAX_TOTAL`]); a pair already keyed [`TRUNCATED`] is not repeated.
    pub fn truncated(&self, keep: usize) -> Metadata {
        let mut block = Vec::with_capacity(self.block.len() + 1 + TRUNCATED.len());
        let mut rest = &self.block[..];
        let mut kept = 0;
        while let Some((&len, tail)) = rest.split_first()
            && kept < keep
        {
            let string = &tail[..usize::from(len)];
            rest = &tail[usize::from(len)..];
            if !split_txt(string).0.eq_ignore_ascii_case(TRUNCATED.as_bytes()) {
                block.push(len);
                block.extend_from_slice(string);
            }
            kept += 1;
        }
        block.push(TRUNCATED.len() as u8);
        block.extend_from_slice(TRUNCATED.as_bytes());
        Metadata { block: block.into() }
    }
}

/// A TXT string's key and value: the value after the first `=`, none without one.
fn split_txt(string: &[u8]) -> (&[u8], Option<&[u8]>) {
    match string.iter().position(|&b| b == b'=') {
        Some(at) => (&string[..at], Some(&string[at + 1..])),
        None => (string, None),
    }
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{pair}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metadata({self})")
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = Pair<'a>;
    type IntoIter = Pairs<'a>;

    fn into_iter(self) -> Pairs<'a> {
        self.iter()
    }
}

/// The pairs of a [`Metadata`], in order ([`Metadata::iter`]).
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Pair<'a>;

    fn next(&mut self) -> Option<Pair<'a>> {
        // The block was checked when it was built; `get` keeps a bug from becoming a panic.
        let (&len, tail) = self.rest.split_first()?;
        let string = tail.get(..usize::from(len))?;
        self.rest = &tail[usize::from(len)..];
        let (key, value) = split_txt(string);
        Some(Pair { key: std::str::from_utf8(key).unwrap_or_default(), value })
    }
}

/// Builds a block pair by pair, keeping the instance's limits and unique keys.
#[derive(Default)]
struct Builder {
    block: Vec<u8>,
    pairs: usize,
}

impl Builder {
    /// Appends a pair whose key has been checked.
    fn push(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), MetaError> {
        let len = key.len() + value.map_or(0, |v| 1 + v.len());
        if len > MAX_PAIR {
            return Err(MetaError::PairTooLong { len: len as u32, max: MAX_PAIR as u32 });
        }
        if (Pairs { rest: &self.block }).any(|pair| pair.key.eq_ignore_ascii_case(key)) {
            return Err(MetaError::DuplicateKey { key: key.to_owned() });
        }
        if self.pairs == MAX_PAIRS {
            return Err(MetaError::TooManyPairs { max: MAX_PAIRS as u32 });
        }
        let total = self.block.len() + 1 + len;
        if total > MAX_TOTAL {
            return Err(MetaError::TooLarge { len: total as u32, max: MAX_TOTAL as u32 });
        }
        self.block.push(len as u8);
        self.block.extend_from_slice(key.as_bytes());
        if let Some(value) = value {
            self.block.push(b'=');
            self.block.extend_from_slice(value);
        }
        self.pairs += 1;
        Ok(())
    }

    fn finish(self) -> Metadata {
        Metadata { block: self.block.into_boxed_slice() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_keeps_a_prefix_and_says_so() {
        let meta = Metadata::parse_words(["a=1", "b=2", "c=3"]).unwrap();
        assert_eq!(meta.truncated(2).to_string(), "a=1 b=2 meta_truncated");
        assert_eq!(meta.truncated(0).to_string(), "meta_truncated");
        assert_eq!(meta.truncated(0).get(TRUNCATED), Some(None));
    }

    #[test]
    fn none_costs_nothing() {
        assert_eq!(std::mem::size_of::<Metadata>(), 16);
        assert_eq!(std::mem::size_of::<Option<Metadata>>(), 16);
        let meta = Metadata::default();
        assert!(meta.is_empty());
        assert_eq!(meta.len(), 0);
        assert_eq!(meta.to_txt(), vec![Vec::<u8>::new()]);
        assert_eq!(meta.to_string(), "");
        assert_eq!(Metadata::parse_words([]).unwrap(), meta);
    }

    #[test]
    fn pairs_keep_their_order_and_keys_their_case() {
        let meta = Metadata::parse_words(["version=2", "Path=/", "empty="]).unwrap();
        assert_eq!(meta.len(), 3);
        assert_eq!(meta.to_string(), "version=2 Path=/ empty=");
        assert_eq!(meta.get("path"), Some(Some(&b"/"[..])));
        assert_eq!(meta.get_str("EMPTY"), Some(""));
        assert_eq!(meta.get("missing"), None);
        assert_eq!(meta.as_block(), b"\x09version=2\x06Path=/\x06empty=");
        assert_eq!(Metadata::from_block(meta.as_block()).unwrap(), meta);
        let pairs = Metadata::from_pairs([("version", "2"), ("Path", "/"), ("empty", "")]).unwrap();
        assert_eq!(pairs, meta);
    }

    #[test]
    fn errors_name_the_rule() {
        let err = |words: &[&str]| Metadata::parse_words(words.iter().copied()).unwrap_err().to_string();
        assert_eq!(err(&["=x"]), "bad metadata \"=x\": the key is empty");
        assert_eq!(err(&["ké=x"]), "bad metadata key \"ké\": printable ASCII other than '=' (0x21-0x7E)");
        let long_key = format!("{}=1", "k".repeat(65));
        assert_eq!(err(&[&long_key]), "metadata key too long: 65 bytes, at most 64");
        let long_pair = format!("k={}", "v".repeat(254));
        assert_eq!(err(&[&long_pair]), "metadata pair too long: 256 bytes, at most 255");
        assert_eq!(err(&["a=1", "A=2"]), "metadata key \"A\" given twice");
        assert_eq!(
            Metadata::from_pairs([("a", "x y")]).unwrap_err().to_string(),
            "bad metadata value for \"a\": no spaces or control characters"
        );
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=")).collect();
        assert_eq!(err(&many.iter().map(String::as_str).collect::<Vec<_>>()), "too much metadata: at most 32 pairs");
        let big: Vec<String> = (0..5).map(|i| format!("k{i}={}", "v".repeat(250))).collect();
        assert_eq!(
            err(&big.iter().map(String::as_str).collect::<Vec<_>>()),
            "too much metadata: 1270 bytes, at most 1024"
        );
    }

    #[test]
    fn the_largest_instance_fits() {
        // Four pairs of 255 bytes: 4 × 256 = 1,024 bytes of TXT data.
        let big: Vec<String> = (0..4).map(|i| format!("k{i}={}", "v".repeat(252))).collect();
        let meta = Metadata::parse_words(big.iter().map(String::as_str)).unwrap();
        assert_eq!(meta.byte_len(), MAX_TOTAL);
        assert_eq!(Metadata::from_txt(&meta.to_txt()), meta);
    }

    #[test]
    fn txt_from_outside_skips_what_it_cannot_keep() {
        let strings: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"=orphan".to_vec(),
            b"ty=HP LaserJet".to_vec(),
            b"TY=again".to_vec(),
            b"color".to_vec(),
            b"bin=\x00\xff".to_vec(),
            b"sp ace=1".to_vec(),
            vec![b'x'; 300],
        ];
        let meta = Metadata::from_txt(&strings);
        assert_eq!(meta.to_string(), r"ty=HP\x20LaserJet color bin=\x00\xff");
        assert_eq!(meta.get("color"), Some(None));
        assert_eq!(meta.get("bin"), Some(Some(&b"\x00\xff"[..])));
        assert_eq!(meta.to_txt(), vec![b"ty=HP LaserJet".to_vec(), b"color".to_vec(), b"bin=\x00\xff".to_vec()]);
        assert_eq!(Metadata::from_block(meta.as_block()).unwrap(), meta);
        // Past the limits: the first pairs are kept.
        let many: Vec<Vec<u8>> = (0..40).map(|i| format!("k{i}=1").into_bytes()).collect();
        assert_eq!(Metadata::from_txt(&many).len(), MAX_PAIRS);
    }

    #[test]
    fn malformed_blocks_are_refused() {
        for block in [&b"\x05ab"[..], b"\x01=", b"\x03a=1\x03A=2", b"\x02\xc3\xa9", b"\x00"] {
            assert!(Metadata::from_block(block).is_err(), "{block:?}");
        }
    }

    #[test]
    fn no_panic_on_arbitrary_txt() {
        // A cheap exhaustive sweep of short strings; the fuzz target covers the rest.
        for a in 0..=255u8 {
            for b in [0u8, b'=', b'a', 0xff] {
                let strings = vec![vec![a, b], vec![b, a, b'='], vec![a]];
                let meta = Metadata::from_txt(&strings);
                let _ = meta.to_string();
                assert_eq!(Metadata::from_block(meta.as_block()).unwrap(), meta);
                let _ = Metadata::from_block(&[a, b, a]);
            }
        }
    }
}
