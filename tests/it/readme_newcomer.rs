//! The README's walk-throughs as a newcomer types them: a program called by its bare name in a
//! console block (`$ makler list`) is on no `PATH` after `cargo build`, so the README must say
//! how to get it there before the first such line; and the by-hand session, typed at human
//! speed, must not outlive the TTL of the broker it tells you to start.

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

const PROGRAMS: [&str; 6] =
    ["makler", "makler-broker", "makler-server", "makler-client", "makler-balancer", "makler-load"];

#[test]
fn a_program_called_by_its_bare_name_comes_after_how_to_put_it_on_the_path() {
    let text = readme();
    let how = ["cargo install --path .", "export PATH="].iter().filter_map(|h| text.find(h)).min();
    let bare = text.lines().scan(0, |at, line| {
        let here = *at;
        *at += line.len() + 1;
        Some((here, line))
    });
    for (at, line) in bare {
        let Some(command) = line.strip_prefix("$ ") else { continue };
        let program = command.split_whitespace().next().unwrap_or("");
        if PROGRAMS.contains(&program) {
            assert!(
                how.is_some_and(|how| how < at),
                "README.md calls `{program}` by its bare name (`{line}`) before saying how to put it on the PATH"
            );
        }
    }
}

#[test]
fn the_by_hand_section_starts_a_broker_whose_ttl_outlasts_typing() {
    let text = readme();
    let start = text.find("## Talking to the broker by hand").expect("the by-hand section");
    let section = &text[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    let section = &section[..end];
    // Someone types a heartbeat several seconds after its register: a minute at least.
    let ttl = section
        .split("--ttl ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.trim_end_matches('`').parse::<f64>().ok())
        .next();
    assert!(
        section.contains("heartbeat") && ttl.is_some_and(|ttl| ttl >= 60.0),
        "the by-hand section registers and heartbeats by hand: start its broker with --ttl 60 or more"
    );
}
