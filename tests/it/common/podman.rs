//! Podman as it works offline here (see `shared/containers.md`), for the container tests: the
//! command and flags, a settings file of the test's own, and the clean-up of images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The podman command and flags that work here (runc, vfs, cgroupfs).
pub const PODMAN: &str = "podman --runtime /usr/sbin/runc --storage-driver vfs --cgroup-manager cgroupfs";

/// The images `dist/container/images.sh` builds.
pub const IMAGES: [&str; 5] = ["makler-broker", "makler-balancer", "makler-server", "makler-client", "makler"];

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A podman settings file of the test's own (no default ulimits: none can be set here),
/// removed when dropped.
pub struct Podman {
    pub conf: PathBuf,
}

impl Podman {
    /// The settings for a test named `name`, in the temporary directory.
    pub fn new(name: &str) -> Podman {
        let conf = std::env::temp_dir().join(format!("makler-{name}-{}.conf", std::process::id()));
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
        Podman { conf }
    }

    /// Runs podman with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut words = PODMAN.split(' ');
        Command::new(words.next().unwrap())
            .args(words)
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .expect("podman runs")
    }

    /// `bash dist/container/<name>`, told the podman command, these settings and `tag`.
    pub fn script(&self, name: &str, tag: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(root().join("dist/container").join(name))
            .env("PODMAN", PODMAN)
            .env("CONTAINERS_CONF", &self.conf)
            .env("TAG", tag);
        command
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.conf);
    }
}

/// Removes the [`IMAGES`] tagged `tag`, whatever happens to the test.
pub struct Images<'a> {
    pub podman: &'a Podman,
    pub tag: String,
}

impl Drop for Images<'_> {
    fn drop(&mut self) {
        for image in IMAGES {
            let _ = self.podman.run(&["rmi", "--force", &format!("localhost/{image}:{}", self.tag)]);
        }
    }
}
