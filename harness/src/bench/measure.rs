//! Timing: warm-ups, repetitions, medians, and ratios against baselines run alongside.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

/// One measured quantity: a workload on a backend (or its baseline), summarised.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Measurement {
    /// The workload, e.g. `import`.
    pub workload: String,
    /// The backend, or `baseline`.
    pub backend: String,
    /// What exactly ran, e.g. `apply_diff` or `tar -xpf`.
    pub subject: String,
    /// A parameter of the workload (file size, depth, container count), if any.
    pub param: Option<String>,
    /// The unit of the values: `s`, `bytes`, `ops/s`.
    pub unit: String,
    /// Repetitions.
    pub n: usize,
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// `median / baseline median`, when a baseline ran in the same run.
    pub ratio_to_baseline: Option<f64>,
    /// The baseline this is compared with.
    pub baseline: Option<String>,
}

/// Median, min and max of `v` (which must not be empty).
pub fn summarize(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let mid = s.len() / 2;
    let median = if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    };
    (median, s[0], s[s.len() - 1])
}

/// Times `f` (seconds).
pub fn time<T>(f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed().as_secs_f64(), v))
}

/// Runs `subject` and `baseline` alternately `reps` times after `warmup` untimed rounds, so
/// that noise from the shared machine lands on both; `prepare` runs untimed before each.
pub struct Pair<'a> {
    /// The workload name.
    pub workload: &'a str,
    /// The backend name.
    pub backend: &'a str,
    /// The parameter, if any.
    pub param: Option<String>,
    /// Repetitions.
    pub reps: usize,
    /// Untimed rounds first.
    pub warmup: usize,
}

impl Pair<'_> {
    /// Measures `subject` (named `subject_name`) against `baseline` (named `baseline_name`);
    /// each closure gets the round number and returns seconds.
    pub fn run(
        &self,
        subject_name: &str,
        subject: &mut dyn FnMut(usize) -> Result<f64>,
        baseline_name: &str,
        baseline: &mut dyn FnMut(usize) -> Result<f64>,
    ) -> Result<Vec<Measurement>> {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for round in 0..self.warmup + self.reps {
            let (x, y) = if round % 2 == 0 {
                let x = subject(round)?;
                (x, baseline(round)?)
            } else {
                let y = baseline(round)?;
                (subject(round)?, y)
            };
            if round >= self.warmup {
                a.push(x);
                b.push(y);
            }
        }
        let base = self.measurement(self.backend, baseline_name, &b, None);
        let subj = self.measurement(self.backend, subject_name, &a, Some(&base));
        Ok(vec![subj, base])
    }

    fn measurement(
        &self,
        backend: &str,
        subject: &str,
        v: &[f64],
        base: Option<&Measurement>,
    ) -> Measurement {
        let (median, min, max) = summarize(v);
        Measurement {
            workload: self.workload.to_owned(),
            backend: if base.is_some() {
                backend.to_owned()
            } else {
                format!("baseline for {backend}")
            },
            subject: subject.to_owned(),
            param: self.param.clone(),
            unit: "s".into(),
            n: v.len(),
            median,
            min,
            max,
            ratio_to_baseline: base.map(|b| median / b.median),
            baseline: base.map(|b| b.subject.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn pairs_alternate_and_compute_ratios() {
        let p = Pair {
            workload: "w",
            backend: "vfs",
            param: None,
            reps: 3,
            warmup: 1,
        };
        let mut order = Vec::new();
        let order_cell = std::cell::RefCell::new(&mut order);
        let mut s = |_r: usize| {
            order_cell.borrow_mut().push('s');
            Ok(2.0)
        };
        let mut b = |_r: usize| {
            order_cell.borrow_mut().push('b');
            Ok(1.0)
        };
        let m = p.run("ours", &mut s, "tar", &mut b).unwrap();
        assert_eq!(m[0].ratio_to_baseline, Some(2.0));
        assert_eq!(m[0].n, 3);
        assert_eq!(m[1].backend, "baseline for vfs");
        assert_eq!(order.iter().collect::<String>(), "sbbssbbs");
    }
}
