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
//! Options are `key=value` words after the positional ones; [`Options::parse`] takes them, one
//! parser that metadata pairs can grow into. An unknown key is refused by name, so a typo is
//! not silently ignored.
//!
//! ```
//! use makler::protocol::check::{Check, Options};
//!
//! let options = Options::parse(["check=http:/health"]).unwrap();
//! assert_eq!(options.check, Some(Check::Http("/health")));
//! assert_eq!(Check::Http("/health").to_string(), "http:/health");
//! assert!(Options::parse(["color=red"]).is_err());
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

/// The most options one request may carry.
pub const MAX_OPTIONS: usize = 8;

/// The `key=value` options of a text request. Today only `check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options<'a> {
    /// `check=…`, when given.
    pub check: Option<Check<&'a str>>,
}

impl<'a> Options<'a> {
    /// Parses `key=value` words. An unknown key, a key given twice or a word without `=` is
    /// refused, each with its own message.
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
                _ => return Err(Rejection::UnknownOption { key: excerpt(key, 40) }),
            }
        }
        Ok(options)
    }
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
        assert_eq!(Options::parse([]).unwrap(), Options { check: None });
        assert_eq!(Options::parse(["check=tcp"]).unwrap().check, Some(Check::Tcp));
    }

    #[test]
    fn bad_options_are_refused_precisely() {
        assert_eq!(
            err(&["color=red"]),
            "unknown option \"color\": expected check=tcp, check=http:<path> or check=none"
        );
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
