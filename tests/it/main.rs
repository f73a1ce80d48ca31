//! Every integration test in one binary: one module per area, the shared helpers (starting the
//! real programs, talking to them, waiting on conditions) in `common`. One binary links once and
//! runs every test even when one fails; `cargo test --test it peers::` runs one area.
//!
//! A test that needs a tool from outside (podman, haproxy, dig, promtool, `ss`, Chromium and
//! Node.js, root for network namespaces) is compiled `#[ignore]`d, with the package to install, where `build.rs` did not
//! find the tool: the runner reports it as ignored, never as passed. Under `CI=true` (as
//! `.ci/run` sets) it runs regardless and fails if the tool is missing.

mod common;

mod amplification;
mod amplification_dns;
mod balancer;
mod balancer_feed;
mod balancer_live;
mod balancer_policy;
mod bench_scripts;
mod bridges;
mod broker;
mod browser;
mod checks;
mod cli;
mod cli_watch;
mod config;
mod containers;
mod containers_arm64;
mod dns;
mod dns_haproxy;
mod dns_props;
mod docs;
mod e2e;
mod edges;
mod fuzz_props;
mod guard;
mod http;
mod keyed;
mod mdns_amplification;
mod mdns_avahi;
mod mdns_node;
mod mdns_peers;
mod mdns_props;
mod meta;
mod metrics;
mod multicast;
mod netns;
mod peers;
mod polish;
mod protocol_doc;
mod protocol_props;
mod proxy_haproxy;
mod proxy_protocol;
mod readme_newcomer;
mod reload;
mod reports;
mod restart;
mod scenario_cleanup;
mod stress;
mod systemd;
mod trust;
mod watch;
