//! The sessions shown in README.md and protocol.md (and any in PERFORMANCE.md) are real: every
//! console block marked `<!-- replay -->` is replayed against a fresh broker, command by command,
//! and each output is compared with the one written down. What cannot repeat (ids, ages,
//! ephemeral ports, the broker's own multicast hellos) is compared by its shape only. And every
//! `stats` line in the docs has exactly the counters the broker writes today, in order.

use crate::common;

use std::collections::HashMap;
use std::process::Command;

use crate::common::Udp;

const DOCS: [&str; 3] = ["README.md", "protocol.md", "PERFORMANCE.md"];

/// Counters whose value depends on timing, not on the session.
const VOLATILE: [&str; 5] = ["multicast_ignored", "age_ms", "expires_ms", "last_heard_ms", "probes"];

fn read(doc: &str) -> String {
    std::fs::read_to_string(format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A command and the output written under it.
struct Step {
    command: String,
    output: Vec<String>,
}

/// The marked console blocks of `text`, as steps.
fn replayed_blocks(text: &str) -> Vec<Vec<Step>> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "<!-- replay -->" {
            continue;
        }
        assert_eq!(lines.next(), Some("```console"), "a replayed block is a console block");
        let mut steps: Vec<Step> = Vec::new();
        for line in lines.by_ref().take_while(|l| *l != "```") {
            match line.strip_prefix("$ ") {
                Some(command) => steps.push(Step { command: command.to_owned(), output: Vec::new() }),
                None => steps.last_mut().expect("output after a command").output.push(line.to_owned()),
            }
        }
        blocks.push(steps);
    }
    blocks
}

fn is_uuid(word: &str) -> bool {
    uuid::Uuid::try_parse(word).is_ok() && word.len() == 36
}

/// A line as compared: single spaces, and what cannot repeat replaced by a placeholder.
fn normalized(line: &str) -> String {
    let words = line.split_whitespace().map(|word| {
        if is_uuid(word) {
            return "<uuid>".to_owned();
        }
        if let Some((key, _)) = word.split_once('=')
            && VOLATILE.contains(&key)
        {
            return format!("{key}=<n>");
        }
        if let Some(seconds) = word.strip_suffix('s')
            && seconds.contains('.')
            && seconds.parse::<f64>().is_ok()
        {
            return "<seconds>".to_owned();
        }
        // A port the system picked (a client's source port).
        if let Some((head, port)) = word.rsplit_once(':')
            && port.parse::<u16>().is_ok_and(|p| p >= 32768)
        {
            return format!("{head}:<port>");
        }
        word.to_owned()
    });
    words.collect::<Vec<_>>().join(" ")
}

/// Runs one documented command against the broker at `udp`; returns its output lines.
fn run(udp: &Udp, command: &str) -> Vec<String> {
    let at = udp.peer.to_string();
    let output = if let Some((echo, socat)) = command.split_once(" | socat -t0.2 - UDP:127.0.0.1:7000") {
        assert!(socat.is_empty(), "{command}");
        let text = echo.strip_prefix("echo ").unwrap_or_else(|| panic!("{command}"));
        let text = text.trim_matches('\'');
        String::from_utf8(udp.raw(text.as_bytes())).unwrap()
    } else if let Some(args) = command.strip_prefix("makler ") {
        let mut all = vec!["--broker", &at];
        all.extend(args.split_whitespace());
        let output = Command::new(env!("CARGO_BIN_EXE_makler")).args(&all).output().unwrap();
        String::from_utf8(output.stdout).unwrap() + &String::from_utf8(output.stderr).unwrap()
    } else {
        panic!("a replayed block may hold socat and makler commands only: {command}");
    };
    // The docs show the default address.
    output.replace(&at, "127.0.0.1:7000").lines().map(str::to_owned).collect()
}

#[test]
fn every_replayed_session_gives_the_documented_output() {
    let mut replayed = 0;
    for doc in DOCS {
        for steps in replayed_blocks(&read(doc)) {
            let broker = common::broker(&["--probe-interval", "0"]);
            let udp = Udp::new(broker.addr("udp"));
            // The ids the docs show, to the ids this broker gave.
            let mut ids: HashMap<String, String> = HashMap::new();
            for step in &steps {
                let mut command = step.command.clone();
                for (documented, real) in &ids {
                    command = command.replace(documented, real);
                }
                let output = run(&udp, &command);
                if let ([documented], [real]) = (&step.output[..], &output[..])
                    && is_uuid(documented)
                    && is_uuid(real)
                {
                    ids.insert(documented.clone(), real.clone());
                }
                let want: Vec<String> = step.output.iter().map(|l| normalized(l)).collect();
                let got: Vec<String> = output.iter().map(|l| normalized(l)).collect();
                assert_eq!(got, want, "{doc}: `{}` printed\n{}", step.command, output.join("\n"));
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 3, "only {replayed} blocks are marked <!-- replay -->");
}

/// The keys of a broker's `stats` line, in order, as the encoder writes them.
fn stats_keys() -> Vec<String> {
    let mut out = Vec::new();
    let counters = makler::node::Node::counter_defs().map(|def| makler::protocol::Counter::new(def.name, 0));
    let stats = makler::protocol::BrokerStats { counters: counters.collect(), ..Default::default() };
    let stats = makler::protocol::Response::Stats(Box::new(stats));
    makler::protocol::text::encode_response(&stats, &mut out);
    let line = String::from_utf8(out).unwrap();
    line.split_whitespace().map(|kv| kv.split_once('=').unwrap().0.to_owned()).collect()
}

#[test]
fn every_stats_line_in_the_docs_has_todays_counters() {
    let keys = stats_keys();
    let mut seen = 0;
    for doc in DOCS {
        for line in read(doc).lines().filter(|l| l.starts_with("instances=") && l.contains(" received=")) {
            let found: Vec<&str> = line.split_whitespace().map(|kv| kv.split_once('=').unwrap().0).collect();
            // A line may be cut short (`| cut -d' ' -f1-8`), never reordered or stale.
            assert_eq!(found, keys[..found.len()], "{doc}: {line}");
            seen += 1;
        }
    }
    assert!(seen >= 3, "{seen} stats lines");
}
