//! The bench report (docs/bench-schema.md): every measurement has the documented fields with
//! sane values, every workload ran on every backend this build offers (depth: those that
//! stack layers), every baseline ratio is consistent, and the HTML page has its charts.
//! Checks `$GRAPHDRIVER_BENCH_REPORT` (a report.json the test command made with `graphctl
//! bench --quick`), or makes one.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The backends the bench runs by default: those this kernel offers.
fn offered() -> Vec<&'static str> {
    graphdriver_backends::names()
        .into_iter()
        .filter(|d| graphdriver_backends::kernel_offers(d))
        .collect()
}

fn report() -> PathBuf {
    if let Some(p) = std::env::var_os("GRAPHDRIVER_BENCH_REPORT") {
        return PathBuf::from(p);
    }
    let out = std::env::temp_dir().join(format!("graphdriver-bench-test-{}", std::process::id()));
    let st = Command::new(env!("CARGO_BIN_EXE_graphctl"))
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "graphctl bench --quick failed");
    out.join("report.json")
}

#[test]
fn the_report_follows_its_schema_and_covers_every_backend() {
    let path = report();
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["schema"], 1);
    let run = &v["run"];
    for k in ["kernel", "cpu", "memory", "cache", "image"] {
        assert!(
            run[k].as_str().is_some_and(|s| !s.is_empty()),
            "run.{k} missing"
        );
    }
    for k in ["started", "reps", "warmup"] {
        assert!(run[k].as_u64().is_some(), "run.{k} missing");
    }
    assert!(run["quick"].is_boolean());
    let ms = v["measurements"].as_array().unwrap();
    assert!(!ms.is_empty());
    let mut ran: BTreeSet<(String, String)> = BTreeSet::new();
    for m in ms {
        for k in ["workload", "backend", "subject", "unit"] {
            assert!(
                m[k].as_str().is_some_and(|s| !s.is_empty()),
                "{k} missing in {m}"
            );
        }
        assert!(m["param"].is_null() || m["param"].is_string(), "{m}");
        let n = m["n"].as_u64().unwrap();
        assert!(n >= 1, "{m}");
        let (median, min, max) = (
            m["median"].as_f64().unwrap(),
            m["min"].as_f64().unwrap(),
            m["max"].as_f64().unwrap(),
        );
        // a time or a rate is never 0; disk use can be (a chmod on a reflinked file)
        let floor_ok = if m["unit"] == "bytes" {
            min >= 0.0
        } else {
            min > 0.0
        };
        assert!(
            floor_ok && min <= median && median <= max,
            "min/median/max out of order: {m}"
        );
        assert!(
            ["s", "bytes", "ops/s"].contains(&m["unit"].as_str().unwrap()),
            "unknown unit: {m}"
        );
        match (m["ratio_to_baseline"].as_f64(), m["baseline"].as_str()) {
            (Some(r), Some(b)) => {
                assert!(r > 0.0 && !b.is_empty(), "{m}");
                // the baseline named ran in the same report (except the child workload's, which is
                // the same operation over a smaller parent)
                if m["workload"] != "child" {
                    let found = ms.iter().any(|o| {
                        o["subject"] == b
                            && o["workload"] == m["workload"]
                            && o["backend"]
                                .as_str()
                                .unwrap()
                                .ends_with(m["backend"].as_str().unwrap())
                    });
                    assert!(found, "baseline {b} of {m} is not in the report");
                }
            }
            (None, None) => {}
            _ => panic!("ratio and baseline go together: {m}"),
        }
        let backend = m["backend"].as_str().unwrap();
        if !backend.starts_with("baseline") {
            ran.insert((
                m["workload"].as_str().unwrap().to_owned(),
                backend.split(' ').next().unwrap().to_owned(),
            ));
        }
    }
    let drivers = offered();
    for w in [
        "import",
        "export",
        "container",
        "idmap",
        "many",
        "copy-up",
        "depth",
        "changes",
        "diff",
        "churn",
        "concurrency",
        "removal",
        "child",
        "images",
    ] {
        for d in &drivers {
            assert!(
                ran.contains(&(w.to_owned(), d.to_string())),
                "workload {w} did not run on {d}"
            );
        }
    }
    // cold-cache runs, marked as such
    for w in ["import", "export"] {
        assert!(
            ms.iter()
                .any(|m| m["workload"] == w && m["param"] == "cold page cache"),
            "no cold-cache {w}"
        );
    }
    assert!(run["cache"].as_str().unwrap().contains("drop_caches"));
    // every figure the issue asks for, on every backend
    for d in &drivers {
        let has = |w: &str, subject: &str, param: &str| {
            ms.iter().any(|m| {
                m["workload"] == w
                    && m["subject"] == subject
                    && m["param"] == param
                    && m["backend"].as_str().unwrap().starts_with(d)
            })
        };
        for size in ["4 KiB", "1 MiB", "64 MiB"] {
            for op in [
                "first 1-byte write",
                "second 1-byte write",
                "1-byte append",
                "chmod",
                "chown",
                "chmod: disk used",
            ] {
                assert!(has("copy-up", op, size), "no copy-up {op} of {size} on {d}");
            }
        }
        for n in ["5 containers"] {
            for what in [
                "create+mount all",
                "disk used",
                "size per container",
                "virtual size per container",
            ] {
                assert!(has("many", what, n), "no {what} of {n} on {d}");
            }
        }
        assert!(
            has("depth", "mount", "64"),
            "no mount time at depth 64 on {d}"
        );
        for c in ["gzip", "zstd"] {
            assert!(
                has("images", "image import", &format!("import {c}")),
                "no {c} image import on {d}"
            );
            assert!(
                has("images", "image save", &format!("save {c}")),
                "no {c} image save on {d}"
            );
        }
    }
    // the containerd section (scripts/containerd-bench.sh adds it; scripts/test.sh asks
    // for it with GRAPHDRIVER_BENCH_CONTAINERD=1): each graphdriver backend beside
    // containerd's built-in snapshotter, every figure a ratio to it
    let containerd: Vec<&Value> = ms
        .iter()
        .filter(|m| m["workload"] == "containerd")
        .collect();
    let want_containerd = std::env::var_os("GRAPHDRIVER_BENCH_CONTAINERD").is_some();
    assert!(
        !want_containerd || !containerd.is_empty(),
        "no containerd section in {}",
        path.display()
    );
    if !containerd.is_empty() {
        for (d, builtin) in [
            ("overlay2", "overlayfs"),
            ("btrfs", "btrfs"),
            ("vfs", "native"),
        ] {
            for what in [
                "ctr images import",
                "ctr run",
                "Prepare",
                "Commit",
                "Remove",
            ] {
                let m = containerd
                    .iter()
                    .find(|m| {
                        m["subject"].as_str().is_some_and(|s| {
                            s.starts_with(what) && s.ends_with(&format!("graphdriver-{d}"))
                        })
                    })
                    .unwrap_or_else(|| panic!("no containerd {what} on graphdriver-{d}"));
                assert!(
                    m["baseline"]
                        .as_str()
                        .is_some_and(|b| b.ends_with(&format!("containerd {builtin}"))),
                    "containerd {what} on {d} is not compared with {builtin}: {m}"
                );
                assert!(m["ratio_to_baseline"].as_f64().is_some_and(|r| r > 0.0));
            }
        }
    }
    let html = std::fs::read_to_string(path.with_file_name("report.html")).unwrap();
    if !containerd.is_empty() {
        for id in ["containerd", "containerd-latency"] {
            assert!(html.contains(&format!("<svg id=\"{id}\"")), "no {id} chart");
        }
    }
    for id in [
        "import",
        "export",
        "container",
        "idmap",
        "copy-up",
        "disk",
        "depth",
        "churn",
        "concurrency",
        "removal",
        "changes",
        "images",
    ] {
        assert!(html.contains(&format!("<svg id=\"{id}\"")), "no {id} chart");
    }
    assert!(html.matches("class=\"bar\"").count() >= drivers.len() * 4);
    assert!(
        html.matches("class=\"series\"").count() >= 2,
        "the depth chart has no series"
    );
    assert!(!html.contains("NaN"), "a chart has a NaN coordinate");
    // self-contained: nothing to fetch (the SVG namespace URI is a name, not a fetch)
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "the page loads something"
    );
}

/// Reads what the injected script wrote into the DOM chromium dumped.
fn render_check(dom: &str) -> Value {
    let start = dom
        .find("<pre id=\"render-check\">")
        .expect("the render check did not run: no <pre id=\"render-check\"> in the dumped DOM")
        + "<pre id=\"render-check\">".len();
    let end = start + dom[start..].find("</pre>").unwrap();
    let text = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    serde_json::from_str(&text).unwrap()
}

fn chromium() -> Command {
    let bin = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("no chromium: scripts/install-deps.sh installs Debian's chromium package");
    let mut c = Command::new(bin);
    // root in a container: no sandbox; no GPU; nothing from the network
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-extensions",
    ]);
    c
}

/// Where each chart landed on the page, measured by the browser after layout.
const PROBE: &str = r#"<script>
const charts = [];
for (const svg of document.querySelectorAll('svg')) {
  const r = svg.getBoundingClientRect();
  const marks = [...svg.querySelectorAll('rect.bar, polyline.series')];
  const drawn = marks.filter(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; });
  const colors = [...new Set(marks.map(m => m.tagName === 'rect' ? m.getAttribute('fill') : m.getAttribute('stroke')))];
  charts.push({id: svg.id, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
               marks: marks.length, drawn: drawn.length, colors, series: +svg.dataset.series});
}
const pre = document.createElement('pre');
pre.id = 'render-check';
pre.textContent = JSON.stringify({height: document.documentElement.scrollHeight, charts});
document.body.appendChild(pre);
</script>"#;

/// `#rrggbb` or `#rgb`.
fn hex(c: &str) -> [u8; 3] {
    let c = c.trim_start_matches('#');
    let long: String = if c.len() == 3 {
        c.chars().flat_map(|ch| [ch, ch]).collect()
    } else {
        c.to_owned()
    };
    let p = |i: usize| u8::from_str_radix(&long[i..i + 2], 16).unwrap();
    [p(0), p(2), p(4)]
}

/// The report page, opened in headless Chromium: every chart is laid out with all its marks
/// drawn (measured by the browser), and a screenshot of the page shows, inside each chart's
/// box, the colours of its series.
#[test]
fn the_html_report_renders_in_chromium() {
    let html = report().with_file_name("report.html");
    let page = std::fs::read_to_string(&html).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probed = dir.path().join("probed.html");
    std::fs::write(&probed, page.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    let out = chromium()
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", probed.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = render_check(&String::from_utf8_lossy(&out.stdout));
    let charts = check["charts"].as_array().unwrap();
    let drivers = offered();
    let expect = [
        ("import", false),
        ("export", false),
        ("container", false),
        ("idmap", false),
        ("copy-up", true),
        ("disk", true),
        ("depth", true),
        ("churn", false),
        ("concurrency", false),
        ("removal", false),
        ("changes", false),
        ("images", false),
    ];
    for (id, is_line) in expect {
        let c = charts
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no {id} chart on the page"));
        assert!(
            c["w"].as_f64().unwrap() > 100.0 && c["h"].as_f64().unwrap() > 50.0,
            "chart {id} was not laid out: {c}"
        );
        let marks = c["marks"].as_u64().unwrap();
        assert_eq!(
            marks,
            c["drawn"].as_u64().unwrap(),
            "chart {id}: marks not drawn: {c}"
        );
        // a line per backend and measure (two each), or a bar per backend at least
        let want = if is_line {
            2 * drivers.len()
        } else {
            drivers.len()
        } as u64;
        assert!(
            marks >= want,
            "chart {id} has {marks} series, want {want}: {c}"
        );
    }

    let shot = dir.path().join("report.png");
    let height = check["height"].as_f64().unwrap().ceil() as u32 + 50;
    let st = chromium()
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--window-size=1000,{height}"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success() && shot.exists(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    // keep it for a human to look at
    if let Some(keep) = std::env::var_os("GRAPHDRIVER_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let px = |x: usize, y: usize| {
        let i = (y * w + x) * channels;
        [buf[i], buf[i + 1], buf[i + 2]]
    };
    for c in charts {
        let id = c["id"].as_str().unwrap();
        let (x0, y0) = (
            c["x"].as_f64().unwrap() as usize,
            c["y"].as_f64().unwrap() as usize,
        );
        let (x1, y1) = (
            (x0 + c["w"].as_f64().unwrap() as usize).min(w),
            (y0 + c["h"].as_f64().unwrap() as usize).min(h),
        );
        assert!(x1 > x0 && y1 > y0, "chart {id} is outside the screenshot");
        let colors: Vec<[u8; 3]> = c["colors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| hex(v.as_str().unwrap()))
            .collect();
        let mut found = vec![0usize; colors.len()];
        for y in y0..y1 {
            for x in x0..x1 {
                let p = px(x, y);
                for (k, col) in colors.iter().enumerate() {
                    if (0..3).all(|i| p[i].abs_diff(col[i]) <= 12) {
                        found[k] += 1;
                    }
                }
            }
        }
        let shown = found.iter().filter(|&&n| n >= 4).count();
        assert!(
            shown * 2 >= colors.len() && shown > 0,
            "the screenshot of chart {id} shows {shown} of its {} series colours ({found:?})",
            colors.len()
        );
    }
}
