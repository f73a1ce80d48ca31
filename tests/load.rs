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

#[test]
fn http_load_reports_json_and_csv() {
    let server = std::process::Command::new(env!("CARGO_BIN_EXE_makler-server"))
        .args(["--service", "http", "--no-register"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Kill(server);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.0.stdout.take().unwrap()), &mut line).unwrap();
    let target = line.trim().strip_prefix("listening tcp=").unwrap().to_owned();

    let run = |format: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_makler-load"))
            .args(["http", "--target", &target, "--duration", "0.3", "--connections", "3", "--max-requests", "300"])
            .args(["--format", format, "--label", "say \"hi\"\tnow"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let json = run("json");
    assert!(json.starts_with("{\"label\":\"say \\\"hi\\\"\\u0009now\",\"target\":\""), "{json}");
    assert!(json.contains(",\"requests\":300,") && json.trim_end().ends_with(",\"errors\":0}"), "{json}");
    let csv = run("csv");
    let lines: Vec<_> = csv.lines().collect();
    assert_eq!(lines[0], "label,target,mode,connections,duration_s,requests,rate,p50_us,p90_us,p99_us,errors");
    assert_eq!(lines[1].split(',').nth(5), Some("300"), "{csv}");

    let refused = Command::new(env!("CARGO_BIN_EXE_makler-load"))
        .args(["http", "--target", "10.0.0.1:80", "--duration", "0.1"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "non-loopback targets need --allow-remote");
}
