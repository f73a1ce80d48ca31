//! `dist/container/scenario.sh` removes every container it made however it ends, its first
//! `podman run` failing included. The failure is made without a Rust build: an image named like
//! the broker's whose entrypoint is not executable, so that podman creates the container and
//! the runtime then fails to start it (the case that once left a container behind).

use std::path::Path;

use crate::common::podman::Podman;

/// Removes the test's image, directory and any container left, whatever happens to the test.
struct Cleanup<'a> {
    dir: &'a Path,
    podman: &'a Podman,
    image: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ids = self.podman.run(&["ps", "--all", "--quiet", "--filter", &format!("ancestor={}", self.image)]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.podman.run(&["rm", "--force", id]);
        }
        let _ = self.podman.run(&["rmi", "--force", self.image]);
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

#[test]
#[cfg_attr(not(has_podman), ignore = "podman and runc are not installed (apt-get install podman runc)")]
fn the_scenario_leaves_no_container_when_its_first_run_fails() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("makler-scenario-cleanup-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let podman = Podman::new("scenario-cleanup");
    let tag = format!("cleanup-test-{pid}");
    let image = format!("localhost/makler-broker:{tag}");
    let _cleanup = Cleanup { dir: &dir, podman: &podman, image: &image };

    // Not a program: the runtime cannot start it.
    std::fs::write(dir.join("makler-broker"), "not a program\n").unwrap();
    std::fs::write(
        dir.join("Containerfile"),
        "FROM scratch\nCOPY makler-broker /makler-broker\nENTRYPOINT [\"/makler-broker\"]\n",
    )
    .unwrap();
    let built = podman.run(&["build", "--quiet", "--tag", &image, dir.to_str().unwrap()]);
    assert!(built.status.success(), "{built:?}");

    let prefix = format!("makler-scenario-cleanup-{pid}");
    let output = podman.script("scenario.sh", &tag).env("PREFIX", &prefix).env("BASE_PORT", "17900").output().unwrap();
    assert!(!output.status.success(), "the broker's container cannot start: {output:?}");

    // Nothing of the scenario's left: by name, and by the image (whatever the name).
    let by_name = podman.run(&["ps", "--all", "--format", "{{.Names}}", "--filter", &format!("name=^{prefix}-")]);
    let by_image = podman.run(&["ps", "--all", "--format", "{{.Names}}", "--filter", &format!("ancestor={image}")]);
    let left = String::from_utf8_lossy(&by_name.stdout).into_owned() + &String::from_utf8_lossy(&by_image.stdout);
    assert!(by_name.status.success() && by_image.status.success(), "{by_name:?} {by_image:?}");
    assert_eq!(
        left.trim(),
        "",
        "containers left behind; the scenario said:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
