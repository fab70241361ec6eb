//! Crash points for tests: `GRAPHDRIVER_FAILPOINT=<name>` makes the process abort (as a
//! `kill -9` would stop it) when it reaches the point of that name, so crash recovery can be
//! tested at exact steps. Unset, a point costs one environment lookup.

/// Aborts the process if `GRAPHDRIVER_FAILPOINT` names `point`.
pub fn hit(point: &str) {
    if std::env::var_os("GRAPHDRIVER_FAILPOINT").is_some_and(|v| v == point) {
        eprintln!("graphdriver: failpoint {point}: aborting");
        std::process::abort();
    }
}
