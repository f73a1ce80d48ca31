//! The config file layer's own tests: one small program with a flag of each kind.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;

use super::{ConfigArgs, Failure};
use crate::cli::AddrList;

/// A program with one flag of each kind the real ones have.
#[derive(Debug, clap::Parser)]
#[command(name = "prog")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = crate::cli::parse_addr)]
    listen: SocketAddr,
    #[arg(long, default_value = "5", allow_negative_numbers = true, value_parser = crate::cli::parse_ttl)]
    ttl: std::time::Duration,
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    peers: Option<AddrList>,
    #[arg(long, conflicts_with = "peers")]
    no_peers: bool,
    #[arg(long, value_name = "CIDR[,CIDR…]", value_parser = crate::service::policy::parse_networks)]
    allow_register: Option<std::vec::Vec<ipnet::IpNet>>,
    #[arg(long, value_name = "CIDR[,CIDR…]|none", default_value = "127.0.0.0/8",
          value_parser = crate::cli::parse_networks_or_none)]
    rate_limit_exempt: std::vec::Vec<ipnet::IpNet>,
    #[arg(long = "meta")]
    meta: Vec<String>,
    #[arg(long, short)]
    quiet: bool,
    #[arg(long, alias = "workers", default_value_t = 2)]
    threads: u16,
    #[arg(long)]
    health_interval: Option<f64>,
    #[arg(long, default_value = "main")]
    cluster: String,
    #[arg(long)]
    verbose: Option<bool>,
    #[arg(long, value_parser = ["round-robin", "least-conn"])]
    policy: Option<String>,
    #[arg(long)]
    accept_proxy: bool,
    #[arg(long, requires = "accept_proxy")]
    proxy_timeout: Option<u32>,
    #[command(flatten)]
    config: ConfigArgs,
}

fn argv(tokens: &[&str]) -> Vec<OsString> {
    tokens.iter().map(OsString::from).collect()
}

/// Parses `tokens` with `file` as the text of whatever `--config` names.
fn with(file: &str, tokens: &[&str]) -> Result<Args, String> {
    let mut all = vec!["prog", "--config", "test.toml"];
    all.extend_from_slice(tokens);
    let read = |path: &Path| {
        assert_eq!(path, Path::new("test.toml"));
        Ok(file.to_owned())
    };
    super::resolve::<Args>(&argv(&all), read).map_err(|failure| match failure {
        Failure::Clap(e) => e.render().to_string(),
        Failure::File(message) => message,
    })
}

const FILE: &str = r#"# a broker
listen = "127.0.0.1:0"
ttl = 60
peers = ["127.0.0.1:7001", "127.0.0.1:7002"]
allow-register = ["10.0.0.0/8"]
meta = ["a=1", "b=2"]
quiet = true
health-interval = 2.5
log-level = "makler=debug"
"#;

#[test]
fn the_file_sets_every_kind_of_flag() {
    let args = with(FILE, &[]).unwrap();
    assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(args.ttl, std::time::Duration::from_secs(60));
    assert_eq!(args.peers.unwrap().to_string(), "127.0.0.1:7001,127.0.0.1:7002");
    assert_eq!(args.allow_register.unwrap(), ["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]);
    assert_eq!(args.meta, ["a=1", "b=2"]);
    assert!(args.quiet);
    assert_eq!(args.health_interval, Some(2.5));
    assert_eq!(args.config.log_level.as_deref(), Some("makler=debug"));
    assert_eq!(args.config.config.as_deref(), Some(Path::new("test.toml")));
    assert_eq!(args.threads, 2, "defaults stay for what the file does not say");
}

#[test]
fn the_command_line_overrides_the_file_in_every_spelling() {
    let args = with(FILE, &["--ttl", "7", "--peers=127.0.0.1:9000", "--meta", "c=3", "--workers", "4"]).unwrap();
    assert_eq!(args.ttl, std::time::Duration::from_secs(7));
    assert_eq!(args.peers.unwrap().0, ["127.0.0.1:9000".parse::<SocketAddr>().unwrap()], "replaced, not added");
    assert_eq!(args.meta, ["c=3"], "a repeated flag on the command line replaces the file's list");
    assert_eq!(args.threads, 4, "an alias counts as the flag");
    assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap(), "the rest still from the file");
    // A flag given before --config, and a short one.
    let args =
        super::resolve::<Args>(&argv(&["prog", "-q", "--listen=127.0.0.1:5", "--config", "x.toml"]), |_: &Path| {
            Ok("listen = \"127.0.0.1:6\"\nquiet = false\n".to_owned())
        })
        .unwrap();
    assert_eq!(args.listen, "127.0.0.1:5".parse().unwrap());
    assert!(args.quiet);
}

#[test]
fn the_command_line_overrides_what_conflicts_with_it_in_the_file() {
    let args = with(FILE, &["--no-peers"]).unwrap();
    assert!(args.no_peers && args.peers.is_none(), "the file's peers dropped");
    let args = with("no-peers = true\n", &["--peers", "127.0.0.1:1"]).unwrap();
    assert!(!args.no_peers && args.peers.is_some(), "the file's no-peers dropped");
    let refused = with("no-peers = true\npeers = [\"127.0.0.1:1\"]\n", &[]).unwrap_err();
    assert!(refused.contains("cannot be used with"), "a file at odds with itself is refused: {refused}");
}

#[test]
fn false_and_empty_lists_are_absent() {
    let args = with("quiet = false\npeers = []\n", &[]).unwrap();
    assert!(!args.quiet);
    assert!(args.peers.is_none());
}

#[test]
fn an_empty_list_is_none_for_a_list_flag_that_has_a_none() {
    let loopback: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
    assert_eq!(with("", &[]).unwrap().rate_limit_exempt, loopback, "absent: the default");
    assert_eq!(with("rate-limit-exempt = []\n", &[]).unwrap().rate_limit_exempt, [], "[]: none");
    assert_eq!(with("rate-limit-exempt = \"none\"\n", &[]).unwrap().rate_limit_exempt, []);
    let networks = with("rate-limit-exempt = [\"10.0.0.0/8\"]\n", &[]).unwrap().rate_limit_exempt;
    assert_eq!(networks, ["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]);
    // The command line's none wins over the file's list, and its list over the file's [].
    let args = with("rate-limit-exempt = [\"10.0.0.0/8\"]\n", &["--rate-limit-exempt", "none"]).unwrap();
    assert_eq!(args.rate_limit_exempt, []);
    let args = with("rate-limit-exempt = []\n", &["--rate-limit-exempt=192.0.2.0/24"]).unwrap();
    assert_eq!(args.rate_limit_exempt, ["192.0.2.0/24".parse::<ipnet::IpNet>().unwrap()]);
}

#[test]
fn unknown_and_refused_keys_are_named_with_their_line() {
    let refused = with("ttl = 6\n\nlisten-on = \"127.0.0.1:1\"\n", &[]).unwrap_err();
    assert_eq!(
        refused,
        "test.toml:3: unknown key `listen-on` (the keys are the long flag names, as --help lists them)"
    );
    for key in ["config", "check-config", "help", "version"] {
        let refused = with(&format!("{key} = true\n"), &[]).unwrap_err();
        assert!(refused.starts_with(&format!("test.toml:1: `{key}` cannot be set")), "{refused}");
    }
    let refused = with("workers = 3\n", &[]).unwrap_err();
    assert!(refused.contains("unknown key `workers`"), "only long names are keys, not aliases: {refused}");
}

#[test]
fn a_bad_value_names_the_key_file_and_line() {
    let refused = with("quiet = true\nttl = 0.01\n", &[]).unwrap_err();
    assert!(refused.starts_with("test.toml:2: ttl: invalid value '0.01' for '--ttl"), "{refused}");
    assert!(refused.contains("at least 0.1"), "{refused}");
    let refused = with("peers = [\"127.0.0.1:1\", \"nowhere\"]\n", &[]).unwrap_err();
    assert!(refused.starts_with("test.toml:1: peers: invalid value"), "{refused}");
    let refused = with("quiet = \"yes\"\n", &[]).unwrap_err();
    assert_eq!(refused, "test.toml:1: quiet: expected true or false, not string \"yes\"");
    let refused = with("peers = [[\"a\"]]\n", &[]).unwrap_err();
    assert!(refused.starts_with("test.toml:1: peers: expected a string"), "{refused}");
    let refused = with("ttl = 5\nttl = 6\n", &[]).unwrap_err();
    assert!(refused.starts_with("test.toml: TOML parse error at line 2"), "{refused}");
    // A bad value on the command line is clap's own error, about the flag.
    let refused = with("", &["--ttl", "0"]).unwrap_err();
    assert!(refused.contains("'--ttl <TTL>'") && !refused.contains("test.toml"), "{refused}");
}

#[test]
fn a_list_is_taken_only_by_a_list_flag_and_an_item_holds_no_comma() {
    let refused = with("listen = [\"127.0.0.1:1\"]\n", &[]).unwrap_err();
    assert!(refused.starts_with("test.toml:1: listen: expected one value, not a list"), "{refused}");
    let refused = with("ttl = []\n", &[]).unwrap_err();
    assert!(refused.starts_with("test.toml:1: ttl: expected one value, not a list"), "{refused}");
    let refused = with("allow-register = [\"10.0.0.0/8,192.168.0.0/16\"]\n", &[]).unwrap_err();
    assert_eq!(
        refused,
        "test.toml:1: allow-register: the list item \"10.0.0.0/8,192.168.0.0/16\" holds a comma: give each \
         value as an item of its own"
    );
    // A repeated flag takes each item whole, commas and all.
    assert_eq!(with("meta = [\"a=1,2\"]\n", &[]).unwrap().meta, ["a=1,2"]);
}

#[test]
fn a_value_of_a_type_no_flag_form_has_is_refused() {
    let refused = with("cluster = true\n", &[]).unwrap_err();
    assert_eq!(refused, "test.toml:1: cluster: expected a string, a number or a list of them, not boolean true");
    let refused = with("meta = [false]\n", &[]).unwrap_err();
    assert!(refused.ends_with("not boolean false"), "{refused}");
    assert_eq!(with("verbose = true\n", &[]).unwrap().verbose, Some(true), "a flag taking true|false takes a boolean");
    let refused = with("cluster = 1979-05-27T07:32:00Z\n", &[]).unwrap_err();
    assert!(refused.ends_with("not datetime 1979-05-27T07:32:00Z"), "{refused}");
    let refused = with("cluster = { a = 1 }\n", &[]).unwrap_err();
    assert!(refused.ends_with("not a table"), "{refused}");
    let refused = with("[[meta]]\na = 1\n", &[]).unwrap_err();
    assert!(refused.ends_with("not a table"), "{refused}");
    // A float keeps its point, so a whole-number flag refuses 2.0 as --threads 2.0 is refused.
    let refused = with("threads = 2.0\n", &[]).unwrap_err();
    assert!(refused.starts_with("test.toml:1: threads: invalid value '2.0'"), "{refused}");
    assert_eq!(with("health-interval = 1e-1\n", &[]).unwrap().health_interval, Some(0.1));
    for (float, shown) in [("inf", "inf"), ("-inf", "-inf"), ("nan", "NaN")] {
        let refused = with(&format!("ttl = {float}\n"), &[]).unwrap_err();
        assert!(refused.starts_with(&format!("test.toml:1: ttl: invalid value '{shown}'")), "{refused}");
    }
    // Negative numbers and values starting with a dash reach the flag's parser whole.
    let refused = with("ttl = -1\n", &[]).unwrap_err();
    assert!(refused.contains("not negative"), "{refused}");
    assert_eq!(with("cluster = \"-x=y,z\"\n", &[]).unwrap().cluster, "-x=y,z");
    assert_eq!(with("cluster = \"grün ✓\"\n", &[]).unwrap().cluster, "grün ✓");
}

#[test]
fn a_file_too_long_or_not_a_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("makler-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let long = dir.join("long.toml");
    let line = format!("# {}\n", "x".repeat(1021));
    std::fs::write(&long, line.repeat(1025) + "ttl = 9\n").unwrap();
    let refused = super::read_file(&long).unwrap_err().to_string();
    assert_eq!(refused, "longer than 1024 KiB, too long for a config file");
    let refused = super::read_file(&dir).unwrap_err().to_string();
    assert_eq!(refused, "a directory, not a regular file");
    #[cfg(unix)]
    {
        let refused = super::read_file(Path::new("/dev/null")).unwrap_err().to_string();
        assert_eq!(refused, "a device, not a regular file");
        // A FIFO nobody writes to: reading it would wait for a writer for ever.
        let fifo = dir.join("fifo.toml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
        assert!(made.success());
        let (done, answer) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || done.send(super::read_file(&path).map_err(|e| e.to_string())));
        let answer = answer.recv_timeout(std::time::Duration::from_secs(10)).expect("a FIFO is refused, not waited on");
        assert_eq!(answer.unwrap_err(), "a FIFO, not a regular file");
        // A symbolic link to a regular file is the file.
        let link = dir.join("link.toml");
        std::os::unix::fs::symlink(dir.join("fine.toml"), &link).unwrap();
        std::fs::write(dir.join("fine.toml"), "ttl = 9\n").unwrap();
        assert_eq!(super::read_file(&link).unwrap(), "ttl = 9\n");
    }
    let fine = dir.join("fine.toml");
    std::fs::write(&fine, "ttl = 9\n").unwrap();
    assert_eq!(super::read_file(&fine).unwrap(), "ttl = 9\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_twice_is_refused_before_a_file_is_read() {
    let refused = super::resolve::<Args>(&argv(&["prog", "--config", "a.toml", "--config=b.toml"]), |_: &Path| {
        Err(std::io::ErrorKind::NotFound.into())
    });
    assert!(matches!(refused, Err(Failure::Clap(e)) if e.kind() == clap::error::ErrorKind::ArgumentConflict));
}

#[cfg(unix)]
#[test]
fn config_equals_a_path_that_is_not_utf8_is_read() {
    use std::os::unix::ffi::OsStringExt;
    let path = OsString::from_vec(b"/etc/m\xe4kler.toml".to_vec());
    let mut token = OsString::from("--config=");
    token.push(&path);
    let read = |given: &Path| {
        assert_eq!(given.as_os_str(), path);
        Ok("ttl = 9\n".to_owned())
    };
    let args = super::resolve::<Args>(&[OsString::from("prog"), token], read).unwrap();
    assert_eq!(args.ttl, std::time::Duration::from_secs(9));
}

#[test]
fn a_key_that_requires_another_is_named_with_its_line() {
    let refused = with("ttl = 6\nproxy-timeout = 5\n", &[]).unwrap_err();
    assert_eq!(
        refused,
        "test.toml:2: proxy-timeout: needs --accept-proxy as well (in the file or on the command line)"
    );
    assert!(with("proxy-timeout = 5\naccept-proxy = true\n", &[]).is_ok());
    assert!(with("proxy-timeout = 5\n", &["--accept-proxy"]).is_ok());
    // What the command line requires stays clap's error, about the command line.
    let refused = with("ttl = 6\n", &["--proxy-timeout", "5"]).unwrap_err();
    assert!(refused.starts_with("error: the following required arguments were not provided"), "{refused}");
}

#[test]
fn a_value_not_among_the_possible_ones_is_refused_with_them() {
    let refused = with("policy = \"least\"\n", &[]).unwrap_err();
    assert_eq!(
        refused,
        "test.toml:1: policy: invalid value 'least' for '--policy <POLICY>' [possible values: round-robin, \
         least-conn] tip: a similar value exists: 'least-conn'"
    );
}

/// `text` as a TOML basic string.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => out.extend(['\\', c]),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out + "\""
}

proptest::proptest! {
    /// Any string reaches the flag whole: leading dashes, `=`, commas, quotes, unicode.
    #[test]
    fn a_string_value_reaches_its_flag_whole(text in "\\PC*|-[-=, a-z]*") {
        let args = with(&format!("cluster = {}\nmeta = [{}]\n", quoted(&text), quoted(&text)), &[]).unwrap();
        proptest::prop_assert_eq!(&args.cluster, &text);
        proptest::prop_assert_eq!(args.meta, vec![text]);
    }
}

#[test]
fn without_a_file_or_with_help_it_is_plain_clap() {
    let args = super::resolve::<Args>(&argv(&["prog", "--ttl", "9"]), |_: &Path| unreachable!()).unwrap();
    assert_eq!(args.ttl, std::time::Duration::from_secs(9));
    let help = super::resolve::<Args>(&argv(&["prog", "--config", "gone.toml", "--help"]), |_: &Path| {
        Err(std::io::ErrorKind::NotFound.into())
    });
    assert!(matches!(help, Err(Failure::Clap(e)) if e.kind() == clap::error::ErrorKind::DisplayHelp));
    let refused = super::reparse::<Args>(&argv(&["prog", "--config", "/nonexistent/makler.toml"])).unwrap_err();
    assert!(refused.starts_with("cannot read the config file /nonexistent/makler.toml: "), "{refused}");
}
