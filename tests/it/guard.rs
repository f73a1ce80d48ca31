//! Issue 21's guards, each written as the attack: a key file others may read, a balancer's
//! control port open to anyone (an outsider's backend, one source's flood of backends, health
//! checks turned on a victim), and a metrics face held by slow clients.

use std::process::{Command, Stdio};

use crate::common;

/// Every program that takes `--key-file` refuses one that others may read, and says how to fix
/// it, as ssh does with a private key.
#[test]
fn a_key_file_others_may_read_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("makler-open-key-{}", std::process::id()));
    common::write_key_file(&path, "a secret that every account of the host can read\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path_text = path.to_str().unwrap();
    let programs = [
        (env!("CARGO_BIN_EXE_makler-broker"), &[][..]),
        (env!("CARGO_BIN_EXE_makler-balancer"), &["--service", "web"][..]),
        (env!("CARGO_BIN_EXE_makler-server"), &["--service", "echo"][..]),
        (env!("CARGO_BIN_EXE_makler-client"), &["echo"][..]),
        (env!("CARGO_BIN_EXE_makler"), &["stats"][..]),
    ];
    for (program, args) in programs {
        let output = Command::new(program)
            .args(["--key-file", path_text])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the program runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{program} accepted a key file others may read");
        assert!(stderr.contains(&format!("chmod 600 {path_text}")), "{program}: {stderr}");
    }
    std::fs::remove_file(&path).unwrap();
}
