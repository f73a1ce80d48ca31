//! Declared health checks, and the `key=value` options that carry them.
//!
//! A registration says how the broker may check its instance (Consul's rule: no check declared,
//! none run). The text form puts it after the port, `register echo 4000 check=tcp`; the binary
//! form has [`Request::RegisterChecked`](super::Request::RegisterChecked). The bare
//! `register <service> [<ip>] <port>` declares [`Check::None`], so a UDP-only service that
//! heartbeats is never removed by a probe.
//!
//! - `check=none`: never probed, and a report of it is not verified (it stays until its lease
//!   runs out or its holder deregisters it);
//! - `check=tcp`: a TCP connect, alive when it is accepted;
//! - `check=http:<path>`: an HTTP/1.1 `GET <path>` (with `Host` and `Connection: close`), alive
//!   when the status is 2xx or 3xx. The path starts with `/`, is printable ASCII without spaces
//!   and at most [`MAX_CHECK_PATH`] bytes.
//!
//! Options are `key=value` words after the positional ones; [`Options::parse`] takes them:
//! `check=` is the check, any other key a metadata pair (see [`crate::meta`]).
//!
//! ```
//! use makler::protocol::check::{Check, Options};
//!
//! let options = Options::parse(["check=http:/health"]).unwrap();
//! assert_eq!(options.check, Some(Check::Http("/health")));
//! assert_eq!(Check::Http("/health").to_string(), "http:/health");
//! assert_eq!(Options::parse(["color=red"]).unwrap().meta, [("color", "red")]);
//! assert!(Options::parse(["=red"]).is_err());
//! ```

use serde::{Deserialize, Serialize};

use super::{Rejection, excerpt};

/// A declared check as the broker keeps it: one pointer (a lease holds one, and so does a
/// probe of it), shared where the check is the same.
pub type SharedCheck = std::sync::Arc<Check<Box<str>>>;

/// The longest path an HTTP check may name, in bytes: enough for any health endpoint, short
/// enough that a lease stays small and a probe's request fits one segment.
pub const MAX_CHECK_PATH: usize = 128;

/// How a registered instance may be checked. `P` is the path's type: `&str` on the wire,
/// `Box<str>` where it is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Check<P> {
    /// No check: never probed, reports of it are not verified.
    #[default]
    None,
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 `GET` of this path; 2xx and 3xx are healthy.
    Http(P),
}

impl<P: AsRef<str>> Check<P> {
    /// The same check, borrowing its path.
    pub fn as_deref(&self) -> Check<&str> {
        match self {
            Check::None => Check::None,
            Check::Tcp => Check::Tcp,
            Check::Http(path) => Check::Http(path.as_ref()),
        }
    }

    /// The same check, owning its path.
    pub fn to_owned_check(&self) -> Check<Box<str>> {
        match self {
            Check::None => Check::None,
            Check::Tcp => Check::Tcp,
            Check::Http(path) => Check::Http(path.as_ref().into()),
        }
    }

    /// Whether no check is declared.
    pub fn is_none(&self) -> bool {
        matches!(self, Check::None)
    }

    /// Refuses a path that the text form could not carry (see the [module docs](self)): the
    /// binary form is held to the same rules.
    pub fn validate(&self) -> Result<(), Rejection> {
        let Check::Http(path) = self else { return Ok(()) };
        let path = path.as_ref();
        let why = if !path.starts_with('/') {
            "a path starts with /".to_owned()
        } else if path.len() > MAX_CHECK_PATH {
            format!("the path is longer than {MAX_CHECK_PATH} bytes")
        } else if !path.bytes().all(|b| b.is_ascii_graphic()) {
            "a path is printable ASCII without spaces".to_owned()
        } else {
            return Ok(());
        };
        Err(bad_check(&format!("http:{path}"), &why))
    }
}

impl<'a> Check<&'a str> {
    /// Parses the value of `check=`: `none`, `tcp` or `http:<path>`.
    pub fn parse(value: &'a str) -> Result<Self, Rejection> {
        let check = match value {
            "none" => Check::None,
            "tcp" => Check::Tcp,
            _ => match value.strip_prefix("http:") {
                Some(path) => Check::Http(path),
                None => return Err(bad_check(value, "expected tcp, http:<path> or none")),
            },
        };
        check.validate()?;
        Ok(check)
    }
}

impl<P: AsRef<str>> std::fmt::Display for Check<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::None => f.write_str("none"),
            Check::Tcp => f.write_str("tcp"),
            Check::Http(path) => write!(f, "http:{}", path.as_ref()),
        }
    }
}

fn bad_check(value: &str, why: &str) -> Rejection {
    Rejection::BadCheck { value: excerpt(value, 40), why: why.to_owned() }
}

/// The most options one request may carry: `check=` and as many metadata pairs as an instance
/// holds ([`crate::meta::MAX_PAIRS`]).
pub const MAX_OPTIONS: usize = 1 + crate::meta::MAX_PAIRS;

/// The `key=value` options of a text request: `check=`, and any other key is a metadata pair
/// (see [`crate::meta`]), in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options<'a> {
    /// `check=…`, when given.
    pub check: Option<Check<&'a str>>,
    /// The metadata pairs, `(key, value)`, in order.
    pub meta: Vec<(&'a str, &'a str)>,
}

impl<'a> Options<'a> {
    /// Parses `key=value` words. A word without `=`, `check=` given twice, a bad check or
    /// metadata that breaks a rule of [`crate::meta`] is refused, each with its own message.
    /// `check` is reserved: as a metadata key in another case (`Check=1`) it is refused too.
    pub fn parse(words: impl IntoIterator<Item = &'a str>) -> Result<Self, Rejection> {
        let mut options = Options::default();
        for (i, word) in words.into_iter().enumerate() {
            if i == MAX_OPTIONS {
                return Err(Rejection::Usage { usage: format!("at most {MAX_OPTIONS} key=value options") });
            }
            let Some((key, value)) = word.split_once('=') else {
                return Err(Rejection::Usage { usage: format!("options are key=value, not {:?}", excerpt(word, 40)) });
            };
            match key {
                "check" if options.check.is_some() => {
                    return Err(Rejection::Usage { usage: "check= given twice".to_owned() });
                }
                "check" => options.check = Some(Check::parse(value)?),
                _ => {
                    crate::meta::parse_pair(word).map_err(meta_rejection)?;
                    options.meta.push((key, value));
                }
            }
        }
        check_meta(&options.meta)?;
        Ok(options)
    }
}

/// Checks metadata pairs as a registration carries them: each pair, the key `check` reserved
/// (in any case), and the instance's limits (see [`crate::meta`]).
pub fn check_meta(pairs: &[(&str, &str)]) -> Result<(), Rejection> {
    if let Some((key, _)) = pairs.iter().find(|(key, _)| key.eq_ignore_ascii_case("check")) {
        return Err(Rejection::BadMeta {
            why: format!("metadata key {:?} is reserved: check= declares the health check", excerpt(key, 40)),
        });
    }
    crate::meta::Metadata::from_pairs(pairs.iter().copied()).map(drop).map_err(meta_rejection)
}

/// A metadata error as a request's rejection.
pub fn meta_rejection(error: crate::meta::MetaError) -> Rejection {
    Rejection::BadMeta { why: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(words: &[&str]) -> String {
        Options::parse(words.iter().copied()).unwrap_err().to_string()
    }

    #[test]
    fn checks_parse_and_print_back() {
        for text in ["none", "tcp", "http:/", "http:/health?full=1"] {
            let check = Check::parse(text).unwrap();
            assert_eq!(check.to_string(), text);
        }
        assert_eq!(Options::parse([]).unwrap(), Options::default());
        assert_eq!(Options::parse(["check=tcp"]).unwrap().check, Some(Check::Tcp));
    }

    #[test]
    fn bad_options_are_refused_precisely() {
        assert_eq!(Options::parse(["color=red"]).unwrap().meta, [("color", "red")]);
        assert_eq!(err(&["CHECK=tcp"]), "metadata key \"CHECK\" is reserved: check= declares the health check");
        assert_eq!(err(&["=red"]), "bad metadata \"=red\": the key is empty");
        assert_eq!(err(&["a=1", "A=2"]), "metadata key \"A\" given twice");
        assert_eq!(err(&["check=udp"]), "bad check \"udp\": expected tcp, http:<path> or none");
        assert_eq!(err(&["check=http:health"]), "bad check \"http:health\": a path starts with /");
        assert_eq!(
            err(&["check=http:/a\u{7f}"]),
            "bad check \"http:/a\\u{7f}\": a path is printable ASCII without spaces"
        );
        let long = format!("check=http:/{}", "a".repeat(MAX_CHECK_PATH));
        assert!(err(&[&long]).ends_with("the path is longer than 128 bytes"));
        assert!(Options::parse([&long[..long.len() - 1]]).is_ok(), "128 bytes is the limit");
        assert_eq!(err(&["check=tcp", "check=none"]), "usage: check= given twice");
        assert!(err(&["check"]).starts_with("usage: options are key=value"));
        assert!(Check::Http("/é").validate().is_err());
    }
}
