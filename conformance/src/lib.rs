//! The conformance suite: one contract, every backend.
//!
//! Each backend runs it from its own `cargo test` (`tests/conformance.rs`, one libtest test
//! per case, through [`libtest::main`]), and `graphctl check` runs it for any backend by name.
//!
//! Each named case (`group::behaviour`) gets a fresh driver on a fresh scratch root, runs
//! against the [`GraphDriver`] trait only, and passes, fails (with a dump of the trees it
//! compared) or is skipped with a reason when the backend or kernel lacks a feature it needs
//! (found by trying, never by checking the uid). `GRAPHDRIVER_REQUIRE=vfs,overlay2` turns
//! skips of those drivers into failures, except of the cases `GRAPHDRIVER_MAY_SKIP=idmap::`
//! names (comma-separated parts of case names): where a run is known to lack a feature (zfs
//! 2.1 cannot idmap; an unprivileged user makes no device nodes), and the driver answers it
//! with `Unsupported` ([`Refused`]) or the kernel refuses the case's own set-up. The summary
//! line is `N passed, N failed, N skipped`.

mod bad_input;
mod concurrency;
mod content;
mod diff;
pub mod fixture;
pub mod helper;
mod idmap;
pub mod libtest;
mod lifecycle;
pub mod support;
pub mod tree_snapshot;

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Result;
use graphdriver_api::GraphDriver;
use serde::Serialize;

/// A backend's `open`: the driver on `root` (which exists) with `opts`.
pub type OpenFn = fn(&Path, &BTreeMap<String, String>) -> Result<Box<dyn GraphDriver>>;

/// How the suite opens the driver under test: its name and a function that opens it on a
/// root with options (what a backend's `open` is).
#[derive(Clone, Copy)]
pub struct Opener {
    /// The driver's name (`overlay2`).
    pub name: &'static str,
    /// Opens the driver.
    pub open: OpenFn,
}

impl Opener {
    /// Opens the driver on `root`, making `root` first.
    pub fn open(
        &self,
        root: &Path,
        opts: &BTreeMap<String, String>,
    ) -> Result<Box<dyn GraphDriver>> {
        std::fs::create_dir_all(root)?;
        (self.open)(root, opts)
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The program cases run as another process (to kill it at a crash point, or to race it):
/// `program args.. --driver NAME --root ROOT [--opt k=v].. VERB ..`, where the verbs are
/// [`helper::main`]'s. `graphctl check` passes itself; a backend's test binary passes itself.
#[derive(Debug, Clone)]
pub struct Helper {
    /// The executable.
    pub program: PathBuf,
    /// Arguments before `--driver` (the subcommand that makes the program a helper).
    pub args: Vec<String>,
}

/// A case's way of saying "this backend or kernel cannot be tested for this": return
/// `Err(Skip(..).into())`.
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skip {}

/// A case's way of saying "the driver refused what this case checks with `Unsupported`, as
/// the contract lets it where the kernel or filesystem lacks a feature" (idmapped mounts on
/// zfs before 2.2): a skip, reported as refused.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by the driver: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// One named case.
#[derive(Clone, Copy)]
pub struct Case {
    /// `group::behaviour`.
    pub name: &'static str,
    /// The body.
    pub run: fn(&mut Ctx) -> Result<()>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every case, in the order they run.
pub fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(lifecycle::CASES);
    all.extend(content::CASES);
    all.extend(diff::CASES);
    all.extend(bad_input::CASES);
    all.extend(concurrency::CASES);
    all.extend(idmap::CASES);
    all
}

/// Where and how the suite runs.
#[derive(Debug, Clone)]
pub struct Env {
    /// The driver under test.
    pub driver: Opener,
    /// Its options.
    pub opts: BTreeMap<String, String>,
    /// A directory on the filesystem the driver roots go on; each case gets its own below it.
    pub scratch: PathBuf,
    /// The program for cases that need other processes.
    pub helper: Helper,
    /// Only cases whose name contains this.
    pub filter: Option<String>,
    /// Skips count as failures (`GRAPHDRIVER_REQUIRE` names this driver).
    pub required: bool,
}

impl Env {
    /// Whether `GRAPHDRIVER_REQUIRE` (comma-separated, or `all`) names `driver`.
    pub fn required_by_environment(driver: &str) -> bool {
        std::env::var("GRAPHDRIVER_REQUIRE")
            .map(|v| {
                v.split(',')
                    .any(|d| d.trim() == driver || d.trim() == "all")
            })
            .unwrap_or(false)
    }

    /// Whether `GRAPHDRIVER_MAY_SKIP` (comma-separated parts of case names) names `case`.
    pub fn may_skip(case: &str) -> bool {
        std::env::var("GRAPHDRIVER_MAY_SKIP")
            .map(|v| {
                v.split(',')
                    .any(|part| !part.trim().is_empty() && case.contains(part.trim()))
            })
            .unwrap_or(false)
    }
}

/// What a case gets: a driver on a fresh root, and room beside it.
pub struct Ctx<'a> {
    env: &'a Env,
    /// The driver root.
    pub root: PathBuf,
    /// A directory beside the root (same filesystem) for archives, sentinels and expected
    /// trees; nothing the driver does may change it.
    pub work: PathBuf,
    driver: Option<Box<dyn GraphDriver>>,
}

impl Ctx<'_> {
    /// The driver under test.
    pub fn d(&self) -> &dyn GraphDriver {
        self.driver.as_deref().expect("driver is open")
    }

    /// Drops the driver and opens a new one on the same root (as a new process would).
    pub fn reopen(&mut self) -> Result<()> {
        self.driver = None;
        self.driver = Some(self.env.driver.open(&self.root, &self.env.opts)?);
        Ok(())
    }

    /// Closes the driver (for cases that hand the root to other processes).
    pub fn close(&mut self) {
        self.driver = None;
    }

    /// The driver's name.
    pub fn driver_name(&self) -> &str {
        self.env.driver.name
    }

    /// `Err(Skip)` unless the helper process was built with crash points (the cargo feature
    /// `failpoints`, which a backend's own `cargo test` enables), for the cases that kill it
    /// at one.
    pub fn helper_has_failpoints(&self) -> Result<()> {
        let out = self.helper().arg("failpoints").output()?;
        anyhow::ensure!(out.status.success(), "helper failpoints: {out:?}");
        if String::from_utf8_lossy(&out.stdout).trim() != "true" {
            return Err(Skip(format!(
                "{} has no crash points: build it with the cargo feature `failpoints`",
                self.env.helper.program.display()
            ))
            .into());
        }
        Ok(())
    }

    /// A command running another process on this case's driver and root (see [`Helper`]).
    pub fn helper(&self) -> Command {
        let mut c = Command::new(&self.env.helper.program);
        c.args(&self.env.helper.args)
            .arg("--driver")
            .arg(self.env.driver.name)
            .arg("--root")
            .arg(&self.root);
        for (k, v) in &self.env.opts {
            c.arg("--opt").arg(format!("{k}={v}"));
        }
        c
    }
}

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// The case.
    pub name: String,
    /// `passed`, `failed` or `skipped`.
    pub outcome: &'static str,
    /// Why it failed or was skipped.
    pub message: Option<String>,
    /// Wall time.
    pub millis: u128,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The driver.
    pub driver: String,
    /// Every case run.
    pub cases: Vec<CaseReport>,
    /// Counts.
    pub passed: usize,
    /// Counts.
    pub failed: usize,
    /// Counts.
    pub skipped: usize,
}

impl Report {
    /// `N passed, N failed, N skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// Runs the suite, printing a line per case to `log`.
pub fn run(env: &Env, log: &mut dyn Write) -> Result<Report> {
    let mut report = Report {
        driver: env.driver.name.to_owned(),
        ..Report::default()
    };
    let base = scratch_base(env)?;
    for case in cases() {
        if let Some(f) = &env.filter {
            if !case.name.contains(f.as_str()) {
                continue;
            }
        }
        let r = run_one(env, &base, case);
        match r.outcome {
            "passed" => report.passed += 1,
            "failed" => report.failed += 1,
            _ => report.skipped += 1,
        }
        let tag = match r.outcome {
            "passed" => "ok  ",
            "failed" => "FAIL",
            _ => "skip",
        };
        writeln!(
            log,
            "{tag} {}::{} ({} ms)",
            env.driver.name, case.name, r.millis
        )?;
        if let Some(m) = &r.message {
            for line in m.lines() {
                writeln!(log, "     {line}")?;
            }
        }
        report.cases.push(r);
    }
    let _ = graphdriver_kit::fs::tree::remove_tree(&base);
    Ok(report)
}

/// The directory this process's cases make their roots in (one per case below it).
pub fn scratch_base(env: &Env) -> Result<PathBuf> {
    let base = env.scratch.join(format!(
        "conformance-{}-{}",
        env.driver.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

/// Runs one case on a fresh root below `base`; a skip is a failure where `env.required` says
/// so and [`Env::may_skip`] does not name the case.
pub fn run_one(env: &Env, base: &Path, case: Case) -> CaseReport {
    let started = Instant::now();
    let (outcome, message) = run_case(env, base, case);
    let millis = started.elapsed().as_millis();
    let outcome = match outcome {
        Outcome::Skip if env.required && !Env::may_skip(case.name) => Outcome::Fail,
        o => o,
    };
    CaseReport {
        name: case.name.to_owned(),
        outcome: match outcome {
            Outcome::Pass => "passed",
            Outcome::Fail => "failed",
            Outcome::Skip => "skipped",
        },
        message,
        millis,
    }
}

enum Outcome {
    Pass,
    Fail,
    Skip,
}

fn run_case(env: &Env, base: &Path, case: Case) -> (Outcome, Option<String>) {
    let dir = base.join(case.name.replace("::", "."));
    let root = dir.join("root");
    let work = dir.join("work");
    let case_fs = match fixture::case_dir(env.driver.name, &dir) {
        Ok(fs) => fs,
        Err(e) => {
            return (
                Outcome::Fail,
                Some(format!("cannot make the case's scratch filesystem: {e:#}")),
            )
        }
    };
    for d in [&root, &work] {
        if let Err(e) = std::fs::create_dir_all(d) {
            return (
                Outcome::Fail,
                Some(format!("cannot make scratch directory: {e}")),
            );
        }
    }
    let driver = match env.driver.open(&root, &env.opts) {
        Ok(d) => d,
        Err(e) => {
            let _ = graphdriver_kit::fs::tree::remove_tree(&dir);
            return (
                Outcome::Skip,
                Some(format!("driver does not open here: {e:#}")),
            );
        }
    };
    let mut ctx = Ctx {
        env,
        root: root.clone(),
        work,
        driver: Some(driver),
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| (case.run)(&mut ctx)));
    // Release every mount of the case before its scratch root goes.
    if ctx.driver.is_none() {
        let _ = ctx.reopen();
    }
    if let Some(d) = ctx.driver.take() {
        let _ = d.cleanup();
    }
    drop(ctx);
    unmount_below(&dir);
    let _ = graphdriver_kit::fs::tree::remove_tree(&dir);
    drop(case_fs);
    match result {
        Ok(Ok(())) => (Outcome::Pass, None),
        Ok(Err(e)) => match (e.downcast_ref::<Skip>(), e.downcast_ref::<Refused>()) {
            (Some(s), _) => (Outcome::Skip, Some(s.0.clone())),
            (_, Some(r)) => (Outcome::Skip, Some(r.to_string())),
            _ => (Outcome::Fail, Some(format!("{e:#}"))),
        },
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            (Outcome::Fail, Some(format!("panicked: {msg}")))
        }
    }
}

/// Detaches whatever a case left mounted below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    if let Ok(t) = graphdriver_kit::fs::mountinfo::MountTable::read() {
        let mut points: Vec<_> = t.below(dir).map(Path::to_owned).collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in points {
            let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's documentation names the case that checks each invariant: every name it
    /// gives must be a case of the suite.
    #[test]
    fn every_case_the_contract_docs_name_exists() {
        // read from the workspace at test time: the contract's crate is not this one
        let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../driver-api/src");
        let docs = ["lib.rs", "driver.rs"].map(|f| {
            std::fs::read_to_string(api.join(f)).expect("the contract's source is in the workspace")
        });
        let names: Vec<&str> = cases().iter().map(|c| c.name).collect();
        let mut named = 0;
        for doc in &docs {
            for word in
                doc.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '*'))
            {
                let group = word.split("::").next().unwrap_or("");
                if !["lifecycle", "content", "diff", "bad_input", "concurrency"].contains(&group)
                    || !word.contains("::")
                {
                    continue;
                }
                named += 1;
                let ok = match word.strip_suffix('*') {
                    Some(prefix) => names.iter().any(|n| n.starts_with(prefix)),
                    None => names.contains(&word),
                };
                assert!(ok, "the docs name {word}, which is not a conformance case");
            }
        }
        assert!(named > 20, "only {named} case names found in the docs");
    }
}
