//! The arm64 images (a Raspberry Pi's): `ARCH=arm64 dist/container/images.sh` cross-builds the
//! static binaries for `aarch64-unknown-linux-gnu` and builds the FROM scratch images with
//! `--platform linux/arm64`, which sets `TARGETARCH` in `Containerfile.static`. Ignored by
//! default (a release cross build takes minutes): `cargo test --test it -- --ignored arm64`, with
//! podman and runc, `rustup target add aarch64-unknown-linux-gnu` and Debian's
//! `gcc-aarch64-linux-gnu libc6-dev-arm64-cross`. Without them it fails, saying which is missing.

use std::process::Command;

use crate::common::podman::{IMAGES, Images, Podman, root};

#[test]
#[ignore = "a release cross build for arm64 (minutes): cargo test --test it -- --ignored arm64"]
fn arm64_images_hold_static_aarch64_binaries() {
    let podman = Podman::new("arm64");
    let tag = format!("arm64-test-{}", std::process::id());
    let _images = Images { podman: &podman, tag: tag.clone() };

    // A target directory of its own: the test's own cargo holds the lock on the default one.
    let target = root().join("target/static");
    let output =
        podman.script("images.sh", &tag).env("ARCH", "arm64").env("MAKLER_TARGET_DIR", &target).output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "images.sh failed:\n{said}");
    assert_eq!(said.lines().filter(|l| l.starts_with("built ")).count(), IMAGES.len(), "{said}");

    for image in IMAGES {
        let reference = format!("localhost/{image}:{tag}");
        let arch = podman.run(&["image", "inspect", "--format", "{{.Architecture}}", &reference]);
        assert_eq!(String::from_utf8_lossy(&arch.stdout).trim(), "arm64", "{image}: {arch:?}");
        // The binary the image holds: an aarch64 ELF, statically linked (no loader to find).
        let binary = target.join("aarch64-unknown-linux-gnu/release").join(image);
        let file = Command::new("file").arg("-b").arg(&binary).output().expect("file runs (apt-get install file)");
        let file = String::from_utf8_lossy(&file.stdout);
        assert!(file.contains("ARM aarch64") && file.contains("static"), "{image}: {file}");
    }
}
