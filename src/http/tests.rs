use super::*;

/// A catalog that says what it was asked.
#[derive(Default)]
struct Fake {
    asked: Vec<(Route, Query)>,
}

impl Catalog for Fake {
    fn metrics(&mut self) -> String {
        "m 1\n".into()
    }

    fn answer(&mut self, route: &Route, query: &Query) -> Answer {
        self.asked.push((route.clone(), *query));
        match route {
            Route::Backends => Answer::not_found("/v1/backends"),
            _ => Answer::json(200, &serde_json::json!({"ok": true})),
        }
    }
}

/// The status, the headers (lower-cased names) and the body of one answer.
fn parse(out: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(end) = response.parse(out).expect("an HTTP answer") else { panic!("partial") };
    let headers = response
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    (response.code.unwrap_or_default(), headers, out[end..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn get(target: &str) -> (u16, Vec<(String, String)>, Vec<u8>, Fake) {
    let mut fake = Fake::default();
    let mut out = Vec::new();
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    let step = serve(request.as_bytes(), &mut out, &mut fake);
    assert_eq!(step, StreamStep { consumed: request.len(), close: true });
    let (status, headers, body) = parse(&out);
    (status, headers, body, fake)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON")
}

#[test]
fn routes_reach_the_catalog_with_their_query() {
    let (status, headers, body, fake) = get("/v1/services?limit=5&x=y");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert_eq!(header(&headers, "content-length"), Some(body.len().to_string().as_str()));
    assert_eq!(json(&body)["ok"], true);
    assert_eq!(fake.asked, vec![(Route::Services, Query { limit: 5 })]);
    assert_eq!(get("/v1/peers").3.asked, vec![(Route::Peers, Query::default())]);
    // A name is percent-decoded; '+' is a plus in a path.
    let asked = get("/v1/services/my%20echo+x").3.asked;
    assert_eq!(asked, vec![(Route::Service("my echo+x".into()), Query::default())]);
}

#[test]
fn metrics_are_the_prometheus_page() {
    let (status, headers, body, _) = get("/metrics?x=1");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(body, b"m 1\n");
}

#[test]
fn unknown_paths_get_404_with_json() {
    for path in ["/v1", "/v1/", "/v1/nope", "/v1/services/", "/v1/services/a/b", "/nope", "/ui/"] {
        let (status, headers, body, fake) = get(path);
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"), "{path}");
        let body = json(&body);
        assert_eq!(body["error"], "not found");
        assert_eq!(body["name"], path);
        assert!(fake.asked.is_empty());
    }
    // The catalog's own 404 passes through.
    assert_eq!(get("/v1/backends").0, 404);
}

#[test]
fn the_limit_is_bounded_and_checked() {
    assert_eq!(Query::parse(""), Ok(Query { limit: DEFAULT_LIMIT }));
    assert_eq!(Query::parse("limit=0"), Ok(Query { limit: 0 }));
    assert_eq!(Query::parse("limit=20000"), Ok(Query { limit: MAX_LIMIT }));
    assert_eq!(Query::parse("limit=%33"), Ok(Query { limit: 3 }));
    assert_eq!(Query::parse("a&b=&limit=7&c"), Ok(Query { limit: 7 }));
    assert!(Query::parse("limit=-1").is_err());
    let (status, _, body, fake) = get("/v1/services?limit=many");
    assert_eq!(status, 400);
    assert_eq!(json(&body)["error"], "bad request");
    assert!(json(&body)["detail"].as_str().unwrap().contains("limit=many"));
    assert!(fake.asked.is_empty());
    assert_eq!(get("/v1/services/%ff").0, 400);
}

#[test]
fn other_methods_get_405_and_head_no_body() {
    let mut out = Vec::new();
    serve(b"POST /v1/services HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &mut out, &mut Fake::default());
    let (status, headers, body) = parse(&out);
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
    assert_eq!(json(&body)["error"], "method not allowed");
    out.clear();
    serve(b"HEAD /v1/services HTTP/1.1\r\n\r\n", &mut out, &mut Fake::default());
    let (status, headers, body) = parse(&out);
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "content-length"), Some("12"));
}

#[test]
fn bad_and_partial_heads() {
    let mut fake = Fake::default();
    let request = b"GET /v1/services HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut out = Vec::new();
    for cut in 0..request.len() {
        assert_eq!(serve(&request[..cut], &mut out, &mut fake), StreamStep { consumed: 0, close: false });
        assert!(out.is_empty(), "answered after {cut} bytes");
    }
    for head in [&b"GET /v1/services HTTP/9.9\r\n\r\n"[..], b"GET /a b HTTP/1.1\r\n\r\n", b"\x00\x01\r\n\r\n"] {
        out.clear();
        let step = serve(head, &mut out, &mut fake);
        assert_eq!(step, StreamStep { consumed: head.len(), close: true });
        let (status, _, body) = parse(&out);
        assert_eq!(status, 400);
        assert_eq!(json(&body)["error"], "bad request");
    }
    out.clear();
    let step = serve(&[b'x'; MAX_HEAD], &mut out, &mut fake);
    assert!(step.close);
    assert_eq!(parse(&out).0, 431);
    assert!(fake.asked.is_empty());
}

#[test]
fn names_from_the_network_are_escaped_by_serde() {
    let shape = catalog::Service { name: "a\"b\\c\n</script>".into(), instances: Vec::new(), truncated: false };
    let answer = Answer::json(200, &shape);
    let back: catalog::Service = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(back, shape);
}

#[test]
fn a_limit_too_large_for_a_number_is_the_bound() {
    assert_eq!(Query::parse("limit=99999999999999999999999999"), Ok(Query { limit: MAX_LIMIT }));
    assert_eq!(Query::parse(&format!("limit={}", usize::MAX)), Ok(Query { limit: MAX_LIMIT }));
    // Repeated: the last one counts.
    assert_eq!(Query::parse("limit=3&limit=4"), Ok(Query { limit: 4 }));
    for bad in ["limit=", "limit=1e3", "limit=0x10", "limit=%FF", "limit=1.5"] {
        assert!(Query::parse(bad).is_err(), "{bad}");
    }
    let (status, _, _, fake) = get("/v1/services?limit=123456789012345678901234567890");
    assert_eq!(status, 200);
    assert_eq!(fake.asked, vec![(Route::Services, Query { limit: MAX_LIMIT })]);
}

#[test]
fn an_absolute_target_is_routed_by_its_path() {
    let (status, _, _, fake) = get("http://broker.lan:8080/v1/services?limit=2");
    assert_eq!(status, 200);
    assert_eq!(fake.asked, vec![(Route::Services, Query { limit: 2 })]);
    assert_eq!(get("HTTP://x/v1/services/a%2Fb").3.asked, vec![(Route::Service("a/b".into()), Query::default())]);
    for page in ["http://x", "http://x/", "http://x?y=1"] {
        let (status, headers, _, _) = get(page);
        assert_eq!(status, 200, "{page}");
        assert_eq!(header(&headers, "content-type"), Some("text/html; charset=utf-8"), "{page}");
    }
    assert_eq!(get("http://x/nope").0, 404);
}
