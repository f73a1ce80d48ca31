//! The benchmark scripts under `bench/` never rewrite the tracked results (`bench/balancer.csv`,
//! `bench/balancer.svg`, which PERFORMANCE.md and the README quote) unless told to: `bench/plot.sh`
//! draws into `bench/results/<UTC date>/` by default, or where its second argument says. gnuplot
//! is stood in for by a script that writes the file `set output` names, so the test needs none.

use std::path::Path;
use std::process::Command;

const TRACKED: [&str; 2] = ["bench/balancer.csv", "bench/balancer.svg"];

/// `git status --porcelain` of the tracked bench files: empty while they are as committed.
fn tracked_changes(root: &Path) -> String {
    let output = Command::new("git").arg("-C").arg(root).args(["status", "--porcelain", "--"]).args(TRACKED).output();
    let output = output.expect("git runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// A directory holding a `gnuplot` that writes what its script's `set output "…"` names.
fn fake_gnuplot(dir: &Path) {
    let script = "#!/bin/sh\nout=$(sed -n 's/^set output \"\\(.*\\)\"$/\\1/p')\necho '<svg/>' >\"$out\"\n";
    let path = dir.join("gnuplot");
    std::fs::write(&path, script).unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
}

/// Removes its directory when dropped, the test failing or not.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn plot_sh_writes_under_results_or_where_told_and_leaves_the_tracked_files_alone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join(".git").exists() {
        eprintln!("not a git checkout: skipped");
        return;
    }
    let before = tracked_changes(root);
    let tmp = std::env::temp_dir().join(format!("makler-plot-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let _cleanup = Cleanup(tmp.clone());
    fake_gnuplot(&tmp);
    let path = format!("{}:{}", tmp.display(), std::env::var("PATH").unwrap_or_default());
    let plot = |args: &[&str]| {
        let output =
            Command::new("bash").arg(root.join("bench/plot.sh")).args(args).env("PATH", &path).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };

    // Where told.
    let svg = tmp.join("out/picture.svg");
    let said = plot(&["bench/balancer.csv", svg.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg/>"), "{said}");
    assert_eq!(tracked_changes(root), before, "plot.sh rewrote a tracked file");

    // By default: under bench/results/<UTC date>/ (removed again if this test made it).
    let date = Command::new("date").args(["-u", "+%F"]).output().unwrap();
    let dir = root.join("bench/results").join(String::from_utf8(date.stdout).unwrap().trim());
    let default = dir.join("balancer.svg");
    let (dir_was, file_was) = (dir.exists(), default.exists());
    let said = plot(&[]);
    let made = std::fs::read_to_string(&default);
    if !file_was {
        let _ = std::fs::remove_file(&default);
    }
    if !dir_was {
        let _ = std::fs::remove_dir(&dir);
    }
    assert!(made.is_ok_and(|text| text.contains("<svg/>")), "{said}");
    assert!(said.contains("bench/results/"), "{said}");
    assert_eq!(tracked_changes(root), before, "plot.sh rewrote a tracked file");
}

#[test]
fn balancer_sh_writes_its_csv_under_results_unless_told() {
    // The benchmark itself needs haproxy and wrk and minutes; its default is checked where it is set.
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/balancer.sh")).unwrap();
    assert!(script.contains("CSV=${CSV-bench/results/$(date -u +%F)/balancer.csv}"), "balancer.sh's CSV default");
    // No script under bench/ redirects into a tracked result, or has one as an output's default
    // (plot.sh reads the tracked CSV by default, which is fine).
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/bench")).unwrap() {
        let path = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let writes = TRACKED.iter().flat_map(|t| [format!(">{t}"), format!("> {t}"), format!(">\"{t}\"")]);
            for write in writes.chain(["SVG=${2:-bench/balancer.svg".to_owned()]) {
                assert!(!line.contains(&write), "{}: {line}", path.display());
            }
        }
    }
}
