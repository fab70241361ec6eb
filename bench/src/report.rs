//! Writing the reports: JSON (everything) and Markdown (tables).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::BenchReport;

/// Writes `report.json`, `report.md` and `report.html` into `dir`.
pub fn write_reports(r: &BenchReport, dir: &Path) -> Result<()> {
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("report.md"), markdown(r))?;
    std::fs::write(dir.join("report.html"), super::html::page(r))?;
    Ok(())
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "s" if v < 1e-3 => format!("{:.1} µs", v * 1e6),
        "s" if v < 1.0 => format!("{:.1} ms", v * 1e3),
        "s" => format!("{v:.2} s"),
        "bytes" if v < (1u64 << 20) as f64 => format!("{:.1} KiB", v / 1024.0),
        "bytes" if v < (1u64 << 30) as f64 => format!("{:.1} MiB", v / (1u64 << 20) as f64),
        "bytes" => format!("{:.2} GiB", v / (1u64 << 30) as f64),
        u => format!("{v:.2} {u}"),
    }
}

/// `s` as a Markdown table cell: a `|` (a shell pipe in a baseline's name) would end it.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The Markdown report: one table per workload.
pub fn markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# graphdriver bench report\n");
    let run = &r.run;
    let _ = writeln!(s, "- kernel: {}\n- cpu: {}\n- memory: {}\n- repetitions: {} after {} warm-up; page cache: {}\n- image: {}", run.kernel, run.cpu, run.memory, run.reps, run.warmup, run.cache, run.image);
    for f in &run.filesystems {
        let _ = writeln!(s, "- {f}");
    }
    let mut workloads: Vec<&str> = Vec::new();
    for m in &r.measurements {
        if !workloads.contains(&m.workload.as_str()) {
            workloads.push(&m.workload);
        }
    }
    for w in workloads {
        let _ = writeln!(s, "\n## {w}\n\n| backend | what | param | median | min | max | n | ratio to baseline |\n|---|---|---|---|---|---|---|---|");
        for m in r.measurements.iter().filter(|m| m.workload == w) {
            let ratio = match (&m.ratio_to_baseline, &m.baseline) {
                (Some(x), Some(b)) if *x < 0.5 => {
                    format!("{x:.3}x {} ({:.0}x faster)", cell(b), 1.0 / x)
                }
                (Some(x), Some(b)) => format!("{x:.2}x {}", cell(b)),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&m.backend),
                cell(&m.subject),
                cell(m.param.as_deref().unwrap_or("")),
                fmt_value(m.median, &m.unit),
                fmt_value(m.min, &m.unit),
                fmt_value(m.max, &m.unit),
                m.n,
                ratio
            );
        }
    }
    s
}
