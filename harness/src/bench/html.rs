//! `report.html`: one self-contained page (no network) with SVG charts drawn here.

use std::fmt::Write as _;

use super::{BenchReport, Measurement};

const W: f64 = 640.0;
const H: f64 = 320.0;
const PAD_L: f64 = 70.0;
const PAD_B: f64 = 40.0;
const PAD_T: f64 = 20.0;
const PAD_R: f64 = 160.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

/// A horizontal bar chart of medians on a log scale: one bar per (label, value).
fn bars(id: &str, title: &str, rows: &[(String, f64)]) -> String {
    let mut s = String::new();
    let h = PAD_T + rows.len() as f64 * 22.0 + PAD_B;
    let max = rows.iter().map(|r| r.1).fold(f64::MIN, f64::max).max(1e-9);
    let min = rows.iter().map(|r| r.1).fold(f64::MAX, f64::min).max(1e-9) / 2.0;
    let (lmin, lmax) = (min.log10(), max.log10().max(min.log10() + 1e-9));
    let x = |v: f64| 260.0 + (v.max(min).log10() - lmin) / (lmax - lmin) * (W - 260.0 - 80.0);
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg id="{id}" data-series="{}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}">"#,
        esc(title),
        rows.len()
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = PAD_T + i as f64 * 22.0;
        let color = if label.starts_with("baseline") {
            "#999"
        } else {
            COLORS[i % COLORS.len()]
        };
        let _ = write!(
            s,
            r#"<text x="255" y="{:.1}" text-anchor="end" font-size="11">{}</text><rect class="bar" x="260" y="{y:.1}" width="{:.1}" height="16" fill="{color}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            y + 12.0,
            esc(label),
            (x(*v) - 260.0).max(1.0),
            esc(label),
            fmt_s(*v),
            x(*v) + 4.0,
            y + 12.0,
            fmt_s(*v)
        );
    }
    let _ = write!(
        s,
        r##"<text x="260" y="{:.1}" font-size="10" fill="#666">median, log scale</text></svg></figure>"##,
        h - 10.0
    );
    s
}

/// A line chart: x (log scale) against y (log scale), one polyline per series.
fn lines(id: &str, title: &str, xlabel: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
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
    let _ = write!(
        s,
        r##"<line x1="{PAD_L}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/><line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{:.1}" stroke="#333"/>"##,
        H - PAD_B,
        W - PAD_R,
        H - PAD_B,
        H - PAD_B
    );
    for (xv, ty) in [(xmin, H - PAD_B + 15.0), (xmax, H - PAD_B + 15.0)] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{ty:.1}" font-size="10" text-anchor="middle">{}</text>"#,
            px(xv),
            xv
        );
    }
    for yv in [ymin, ymax] {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"#,
            PAD_L - 4.0,
            py(yv) + 3.0,
            fmt_s(yv)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{} (log scale)</text>"#,
        (PAD_L + W - PAD_R) / 2.0,
        H - 5.0,
        esc(xlabel)
    );
    for (i, (name, p)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = p
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="series" data-name="{}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            esc(name),
            points.join(" ")
        );
        for (x, y) in p {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{}: {} at {x}</title></circle>"#,
                px(*x),
                py(*y),
                esc(name),
                fmt_s(*y)
            );
        }
        let ly = PAD_T + 14.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            W - PAD_R + 10.0,
            ly,
            W - PAD_R + 24.0,
            ly + 9.0,
            esc(name)
        );
    }
    s.push_str("</svg></figure>");
    s
}

fn rows(r: &BenchReport, workload: &str, param: Option<&str>) -> Vec<(String, f64)> {
    r.measurements
        .iter()
        .filter(|m| m.workload == workload && (param.is_none() || m.param.as_deref() == param))
        .map(|m: &Measurement| (format!("{} — {}", m.backend, m.subject), m.median))
        .collect()
}

/// The page.
pub fn page(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>graphdriver bench report</title><style>body{{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}}figure{{margin:1.5em 0}}figcaption{{font-weight:bold;margin-bottom:.3em}}table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:2px 6px}}</style></head><body><h1>graphdriver bench report</h1><p>kernel {} · {} · {} · {} repetitions after {} warm-up · page cache {}</p><p>image: {}</p>"#,
        esc(&r.run.kernel),
        esc(&r.run.cpu),
        esc(&r.run.memory),
        r.run.reps,
        r.run.warmup,
        esc(&r.run.cache),
        esc(&r.run.image)
    );
    s.push_str(&bars(
        "import",
        "Image import: apply_diff against tar -xpf",
        &rows(r, "import", None),
    ));
    s.push_str(&bars(
        "export",
        "Image export: diff against tar -cf",
        &rows(r, "export", None),
    ));
    s.push_str(&bars(
        "container",
        "Container start: create + mount + unmount",
        &rows(r, "container", None),
    ));
    s.push_str(&bars(
        "changes",
        "changes of 10 changed files over 10,000",
        &rows(r, "changes", None),
    ));
    let mut depth: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for m in r.measurements.iter().filter(|m| m.workload == "depth") {
        let name = format!("{} {}", m.backend, m.subject);
        let x: f64 = m
            .param
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0.0);
        match depth.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => v.push((x, m.median)),
            None => depth.push((name, vec![(x, m.median)])),
        }
    }
    s.push_str(&lines(
        "depth",
        "Mount time and bottom-layer lookup against depth",
        "layers below",
        &depth,
    ));
    s.push_str("<h2>All measurements</h2><table><tr><th>workload</th><th>backend</th><th>what</th><th>param</th><th>median</th><th>n</th><th>ratio</th></tr>");
    for m in &r.measurements {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.workload),
            esc(&m.backend),
            esc(&m.subject),
            esc(m.param.as_deref().unwrap_or("")),
            fmt_s(m.median),
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
        let b = bars("x", "t", &[("a".into(), 0.5), ("baseline b".into(), 0.001)]);
        assert_eq!(b.matches("class=\"bar\"").count(), 2);
        let l = lines(
            "y",
            "t",
            "n",
            &[("s".into(), vec![(1.0, 0.001), (500.0, 0.01)])],
        );
        assert_eq!(l.matches("class=\"series\"").count(), 1);
        assert_eq!(l.matches("<circle").count(), 2);
        assert!(!b.contains("NaN") && !l.contains("NaN"));
    }
}
