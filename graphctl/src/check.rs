//! `graphctl check`: the conformance suite on one backend, or `--driver all`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use graphdriver_conformance::{self as conformance, fixture, Env, Helper};

/// Run the conformance suite.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only cases whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Where scratch roots go (default: a fresh loop filesystem of the kind the backend needs,
    /// under /var/tmp).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the suite on `driver` (or every backend, for `all`) with `opts`.
pub fn run(driver: &str, opts: &BTreeMap<String, String>, args: Args) -> Result<ExitCode> {
    let Args {
        filter,
        scratch,
        json,
    } = args;
    let names: Vec<String> = if driver == "all" {
        graphdriver_backends::names()
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        vec![driver.to_owned()]
    };
    let helper = Helper {
        program: std::env::current_exe().context("find graphctl itself")?,
        args: vec![graphdriver_conformance::helper::ARG.to_owned()],
    };
    let mut total = conformance::Report::default();
    let mut reports = Vec::new();
    let stdout = io::stdout();
    for name in names {
        // each driver on the filesystem it needs, unless one was given
        let (_fs, scratch) = match &scratch {
            Some(p) => (None, p.clone()),
            None => {
                let fs = match fixture::suite_scratch(&name) {
                    Ok(fs) => fs,
                    // a backend this machine cannot run (no zfs module) is skipped unless
                    // GRAPHDRIVER_REQUIRE names it
                    Err(e) if !Env::required_by_environment(&name) => {
                        println!("skip {name}: no scratch filesystem for it here: {e:#}");
                        total.skipped += 1;
                        continue;
                    }
                    Err(e) => {
                        return Err(e.context("make the scratch filesystem (or pass --scratch DIR)"))
                    }
                };
                let p = fs.path().to_owned();
                (Some(fs), p)
            }
        };
        let env = Env {
            required: Env::required_by_environment(&name),
            driver: graphdriver_backends::opener(&name)?,
            opts: opts.clone(),
            scratch,
            helper: helper.clone(),
            filter: filter.clone(),
        };
        let mut log: Box<dyn Write> = if json {
            Box::new(io::stderr())
        } else {
            Box::new(stdout.lock())
        };
        let r = conformance::run(&env, &mut log)?;
        writeln!(log, "{}: {}", r.driver, r.summary())?;
        total.passed += r.passed;
        total.failed += r.failed;
        total.skipped += r.skipped;
        reports.push(r);
    }
    if json {
        serde_json::to_writer_pretty(stdout.lock(), &reports)?;
        println!();
    }
    println!("{}", total.summary());
    if total.failed > 0 {
        return Ok(ExitCode::from(1));
    }
    if total.passed == 0 && total.skipped == 0 {
        bail!("no case matched");
    }
    Ok(ExitCode::SUCCESS)
}
