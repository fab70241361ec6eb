//! Each devmapper step's wall time, as a `tracing` event at DEBUG level (target
//! `graphdriver_devmapper`), to see where an operation's time goes (device-mapper, the
//! filesystem, the metadata). Steps are timed only while such events are enabled; graphctl
//! enables them with `GRAPHDRIVER_LOG=graphdriver_devmapper=debug` (or
//! `GRAPHDRIVER_DM_TRACE=1`).

use std::time::Instant;

/// Times the steps of one operation.
#[derive(Debug)]
pub struct Trace {
    op: &'static str,
    on: bool,
    last: Instant,
    steps: Vec<(&'static str, f64)>,
}

impl Trace {
    /// Starts timing `op`.
    pub fn start(op: &'static str) -> Trace {
        Trace {
            op,
            on: tracing::enabled!(tracing::Level::DEBUG),
            last: Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Ends step `name`.
    pub fn step(&mut self, name: &'static str) {
        if self.on {
            let now = Instant::now();
            self.steps
                .push((name, now.duration_since(self.last).as_secs_f64() * 1e3));
            self.last = now;
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if self.on {
            let steps: Vec<String> = self
                .steps
                .iter()
                .map(|(n, ms)| format!("{n} {ms:.1}"))
                .collect();
            tracing::debug!(op = self.op, steps = %steps.join(", "), "devmapper step times (ms)");
        }
    }
}
