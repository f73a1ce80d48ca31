//! The HTTP face (`--http ADDR`): `GET /metrics`, the JSON catalog under `/v1/`, and the status
//! page's files, on one TCP listener of the shell.
//!
//! Everything here is a pure function of the buffered request: [`serve`] parses the head with
//! `httparse`, routes it, and asks a [`Catalog`] (the broker's node, or the balancer's control
//! core) for what only it knows; the page's files come from [`ui`]. No socket, no clock.
//!
//! Every answer has a `Content-Type`, a `Content-Length`, `Cache-Control: no-store` (the
//! catalog changes by the second) and the status page's `Content-Security-Policy` (see [`ui`]),
//! and closes the connection, as `--metrics` does: one request
//! per connection, so a client holds nothing once answered. Errors are JSON
//! ([`catalog::Error`]): 400 for a head that is not HTTP or a bad query, 404 for an unknown path
//! or service, 405 for a method other than `GET` and `HEAD`, 431 for a head too large.
//!
//! What one answer may cost is bounded: at most `?limit=N` entries ([`DEFAULT_LIMIT`], at most
//! [`MAX_LIMIT`]) and about [`MAX_BODY`] bytes; beyond, the answer says `"truncated": true`.
//! What a client may make the shell hold is bounded by the listener's
//! [`StreamLimits`] ([`LIMITS`]).

pub mod catalog;
pub mod ui;

use std::time::Duration;

use serde::Serialize;

use crate::core::{StreamLimits, StreamStep};

/// The entries (services, instances) an answer lists unless `?limit=N` says otherwise.
pub const DEFAULT_LIMIT: usize = 1000;

/// The most entries an answer lists, whatever `?limit=N` asks.
pub const MAX_LIMIT: usize = 10_000;

/// About the largest JSON body an answer has: entries beyond are left out (`"truncated"`), so
/// that metadata-heavy instances cannot make one answer large.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// The longest request head read before answering `431`.
const MAX_HEAD: usize = 8 * 1024;

/// The most header lines read; a request with more gets `431`.
const MAX_HEADERS: usize = 64;

/// Connections an HTTP listener holds at once. Fewer than `--metrics`' 512: an answer here may
/// be up to [`MAX_BODY`] bytes, held until the client reads it or the idle time closes it, so
/// this bounds what clients that never read can make the process hold (64 × 2 MiB).
pub const MAX_CONNECTIONS: usize = 64;

/// What an HTTP listener allows: a whole request head within 2 s of connecting (a slow
/// client's place goes to the next one when the listener is full), then 10 s without progress
/// before the connection is closed, read or not.
pub const LIMITS: StreamLimits = StreamLimits {
    max_connections: MAX_CONNECTIONS,
    max_input: 16 * 1024,
    idle: Duration::from_secs(10),
    request: Some(HEAD_TIMEOUT),
};

/// How long an HTTP listener waits for a whole request head (as `--metrics` does).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// A catalog path, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v1/services`.
    Services,
    /// `/v1/services/<name>` (the name percent-decoded).
    Service(String),
    /// `/v1/peers`.
    Peers,
    /// `/v1/backends`.
    Backends,
}

impl Route {
    /// The route's path, for a 404's `name` (a service's name alone, as it was asked).
    pub fn path(&self) -> String {
        match self {
            Route::Services => "/v1/services".into(),
            Route::Service(name) => name.clone(),
            Route::Peers => "/v1/peers".into(),
            Route::Backends => "/v1/backends".into(),
        }
    }
}

/// A request's query string, parsed (unknown parameters are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// The most entries to list (`limit=N`, at most [`MAX_LIMIT`]).
    pub limit: usize,
}

impl Default for Query {
    fn default() -> Self {
        Query { limit: DEFAULT_LIMIT }
    }
}

impl Query {
    /// Parses a query string (`a=b&c=d`, percent-encoded, without the `?`).
    pub fn parse(text: &str) -> Result<Query, String> {
        let mut query = Query::default();
        for (key, value) in form_urlencoded::parse(text.as_bytes()) {
            if key == "limit" {
                // A number too large for a usize asks for everything, as any number above
                // MAX_LIMIT does: the answer is cut at the bound, not refused.
                let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                let limit: usize = match value.parse() {
                    Ok(limit) => limit,
                    Err(_) if digits => MAX_LIMIT,
                    Err(_) => return Err(format!("limit={value}: expected a number of entries")),
                };
                query.limit = limit.min(MAX_LIMIT);
            }
        }
        Ok(query)
    }
}

/// An answer: its status, type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code (200, 404, …).
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The body (sent in full with `Content-Length`; not sent for `HEAD`).
    pub body: Vec<u8>,
}

impl Answer {
    /// `value` as JSON, with `status`.
    pub fn json(status: u16, value: &impl Serialize) -> Answer {
        // Serializing plain structs with string keys does not fail.
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Answer { status, content_type: "application/json", body }
    }

    /// 404 `{"error": "not found", "name": name}`.
    pub fn not_found(name: &str) -> Answer {
        Answer::error(404, "not found", Some(name), None)
    }

    fn error(status: u16, error: &str, name: Option<&str>, detail: Option<String>) -> Answer {
        let body = catalog::Error { error: error.into(), name: name.map(str::to_owned), detail };
        Answer::json(status, &body)
    }
}

/// What answers the catalog's paths: the broker's node or the balancer's control core.
pub trait Catalog {
    /// The Prometheus page (what `--metrics` serves).
    fn metrics(&mut self) -> String;

    /// The answer to a catalog path; [`Answer::not_found`] for one this program does not serve
    /// (the balancer has no `/v1/services`, the broker no `/v1/backends`).
    fn answer(&mut self, route: &Route, query: &Query) -> Answer;
}

/// Answers one HTTP request whose bytes are buffered in `input` (see the [module
/// documentation](self)); waits (consumes nothing) while the head is incomplete. Every answer
/// closes the connection.
pub fn serve(input: &[u8], out: &mut Vec<u8>, catalog: &mut impl Catalog) -> StreamStep {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let end = match request.parse(input) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) if input.len() < MAX_HEAD => return StreamStep { consumed: 0, close: false },
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            let answer = Answer::error(431, "request head too large", None, None);
            write(out, &answer, true, false);
            return StreamStep { consumed: input.len(), close: true };
        }
        Err(e) => {
            let answer = Answer::error(400, "bad request", None, Some(e.to_string()));
            write(out, &answer, true, false);
            return StreamStep { consumed: input.len(), close: true };
        }
    };
    let method = request.method.unwrap_or_default();
    let target = request.path.unwrap_or_default();
    let with_body = method != "HEAD";
    let answer = if method == "GET" || method == "HEAD" {
        route(target, catalog)
    } else {
        Answer::error(405, "method not allowed", None, Some("only GET and HEAD".into()))
    };
    write(out, &answer, with_body, answer.status == 405);
    StreamStep { consumed: end, close: true }
}

/// The path and query of a request target: origin form (`/v1/services?limit=5`) as browsers
/// send, or absolute form (`http://host:port/v1/services`), which HTTP/1.1 servers must accept
/// (RFC 9112, 3.2.2) and which proxies send.
fn origin_form(target: &str) -> &str {
    let scheme = ["http://", "https://"]
        .into_iter()
        .find(|scheme| target.get(..scheme.len()).is_some_and(|head| head.eq_ignore_ascii_case(scheme)));
    let Some(scheme) = scheme else { return target };
    let rest = &target[scheme.len()..];
    match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => &rest[at..],
        // `http://host` and `http://host?x`: the path is `/`.
        Some(_) | None => "/",
    }
}

/// The answer to a `GET` of `target` (a path with its query).
fn route(target: &str, catalog: &mut impl Catalog) -> Answer {
    let target = origin_form(target);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/metrics" {
        let body = catalog.metrics().into_bytes();
        return Answer { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body };
    }
    if path != "/v1" && !path.starts_with("/v1/") {
        return match ui::asset(path) {
            Some(asset) => Answer { status: 200, content_type: asset.content_type, body: asset.body.to_vec() },
            None => Answer::not_found(path),
        };
    }
    let query = match Query::parse(query) {
        Ok(query) => query,
        Err(detail) => return Answer::error(400, "bad request", None, Some(detail)),
    };
    match parse_route(path) {
        Ok(Some(route)) => catalog.answer(&route, &query),
        Ok(None) => Answer::not_found(path),
        Err(detail) => Answer::error(400, "bad request", None, Some(detail)),
    }
}

/// The catalog route of a path under `/v1` (`None`: no such route).
fn parse_route(path: &str) -> Result<Option<Route>, String> {
    Ok(Some(match path {
        "/v1/services" => Route::Services,
        "/v1/peers" => Route::Peers,
        "/v1/backends" => Route::Backends,
        _ => {
            let Some(name) = path.strip_prefix("/v1/services/").filter(|n| !n.is_empty() && !n.contains('/')) else {
                return Ok(None);
            };
            let name = percent_encoding::percent_decode_str(name)
                .decode_utf8()
                .map_err(|_| "the service name is not UTF-8".to_owned())?;
            Route::Service(name.into_owned())
        }
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

fn write(out: &mut Vec<u8>, answer: &Answer, with_body: bool, allow: bool) {
    let _ = std::io::Write::write_fmt(
        out,
        format_args!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nContent-Security-Policy: {}\r\n{}Connection: close\r\n\r\n",
            answer.status,
            reason(answer.status),
            answer.content_type,
            answer.body.len(),
            ui::CONTENT_SECURITY_POLICY,
            if allow { "Allow: GET, HEAD\r\n" } else { "" },
        ),
    );
    if with_body {
        out.extend_from_slice(&answer.body);
    }
}

#[cfg(test)]
mod tests;
