//! The status page (`--http`'s `/`) in a real browser: Debian's headless Chromium, driven by
//! `tests/browser/page.js` (playwright-core, installed there by `npm ci`), loads the page served
//! by a real broker or balancer, and the test asserts on the rendered DOM: what is registered
//! shows, a registration made after the page loaded appears without a reload, a hostile
//! metadata value stays text, the page fetches nothing from elsewhere, a broker that stops
//! answering gets a banner. Screenshots are kept under `target/browser/`.
//!
//! The script reads one JSON command a line and answers one JSON line each (see its header), so
//! that this test decides when the broker's state changes between two looks at the page.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, Udp};

/// Chromium driven through `tests/browser/page.js`; killed when dropped.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Browser {
    #[track_caller]
    fn start() -> Browser {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "tests/browser has no node_modules: run `npm ci --prefix tests/browser` (.ci/run does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("page.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts (Debian's nodejs)");
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Browser { child, stdin, answers }
    }

    /// Sends one command and returns its answer's `value`; panics on an error answer.
    #[track_caller]
    fn call(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("the browser script reads its commands");
        let line = self
            .answers
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no answer from the browser script to {command}: {e}"));
        let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(answer["ok"], true, "{command} → {answer}");
        answer["value"].clone()
    }

    /// Waits (at most 30 s: the page polls once a second, and a loaded machine must not fail
    /// the test) until `js`, evaluated in the page, is truthy, and returns its value.
    #[track_caller]
    fn wait(&mut self, js: &str) -> Value {
        self.call(json!({"op": "wait", "js": js, "ms": 30_000}))
    }

    #[track_caller]
    fn eval(&mut self, js: &str) -> Value {
        self.call(json!({"op": "eval", "js": js}))
    }

    /// Saves a screenshot of the whole page as `target/browser/<name>.png` and prints its path.
    #[track_caller]
    fn screenshot(&mut self, name: &str) -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let path = target.join("browser").join(format!("{name}.png"));
        self.call(json!({"op": "shot", "path": path}));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} holds a screenshot", path.display());
        println!("screenshot: {}", path.display());
        path
    }

    /// Checks what the page must never have done: reload, open a dialog (an injected alert),
    /// throw, break its Content-Security-Policy, or ask any origin but its own.
    #[track_caller]
    fn assert_well_behaved(&mut self) {
        let report = self.call(json!({"op": "report"}));
        assert_eq!(report["navigations"], 1, "the page was loaded once, never reloaded: {report}");
        assert_eq!(report["dialogs"], json!([]), "{report}");
        assert_eq!(report["errors"], json!([]), "{report}");
        assert_eq!(report["foreign"], json!([]), "nothing fetched from elsewhere: {report}");
        let console = report["console"].as_array().cloned().unwrap_or_default();
        assert!(!console.iter().any(|l| l.as_str().is_some_and(|l| l.contains("Content Security Policy"))), "{report}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DOM query for the service `name`'s instance at `addr` (both plain words in these tests).
fn instance(name: &str, addr: &str) -> String {
    format!("document.querySelector('details.service[data-name=\"{name}\"] tr.instance[data-addr=\"{addr}\"]')")
}

/// A metadata value that is markup if anything parses it as HTML (no white space, which
/// metadata values may not hold: `/` separates the attributes instead).
const HOSTILE: &str = "<img/src=x/onerror=alert(1)>";

#[test]
#[cfg_attr(
    not(all(has_chromium, has_node)),
    ignore = "needs chromium and node with tests/browser's packages (Debian: chromium nodejs npm; npm ci --prefix tests/browser)"
)]
fn the_broker_page_shows_its_catalog_and_a_new_registration_without_a_reload() {
    // Punctuation an operator may allow in names, enough to write markup with.
    let mut broker =
        common::broker(&["--http", "127.0.0.1:0", "--ttl", "60", "--cluster", "lab", "--name-chars=-_.<>/"]);
    let page = format!("http://{}/", broker.addr("http"));
    let udp = Udp::new(broker.addr("udp"));
    let reply = udp.text(&format!("register echo 127.0.0.1 4000 path=/v1 note={HOSTILE}"));
    assert!(!reply.starts_with("ERROR"), "{reply}");
    let reply = udp.text("register <b>bold</b> 127.0.0.1 4001");
    assert!(!reply.starts_with("ERROR"), "{reply}");

    let mut browser = Browser::start();
    browser.call(json!({"op": "open", "url": page}));
    let row = browser.wait(&format!("{} && {0}.textContent", instance("echo", "127.0.0.1:4000")));
    let row = row.as_str().unwrap_or_default().to_owned();
    assert!(row.contains("path=/v1"), "{row}");
    assert!(row.contains(&format!("note={HOSTILE}")), "the hostile value shows as text: {row}");
    assert_eq!(browser.eval("document.querySelectorAll('img').length"), 0, "and made no element");
    // A service named with markup: its name shows as text, its instance under it, and no <b>.
    let bold = "[...document.querySelectorAll('details.service')].find(d => d.dataset.name === '<b>bold</b>')";
    let name = browser
        .wait(&format!("{bold} && {bold}.querySelector('tr.instance') && {bold}.querySelector('.name').textContent"));
    assert_eq!(name, "<b>bold</b>");
    assert_eq!(browser.eval("document.querySelectorAll('#services b').length"), 0);
    let header = browser.eval("document.querySelector('header').textContent");
    assert!(header.as_str().is_some_and(|h| h.contains("makler-broker") && h.contains("lab")), "{header}");
    browser.wait("document.getElementById('status').textContent.startsWith('updated')");

    // A mark on this page: it is still there after the new registration shows only if the page
    // was updated in place.
    browser.eval("window.loadedOnce = 'this page'");
    let reply = udp.text("register web 127.0.0.1 4100 version=2");
    assert!(!reply.starts_with("ERROR"), "{reply}");
    browser.wait(&format!("{} !== null", instance("web", "127.0.0.1:4100")));
    assert_eq!(browser.eval("window.loadedOnce"), "this page");
    let services = browser.eval("document.querySelector('#services h2').textContent");
    assert!(services.as_str().is_some_and(|s| s.contains("3 · 3 instances")), "{services}");
    browser.screenshot("broker");
    browser.call(json!({"op": "viewport", "width": 390, "height": 844}));
    browser.screenshot("broker-phone");
    browser.assert_well_behaved();

    // The broker stops: the page says so and keeps what it showed.
    broker.terminate();
    let banner =
        browser.wait("!document.getElementById('banner').hidden && document.getElementById('banner').textContent");
    assert!(banner.as_str().is_some_and(|b| b.contains("not answering")), "{banner}");
    assert_eq!(browser.eval(&format!("{} !== null", instance("web", "127.0.0.1:4100"))), true);
    browser.screenshot("broker-down");

    // A broker comes back on the same address: the page finds it by itself, drops the banner,
    // and shows the new table (the old broker's services are gone with it).
    let http = broker.addr("http").to_string();
    let again = common::broker(&["--http", &http, "--ttl", "60", "--cluster", "lab"]);
    let reply = Udp::new(again.addr("udp")).text("register back 127.0.0.1 4200");
    assert!(!reply.starts_with("ERROR"), "{reply}");
    browser
        .wait(&format!("document.getElementById('banner').hidden && {} !== null", instance("back", "127.0.0.1:4200")));
    assert_eq!(browser.eval(&format!("{} === null", instance("web", "127.0.0.1:4100"))), true);
    let status = browser.eval("document.getElementById('status').textContent");
    assert!(status.as_str().is_some_and(|s| s.starts_with("updated")), "{status}");
    assert_eq!(browser.eval("window.loadedOnce"), "this page", "found again without a reload");
    browser.assert_well_behaved();
}

#[test]
#[cfg_attr(
    not(all(has_chromium, has_node)),
    ignore = "needs chromium and node with tests/browser's packages (Debian: chromium nodejs npm; npm ci --prefix tests/browser)"
)]
fn the_balancer_page_shows_its_backends_and_an_open_connection() {
    let balancer = common::balancer("web", None, &["--http", "127.0.0.1:0", "--quiet"]);
    let server = common::server("http", balancer.addr("udp"), &[]);
    let backend = server.addr("tcp").to_string();
    let page = format!("http://{}/", balancer.addr("http"));

    let mut browser = Browser::start();
    browser.call(json!({"op": "open", "url": page}));
    let row = format!("document.querySelector('tr.backend[data-addr=\"{backend}\"]')");
    browser.wait(&format!("{row} && {row}.querySelector('[data-key=state]').textContent === 'up'"));
    let header = browser.eval("document.querySelector('header').textContent");
    assert!(header.as_str().is_some_and(|h| h.contains("makler-balancer") && h.contains("web")), "{header}");

    // A client that connects and says nothing holds one connection to the backend open.
    let _client = TcpStream::connect(balancer.addr("tcp")).expect("the balancer accepts");
    browser.wait(&format!("{row}.querySelector('[data-key=connections]').textContent === '1'"));
    browser.screenshot("balancer");
    browser.assert_well_behaved();
}

/// More backends than `/v1/backends` lists (1,000 by default): the page says it shows the first
/// ones, as the services view does, in text.
#[test]
#[cfg_attr(
    not(all(has_chromium, has_node)),
    ignore = "needs chromium and node with tests/browser's packages (Debian: chromium nodejs npm; npm ci --prefix tests/browser)"
)]
fn the_balancer_page_says_when_its_backends_are_cut() {
    let balancer = common::balancer(
        "web",
        None,
        &["--http", "127.0.0.1:0", "--quiet", "--max-per-source", "2000", "--ttl", "600"],
    );
    let control = Udp::new(balancer.addr("udp"));
    // Ports nothing listens on: the backends are down, and listed all the same (for the test's
    // length: they send no heartbeat).
    for port in 20_000..21_001u16 {
        let reply = control.text(&format!("register web 127.0.0.1 {port}"));
        assert!(!reply.starts_with("ERROR"), "{port}: {reply}");
    }
    let page = format!("http://{}/", balancer.addr("http"));
    let mut browser = Browser::start();
    browser.call(json!({"op": "open", "url": page}));
    let note = browser.wait(
        "document.querySelector('#backends .note.more') && document.querySelector('#backends .note.more').textContent",
    );
    assert_eq!(note, "Showing the first 1000 backends by address; the balancer has more.");
    assert_eq!(browser.eval("document.querySelectorAll('tr.backend').length"), 1000);
    let count = browser.eval("document.querySelector('#backends h2').textContent");
    assert!(count.as_str().is_some_and(|c| c.contains("1000+")), "{count}");
    browser.screenshot("balancer-cut");
    browser.assert_well_behaved();
}
