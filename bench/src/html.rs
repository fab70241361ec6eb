//! `report.html`: one self-contained page (no network) with SVG charts drawn here.

use std::fmt::Write as _;

use super::{BenchReport, Measurement};

const W: f64 = 900.0;
const H: f64 = 340.0;
const PAD_L: f64 = 80.0;
const PAD_B: f64 = 45.0;
const PAD_T: f64 = 20.0;
const PAD_R: f64 = 320.0;
/// Where bars start (their labels end here).
const BAR_X: f64 = 430.0;
const BASELINE: &str = "#999999";
const DASHES: [&str; 3] = ["", "7 4", "2 3"];

/// One colour per driver, the same in every chart; baselines are grey.
fn color(label: &str) -> &'static str {
    if label.starts_with("baseline") {
        return BASELINE;
    }
    match label.split(' ').next().unwrap_or("") {
        "vfs" => "#1f77b4",
        "overlay2" => "#2ca02c",
        "btrfs" => "#9467bd",
        "devmapper" => "#ff7f0e",
        "zfs" => "#d62728",
        _ => "#8c564b",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Powers of `base` from below `lo` to above `hi`, for log-axis gridlines.
fn decades(lo: f64, hi: f64, base: f64) -> Vec<f64> {
    let (a, b) = (lo.log(base).floor() as i32, hi.log(base).ceil() as i32);
    (a..=b.max(a)).map(|e| base.powi(e)).collect()
}

fn fmt_bytes(v: f64) -> String {
    if v < 1024.0 * 1024.0 {
        format!("{:.0} KiB", v / 1024.0)
    } else if v < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / 1048576.0)
    } else {
        format!("{:.2} GiB", v / 1073741824.0)
    }
}

fn fmt_count(v: f64) -> String {
    format!("{v}")
}

fn fmt_rate(v: f64) -> String {
    format!("{v:.1}/s")
}

fn fmt_mbs(v: f64) -> String {
    format!("{v:.0} MB/s")
}

fn fmt_s(v: f64) -> String {
    if v < 1e-3 {
        format!("{:.0} µs", v * 1e6)
    } else if v < 1.0 {
        format!("{:.1} ms", v * 1e3)
    } else {
        format!("{v:.2} s")
    }
}

/// A horizontal bar chart of medians on a log scale: one bar per (label, value), coloured
/// by driver (baselines grey).
fn bars(id: &str, title: &str, fmt: fn(f64) -> String, rows: &[(String, f64)]) -> String {
    let mut s = String::new();
    let h = PAD_T + rows.len() as f64 * 22.0 + PAD_B;
    let max = rows.iter().map(|r| r.1).fold(f64::MIN, f64::max).max(1e-9);
    let min = rows.iter().map(|r| r.1).fold(f64::MAX, f64::min).max(1e-9) / 2.0;
    let (lmin, lmax) = (min.log10(), max.log10().max(min.log10() + 1e-9));
    let x = |v: f64| BAR_X + (v.max(min).log10() - lmin) / (lmax - lmin) * (W - BAR_X - 90.0);
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg id="{id}" data-series="{}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}">"#,
        esc(title),
        rows.len()
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = PAD_T + i as f64 * 22.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text><rect class="bar" x="{BAR_X}" y="{y:.1}" width="{:.1}" height="16" fill="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            BAR_X - 6.0,
            y + 12.0,
            esc(label),
            (x(*v) - BAR_X).max(2.0),
            color(label),
            esc(label),
            fmt(*v),
            x(*v) + 4.0,
            y + 12.0,
            fmt(*v)
        );
    }
    let _ = write!(
        s,
        r##"<text x="{BAR_X}" y="{:.1}" font-size="10" fill="#666">median, log scale</text></svg></figure>"##,
        h - 10.0
    );
    s
}

/// A line chart: x (log scale) against y (log scale), one polyline per series, coloured by
/// driver and dashed by measure, with gridlines at every power of ten.
fn lines(
    id: &str,
    title: &str,
    (xlabel, xfmt): (&str, fn(f64) -> String),
    (yfmt, ybase): (fn(f64) -> String, f64),
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let mut s = String::new();
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    if pts.is_empty() {
        return s;
    }
    let fold = |f: fn(f64, f64) -> f64, init: f64, g: fn(&(f64, f64)) -> f64| {
        pts.iter().map(g).fold(init, f)
    };
    let (xmin, xmax) = (
        fold(f64::min, f64::MAX, |p| p.0).max(1e-9),
        fold(f64::max, f64::MIN, |p| p.0),
    );
    let (ymin, ymax) = (
        fold(f64::min, f64::MAX, |p| p.1).max(1e-12),
        fold(f64::max, f64::MIN, |p| p.1),
    );
    let lx = |v: f64| (v.max(1e-12)).log10();
    let span = |a: f64, b: f64| if (b - a).abs() < 1e-9 { 1.0 } else { b - a };
    let px = |v: f64| PAD_L + (lx(v) - lx(xmin)) / span(lx(xmin), lx(xmax)) * (W - PAD_L - PAD_R);
    let py =
        |v: f64| H - PAD_B - (lx(v) - lx(ymin)) / span(lx(ymin), lx(ymax)) * (H - PAD_B - PAD_T);
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg id="{id}" data-series="{}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"#,
        esc(title),
        series.len()
    );
    // gridlines at the powers of ten inside the ranges, and the ends labelled
    for yv in decades(ymin, ymax, ybase)
        .into_iter()
        .filter(|v| *v > ymin * 1.05 && *v < ymax / 1.05)
        .chain([ymin, ymax])
    {
        let _ = write!(
            s,
            r##"<line x1="{PAD_L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            W - PAD_R,
            PAD_L - 4.0,
            py(yv) + 3.0,
            yfmt(yv),
            y = py(yv)
        );
    }
    let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.dedup();
    for &xv in &xs {
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{PAD_T}" x2="{x:.1}" y2="{:.1}" stroke="#eeeeee"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
            H - PAD_B,
            H - PAD_B + 14.0,
            xfmt(xv),
            x = px(xv)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{PAD_L}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}" stroke="#333"/><line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{b:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{} (log scale; y log scale)</text>"##,
        W - PAD_R,
        (PAD_L + W - PAD_R) / 2.0,
        H - 8.0,
        esc(xlabel),
        b = H - PAD_B
    );
    let mut per_driver: Vec<(&str, usize)> = Vec::new();
    for (i, (name, p)) in series.iter().enumerate() {
        let c = color(name);
        let nth = match per_driver.iter_mut().find(|(k, _)| *k == c) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                per_driver.push((c, 0));
                0
            }
        };
        let dash = DASHES[nth % DASHES.len()];
        let points: Vec<String> = p
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="series" data-name="{}" fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
            esc(name),
            points.join(" ")
        );
        for (x, y) in p {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{}: {} at {}</title></circle>"#,
                px(*x),
                py(*y),
                esc(name),
                yfmt(*y),
                xfmt(*x)
            );
        }
        let ly = PAD_T + 16.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="3" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            W - PAD_R + 10.0,
            ly + 5.0,
            W - PAD_R + 34.0,
            ly + 5.0,
            W - PAD_R + 40.0,
            ly + 9.0,
            esc(name)
        );
    }
    s.push_str("</svg></figure>");
    s
}

fn measurements<'a>(
    r: &'a BenchReport,
    workload: &'a str,
) -> impl Iterator<Item = &'a Measurement> + 'a {
    r.measurements
        .iter()
        .filter(move |m| m.workload == workload)
}

/// A snapshot operation's latency, among the containerd measurements.
fn is_latency(m: &Measurement) -> bool {
    m.param
        .as_deref()
        .is_some_and(|p| p.starts_with("snapshot latency"))
}

fn label(m: &Measurement) -> String {
    match &m.param {
        Some(p) => format!("{} — {} ({p})", m.backend, m.subject),
        None => format!("{} — {}", m.backend, m.subject),
    }
}

/// One bar per measurement of `workload` that `keep` keeps.
fn rows(r: &BenchReport, workload: &str, keep: fn(&Measurement) -> bool) -> Vec<(String, f64)> {
    measurements(r, workload)
        .filter(|m| keep(m))
        .map(|m| (label(m), m.median))
        .collect()
}

/// One series per (backend, subject) of `workload` that `keep` keeps, x read from the param.
fn series(
    r: &BenchReport,
    workload: &str,
    keep: fn(&Measurement) -> bool,
    x: fn(&str) -> Option<f64>,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for m in measurements(r, workload).filter(|m| keep(m)) {
        let Some(x) = m.param.as_deref().and_then(x) else {
            continue;
        };
        let name = format!("{} {}", m.backend, m.subject);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push((x, m.median)),
            None => out.push((name, vec![(x, m.median)])),
        }
    }
    out
}

/// `"4 KiB"` → 4096.
fn parse_size(p: &str) -> Option<f64> {
    let (n, unit) = p.split_once(' ')?;
    let n: f64 = n.parse().ok()?;
    let shift = match unit {
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return None,
    };
    Some(n * (1u64 << shift) as f64)
}

/// `"50 containers"` or `"128"` → the leading number.
fn parse_count(p: &str) -> Option<f64> {
    p.split(' ').next()?.parse().ok()
}

/// The page.
pub fn page(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>graphdriver bench report</title><style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}figure{{margin:1.5em 0}}figcaption{{font-weight:bold;margin-bottom:.3em}}table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}</style></head><body><h1>graphdriver bench report</h1><p>kernel {} · {} · {} · {} repetitions after {} warm-up · page cache {}</p><p>image: {}</p>"#,
        esc(&r.run.kernel),
        esc(&r.run.cpu),
        esc(&r.run.memory),
        r.run.reps,
        r.run.warmup,
        esc(&r.run.cache),
        esc(&r.run.image)
    );
    let mb = r.run.image_bytes as f64 / 1e6;
    for (id, title) in [
        (
            "import",
            "Image import throughput: apply_diff against tar -xpf + syncfs",
        ),
        ("export", "Image export throughput: diff against tar -cf"),
    ] {
        let rows: Vec<(String, f64)> = measurements(r, id)
            .map(|m| (label(m), mb / m.median))
            .collect();
        s.push_str(&bars(id, title, fmt_mbs, &rows));
    }
    // a workload's every measurement, as seconds
    let whole = |id: &str, title: &str| bars(id, title, fmt_s, &rows(r, id, |_| true));
    s.push_str(&whole(
        "container",
        "Container start: create + mount + unmount",
    ));
    s.push_str(&whole("idmap", "Container start in a user namespace: create + idmapped mount + unmount, against unmapped and a chown-copy"));
    s.push_str(&lines(
        "copy-up",
        "Copy-up: first 1-byte write and chmod of a lower file, against its size",
        ("file size", fmt_bytes),
        (fmt_s, 10.0),
        &series(
            r,
            "copy-up",
            |m| {
                matches!(m.subject.as_str(), "first 1-byte write" | "chmod")
                    || (m.subject == "first 1-byte write (plain file)"
                        && m.backend.starts_with("baseline for vfs"))
            },
            parse_size,
        ),
    ));
    s.push_str(&lines(
        "disk",
        "Disk used by containers on one image, against their count",
        ("containers", fmt_count),
        (fmt_bytes, 1024.0),
        &series(
            r,
            "many",
            |m| m.unit == "bytes" && !m.subject.contains("per container"),
            parse_count,
        ),
    ));
    s.push_str(&lines(
        "depth",
        "Mount time and bottom-layer lookup against depth",
        ("layers below", fmt_count),
        (fmt_s, 10.0),
        &series(r, "depth", |_| true, parse_count),
    ));
    s.push_str(&bars(
        "churn",
        "Churn: disk used by 16 layers of 4 KiB updates to 1 MiB files",
        fmt_bytes,
        &rows(r, "churn", |m| m.unit == "bytes"),
    ));
    s.push_str(&bars(
        "concurrency",
        "Concurrency: container cycles per second (2x cores workers; baseline one worker)",
        fmt_rate,
        &rows(r, "concurrency", |m| m.unit == "ops/s"),
    ));
    s.push_str(&whole(
        "removal",
        "Removal of a 10,000-file container layer and of the image layer",
    ));
    s.push_str(&whole("changes", "changes of 10 changed files over 10,000"));
    s.push_str(&whole("images", "Images: import of the OCI image and image save (gzip, zstd) against GNU tar with gzip and zstd"));
    // written by scripts/containerd-bench.sh into a report graphctl bench made
    if measurements(r, "containerd").next().is_some() {
        s.push_str(&bars(
            "containerd",
            "containerd: import + unpack of the two-layer Debian image and `ctr run --rm IMAGE true`, graphdriver through the proxy plugin beside containerd's built-in snapshotter on the same filesystem",
            fmt_s,
            &rows(r, "containerd", |m| !is_latency(m)),
        ));
        s.push_str(&bars(
            "containerd-latency",
            "containerd: Prepare (+ Mounts), Commit and Remove of a snapshot on the image, through containerd's snapshot API",
            fmt_s,
            &rows(r, "containerd", is_latency),
        ));
    }
    s.push_str("<h2>All measurements</h2><table><tr><th>workload</th><th>backend</th><th>what</th><th>param</th><th>median</th><th>n</th><th>ratio</th></tr>");
    for m in &r.measurements {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.workload),
            esc(&m.backend),
            esc(&m.subject),
            esc(m.param.as_deref().unwrap_or("")),
            match m.unit.as_str() {
                "bytes" => fmt_bytes(m.median),
                "ops/s" => fmt_rate(m.median),
                _ => fmt_s(m.median),
            },
            m.n,
            m.ratio_to_baseline.map(|x| format!("{x:.3}x {}", esc(m.baseline.as_deref().unwrap_or("")))).unwrap_or_default()
        );
    }
    s.push_str("</table></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_have_a_mark_per_value() {
        let b = bars(
            "x",
            "t",
            fmt_s,
            &[("a".into(), 0.5), ("baseline b".into(), 0.001)],
        );
        assert_eq!(b.matches("class=\"bar\"").count(), 2);
        let l = lines(
            "y",
            "t",
            ("n", fmt_count),
            (fmt_s, 10.0),
            &[("s".into(), vec![(1.0, 0.001), (500.0, 0.01)])],
        );
        assert_eq!(l.matches("class=\"series\"").count(), 1);
        assert_eq!(l.matches("<circle").count(), 2);
        assert!(!b.contains("NaN") && !l.contains("NaN"));
    }

    #[test]
    fn params_become_coordinates() {
        assert_eq!(parse_size("4 KiB"), Some(4096.0));
        assert_eq!(parse_size("1 GiB"), Some(1073741824.0));
        assert_eq!(parse_size("cold page cache"), None);
        assert_eq!(parse_count("50 containers"), Some(50.0));
        assert_eq!(parse_count("128"), Some(128.0));
    }
}
