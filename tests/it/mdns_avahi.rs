//! The broker's `--mdns` and `--mdns-import` against Avahi (Debian `avahi-daemon`,
//! `avahi-utils`), the mDNS responder of Linux desktops, in the network namespaces of
//! [`mdns_node`](super::mdns_node).
//!
//! Avahi's tools talk to the daemon over the D-Bus system bus, so each Avahi here runs inside
//! its namespace with a private `/run` (a tmpfs mounted in the mount namespace `ip netns exec`
//! makes, so nothing of the host's `/run` is touched), a private system bus there
//! (`dbus-daemon` with a permissive configuration), and `avahi-daemon --no-drop-root
//! --no-chroot` on the namespace's `eth0` only ([`RUN`]). Everything stops when the tool's stop
//! file appears. Needs root, Avahi, dbus-daemon and stdbuf (ignored, saying so, otherwise).

use std::path::Path;
use std::time::Duration;

use super::mdns_node::{Script, ask, broker, files, log, temp, wait_until};
use super::mdns_peers::{Link, link};
use crate::common::PATIENCE;

/// The system bus's configuration: anyone may own and call anything (it is the test's own bus).
const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#;

/// avahi-daemon's configuration: IPv4 on `eth0` only, no wide-area DNS-SD, nothing published
/// but what the test asks.
const AVAHI_CONF: &str = "[server]
host-name=avahi-peer
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
";

/// Runs inside `ip netns exec`: `$1` the directory holding the two configurations, then the
/// command. Starts the bus and the daemon, waits until the daemon runs, runs the command (its
/// output, and its errors, line-buffered) until it ends or `$STOP` exists, then stops all three.
const RUN: &str = r#"set -e
dir=$1; shift
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/avahi-daemon
dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile & bus=$!
trap 'kill $cmd $avahi $bus 2>/dev/null; wait' EXIT
while [ ! -S /run/dbus/system_bus_socket ]; do sleep 0.05; done
avahi-daemon -f "$dir/avahi.conf" --no-drop-root --no-chroot --no-rlimits & avahi=$!
i=0; until avahi-daemon -c; do i=$((i + 1)); [ $i -lt 200 ] || exit 1; sleep 0.05; done
stdbuf -oL "$@" 2>&1 & cmd=$!
while kill -0 $cmd 2>/dev/null && [ ! -e "$STOP" ]; do sleep 0.05; done
kill $cmd 2>/dev/null || true
wait $cmd || true
cmd=
sleep 0.5
"#;

/// Runs an Avahi tool (`args`) in namespace `side` beside its own daemon.
fn avahi(link: &Link, side: char, name: &str, args: &[&str]) -> Script {
    let (bus, conf) = (temp(link, "bus.conf"), temp(link, "avahi.conf"));
    std::fs::write(&bus, BUS_CONF).expect("bus.conf");
    std::fs::write(&conf, AVAHI_CONF).expect("avahi.conf");
    let dir = bus.parent().and_then(Path::to_str).expect("a UTF-8 path");
    let mut all = vec!["-c", RUN, "run", dir];
    all.extend_from_slice(args);
    Script::run(link, side, name, "sh", &all)
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_avahi), ignore = "Avahi is not installed (apt-get install avahi-daemon avahi-utils dbus)")]
fn avahi_browse_resolves_a_registered_service_and_sees_it_go() {
    let link = link("va");
    let _files = files(&link);
    let (_broker, log_path) = broker(&link, 'a', &[]);
    // -r resolves, -p parsable; without -t it keeps browsing.
    let mut browser = avahi(&link, 'b', "avahi-browse", &["avahi-browse", "-r", "-p", "_web._tcp"]);
    let id = ask(&link, 'a', &["register web 8080"]).remove(0);
    // avahi-browse -p writes `:` as `\058`; an empty TXT as nothing.
    let (_, resolved) = browser.wait_for(r"=;eth0;IPv4;10-98-0-1\0588080", Duration::from_secs(15));
    assert_eq!(
        resolved,
        r"=;eth0;IPv4;10-98-0-1\0588080;_web._tcp;local;10-98-0-1.makler.local;10.98.0.1;8080;",
        "{}",
        log(&log_path)
    );
    assert_eq!(ask(&link, 'a', &[&format!("deregister {id}")]), ["OK"]);
    let (_, removed) = browser.wait_for(r"-;eth0;IPv4;10-98-0-1\0588080", Duration::from_secs(5));
    assert_eq!(removed, r"-;eth0;IPv4;10-98-0-1\0588080;_web._tcp;local");
}

#[test]
#[cfg_attr(not(has_netns), ignore = "network namespaces need root, CAP_SYS_ADMIN and ip (apt-get install iproute2)")]
#[cfg_attr(not(has_avahi), ignore = "Avahi is not installed (apt-get install avahi-daemon avahi-utils dbus)")]
fn an_avahi_publication_is_imported_and_gone_when_withdrawn() {
    let link = link("vb");
    let _files = files(&link);
    let (_broker, log_path) = broker(&link, 'a', &["--mdns-import", "_zc._tcp"]);
    let mut publisher =
        avahi(&link, 'b', "avahi-publish", &["avahi-publish", "-s", "avahi-zc", "_zc._tcp", "9191", "v=2", "x"]);
    publisher.wait_for("Established under name 'avahi-zc'", Duration::from_secs(15));
    let query = |request: &str| ask(&link, 'a', &[request]).remove(0);
    wait_until(PATIENCE, "the publication is imported", || (query("query zc") == "10.98.0.2:9191").then_some(()));
    publisher.finish();
    wait_until(PATIENCE, "the instance goes when Avahi withdraws it", || {
        query("query zc").starts_with("NOT FOUND").then_some(())
    });
    let log = log(&log_path);
    assert!(log.contains("mdns: imported zc 10.98.0.2:9191 (\"avahi-zc\") v=2 x"), "its TXT as metadata: {log}");
}
