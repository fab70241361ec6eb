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
        assert!(
            min > 0.0 && min <= median && median <= max,
            "min/median/max out of order: {m}"
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
    // the backends the bench runs by default: those this kernel offers
    let drivers: Vec<&str> = graphdriver_harness::drivers::names()
        .into_iter()
        .filter(|d| graphdriver_harness::drivers::kernel_offers(d))
        .collect();
    for w in ["import", "export", "container", "child", "changes", "diff"] {
        for d in &drivers {
            assert!(
                ran.contains(&(w.to_owned(), d.to_string())),
                "workload {w} did not run on {d}"
            );
        }
    }
    assert!(
        ran.contains(&("depth".to_owned(), "overlay2".to_owned())),
        "no depth figures for overlay2"
    );
    let html = std::fs::read_to_string(path.with_file_name("report.html")).unwrap();
    for id in ["import", "export", "container", "changes", "depth"] {
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
