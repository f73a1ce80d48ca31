//! The listing requests, `services` and `instances`: pages of the table, each as long as fits
//! in one reply.

use std::time::Instant;

use serde::Serialize;

use super::{Context, not_found_in};
use crate::protocol::fit::{self, Room};
use crate::protocol::{Form, InstanceInfo, InstancePage, Response, ServiceCount, ServicePage, text};
use crate::registry::Cursor;

/// A page of the services, from `cursor` on.
pub(super) fn services(ctx: &mut impl Context, now: Instant, form: Form, cursor: u32) -> Response {
    let (_, registry) = ctx.parts();
    let total = registry.service_count() as u64;
    let header = ServicePage { total, services: Vec::new(), next: Some(u32::MAX) };
    let mut room = room(form, &Response::Services(header));
    let mut services = Vec::new();
    let next = registry.services_page(now, Cursor(cursor), |name, instances| {
        let entry = ServiceCount { name: name.to_owned(), instances: instances as u64 };
        if !room.take(entry_len(form, &entry, text::encode_service_line)) {
            return false;
        }
        services.push(entry);
        true
    });
    Response::Services(ServicePage { total, services, next: next.map(|c| c.0) })
}

/// What an instance listing's binary form carries besides the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Detail {
    /// The page alone ([`Response::InstanceList`]).
    Plain,
    /// Each instance's check too ([`Response::InstanceListChecked`]).
    Checks,
    /// Each instance's check and metadata too ([`Response::InstanceListMeta`]).
    Meta,
}

/// A page of `service`'s instances, from `cursor` on, with the `detail` asked for (the text
/// form's lines always show checks and metadata).
pub(super) fn instances(
    ctx: &mut impl Context,
    now: Instant,
    form: Form,
    service: &str,
    cursor: u32,
    detail: Detail,
) -> Response {
    let (_, registry) = ctx.parts();
    if let Err(rejection) = registry.config().limits.check_name(service) {
        return Response::Error(rejection);
    }
    let total = registry.instance_count(service) as u64;
    let header = InstancePage { total, instances: Vec::new(), next: Some(u32::MAX) };
    let mut room = match (detail, form) {
        // The second list's length may grow too.
        (Detail::Checks, Form::Binary { .. }) => {
            let mut room = room(form, &Response::InstanceListChecked { page: header, checks: Vec::new() });
            room.take(fit::LIST_GROWTH);
            room
        }
        // And the third's.
        (Detail::Meta, Form::Binary { .. }) => {
            let empty = Response::InstanceListMeta { page: header, checks: Vec::new(), meta: Vec::new() };
            let mut room = room(form, &empty);
            room.take(2 * fit::LIST_GROWTH);
            room
        }
        _ => room(form, &Response::InstanceList(header)),
    };
    let mut instances = Vec::new();
    let page = registry.instances_page(now, service, Cursor(cursor), |view| {
        let mut entry = InstanceInfo {
            endpoint: view.endpoint,
            age_ms: millis(view.age),
            expires_ms: millis(view.ttl_left),
            leases: view.leases as u64,
            source: view.source,
            check: view.check.to_owned_check(),
            meta: view.meta.cloned().unwrap_or_default(),
        };
        let cost = |entry: &InstanceInfo| {
            let check_len = match (form, detail) {
                (Form::Binary { .. }, Detail::Checks) => fit::binary_len(&entry.check),
                (Form::Binary { .. }, Detail::Meta) => {
                    fit::binary_len(&entry.check) + fit::binary_len(&crate::protocol::listing::pairs_of(&entry.meta))
                }
                _ => 0,
            };
            entry_len(form, entry, text::encode_instance_line) + check_len
        };
        if !room.take(cost(&entry)) {
            // A page always shows its first instance, so that paging goes on: with fewer of
            // its pairs and the marker that says so, when all of them do not fit.
            if !instances.is_empty() || entry.meta.is_empty() {
                return false;
            }
            let full = std::mem::take(&mut entry.meta);
            let fitted = (0..full.len()).rev().map(|keep| full.truncated(keep)).find(|meta| {
                entry.meta = meta.clone();
                room.take(cost(&entry))
            });
            match fitted {
                Some(meta) => entry.meta = meta,
                None => return false,
            }
        }
        instances.push(entry);
        true
    });
    match page {
        Ok(next) if detail == Detail::Checks => {
            let checks = instances.iter().map(|i| i.check.clone()).collect();
            Response::InstanceListChecked { page: InstancePage { total, instances, next: next.map(|c| c.0) }, checks }
        }
        Ok(next) if detail == Detail::Meta => {
            let checks = instances.iter().map(|i| i.check.clone()).collect();
            let meta = instances.iter().map(|i| crate::protocol::listing::pairs_of(&i.meta)).collect();
            let page = InstancePage { total, instances, next: next.map(|c| c.0) };
            Response::InstanceListMeta { page, checks, meta }
        }
        Ok(next) => Response::InstanceList(InstancePage { total, instances, next: next.map(|c| c.0) }),
        Err(_) => not_found_in(ctx),
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The room for entries once `header` (a page with no entries and the longest cursor) is
/// written; in the binary form also the list's length at its longest ([`fit::LIST_LEN`],
/// besides the empty list's byte the header holds: one more than needed, which keeps the pages
/// as they were).
fn room(form: Form, header: &Response) -> Room {
    let list_len = match form {
        Form::Text => 0,
        Form::Binary { .. } => fit::LIST_LEN,
    };
    Room::after(fit::reply_len(form, header) + list_len)
}

/// The bytes one entry adds to a page: its line in text, its postcard encoding in binary.
fn entry_len<T: Serialize>(form: Form, entry: &T, line: fn(&T, &mut Vec<u8>)) -> usize {
    match form {
        Form::Text => fit::line_len(entry, line),
        Form::Binary { .. } => fit::binary_len(entry),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::protocol::{MAX_REPLY_LEN, Request, Source, binary};
    use crate::registry::{Config, Limits, Registry};
    use crate::service::{self, Plain};

    /// A table of 300 services with long names, the first with 300 instances from three sources.
    fn table(now: Instant) -> Registry {
        let limits = Limits { max_per_source: 0, ..Limits::default() };
        let mut registry = Registry::new(Config { limits, ..Config::default() }, uuid::Uuid::new_v4);
        for port in 1..=300u16 {
            let endpoint = SocketAddr::from(([10, 0, (port >> 8) as u8, port as u8], 40000 + port));
            let source = Source::Unicast(SocketAddr::from(([10, 0, 0, 1], 50000 + port % 3)));
            registry.register(now, "a-service-with-a-name-of-some-length", endpoint, source).unwrap();
            let name = format!("service-{port:03}-{}", "x".repeat(40));
            registry.register(now, &name, endpoint, source).unwrap();
        }
        registry
    }

    /// Walks every page of `first` in `form`, checking each reply's size; returns the pages,
    /// decoded in the binary form (`Response::Ok` stands for a text page).
    fn walk(table: &mut Plain, now: Instant, form: Form, first: Request<'_>) -> Vec<Response> {
        let mut pages = Vec::new();
        let mut request = first;
        loop {
            let mut datagram = Vec::new();
            match form {
                Form::Text => text::encode_request(&request, &mut datagram),
                Form::Binary { .. } => binary::encode_request(9, &request, &mut datagram),
            }
            let from = "127.0.0.1:50000".parse().unwrap();
            let mut out = Vec::new();
            assert_eq!(service::handle(table, now, from, &datagram, &mut out).map(|w| w.form), Some(form));
            assert!(out.len() <= MAX_REPLY_LEN, "{form:?}: {} bytes", out.len());
            let (response, next) = match form {
                Form::Text => {
                    let text = String::from_utf8(out).unwrap();
                    assert!(text.ends_with('\n') && text.lines().count() >= 2, "{text}");
                    let next = text.lines().next().unwrap().split_once(" next=").map(|(_, n)| n.parse().unwrap());
                    (Response::Ok, next)
                }
                Form::Binary { .. } => match binary::decode_response(&out).unwrap().1 {
                    Response::Services(page) => (Response::Services(page.clone()), page.next),
                    Response::InstanceList(page) => (Response::InstanceList(page.clone()), page.next),
                    Response::InstanceListChecked { page, checks } => {
                        assert_eq!(page.instances.len(), checks.len());
                        let next = page.next;
                        (Response::InstanceListChecked { page, checks }, next)
                    }
                    other => panic!("{other:?}"),
                },
            };
            pages.push(response);
            request = match (next, request) {
                (None, _) => return pages,
                (Some(cursor), Request::Services { .. }) => Request::Services { cursor },
                (Some(cursor), Request::Instances { service, .. }) => Request::Instances { service, cursor },
                (Some(cursor), Request::InstancesChecked { service, .. }) => {
                    Request::InstancesChecked { service, cursor }
                }
                _ => unreachable!(),
            };
        }
    }

    #[test]
    fn every_page_fits_and_the_pages_cover_the_table() {
        let now = Instant::now();
        let mut table = Plain::new(table(now), 1400);
        for form in [Form::Text, Form::Binary { request_id: 9 }] {
            let pages = walk(&mut table, now, form, Request::Services { cursor: 0 });
            assert!(pages.len() > 2, "{form:?}: {} pages", pages.len());
            if let Form::Binary { .. } = form {
                let mut names: Vec<String> = pages
                    .iter()
                    .flat_map(|p| match p {
                        Response::Services(page) => page.services.iter().map(|s| s.name.clone()).collect(),
                        _ => Vec::new(),
                    })
                    .collect();
                names.sort();
                names.dedup();
                assert_eq!(names.len(), 301);
            }
            let first = Request::Instances { service: "a-service-with-a-name-of-some-length", cursor: 0 };
            let pages = walk(&mut table, now, form, first);
            assert!(pages.len() > 2, "{form:?}: {} pages", pages.len());
            if let Form::Binary { .. } = form {
                let count: usize = pages
                    .iter()
                    .map(|p| match p {
                        Response::InstanceList(page) => {
                            assert_eq!(page.total, 300);
                            page.instances.len()
                        }
                        _ => 0,
                    })
                    .sum();
                assert_eq!(count, 300);
            }
        }
    }

    #[test]
    fn checked_pages_fit_with_the_longest_paths() {
        let now = Instant::now();
        let mut registry = table(now);
        let path = format!("/{}", "p".repeat(crate::protocol::check::MAX_CHECK_PATH - 1));
        let check = crate::protocol::Check::Http(path.as_str());
        for port in 1..=100u16 {
            let endpoint = SocketAddr::from(([10, 1, 0, port as u8], 4000));
            let source = Source::Unicast(SocketAddr::from(([10, 0, 0, 1], 50000)));
            registry.register_checked(now, "long-checks", endpoint, source, check).unwrap();
        }
        let mut table = Plain::new(registry, 1400);
        let pages = walk(
            &mut table,
            now,
            Form::Binary { request_id: 9 },
            Request::InstancesChecked { service: "long-checks", cursor: 0 },
        );
        let checks: Vec<String> = pages
            .iter()
            .flat_map(|p| match p {
                Response::InstanceListChecked { checks, .. } => checks.iter().map(ToString::to_string).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(checks.len(), 100, "{} pages", pages.len());
        assert!(checks.iter().all(|c| *c == format!("http:{path}")));
    }

    /// The most metadata an instance holds, every value byte one the text form escapes
    /// (`\\` → `\\x5c`): four pairs of 253 bytes, about 4 KB when shown.
    fn widest_meta() -> crate::meta::Metadata {
        let txt: Vec<Vec<u8>> = (b'a'..=b'd').map(|k| [&[k, b'='][..], &[b'\\'; 253][..]].concat()).collect();
        let meta = crate::meta::Metadata::from_txt(&txt);
        assert_eq!((meta.len(), meta.byte_len()), (4, 4 * 256));
        meta
    }

    #[test]
    fn text_pages_go_on_past_metadata_too_wide_to_show() {
        let now = Instant::now();
        let mut registry = table(now);
        for port in 1..=5u16 {
            let endpoint = SocketAddr::from(([10, 2, 0, port as u8], 4000));
            let source = Source::Unicast(SocketAddr::from(([10, 0, 0, 1], 50000)));
            let check = crate::protocol::Check::None;
            registry.register_meta(now, "wide", endpoint, source, check, widest_meta()).unwrap();
        }
        let mut table = Plain::new(registry, 1400);
        let from = "127.0.0.1:50000".parse().unwrap();
        let mut listed = Vec::new();
        let mut cursor = 0;
        for _ in 0..10 {
            let mut out = Vec::new();
            let request = format!("instances wide {cursor}");
            service::handle(&mut table, now, from, request.as_bytes(), &mut out);
            assert!(out.len() <= MAX_REPLY_LEN, "{} bytes", out.len());
            let text = String::from_utf8(out).unwrap();
            let mut lines = text.lines();
            let header = lines.next().unwrap();
            let page: Vec<&str> = lines.filter(|l| l.starts_with("instance ")).collect();
            assert!(!page.is_empty(), "a page with no instance: {text}");
            assert!(page.iter().all(|l| l.ends_with(" meta_truncated")), "{text}");
            assert!(page[0].contains(" a=\\x5c\\x5c"), "{text}");
            listed.extend(page.iter().map(|l| l.split(' ').nth(1).unwrap().to_owned()));
            match header.split_once(" next=") {
                Some((_, next)) => cursor = next.parse().unwrap(),
                None => break,
            }
        }
        assert_eq!(listed.len(), 5, "{listed:?}");
        listed.dedup();
        assert_eq!(listed.len(), 5, "{listed:?}");
    }

    #[test]
    fn an_unknown_service_is_not_found() {
        let now = Instant::now();
        let mut table = Plain::new(table(now), 1400);
        let from = "127.0.0.1:50000".parse().unwrap();
        let mut out = Vec::new();
        service::handle(&mut table, now, from, b"instances nothing", &mut out);
        assert_eq!(out, b"NOT FOUND\n");
        service::handle(&mut table, now, from, b"instances bad/name", &mut out);
        assert!(out.starts_with(b"ERROR bad service name"), "{}", String::from_utf8_lossy(&out));
    }
}
