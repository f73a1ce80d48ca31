//! The config file layer (`--config PATH`) of the long-running programs, over any clap
//! [`Parser`]: a TOML file whose keys are the program's long flag names, so that everything a
//! flag can say a file can say, in the same words, checked by the same value parsers.
//!
//! ```toml
//! listen = "127.0.0.1:7000"
//! ttl = 60
//! peers = ["127.0.0.1:7001", "127.0.0.1:7002"]
//! allow-register = ["10.0.0.0/8"]
//! quiet = true
//! ```
//!
//! How a file becomes arguments: each key is looked up among the command's long flags (an
//! unknown key is refused with the file and line; `config`, `check-config`, `help` and `version`
//! cannot be set from a file); its value becomes `--key=value` tokens: strings and integers
//! as written, floats with their point (`2.0`, `inf`), `true` for a flag (`quiet = true`:
//! `--quiet`; `false`: absent; a boolean is no value of any other flag), an array
//! as the flag's list form (comma-joined for a list flag such as `--peers`, whose value --help
//! shows as `ADDR[,ADDR…]`, an item holding a comma refused; one `--key=item` each for a
//! repeated one such as makler-server's `--meta`; an empty array is absent, but `--key=none`
//! for a list flag whose value name ends in `|none`, such as `--rate-limit-exempt`, whose default
//! is not empty; any other flag takes no array). Every flag the command line gives (by its long name, `--x=y`, an alias or its
//! short form) drops that key's tokens, so the command line wins, and a list on it replaces
//! the file's rather than adding to it. clap then parses `[program, file tokens…, command-line
//! tokens…]`, so a value from the file goes through the flag's own parser, and a bad one is
//! reported with the key, the file and the line.
//!
//! [`parse`] is what `main` calls; [`reparse`] is what a reload calls with the same argv.
//! `--check-config` is left to each program (see [`ConfigArgs::check_config`] and
//! [`report_check`]): only it knows the checks it makes before it binds its sockets.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, Parser};

/// The flags every long-running program takes for its configuration (flattened into its
/// `Args`), so that they are spelled and explained alike everywhere.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Read settings from this TOML file. Its keys are the long flag names (`listen =
    /// "127.0.0.1:7000"`, `ttl = 60`, `peers = ["127.0.0.1:7001", "127.0.0.1:7002"]`, `quiet =
    /// true`); a flag given on the command line overrides the file's value for it (a list
    /// replaces the file's list). A regular file: a FIFO, a directory or a device is refused.
    /// See OPERATIONS.md, and dist/config for examples.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Check the flags and the --config file (addresses, policies, lists, …) as a start would,
    /// print `config ok` or each problem, and exit (0, or 2 on a problem) without binding
    /// anything.
    #[arg(long)]
    pub check_config: bool,

    /// What to log: a level (error, warn, info, debug, trace) or an env_logger filter such as
    /// `makler=debug` or `warn,makler::broker=debug`. Overrides RUST_LOG when given; --quiet
    /// still keeps registrations out of the log.
    #[arg(long, value_name = "LEVEL", value_parser = super::parse_log_filter)]
    pub log_level: Option<String>,
}

/// Keys a file may not set: they say which file to read, or ask for a one-off answer.
const REFUSED_KEYS: [&str; 4] = ["config", "check-config", "help", "version"];

/// Parses the program's arguments (`std::env::args_os`) and the `--config` file they name into
/// `A`, as described in the [module docs](self). Call it in `main` instead of `A::parse()`.
///
/// `--help` and `--version` are answered as clap answers them (even with a broken file). Any
/// error (a flag's, the file's: unreadable, not TOML, an unknown key, a bad value) is printed
/// on stderr, naming the key, the file and the line where it comes from the file, and the
/// process exits with [`super::exit::USAGE`] (2). `--check-config` is not acted on here: the
/// program reads [`ConfigArgs::check_config`] once its own checks are done.
pub fn parse<A: Parser>() -> A {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match resolve::<A>(&argv, read_file) {
        Ok(args) => args,
        Err(Failure::Clap(e)) => e.exit(),
        Err(Failure::File(message)) => {
            eprintln!("{}: {message}", A::command().get_name());
            std::process::exit(i32::from(super::exit::USAGE))
        }
    }
}

/// Parses `argv` (the program's name first, as [`std::env::args_os`] gives it) and re-reads
/// the `--config` file it names, with the same rules as [`parse`]: what a reload calls to
/// learn the new settings (keep `std::env::args_os().collect::<Vec<_>>()` from the start, and
/// pass it again). An error (or a `--help` in `argv`) is returned as the message [`parse`]
/// would print, without the program's name, never an exit, so that a bad file leaves the
/// running settings alone. The new log filter is then
/// `cli::log_filter(args.quiet, args.config.log_level.as_deref())`, for [`super::set_log_level`].
pub fn reparse<A: Parser>(argv: &[OsString]) -> Result<A, String> {
    resolve::<A>(argv, read_file).map_err(|failure| match failure {
        Failure::Clap(e) => e.render().to_string().trim_start_matches("error: ").trim_end().to_owned(),
        Failure::File(message) => message,
    })
}

/// For `--check-config`: prints `config ok` on stdout when `problems` is empty, else each
/// problem on a line of its own on stderr (`program: problem`), and returns the exit code to
/// leave with (0, or [`super::exit::USAGE`]).
pub fn report_check(program: &str, problems: &[String]) -> std::process::ExitCode {
    if problems.is_empty() {
        println!("config ok");
        return std::process::ExitCode::SUCCESS;
    }
    for problem in problems {
        eprintln!("{program}: {problem}");
    }
    std::process::ExitCode::from(super::exit::USAGE)
}

/// Why [`resolve`] failed: clap's own error (printed and exited with as clap does), or one
/// about the file.
#[derive(Debug)]
enum Failure {
    Clap(clap::Error),
    File(String),
}

/// The longest config file read: far beyond any real one, and a bound on what a wrong path
/// (`/dev/zero`, a log file) can make the program hold.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads the config file at `path`, refusing anything but a regular file (see [`regular`]).
fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    // Looked at before it is opened, so that a device is not even opened (opening some does
    // something); then opened without blocking and looked at again through the descriptor, in
    // case the path changed in between: a FIFO opened so returns at once, writer or not.
    regular(&std::fs::metadata(path)?)?;
    let mut file = open_nonblocking(path)?;
    regular(&file.metadata()?)?;
    let mut text = String::new();
    (&mut file).take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "longer than {} KiB, too long for a config file",
            MAX_FILE_BYTES / 1024
        )));
    }
    Ok(text)
}

/// Opens `path` for reading without waiting for anything: a FIFO without a writer, or a device,
/// would otherwise block the open (and the program with it). Reads from a regular file are the
/// same either way.
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

/// Refuses what is not a regular file (after symbolic links): reading a FIFO waits for a writer
/// that may never come, a directory cannot be read, and a device (a terminal, `/dev/zero`) is
/// no settings file; each would block the start or a reload, or read nonsense.
fn regular(metadata: &std::fs::Metadata) -> std::io::Result<()> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let what = if kind.is_dir() {
        "a directory"
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_socket() {
                "a socket"
            } else if kind.is_char_device() || kind.is_block_device() {
                "a device"
            } else {
                "not a file"
            }
        }
        #[cfg(not(unix))]
        {
            "not a file"
        }
    };
    Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}, not a regular file")))
}

/// [`parse`] and [`reparse`], with the file read by `read` (tests give text).
fn resolve<A: Parser>(argv: &[OsString], read: impl Fn(&Path) -> std::io::Result<String>) -> Result<A, Failure> {
    let mut cmd = A::command();
    cmd.build();
    let given = scan(&cmd, argv);
    // `--config` twice is clap's error to give, before either file is read.
    let path = match (&given.config, given.help_or_version || given.configs > 1) {
        (Some(path), false) => PathBuf::from(path),
        _ => return A::try_parse_from(argv).map_err(Failure::Clap),
    };
    let shown = path.display().to_string();
    let text = read(&path).map_err(|e| Failure::File(format!("cannot read the config file {shown}: {e}")))?;
    let entries = file_entries(&cmd, &shown, &text).map_err(Failure::File)?;
    let overridden = overridden(&cmd, &given.ids);
    let from_file: BTreeMap<String, Entry> = entries
        .into_iter()
        .filter(|entry| !overridden.contains(&entry.id))
        .map(|entry| (entry.key.clone(), entry))
        .collect();
    // The program's name, the file's tokens (but `without`'s), then the command line's.
    let tokens = |without: Option<&str>| {
        let mut tokens: Vec<OsString> = argv.iter().take(1).cloned().collect();
        if tokens.is_empty() {
            tokens.push(cmd.get_name().into());
        }
        for (key, entry) in &from_file {
            if without != Some(key.as_str()) {
                tokens.extend(entry.tokens.iter().map(OsString::from));
            }
        }
        tokens.extend(argv.iter().skip(1).cloned());
        tokens
    };
    let mut matches = cmd.clone().try_get_matches_from(tokens(None)).map_err(|e| {
        if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
            requirer(&cmd, e, &from_file, &shown, tokens)
        } else {
            blame(e, &from_file, &shown)
        }
    })?;
    A::from_arg_matches_mut(&mut matches).map_err(|e| blame(e.with_cmd(&cmd), &from_file, &shown))
}

/// For a missing required flag: the file's key that requires it (`proxy-timeout` without
/// `accept-proxy`), found as the first key without which the flag is no longer missing, and
/// named with its line; else clap's error as it is (a `--service` nothing gives).
fn requirer(
    cmd: &Command,
    error: clap::Error,
    from_file: &BTreeMap<String, Entry>,
    file: &str,
    tokens: impl Fn(Option<&str>) -> Vec<OsString>,
) -> Failure {
    let missing = |error: &clap::Error| -> Vec<String> {
        match error.get(clap::error::ContextKind::InvalidArg) {
            Some(clap::error::ContextValue::Strings(args)) => args.clone(),
            Some(clap::error::ContextValue::String(arg)) => vec![arg.clone()],
            _ => Vec::new(),
        }
    };
    let before = missing(&error);
    for (key, entry) in from_file {
        let after = match cmd.clone().try_get_matches_from(tokens(Some(key))) {
            Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => missing(&e),
            _ => Vec::new(),
        };
        let needs: Vec<&str> =
            before.iter().filter(|arg| !after.contains(arg)).map(|arg| arg.split(' ').next().unwrap_or(arg)).collect();
        if !needs.is_empty() {
            return Failure::File(format!(
                "{file}:{}: {key}: needs {} as well (in the file or on the command line)",
                entry.line,
                needs.join(", ")
            ));
        }
    }
    Failure::Clap(error)
}

/// The args whose values in the file the command line overrides: those it gives, and those
/// that conflict with one it gives, either way (a file's `broker` and a command line's
/// `--no-register`), so that the command line wins rather than clashes with the file.
fn overridden(cmd: &Command, given: &HashSet<String>) -> HashSet<String> {
    let mut overridden = given.clone();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let conflicts: Vec<&str> = cmd.get_arg_conflicts_with(arg).iter().map(|a| a.get_id().as_str()).collect();
        if given.contains(id) {
            overridden.extend(conflicts.into_iter().map(str::to_owned));
        } else if conflicts.iter().any(|c| given.contains(*c)) {
            overridden.insert(id.to_owned());
        }
    }
    overridden
}

/// clap's error, or, when it is about a flag whose value came from the file, a message that
/// names the key, the file and its line.
fn blame(error: clap::Error, from_file: &BTreeMap<String, Entry>, file: &str) -> Failure {
    use clap::error::{ContextKind, ContextValue};
    let arg = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.clone(),
        Some(ContextValue::Strings(args)) => args.first().cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let long = arg.strip_prefix("--").map(|rest| rest.split([' ', '=']).next().unwrap_or(rest));
    match long.and_then(|long| from_file.get(long)) {
        Some(entry) => {
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ");
            // On the same line: the values a flag takes, and clap's guess at the one meant.
            let hints = rendered.lines().skip(1).map(str::trim).filter(|line| {
                line.starts_with("[possible values: ") || line.starts_with("tip: a similar value exists")
            });
            let hints: String = hints.map(|hint| format!(" {hint}")).collect();
            Failure::File(format!("{file}:{}: {}: {first}{hints}", entry.line, entry.key))
        }
        None => Failure::Clap(error),
    }
}

/// What the command line itself gives: the ids of the args it sets, the `--config` path, and
/// whether it asks for help or the version.
#[derive(Debug, Default)]
struct Given {
    ids: HashSet<String>,
    config: Option<OsString>,
    configs: usize,
    help_or_version: bool,
}

/// Reads `argv` (program name first) as clap will, far enough to know which args it sets.
fn scan(cmd: &Command, argv: &[OsString]) -> Given {
    let mut given = Given::default();
    let mut tokens = argv.iter().skip(1);
    while let Some(os_token) = tokens.next() {
        if os_token == "--" {
            break;
        }
        if let Some((name, inline)) = split_long(os_token) {
            let Some(arg) = cmd.get_arguments().find(|arg| by_long(arg, &name)) else { continue };
            let value = if takes_value(arg) && inline.is_none() { tokens.next().cloned() } else { inline };
            given.note(arg, value);
        } else if let Some(shorts) = os_token.to_str().and_then(|token| token.strip_prefix('-')) {
            for (at, c) in shorts.char_indices() {
                let Some(arg) = cmd.get_arguments().find(|arg| by_short(arg, c)) else { break };
                if takes_value(arg) {
                    let rest = &shorts[at + c.len_utf8()..];
                    let rest = rest.strip_prefix('=').unwrap_or(rest);
                    let value = if rest.is_empty() { tokens.next().cloned() } else { Some(rest.into()) };
                    given.note(arg, value);
                    break;
                }
                given.note(arg, None);
            }
        }
    }
    given
}

/// A `--name` or `--name=value` token as its name and inline value, the value taken as it is
/// (a path need not be UTF-8: `--config=/etc/<non-UTF-8>.toml`).
fn split_long(token: &std::ffi::OsStr) -> Option<(String, Option<OsString>)> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let rest = token.as_bytes().strip_prefix(b"--")?;
        let (name, value) = match rest.iter().position(|&b| b == b'=') {
            Some(at) => (&rest[..at], Some(std::ffi::OsStr::from_bytes(&rest[at + 1..]).to_owned())),
            None => (rest, None),
        };
        Some((std::str::from_utf8(name).ok()?.to_owned(), value))
    }
    #[cfg(not(unix))]
    {
        let rest = token.to_str()?.strip_prefix("--")?;
        Some(match rest.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.into())),
            None => (rest.to_owned(), None),
        })
    }
}

impl Given {
    fn note(&mut self, arg: &Arg, value: Option<OsString>) {
        let id = arg.get_id().as_str();
        match id {
            "help" | "version" => self.help_or_version = true,
            _ if arg.get_long() == Some("config") => {
                self.config = value;
                self.configs += 1;
            }
            _ => {}
        }
        self.ids.insert(id.to_owned());
    }
}

fn by_long(arg: &Arg, name: &str) -> bool {
    arg.get_long() == Some(name) || arg.get_all_aliases().is_some_and(|aliases| aliases.contains(&name))
}

fn by_short(arg: &Arg, c: char) -> bool {
    arg.get_short() == Some(c) || arg.get_all_short_aliases().is_some_and(|aliases| aliases.contains(&c))
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

/// One key of the file, turned into the tokens that say the same on a command line.
#[derive(Debug)]
struct Entry {
    key: String,
    line: usize,
    id: String,
    tokens: Vec<String>,
}

/// Reads the file's keys into [`Entry`]s, refusing what no flag of `cmd` means.
fn file_entries(cmd: &Command, file: &str, text: &str) -> Result<Vec<Entry>, String> {
    type Table = BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>;
    let table: Table = toml::from_str(text).map_err(|e| format!("{file}: {}", e.to_string().trim_end()))?;
    let line_of = |at: usize| text[..at.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1;
    let mut entries = Vec::new();
    for (key, value) in table {
        let line = line_of(key.span().start);
        let key = key.into_inner();
        if REFUSED_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "{file}:{line}: `{key}` cannot be set in a config file (give --{key} on the command line)"
            ));
        }
        let arg = cmd
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()) && !arg.is_positional())
            .ok_or_else(|| {
                format!("{file}:{line}: unknown key `{key}` (the keys are the long flag names, as --help lists them)")
            })?;
        let tokens = tokens(arg, &key, value.get_ref()).map_err(|e| format!("{file}:{line}: {key}: {e}"))?;
        entries.push(Entry { key, line, id: arg.get_id().as_str().to_owned(), tokens });
    }
    Ok(entries)
}

/// The command-line tokens saying what `value` says for `arg` (see the module docs).
fn tokens(arg: &Arg, key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            toml::Value::Boolean(true) => Ok(vec![format!("--{key}")]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!("expected true or false, not {}", describe(other))),
        },
        ArgAction::Count => match value {
            toml::Value::Integer(n @ 0..=255) => Ok(vec![format!("--{key}"); *n as usize]),
            other => Err(format!("expected a count (0 to 255), not {}", describe(other))),
        },
        ArgAction::Append => match value {
            toml::Value::Array(items) => {
                items.iter().map(|item| scalar(arg, item).map(|text| format!("--{key}={text}"))).collect()
            }
            other => Ok(vec![format!("--{key}={}", scalar(arg, other)?)]),
        },
        ArgAction::Set => match value {
            toml::Value::Array(_) if !is_list(arg) => {
                Err("expected one value, not a list (only a flag whose value --help shows as `X[,X…]` takes one)"
                    .into())
            }
            toml::Value::Array(items) if items.is_empty() && takes_none(arg) => Ok(vec![format!("--{key}=none")]),
            toml::Value::Array(items) if items.is_empty() => Ok(Vec::new()),
            toml::Value::Array(items) => {
                let items = items.iter().map(|item| scalar(arg, item)).collect::<Result<Vec<_>, _>>()?;
                // Joined with commas, an item holding one would silently become two.
                if let Some(item) = items.iter().find(|item| item.contains(',')) {
                    return Err(format!("the list item {item:?} holds a comma: give each value as an item of its own"));
                }
                Ok(vec![format!("--{key}={}", items.join(","))])
            }
            other => Ok(vec![format!("--{key}={}", scalar(arg, other)?)]),
        },
        _ => Err("cannot be set in a config file".to_owned()),
    }
}

/// Whether a single-valued flag takes a comma-separated list (`--peers A,B`): the value name
/// --help shows says so (`ADDR[,ADDR…]`), as every list flag's does.
fn is_list(arg: &Arg) -> bool {
    arg.get_value_names().is_some_and(|names| names.iter().any(|name| name.as_str().contains("[,")))
}

/// Whether a list flag has an empty form, `none` (its value name ends in `|none`, as
/// `--rate-limit-exempt CIDR[,CIDR…]|none`): a list whose default is not empty, so that `[]`
/// says `none` rather than leave the default.
fn takes_none(arg: &Arg) -> bool {
    arg.get_value_names().is_some_and(|names| names.iter().any(|name| name.as_str().ends_with("|none")))
}

/// A value as a flag would spell it: a float keeps its point (`2.0`, `inf`, `NaN`), so that
/// a flag taking a whole number refuses it; a boolean only for a flag whose values are `true`
/// and `false`; a date or time never (no flag takes one).
fn scalar(arg: &Arg, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(format!("{x:?}")),
        toml::Value::Boolean(b) if takes_booleans(arg) => Ok(b.to_string()),
        other => Err(format!("expected a string, a number or a list of them, not {}", describe(other))),
    }
}

/// Whether `arg`'s values are `true` and `false` (clap's bool parser), so that a TOML boolean
/// says something to it rather than the string "true".
fn takes_booleans(arg: &Arg) -> bool {
    let values = arg.get_possible_values();
    ["true", "false"].iter().all(|b| values.iter().any(|value| value.matches(b, false)))
}

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::Array(_) => "a list".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
        toml::Value::String(text) => format!("string {text:?}"),
        toml::Value::Integer(n) => format!("integer {n}"),
        toml::Value::Float(x) => format!("float {x:?}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        toml::Value::Datetime(time) => format!("datetime {time}"),
    }
}

#[cfg(test)]
mod tests;
