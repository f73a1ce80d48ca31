//! The programs' one log format, and the filter that `--log-level` sets and a reload changes
//! while the program runs.

/// Sets up the program's one logger: [`log`] records go to stderr as
///
/// ```text
/// 2026-11-24T09:13:51.123Z INFO  makler-broker: registered echo 127.0.0.1:4000 id=…
/// ```
///
/// (RFC 3339 UTC time with milliseconds, the level, `program`, the message). `RUST_LOG` filters
/// them when it is set (`RUST_LOG=makler::broker=debug`, `RUST_LOG=warn`; targets are the
/// library's module paths); otherwise `info` and above are written, or `warn` and above when
/// `quiet`. Stdout stays the program's own. Call it once, first thing in `main`; a second call
/// changes nothing.
pub fn init_logging(program: &'static str, quiet: bool) {
    init_logging_at(program, &log_filter(quiet, None));
}

/// [`init_logging`] for the programs that take `--log-level` (see [`ConfigArgs`](super::ConfigArgs)): `filter`, as
/// [`log_filter`] works it out, is what is logged, and [`set_log_level`] can change it later.
pub fn init_logging_at(program: &'static str, filter: &str) {
    let logger = Switchable::new(program, filter, || env_logger::Target::Stderr);
    if LOGGER.set(logger).is_err() {
        return;
    }
    if let Some(logger) = LOGGER.get() {
        if log::set_logger(logger).is_ok() {
            log::set_max_level(logger.current.load().filter());
            log::debug!("logging with the filter {filter:?}");
        }
    }
}

/// The filter a program logs with: `--log-level` when given, else `RUST_LOG` when set, else
/// `info` (`warn` when `quiet`). What a reload passes to [`set_log_level`], too.
pub fn log_filter(quiet: bool, log_level: Option<&str>) -> String {
    match (log_level, std::env::var("RUST_LOG")) {
        (Some(level), _) => level.to_owned(),
        (None, Ok(env)) if !env.trim().is_empty() => env,
        _ => if quiet { "warn" } else { "info" }.to_owned(),
    }
}

/// Changes what the running program logs to `filter` (a level, or an env_logger filter such as
/// `makler=debug`), as a reload does on SIGHUP: records already on their way are unaffected,
/// and [`log::max_level`] follows, so that disabled levels stay cheap (two calls at once
/// leave the later one's filter and cut-off together). An error when `filter`
/// does not parse, or when the program set up no logger with [`init_logging`].
pub fn set_log_level(filter: &str) -> Result<(), String> {
    parse_log_filter(filter)?;
    LOGGER.get().ok_or("logging is not set up")?.switch(filter);
    Ok(())
}

/// Checks a log filter as `--log-level` takes it: env_logger's syntax (`debug`,
/// `makler=debug`, `warn,makler::broker=trace`), nothing dropped silently, and a target always
/// with its level.
///
/// ```
/// assert!(makler::cli::parse_log_filter("warn,makler::broker=debug").is_ok());
/// assert!(makler::cli::parse_log_filter("loud").unwrap_err().contains("loud"));
/// ```
pub fn parse_log_filter(filter: &str) -> Result<String, String> {
    let filter = filter.trim();
    if filter.is_empty() {
        return Err("empty; expected a level (error, warn, info, debug, trace) or a filter such as makler=debug".into());
    }
    let hint = "expected a level (error, warn, info, debug, trace) or a filter such as makler=debug";
    env_filter::Builder::new().try_parse(filter).map_err(|e| format!("{filter:?}: {e}; {hint}"))?;
    // env_logger reads a bare word as a target to log at every level, so that a mistyped level
    // (`verbose`) would silently log nothing: a target takes its level after `=` here.
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    let directives = filter.split(',').map(str::trim).filter(|d| !d.is_empty());
    if let Some(word) =
        directives.filter(|d| !d.contains('=')).find(|d| !levels.contains(&d.to_ascii_lowercase().as_str()))
    {
        return Err(format!("{word:?} is not a level; {hint} (a target takes its level after =)"));
    }
    Ok(filter.to_owned())
}

/// The process's logger, installed by [`init_logging_at`].
static LOGGER: std::sync::OnceLock<Switchable> = std::sync::OnceLock::new();

/// A logger whose filter can change while the program runs: env_logger's [`Logger`] (which
/// fixes its filter when built), rebuilt with the new filter and swapped in whole, so that a
/// record is never logged by half of one and half of the other and logging takes no lock.
///
/// [`Logger`]: env_logger::Logger
struct Switchable {
    program: &'static str,
    target: fn() -> env_logger::Target,
    current: arc_swap::ArcSwap<env_logger::Logger>,
    /// Held by [`Switchable::switch`] (never by logging), so that two switches at once cannot
    /// leave one's logger with the other's [`log::max_level`].
    switching: std::sync::Mutex<()>,
    /// [`log::set_max_level`] (a test watches it instead).
    set_max: fn(log::LevelFilter),
}

impl Switchable {
    fn new(program: &'static str, filter: &str, target: fn() -> env_logger::Target) -> Self {
        let current = arc_swap::ArcSwap::from_pointee(Self::build(program, filter, target));
        Switchable { program, target, current, switching: std::sync::Mutex::new(()), set_max: log::set_max_level }
    }

    fn build(program: &'static str, filter: &str, target: fn() -> env_logger::Target) -> env_logger::Logger {
        env_logger::Builder::new().parse_filters(filter).format(log_line(program)).target(target()).build()
    }

    /// Logs by `filter` from now on.
    fn switch(&self, filter: &str) {
        let logger = Self::build(self.program, filter, self.target);
        let max = logger.filter();
        // A panic elsewhere leaves nothing half done here: the lock guards no data.
        let _switching = self.switching.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.current.store(std::sync::Arc::new(logger));
        (self.set_max)(max);
    }
}

impl log::Log for Switchable {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.current.load().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        self.current.load().log(record);
    }

    fn flush(&self) {
        self.current.load().flush();
    }
}

/// The format of [`init_logging`]: one line per record.
fn log_line(
    program: &'static str,
) -> impl Fn(&mut env_logger::fmt::Formatter, &log::Record<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    move |out, record| {
        use std::io::Write;
        let time = out.timestamp_millis();
        writeln!(out, "{time} {:<5} {program}: {}", record.level(), record.args())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A log target that keeps what is written to it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Logs `records` through the format of `init_logging` and returns the lines written.
    fn lines(records: &[(log::Level, &str)]) -> Vec<String> {
        let captured = Captured::default();
        let logger = env_logger::Builder::new()
            .format(super::log_line("makler-test"))
            .filter_level(log::LevelFilter::Trace)
            .target(env_logger::Target::Pipe(Box::new(captured.clone())))
            .build();
        for (level, message) in records {
            log::Log::log(
                &logger,
                &log::Record::builder().level(*level).target("makler::broker").args(format_args!("{message}")).build(),
            );
        }
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines().map(str::to_owned).collect()
    }

    /// What the switchable logger of the test below wrote.
    static SWITCHED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    struct ToSwitched;

    impl Write for ToSwitched {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            SWITCHED.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_filter_changes_at_run_time() {
        let logger = super::Switchable::new("makler-test", "info", || env_logger::Target::Pipe(Box::new(ToSwitched)));
        let log = |level, message: &str| {
            log::Log::log(
                &logger,
                &log::Record::builder().level(level).target("makler::broker").args(format_args!("{message}")).build(),
            );
        };
        log(log::Level::Debug, "hidden");
        log(log::Level::Info, "shown");
        logger.switch("warn,makler::broker=debug");
        assert_eq!(log::max_level(), log::LevelFilter::Debug, "the global cut-off follows");
        log(log::Level::Debug, "now shown");
        logger.switch("error");
        log(log::Level::Warn, "hidden again");
        let text = String::from_utf8(SWITCHED.lock().unwrap().clone()).unwrap();
        let messages: Vec<&str> = text.lines().map(|line| line.split_once(": ").unwrap().1).collect();
        assert_eq!(messages, ["shown", "now shown"]);
        assert!(super::set_log_level("loud").unwrap_err().contains("\"loud\""), "a bad filter is refused");
    }

    /// The last level [`slow_set_max`] set, as a `usize`.
    static SLOW_MAX: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    /// Set when the first `Trace` is inside [`slow_set_max`].
    static SLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    /// Set when the other switch has returned.
    static OTHER_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// A `set_max_level` whose first `Trace` waits, as a switching thread preempted between its
    /// two steps would, until the other switch is done: at once where nothing keeps the other
    /// switch out, and for a second (then it goes on) where the switching lock does.
    fn slow_set_max(level: log::LevelFilter) {
        use std::sync::atomic::Ordering;
        if level == log::LevelFilter::Trace && !SLOWED.swap(true, Ordering::SeqCst) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while !OTHER_DONE.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        SLOW_MAX.store(level as usize, Ordering::SeqCst);
    }

    #[test]
    fn two_switches_at_once_leave_the_cut_off_of_the_logger_in_place() {
        use std::sync::atomic::Ordering;
        let mut logger =
            super::Switchable::new("makler-test", "error", || env_logger::Target::Pipe(Box::new(std::io::sink())));
        logger.set_max = slow_set_max;
        std::thread::scope(|scope| {
            scope.spawn(|| logger.switch("trace"));
            // The other switch starts once the first is between its two steps.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !SLOWED.load(Ordering::SeqCst) {
                assert!(std::time::Instant::now() < deadline, "the first switch never set the level");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            logger.switch("error");
            OTHER_DONE.store(true, Ordering::SeqCst);
        });
        let max = SLOW_MAX.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(max, logger.current.load().filter() as usize, "max_level is the logger's, not the other switch's");
    }

    #[test]
    fn log_level_overrides_rust_log_and_quiet() {
        assert_eq!(super::log_filter(true, Some("debug")), "debug");
        if std::env::var_os("RUST_LOG").is_none() {
            assert_eq!(super::log_filter(true, None), "warn");
            assert_eq!(super::log_filter(false, None), "info");
        }
        for good in ["trace", "makler=debug", "warn,makler::broker=trace", "OFF"] {
            assert_eq!(super::parse_log_filter(good).as_deref(), Ok(good));
        }
        for bad in ["", "loud", "makler=loud", "a=b=c"] {
            assert!(super::parse_log_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_log_line_is_time_level_program_message() {
        let before = jiff::Timestamp::now();
        let lines = lines(&[
            (log::Level::Info, "registered echo 127.0.0.1:4000 id=1"),
            (log::Level::Error, "receive failed: boom"),
        ]);
        let after = jiff::Timestamp::now();
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (line, rest) in lines
            .iter()
            .zip(["INFO  makler-test: registered echo 127.0.0.1:4000 id=1", "ERROR makler-test: receive failed: boom"])
        {
            let (time, tail) = line.split_once(' ').unwrap();
            assert_eq!(tail, rest);
            // RFC 3339 in UTC, to the millisecond: 2026-11-24T09:13:51.123Z.
            assert_eq!(time.len(), 24, "{time}");
            assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
            let time: jiff::Timestamp = time.parse().unwrap();
            let millis = |t: jiff::Timestamp| t.as_millisecond();
            assert!(
                millis(before) <= millis(time) && millis(time) <= millis(after),
                "{time} not in [{before}, {after}]"
            );
        }
    }
}
