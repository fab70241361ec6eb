//! Timing: warm-ups, repetitions, medians, and ratios against baselines run alongside.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

/// One measured quantity: a workload on a backend (or its baseline), summarised.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
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

impl Measurement {
    /// A measurement of `values` (median, min, max) with no baseline.
    pub fn of(
        workload: &str,
        backend: &str,
        subject: &str,
        param: Option<String>,
        unit: &str,
        values: &[f64],
    ) -> Measurement {
        let (median, min, max) = summarize(values);
        Measurement {
            workload: workload.to_owned(),
            backend: backend.to_owned(),
            subject: subject.to_owned(),
            param,
            unit: unit.to_owned(),
            n: values.len(),
            median,
            min,
            max,
            ratio_to_baseline: None,
            baseline: None,
        }
    }

    /// This measurement compared with `base`: the ratio of medians, and the baseline's name
    /// (neither when the baseline's median is zero).
    pub fn against(mut self, base: &Measurement) -> Measurement {
        // no ratio to a baseline of zero (JSON has no infinity)
        let ratio = self.median / base.median;
        if ratio.is_finite() {
            self.ratio_to_baseline = Some(ratio);
            self.baseline = Some(base.subject.clone());
        }
        self
    }
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

/// The `q` quantile (0..=1) of `v` (which must not be empty), nearest rank.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = (q * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
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
        let backend = match base {
            Some(_) => backend.to_owned(),
            None => format!("baseline for {backend}"),
        };
        let m = Measurement::of(self.workload, &backend, subject, self.param.clone(), "s", v);
        match base {
            Some(b) => m.against(b),
            None => m,
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
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[5.0, 1.0], 1.0), 5.0);
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
