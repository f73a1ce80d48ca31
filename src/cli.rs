//! Flag parsing shared by the executables, so every program reads durations and limits alike.

use std::time::Duration;

/// Parses a positive number of seconds with optional decimals (`5`, `0.25`), as `--ttl` takes.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(makler::cli::parse_seconds("0.25"), Ok(Duration::from_millis(250)));
/// assert!(makler::cli::parse_seconds("-1").is_err());
/// assert!(makler::cli::parse_seconds("1e30").is_err());
/// ```
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(format!("{text:?}: must be more than 0 seconds"));
    }
    if seconds > 86_400.0 * 365.0 {
        return Err(format!("{text:?}: must be at most a year"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}
