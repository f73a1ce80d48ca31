//! The whole system in containers: `dist/container/images.sh` builds the images (one static
//! release build, FROM scratch images) and `dist/container/scenario.sh` runs a broker, two
//! services, a balancer with three backends and the client against them, with podman set up
//! the way it works offline here (runc, vfs, cgroupfs, no default ulimits). Ignored, with a
//! message, where podman is not installed; `.ci/run` installs it. Every image the test builds
//! is removed at the end (the script removes its containers).

use std::net::{TcpListener, UdpSocket};

use crate::common::podman::{IMAGES, Images, Podman, root};

/// Three consecutive loopback ports free for TCP and UDP.
fn free_ports() -> u16 {
    for _ in 0..100 {
        let base = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if base > 65_000 {
            continue;
        }
        let free = (0..3).all(|k| {
            TcpListener::bind(("127.0.0.1", base + k)).is_ok() && UdpSocket::bind(("127.0.0.1", base + k)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no three free ports in a row");
}

fn script(name: &str, images: &Images, env: &[(&str, String)]) -> String {
    let output =
        images.podman.script(name, &images.tag).envs(env.iter().map(|(k, v)| (k, v))).output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
#[cfg_attr(not(has_podman), ignore = "podman and runc are not installed (apt-get install podman runc)")]
fn the_scenario_runs_in_containers() {
    let podman = Podman::new("containers");
    let images = Images { podman: &podman, tag: format!("test-{}", std::process::id()) };

    // A target directory of its own: the test's own cargo holds the lock on the default one.
    let target = root().join("target/static").display().to_string();
    let built = script("images.sh", &images, &[("MAKLER_TARGET_DIR", target)]);
    assert_eq!(built.lines().count(), IMAGES.len(), "{built}");

    let out = script("scenario.sh", &images, &[("BASE_PORT", free_ports().to_string())]);
    // The balancer's stats come last, for the messages below.
    let (scenario, _) = out.split_once("--- balancer stats\n").unwrap_or_else(|| panic!("no stats:\n{out}"));
    let lines: Vec<&str> = scenario.lines().collect();
    assert_eq!(lines[0], "hello from a container", "{out}");
    assert_eq!(lines[1], "HELLO FROM A CONTAINER", "{out}");
    // Three requests through the balancer, answered by its three backends in turn.
    let mut backends: Vec<&str> =
        lines.get(2..5).unwrap_or_else(|| panic!("three answers through the balancer:\n{out}")).to_vec();
    backends.sort();
    backends.dedup();
    assert_eq!(
        backends.len(),
        3,
        "the balancer's rotation reached {} backends, not 3: {backends:?}\n{out}",
        backends.len()
    );
    // The control CLI's list of the broker.
    assert_eq!(&lines[5..], ["SERVICE  INSTANCES", "echo     1", "upper    1", "web      1"], "{out}");
}
