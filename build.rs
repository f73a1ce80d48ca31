//! Records the commit the programs are built from, for `-V` (see `makler::version!`): the
//! short hash of HEAD, or `unknown` outside a git checkout (a source tarball, a container build
//! without `.git`).
//!
//! And tells the integration tests (`tests/it/`) which outside tools they can use: a test that
//! needs one is `#[ignore]`d, with the package to install, where this script did not find it, so
//! that the runner reports it as ignored, never as passed. With `CI` set (as `.ci/run` sets it,
//! after installing the tools) every such test is compiled in regardless: a tool missing there
//! fails its test loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The cfgs for outside tools, each with the programs it needs on `PATH`.
const TOOLS: [(&str, &[&str]); 9] = [
    // Avahi for the mDNS interop tests (tests/it/mdns_avahi.rs): the daemon, its tools, a
    // D-Bus daemon for its private system bus, stdbuf for its tools' output.
    ("has_avahi", &["avahi-daemon", "avahi-browse", "avahi-publish", "dbus-daemon", "stdbuf"]),
    // Debian's Chromium for the status page's browser test (tests/it/browser.rs).
    ("has_chromium", &["chromium"]),
    ("has_dig", &["dig"]),
    ("has_haproxy", &["haproxy"]),
    ("has_podman", &["podman", "runc"]),
    ("has_promtool", &["promtool"]),
    ("has_ss", &["ss"]),
    ("has_systemd_analyze", &["systemd-analyze"]),
    ("has_wrk", &["wrk"]),
];

/// The cfg for tests that make network namespaces: `ip`, root and CAP_SYS_ADMIN.
const NETNS: &str = "has_netns";

/// The cfg for tests that talk to python-zeroconf (PyPI `zeroconf`): a `python3` that imports it.
const ZEROCONF: &str = "has_zeroconf";

/// The cfg for the browser test's driver: `node` on `PATH` and tests/browser's packages
/// (playwright-core) installed there by `npm ci`.
const NODE: &str = "has_node";

/// The directories of `PATH`.
fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default()
}

/// Whether `program` is an executable file in one of `dirs`.
fn on_path(dirs: &[PathBuf], program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter().any(|dir| {
        std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether this process runs as root with CAP_SYS_ADMIN (bit 21 of the effective set), which
/// `ip netns add` needs; the tests run as the same user as this script.
fn may_make_namespaces() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let root = field("Uid:").and_then(|u| u.split_whitespace().nth(1)) == Some("0");
    let sys_admin = field("CapEff:").and_then(|c| u64::from_str_radix(c, 16).ok()).is_some_and(|c| c & (1 << 21) != 0);
    root && sys_admin
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=MAKLER_COMMIT={commit}");
    // Build again when HEAD moves (a commit, a checkout); HEAD's log changes with each.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/logs/HEAD");
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    println!("cargo:rerun-if-changed=build.rs");

    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CI");
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let dirs = path_dirs();
    let mut missing = false;
    for (cfg, programs) in TOOLS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        let found = programs.iter().all(|p| on_path(&dirs, p));
        missing |= !found;
        if found || ci {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rustc-check-cfg=cfg({NETNS})");
    let netns = on_path(&dirs, "ip") && may_make_namespaces();
    missing |= !on_path(&dirs, "ip");
    if netns || ci {
        println!("cargo::rustc-cfg={NETNS}");
    }
    println!("cargo::rustc-check-cfg=cfg({ZEROCONF})");
    let zeroconf =
        Command::new("python3").args(["-c", "import zeroconf"]).output().is_ok_and(|output| output.status.success());
    missing |= !zeroconf;
    if zeroconf || ci {
        println!("cargo::rustc-cfg={ZEROCONF}");
    }
    println!("cargo::rustc-check-cfg=cfg({NODE})");
    let packages = Path::new("tests/browser/node_modules/playwright-core/package.json").is_file();
    let node = on_path(&dirs, "node") && packages;
    if !packages {
        // `npm ci` there adds node_modules, which changes the directory's mtime.
        println!("cargo::rerun-if-changed=tests/browser");
    }
    missing |= !node;
    if node || ci {
        println!("cargo::rustc-cfg={NODE}");
    }
    // A tool installed later lands in a directory of PATH and changes that directory's mtime:
    // look again then. Watched only while a tool is missing, so that installing unrelated
    // packages does not rebuild the crate on a machine that has them all.
    if missing {
        for dir in dirs.iter().filter(|d| d.is_absolute() && Path::new(d).is_dir()) {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
}
