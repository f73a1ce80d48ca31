//! `makler-client`: asks the broker for a service and talks to one of its servers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use makler::cli::AddrList;
use makler::client::{ClientError, ConnectError, Resolver};

/// Asks a makler broker where SERVICE lives, connects to one of its servers, sends MESSAGE (or
/// each line of standard input) and prints each answer line.
///
/// A server that does not accept the connection is skipped for the next one the broker named.
///
/// With --watch SERVICE it calls nobody: it watches SERVICE at the broker and prints a line for
/// its live instances now and for each change (`seq=N ip:port ...`; JSON with --json) until
/// stopped, or until --count changes were printed.
///
/// Exit codes: 0 answered, 2 bad usage, 3 service not registered, 4 no broker answered,
/// 5 no server of the service could be reached or it did not answer, 6 the broker refused,
/// 1 anything else.
#[derive(Debug, Parser)]
#[command(name = "makler-client", version = makler::version!(), max_term_width = 100)]
struct Args {
    /// Broker address; a comma-separated list fails over from one to the next. Without it, the
    /// brokers are found on the multicast group.
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    broker: Option<AddrList>,

    #[command(flatten)]
    multicast: makler::cli::MulticastArgs,

    /// Wait up to this many seconds for the service to be registered.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
    wait: Option<Duration>,

    /// Seconds to wait for each answer from the server. `--timeout` is its old spelling.
    #[arg(long, alias = "timeout", value_name = "SECONDS", default_value = "5", allow_negative_numbers = true, value_parser = makler::cli::parse_seconds)]
    server_timeout: Duration,

    /// Speak HTTP: send `GET PATH` and print the response body (for `makler-server --service http`).
    #[arg(long, value_name = "PATH")]
    http: Option<String>,

    /// Log only warnings and errors unless RUST_LOG says otherwise.
    #[arg(long, short)]
    quiet: bool,

    /// Watch this service instead of calling it: print its live instances now and at every
    /// change.
    #[arg(long, value_name = "SERVICE", conflicts_with_all = ["service", "http", "wait"])]
    watch: Option<String>,

    /// With --watch: print each line as JSON (`{"service":…,"seq":…,"instances":[…]}`).
    #[arg(long, requires = "watch")]
    json: bool,

    /// With --watch: stop after this many changes (the first line does not count).
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,

    /// The service to call.
    #[arg(required_unless_present = "watch")]
    service: Option<String>,

    /// The message to send (the words are joined with spaces); without it, each line of
    /// standard input is sent in turn.
    message: Vec<String>,
}

use makler::cli::exit::{BROKER_UNREACHABLE, FAILURE, NOT_FOUND, REFUSED, SERVER_UNREACHABLE};

fn main() -> ExitCode {
    let args = Args::parse();
    makler::cli::init_logging("makler-client", args.quiet);
    let brokers = match makler::cli::brokers_or_discover(args.broker.as_ref(), args.multicast.config().as_ref()) {
        Ok(brokers) => brokers,
        Err(e) => return fail(BROKER_UNREACHABLE, &e),
    };
    let broker_list = AddrList(brokers.clone());
    if let Some(service) = &args.watch {
        return watch(&brokers, service, &args);
    }
    let service = args.service.clone().unwrap_or_default();
    let mut resolver = match Resolver::new(&brokers) {
        Ok(resolver) => resolver,
        Err(e) => return fail(FAILURE, &e.to_string()),
    };
    if let Some(key) = args.multicast.key_file {
        resolver.client().set_key(key);
    }
    let (stream, server) = match resolver.connect(&service, args.wait) {
        Ok(found) => found,
        Err(ConnectError::NotFound(service)) => {
            return fail(NOT_FOUND, &format!("service {service:?} is not registered at broker {broker_list}"));
        }
        Err(ConnectError::Broker(ClientError::Unreachable(brokers))) => {
            let list: Vec<String> = brokers.iter().map(ToString::to_string).collect();
            return fail(BROKER_UNREACHABLE, &format!("no broker answered ({})", list.join(", ")));
        }
        Err(ConnectError::Broker(ClientError::Rejected(rejection))) => {
            return fail(REFUSED, &format!("the broker refused: {rejection}"));
        }
        Err(e @ ConnectError::AllFailed { .. }) => return fail(SERVER_UNREACHABLE, &e.to_string()),
        Err(e) => return fail(FAILURE, &e.to_string()),
    };
    let result = match &args.http {
        Some(path) => http(stream, server, path, args.server_timeout),
        None => lines(stream, &args, args.server_timeout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // What a read timeout looks like: "Resource temporarily unavailable" says nothing.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => fail(
            SERVER_UNREACHABLE,
            &format!(
                "server {server} accepted the connection but did not answer within {} s (--server-timeout)",
                args.server_timeout.as_secs_f64()
            ),
        ),
        Err(e) => fail(SERVER_UNREACHABLE, &format!("server {server}: {e}")),
    }
}

/// `--watch`: a line now and at every change, until stopped or `count` changes.
fn watch(brokers: &[std::net::SocketAddr], service: &str, args: &Args) -> ExitCode {
    let (json, count) = (args.json, args.count);
    use makler::client::{Watch, WatchEvent};
    let print = |seq: u64, instances: &[std::net::SocketAddr]| {
        let line = if json {
            serde_json::json!({"service": service, "seq": seq, "instances": instances}).to_string()
        } else {
            let mut line = format!("seq={seq}");
            for instance in instances {
                line.push_str(&format!(" {instance}"));
            }
            line
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}").and_then(|()| stdout.flush())
    };
    let mut watch = match Watch::start_keyed(brokers, service, args.multicast.key_file) {
        Ok(watch) => watch,
        Err(ClientError::Unreachable(_)) => return fail(BROKER_UNREACHABLE, "no broker answered the watch"),
        Err(ClientError::Rejected(rejection)) => return fail(REFUSED, &format!("the broker refused: {rejection}")),
        Err(e) => return fail(FAILURE, &e.to_string()),
    };
    if print(watch.seq(), watch.instances()).is_err() {
        let _ = watch.unwatch();
        return ExitCode::SUCCESS;
    }
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        match watch.next(std::time::Instant::now() + Duration::from_secs(3600)) {
            Ok(Some(WatchEvent::Changed { seq, instances } | WatchEvent::Resynced { seq, instances })) => {
                // A closed pipe (`| head`) ends it quietly.
                if print(seq, &instances).is_err() {
                    let _ = watch.unwatch();
                    return ExitCode::SUCCESS;
                }
                printed += 1;
            }
            Ok(None) => {}
            Err(ClientError::Unreachable(_)) => return fail(BROKER_UNREACHABLE, "no broker answered the watch"),
            Err(e) => return fail(FAILURE, &e.to_string()),
        }
    }
    // Done: the broker need not keep telling (best effort; the watch expires anyway).
    let _ = watch.unwatch();
    ExitCode::SUCCESS
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("makler-client: {message}");
    ExitCode::from(code)
}

fn lines(stream: TcpStream, args: &Args, timeout: Duration) -> std::io::Result<()> {
    stream.set_read_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut send = |message: &str| -> std::io::Result<()> {
        writer.write_all(message.as_bytes())?;
        writer.write_all(b"\n")?;
        let mut answer = String::new();
        if reader.read_line(&mut answer)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed the connection"));
        }
        print!("{answer}");
        std::io::stdout().flush()
    };
    if args.message.is_empty() {
        for line in std::io::stdin().lock().lines() {
            send(&line?)?;
        }
        Ok(())
    } else {
        send(&args.message.join(" "))
    }
}

fn http(mut stream: TcpStream, server: std::net::SocketAddr, path: &str, timeout: Duration) -> std::io::Result<()> {
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(&response) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(std::io::Error::other("the response ended inside its head")),
        Err(e) => return Err(std::io::Error::other(format!("malformed response head: {e}"))),
    };
    if (head.version, head.code) != (Some(1), Some(200)) {
        let line = response.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
        return Err(std::io::Error::other(format!("answered {}", String::from_utf8_lossy(line))));
    }
    print!("{}", String::from_utf8_lossy(&response[head_len..]));
    Ok(())
}
