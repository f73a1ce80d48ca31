//! Records the commit the programs are built from, for `-V` (see `makler::version!`): the
//! short hash of HEAD, or `unknown` outside a git checkout (a source tarball, a container build
//! without `.git`).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
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
}
