//! The status page: one HTML page, its style sheet, a little JavaScript and an icon, built into
//! the binary (`include_bytes!`) and served by the `--http` face at `/` and under `/ui/`.
//!
//! The page is the same for the broker and the balancer: its script asks the program's own JSON
//! catalog once a second (`/v1/services`, `/v1/services/<name>` and `/v1/peers` on a broker,
//! `/v1/backends` on a balancer, whichever answers) and updates the page in place. It fetches
//! nothing from anywhere else (no fonts, no CDN), so it works on a LAN with no route out, and it
//! only reads: the page changes nothing in the program.
//!
//! Service names and metadata come from whoever can register on the LAN, so the script builds
//! the page with `createElement` and `textContent` only, never from HTML strings (the unit tests
//! below check the script for the calls that would parse HTML, `tests/it/browser.rs` renders a
//! hostile value in Chromium), and every asset is served with [`CONTENT_SECURITY_POLICY`], which
//! lets the page load its own files only and run no inline script.
//!
//! Files: `src/http/ui/index.html`, `style.css`, `app.js`, `icon.svg`.

/// A file of the status page, as the HTTP face answers a `GET` for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The `Content-Type` header's value.
    pub content_type: &'static str,
    /// The file, built into the binary.
    pub body: &'static [u8],
}

/// The `Content-Security-Policy` the page's files are served with: the page's own origin only
/// (scripts, styles, images, and the `fetch`es of the JSON), so that a value that slipped into
/// the page as markup could neither run a script nor load anything from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The status page's file at `path` (a request target; a query string is ignored), or `None`
/// for any other path, which the HTTP face answers with 404.
pub fn asset(path: &str) -> Option<Asset> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let (content_type, body): (&'static str, &'static [u8]) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", include_bytes!("ui/index.html")),
        "/ui/style.css" => ("text/css; charset=utf-8", include_bytes!("ui/style.css")),
        "/ui/app.js" => ("text/javascript; charset=utf-8", include_bytes!("ui/app.js")),
        "/ui/icon.svg" | "/favicon.ico" => ("image/svg+xml", include_bytes!("ui/icon.svg")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        std::str::from_utf8(asset(path).expect("served").body).expect("UTF-8")
    }

    #[test]
    fn each_file_is_served_with_its_type_and_nothing_else_is() {
        assert!(asset("/").unwrap().content_type.starts_with("text/html"));
        assert_eq!(asset("/?x=1"), asset("/"));
        assert!(asset("/ui/style.css").unwrap().content_type.starts_with("text/css"));
        assert!(asset("/ui/app.js").unwrap().content_type.starts_with("text/javascript"));
        assert_eq!(asset("/ui/icon.svg").unwrap().content_type, "image/svg+xml");
        for other in ["/ui/", "/ui/../Cargo.toml", "/ui/app.js/", "/index.htm", "/v1/services", "/metrics", ""] {
            assert_eq!(asset(other), None, "{other}");
        }
    }

    /// The HTTP face serves the page at `/` with its type and its policy.
    #[test]
    fn the_http_face_serves_the_page_with_its_policy() {
        struct NoCatalog;
        impl crate::http::Catalog for NoCatalog {
            fn metrics(&mut self) -> String {
                String::new()
            }
            fn answer(&mut self, _: &crate::http::Route, _: &crate::http::Query) -> crate::http::Answer {
                crate::http::Answer::not_found("")
            }
        }
        for (target, file) in [("/", "/"), ("/ui/app.js?v=1", "/ui/app.js")] {
            let mut out = Vec::new();
            let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            crate::http::serve(request.as_bytes(), &mut out, &mut NoCatalog);
            let answer = asset(file).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
                answer.content_type,
                answer.body.len()
            );
            assert!(out.starts_with(head.as_bytes()), "{}", String::from_utf8_lossy(&out));
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains(&format!("\r\nContent-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n")), "{text}");
            assert!(out.ends_with(answer.body));
        }
    }

    /// Every file the page names is one [`asset`] serves; none is fetched from elsewhere.
    #[test]
    fn the_page_names_only_its_own_files() {
        let page = text("/");
        let mut named = 0;
        for attr in ["src=\"", "href=\""] {
            for (at, _) in page.match_indices(attr) {
                let rest = &page[at + attr.len()..];
                let target = &rest[..rest.find('"').unwrap()];
                if target.starts_with("/v1/") {
                    continue;
                }
                assert!(asset(target).is_some(), "index.html names {target}, which is not served");
                named += 1;
            }
        }
        assert_eq!(named, 3, "style sheet, script and icon");
        for path in ["/", "/ui/style.css", "/ui/app.js", "/ui/icon.svg"] {
            let body = text(path);
            for outside in ["http:", "https:", "@import", "url(", "//fonts", "//cdn"] {
                // The SVG names its XML namespace, which is not fetched.
                let allowed = path == "/ui/icon.svg" && outside == "http:";
                assert!(allowed || !body.contains(outside), "{path} contains {outside}");
            }
        }
    }

    /// The script never turns data into markup: no call that parses HTML, no `eval`, no inline
    /// handlers (which the policy would refuse anyway).
    #[test]
    fn the_script_builds_the_page_from_elements_and_text_only() {
        let script = text("/ui/app.js");
        for parser in
            ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "DOMParser"]
        {
            assert!(!script.contains(parser), "app.js uses {parser}");
        }
        assert!(!text("/").contains("<script>"), "no inline script: the policy refuses it");
        let page = text("/");
        let handler = page.match_indices(" on").any(|(at, _)| {
            let word: String = page[at + 3..].chars().take_while(char::is_ascii_alphabetic).collect();
            page[at + 3 + word.len()..].starts_with('=')
        });
        assert!(!handler, "no inline handler: the policy refuses it");
    }
}
