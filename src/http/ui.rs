//! The status page's files, served from the binary: the hook through which the HTTP face
//! ([`super`]) answers every `GET` that is neither `/metrics` nor under `/v1/`.
//!
//! This is a placeholder the status page replaces: it serves nothing, so every such path is
//! answered 404 until then.

/// One file of the page, as the HTTP face sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Its `Content-Type` header.
    pub content_type: &'static str,
    /// Its bytes, compiled into the binary (nothing is fetched from outside: the page works on
    /// an offline network).
    pub body: &'static [u8],
}

/// The file at `path` (the request's path, without its query), or `None`: 404.
pub fn asset(path: &str) -> Option<Asset> {
    let _ = path;
    None
}
