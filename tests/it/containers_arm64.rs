//! The arm64 images (a Raspberry Pi's): `ARCH=arm64 dist/container/images.sh` cross-builds the
//! static binaries for `aarch64-unknown-linux-gnu` and builds the FROM scratch images with
//! `--platform linux/arm64`, which sets `TARGETARCH` in `Containerfile.static`. Ignored by
//! default (a release cross build takes minutes): `cargo test --test it -- --ignored arm64`, with
//! podman and runc, `rustup target add aarch64-unknown-linux-gnu` and Debian's
//! `gcc-aarch64-linux-gnu libc6-dev-arm64-cross`. Without them it fails, saying which is missing.

use std::path::Path;
use std::process::{Command, Output};

/// The podman command and flags that work here (see `shared/containers.md`).
const PODMAN: &str = "podman --runtime /usr/sbin/runc --storage-driver vfs --cgroup-manager cgroupfs";

const IMAGES: [&str; 5] = ["makler-broker", "makler-balancer", "makler-server", "makler-client", "makler"];

fn podman(conf: &Path, args: &[&str]) -> Output {
    let mut words = PODMAN.split(' ');
    Command::new(words.next().unwrap())
        .args(words)
        .args(args)
        .env("CONTAINERS_CONF", conf)
        .output()
        .expect("podman runs")
}

/// Removes the images of this run and the podman settings file, whatever happens to the test.
struct Images<'a> {
    tag: &'a str,
    conf: &'a Path,
}

impl Drop for Images<'_> {
    fn drop(&mut self) {
        for image in IMAGES {
            let _ = podman(self.conf, &["rmi", "--force", &format!("localhost/{image}:{}", self.tag)]);
        }
        let _ = std::fs::remove_file(self.conf);
    }
}

#[test]
#[ignore = "a release cross build for arm64 (minutes): cargo test --test it -- --ignored arm64"]
fn arm64_images_hold_static_aarch64_binaries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pid = std::process::id();
    let conf = std::env::temp_dir().join(format!("makler-arm64-{pid}.conf"));
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    let tag = format!("arm64-test-{pid}");
    let _images = Images { tag: &tag, conf: &conf };

    // A target directory of its own: the test's own cargo holds the lock on the default one.
    let target = root.join("target/static");
    let output = Command::new("bash")
        .arg(root.join("dist/container/images.sh"))
        .env("PODMAN", PODMAN)
        .env("CONTAINERS_CONF", &conf)
        .env("TAG", &tag)
        .env("ARCH", "arm64")
        .env("MAKLER_TARGET_DIR", &target)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "images.sh failed:\n{said}");
    assert_eq!(said.lines().filter(|l| l.starts_with("built ")).count(), IMAGES.len(), "{said}");

    for image in IMAGES {
        let reference = format!("localhost/{image}:{tag}");
        let arch = podman(&conf, &["image", "inspect", "--format", "{{.Architecture}}", &reference]);
        assert_eq!(String::from_utf8_lossy(&arch.stdout).trim(), "arm64", "{image}: {arch:?}");
        // The binary the image holds: an aarch64 ELF, statically linked (no loader to find).
        let binary = target.join("aarch64-unknown-linux-gnu/release").join(image);
        let file = Command::new("file").arg("-b").arg(&binary).output().expect("file runs (apt-get install file)");
        let file = String::from_utf8_lossy(&file.stdout);
        assert!(file.contains("ARM aarch64") && file.contains("static"), "{image}: {file}");
    }
}
