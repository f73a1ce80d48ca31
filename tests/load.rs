//! The benchmark program runs end to end in a small configuration (figures are not checked:
//! speed is measured by running it for real, not asserted in tests).

use std::process::Command;

#[test]
fn the_udp_benchmark_runs_and_reports_every_figure() {
    let output = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["udp", "--duration", "0.2", "--instances", "200", "--types", "20", "--rss-instances", "400"])
        .args(["--broker-bin", env!("CARGO_BIN_EXE_makler-broker")])
        .output()
        .expect("makler-load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for row in ["udp echo ", "broker query ", "broker heartbeat "] {
        let line = stdout.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no {row:?} row:\n{stdout}"));
        let rate: f64 = line[18..].split_whitespace().next().unwrap().parse().unwrap();
        assert!(rate > 0.0, "{line}");
    }
    assert!(stdout.contains("query/echo ratio "), "{stdout}");
    assert!(stdout.contains("bytes/instance"), "{stdout}");
}

#[test]
fn inconsistent_sizes_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["udp", "--instances", "10", "--types", "20"])
        .output()
        .expect("makler-load runs");
    assert_eq!(output.status.code(), Some(2));
}
