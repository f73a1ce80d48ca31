//! `makler`: the control CLI. Lists what a broker (or a balancer's control port) holds, shows
//! its counters, reports dead instances and removes registrations. See `makler --help`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use makler::cli::AddrList;
use makler::client::{BrokerClient, ClientError, RetryPolicy};
use makler::protocol::{Counter, Request, Response, stats};
use serde_json::{Value, json};

/// Talks to a makler broker, or to a balancer's control port: lists the services and their
/// instances, shows the counters, reports a dead instance, removes a registration.
///
/// Every subcommand prints a table for people, or JSON with --json.
///
/// Exit codes: 0 done, 1 anything else, 2 bad usage, 3 not found (no such service or
/// registration), 4 no broker answered, 6 the broker refused the request.
#[derive(Debug, Parser)]
#[command(name = "makler", version = makler::version!(), max_term_width = 100)]
struct Args {
    /// Broker (or balancer control port) to ask; a comma-separated list fails over. Without
    /// it, the brokers are found on the multicast group.
    #[arg(long, global = true, value_name = "ADDR[,ADDR…]")]
    broker: Option<AddrList>,

    #[command(flatten)]
    multicast: makler::cli::MulticastArgs,

    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,

    /// Seconds to wait for a broker's first answer before asking again (each wait twice the
    /// last) or asking the next broker. `--timeout` is its old spelling.
    #[arg(long, alias = "timeout", global = true, value_name = "SECONDS", default_value = "0.25", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
    broker_timeout: Duration,

    /// Log only warnings and errors unless RUST_LOG says otherwise (the default here: this
    /// program logs nothing else; the flag is taken as every program takes it).
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the services that have live instances, with how many each has (sorted by name).
    #[command(alias = "services")]
    List,
    /// Show one service's live instances: address, age, time left, leases, source, the
    /// health check each declared and its metadata (key=value pairs).
    #[command(alias = "instances")]
    Show {
        /// The service.
        service: String,
    },
    /// Show the counters (a broker's, or a balancer's with its backends).
    Stats,
    /// Tell the broker an instance does not answer: it checks it and removes it if dead.
    Report {
        /// The service.
        service: String,
        /// The instance, IP:PORT.
        #[arg(value_parser = makler::cli::parse_addr)]
        endpoint: SocketAddr,
    },
    /// Remove a registration at once, by the id it got when it registered.
    Deregister {
        /// The registration's id (a UUID, as the server logged it).
        id: uuid::Uuid,
    },
    /// Watch a service: print its live set now and at every change, until stopped or --count.
    ///
    /// One line each: `seq=N ENDPOINT…`, an instance's metadata after it in brackets; with
    /// --json an object a line (service, seq, instances with their metadata as `show --json`
    /// prints it). The broker pushes the changes; nothing is polled.
    Watch {
        /// The service.
        service: String,
        /// Stop after this many changes (the first line, the live set now, does not count).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Print what the --key-file key gives other tools; asks no broker.
    Key {
        #[command(subcommand)]
        what: KeyCommand,
    },
}

/// `makler key …`.
#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// The DNS face's TSIG key, as `dig -y` takes it: `hmac-sha256:makler-tsig:<base64>`.
    /// Under `--require-key all` a broker's DNS face answers only queries signed with it:
    /// `dig -y "$(makler key dns --key-file PATH)" @BROKER -p PORT _web._tcp.makler SRV`.
    /// The secret is derived from the key file; it signs nothing else.
    Dns,
}

use makler::cli::exit::{BROKER_UNREACHABLE, FAILURE, NOT_FOUND, REFUSED, USAGE};

fn main() -> ExitCode {
    let args = Args::parse();
    makler::cli::init_logging("makler", true);
    if let Command::Key { what: KeyCommand::Dns } = &args.command {
        let Some(key) = &args.multicast.key_file else { return fail(USAGE, "makler key dns needs --key-file PATH") };
        println!("{}", makler::node::dns::tsig::dig_key(key));
        return ExitCode::SUCCESS;
    }
    let brokers = match makler::cli::brokers_or_discover(args.broker.as_ref(), args.multicast.config().as_ref()) {
        Ok(brokers) => brokers,
        Err(e) => return fail(BROKER_UNREACHABLE, &e),
    };
    let mut client = match BrokerClient::new(&brokers) {
        Ok(client) => client,
        Err(e) => return fail(FAILURE, &e.to_string()),
    };
    client.set_policy(RetryPolicy { timeout: args.broker_timeout, ..client.policy() });
    if let Command::Watch { service, count } = &args.command {
        return watch(&brokers, service, *count, &args);
    }
    if let Some(key) = args.multicast.key_file {
        client.set_key(key);
    }
    match run(&mut client, &args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(ClientError::NotFound | ClientError::CatchingUp) => {
            let what = match &args.command {
                Command::Show { service } | Command::Report { service, .. } => format!("service {service:?}"),
                Command::Deregister { id } => format!("registration {id}"),
                _ => "it".into(),
            };
            fail(NOT_FOUND, &format!("{what} is not registered at {}", AddrList(brokers)))
        }
        Err(e @ ClientError::Unreachable(_)) => fail(BROKER_UNREACHABLE, &e.to_string()),
        Err(e @ ClientError::Rejected(_)) => fail(REFUSED, &e.to_string()),
        Err(e) => fail(FAILURE, &e.to_string()),
    }
}

/// `makler watch`: a line now and at every change, until stopped or `count` changes; exits
/// as the other subcommands do (4 when no broker answers, 6 when it refuses).
fn watch(brokers: &[SocketAddr], service: &str, count: Option<u64>, args: &Args) -> ExitCode {
    use makler::client::{Watch, WatchEvent};
    use std::io::Write;
    let print = |watch: &Watch| {
        let line = watch_line(service, watch.seq(), watch.instances(), watch.meta(), args.json);
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}").and_then(|()| stdout.flush())
    };
    let mut watch = match Watch::start_with_meta(brokers, service, args.multicast.key_file) {
        Ok(watch) => watch,
        Err(ClientError::Unreachable(_)) => return fail(BROKER_UNREACHABLE, "no broker answered the watch"),
        Err(e @ ClientError::Rejected(_)) => return fail(REFUSED, &e.to_string()),
        Err(e) => return fail(FAILURE, &e.to_string()),
    };
    // A closed pipe (`| head`) ends it quietly, and ends the watch at the broker (best effort:
    // it expires anyway).
    if print(&watch).is_err() {
        let _ = watch.unwatch();
        return ExitCode::SUCCESS;
    }
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        match watch.next(std::time::Instant::now() + Duration::from_secs(3600)) {
            Ok(Some(WatchEvent::Changed { .. } | WatchEvent::Resynced { .. })) => {
                if print(&watch).is_err() {
                    let _ = watch.unwatch();
                    return ExitCode::SUCCESS;
                }
                printed += 1;
            }
            Ok(None) => {}
            Err(ClientError::Unreachable(_)) => return fail(BROKER_UNREACHABLE, "no broker answered the watch"),
            Err(e @ ClientError::Rejected(_)) => return fail(REFUSED, &e.to_string()),
            Err(e) => return fail(FAILURE, &e.to_string()),
        }
    }
    let _ = watch.unwatch();
    ExitCode::SUCCESS
}

/// One line of `makler watch`: `seq=N ENDPOINT[k=v …] …`, or with `json` an object.
fn watch_line(
    service: &str,
    seq: u64,
    instances: &[SocketAddr],
    meta: &[makler::client::InstanceMeta],
    json: bool,
) -> String {
    let none = Vec::new();
    let meta_of = |i: usize| meta.get(i).unwrap_or(&none);
    if json {
        let list: Vec<_> = instances
            .iter()
            .enumerate()
            .map(|(i, endpoint)| json!({"endpoint": endpoint.to_string(), "meta": pairs_json(meta_of(i))}))
            .collect();
        return json!({"service": service, "seq": seq, "instances": list}).to_string();
    }
    let mut line = format!("seq={seq}");
    for (i, endpoint) in instances.iter().enumerate() {
        line.push_str(&format!(" {endpoint}"));
        let pairs = meta_of(i);
        if !pairs.is_empty() {
            let words: Vec<String> = pairs
                .iter()
                .map(|(key, value)| match value {
                    None => key.clone(),
                    Some(value) => format!("{key}={}", shown_bytes(value)),
                })
                .collect();
            line.push_str(&format!("[{}]", words.join(" ")));
        }
    }
    line
}

/// A watch's metadata pairs as `show --json` prints an instance's `meta`: an object, a key
/// per pair in order, its value a string (`true` for a boolean attribute).
fn pairs_json(pairs: &makler::client::InstanceMeta) -> Value {
    let mut object = serde_json::Map::new();
    for (key, value) in pairs {
        let value = value.as_ref().map_or(json!(true), |bytes| json!(shown_bytes(bytes)));
        object.insert(key.clone(), value);
    }
    Value::Object(object)
}

/// A value as text: itself when UTF-8, else printable ASCII kept and other bytes as `\xHH`.
fn shown_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes
            .iter()
            .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b).to_string() } else { format!("\\x{b:02x}") })
            .collect(),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("makler: {message}");
    ExitCode::from(code)
}

/// Carries out the command; returns what to print.
fn run(client: &mut BrokerClient, args: &Args) -> Result<String, ClientError> {
    let json = args.json;
    Ok(match &args.command {
        Command::List => {
            let mut services = client.services()?;
            services.sort_by(|a, b| a.name.cmp(&b.name));
            if json {
                let list: Vec<_> = services.iter().map(|s| json!({"name": s.name, "instances": s.instances})).collect();
                format!("{}\n", json!({ "services": list }))
            } else {
                let rows = services.iter().map(|s| vec![s.name.clone(), s.instances.to_string()]);
                table(&["SERVICE", "INSTANCES"], rows)
            }
        }
        Command::Show { service } => {
            let mut instances = client.instances(service)?;
            instances.sort_by_key(|i| i.endpoint);
            if json {
                let list: Vec<_> = instances
                    .iter()
                    .map(|i| {
                        json!({
                            "endpoint": i.endpoint.to_string(),
                            "age_ms": i.age_ms,
                            "expires_ms": i.expires_ms,
                            "leases": i.leases,
                            "source": i.source.to_string(),
                            "check": i.check.to_string(),
                            "meta": meta_json(&i.meta),
                        })
                    })
                    .collect();
                format!("{}\n", json!({ "service": service, "instances": list }))
            } else {
                // The META column only when an instance has metadata.
                let with_meta = instances.iter().any(|i| !i.meta.is_empty());
                let rows = instances.iter().map(|i| {
                    let seconds = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
                    let mut row = vec![
                        i.endpoint.to_string(),
                        seconds(i.age_ms),
                        seconds(i.expires_ms),
                        i.leases.to_string(),
                        i.source.to_string(),
                        i.check.to_string(),
                    ];
                    if with_meta {
                        row.push(i.meta.to_string());
                    }
                    row
                });
                let header = ["ENDPOINT", "AGE", "EXPIRES", "LEASES", "SOURCE", "CHECK", "META"];
                table(&header[..if with_meta { 7 } else { 6 }], rows)
            }
        }
        Command::Stats => match client.call(&Request::Stats)? {
            Response::Stats(stats) if json => {
                let lists = [("peers", json_of(&stats.peers)?), ("bridges", json_of(&stats.bridges)?)];
                format!("{}\n", stats_json(&stats.counters, lists))
            }
            Response::BalancerStats(stats) if json => {
                let lists = [
                    ("backends", json_of(&stats.backends)?),
                    ("accepted_per_thread", json!(stats.accepted_per_thread)),
                ];
                format!("{}\n", stats_json(&stats.counters, lists))
            }
            response @ (Response::Stats(_) | Response::BalancerStats(_)) => stats_text(&response),
            other => return Err(unexpected(other)),
        },
        Command::Report { service, endpoint } => {
            client.report(service, *endpoint)?;
            if json { format!("{}\n", json!({"reported": true})) } else { "OK: the broker checks it now\n".into() }
        }
        Command::Deregister { id } => {
            client.deregister(*id)?;
            if json { format!("{}\n", json!({"deregistered": true})) } else { "OK\n".into() }
        }
        // Streams its lines itself (see `watch`); `main` never gets here with it.
        Command::Watch { .. } | Command::Key { .. } => String::new(),
    })
}

/// `stats` as a table, one counter a line (`name  value`, as the text line writes them), then
/// the peers' or backends' lines of the text form.
fn stats_text(response: &Response) -> String {
    let (counters, threads) = match response {
        Response::Stats(stats) => (&stats.counters, None),
        Response::BalancerStats(stats) => {
            let threads: Vec<String> = stats.accepted_per_thread.iter().map(u64::to_string).collect();
            (&stats.counters, Some(("threads", threads.join("/"))))
        }
        _ => return String::new(),
    };
    let rows = stats::text_words(counters).into_iter().chain(threads);
    let mut out = table(&["COUNTER", "VALUE"], rows.map(|(name, value)| vec![name.to_owned(), value]));
    let mut text = Vec::new();
    makler::protocol::text::encode_response(response, &mut text);
    for line in String::from_utf8_lossy(&text).lines().skip(1) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// An instance's metadata in `show --json`: an object, a key per pair in order, its value a
/// string (`true` for a boolean attribute; a value that is not UTF-8 escaped as `\xHH`).
fn meta_json(meta: &makler::meta::Metadata) -> Value {
    let mut object = serde_json::Map::new();
    for pair in meta {
        let value = match (pair.value, pair.value_str()) {
            (None, _) => json!(true),
            (Some(_), Some(text)) => json!(text),
            (Some(_), None) => {
                let shown = pair.to_string();
                json!(shown.split_once('=').map_or("", |(_, value)| value))
            }
        };
        object.insert(pair.key.to_owned(), value);
    }
    Value::Object(object)
}

/// `stats --json`: an object with a key per counter (a flag as a bool), then the lists.
fn stats_json<const N: usize>(counters: &[Counter], lists: [(&str, Value); N]) -> Value {
    let mut object = serde_json::Map::new();
    for c in counters {
        let value = match stats::Shown::of(&c.name) {
            stats::Shown::YesNo => json!(c.value != 0),
            _ => json!(c.value),
        };
        object.insert(c.name.to_string(), value);
    }
    object.extend(lists.map(|(name, list)| (name.to_owned(), list)));
    Value::Object(object)
}

fn json_of<T: serde::Serialize>(list: &T) -> Result<Value, ClientError> {
    serde_json::to_value(list).map_err(io)
}

fn io(e: serde_json::Error) -> ClientError {
    ClientError::Io(std::io::Error::other(e))
}

fn unexpected(response: Response) -> ClientError {
    match response {
        Response::NotFound => ClientError::NotFound,
        Response::CatchingUp => ClientError::CatchingUp,
        Response::Error(rejection) => ClientError::Rejected(rejection),
        other => ClientError::Protocol(format!("unexpected reply {other:?}")),
    }
}

/// Columns padded to their widest cell, the last one not padded.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    all.extend(rows);
    let mut widths = vec![0; header.len()];
    for row in &all {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &all {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}
