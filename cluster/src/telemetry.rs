//! Logging: `tracing` to stderr, human-readable or JSON, filtered by `log.filter`.

use crate::config::LogConfig;

/// Installs the global subscriber. A second call (tests) keeps the first one.
pub fn init(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Err means a subscriber is already set: keep it.
    let _ = if log.json { builder.json().try_init() } else { builder.try_init() };
}
