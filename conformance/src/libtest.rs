//! The suite as a backend's own `cargo test`: one libtest test per named case.
//!
//! A backend's `tests/conformance.rs` (a `harness = false` test) is
//!
//! ```no_run
//! # fn open(_: &std::path::Path, _: &std::collections::BTreeMap<String, String>)
//! #     -> anyhow::Result<Box<dyn graphdriver_api::GraphDriver>> { unimplemented!() }
//! fn main() -> std::process::ExitCode {
//!     graphdriver_conformance::libtest::main(graphdriver_conformance::Opener {
//!         name: "vfs",
//!         open,
//!     })
//! }
//! ```
//!
//! The cases run one at a time (they mount, and some count the mounts below a root) on a
//! scratch filesystem of the kind the backend needs (`GRAPHDRIVER_SCRATCH=DIR` to use a
//! directory instead), made under `/var/tmp/graphdriver-check`. A case the backend or kernel
//! cannot be tested for here is reported `ignored` with its reason, unless
//! `GRAPHDRIVER_REQUIRE` names the backend (then it fails, except where
//! `GRAPHDRIVER_MAY_SKIP` names the case). Filters and `--list` work as with any `cargo test`.
//! The test binary is also the helper process the cases start ([`crate::helper`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::fixture::{self, ScratchFs};
use crate::{cases, helper, Env, Helper, Opener};

/// Runs the suite on `opener`'s backend as libtest tests (or, as the helper process, one
/// helper verb).
pub fn main(opener: Opener) -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(helper::ARG) {
        return helper::main(&argv[2..], |name| {
            anyhow::ensure!(
                name == opener.name,
                "this helper runs {}, not {name}",
                opener.name
            );
            Ok(opener)
        });
    }
    let mut args = Arguments::from_args();
    // cases mount and count mounts below their roots: one at a time
    args.test_threads = Some(1);
    let required = Env::required_by_environment(opener.name);
    let (scratch, setup_error) = if args.list {
        (None, None)
    } else {
        match scratch(opener.name) {
            Ok(s) => (Some(s), None),
            Err(e) => {
                // said once here; each case is then ignored for it
                eprintln!(
                    "conformance: no scratch filesystem for {} here: {e:#}",
                    opener.name
                );
                let fs = fixture::scratch_fs(opener.name);
                (
                    None,
                    Some(format!(
                        "no {fs} scratch filesystem here (the error is above)"
                    )),
                )
            }
        }
    };
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return fail_setup(&format!("cannot find this test binary, the helper: {e}")),
    };
    // the environment and the directory the cases make their roots in, where there is a
    // scratch filesystem
    let setup = match &scratch {
        Some(s) => {
            let env = Env {
                driver: opener,
                opts: Default::default(),
                scratch: s.path().to_owned(),
                helper: Helper {
                    program,
                    args: vec![helper::ARG.to_owned()],
                },
                filter: None,
                required,
            };
            match crate::scratch_base(&env) {
                Ok(base) => Some(Arc::new((env, base))),
                Err(e) => return fail_setup(&format!("cannot make the cases' directory: {e:#}")),
            }
        }
        None => None,
    };
    let trials = cases()
        .into_iter()
        .map(|case| {
            let setup = setup.clone();
            let setup_error = setup_error.clone();
            Trial::ignorable_test(case.name, move || match setup.as_deref() {
                Some((env, base)) => {
                    let r = crate::run_one(env, base, case);
                    let msg = r.message.unwrap_or_default();
                    match r.outcome {
                        "passed" => Ok(Completion::Completed),
                        // libtest shows a reason on the case's line: its first line
                        "skipped" => Ok(Completion::ignored_with(first_line(&msg))),
                        _ => Err(Failed::from(msg)),
                    }
                }
                None => {
                    let why = setup_error.unwrap_or_else(|| "no scratch filesystem".into());
                    if required {
                        Err(Failed::from(why))
                    } else {
                        Ok(Completion::ignored_with(why))
                    }
                }
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some((_, base)) = setup.as_deref() {
        let _ = graphdriver_kit::fs::tree::remove_tree(base);
    }
    drop(scratch);
    conclusion.exit_code()
}

/// The scratch directory the cases make their roots in, kept while the value lives.
enum Scratch {
    Dir(PathBuf),
    Fs(ScratchFs),
}

impl Scratch {
    fn path(&self) -> &Path {
        match self {
            Scratch::Dir(p) => p,
            Scratch::Fs(fs) => fs.path(),
        }
    }
}

fn scratch(driver: &str) -> anyhow::Result<Scratch> {
    if let Some(dir) = std::env::var_os("GRAPHDRIVER_SCRATCH") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        return Ok(Scratch::Dir(dir));
    }
    Ok(Scratch::Fs(fixture::suite_scratch(driver)?))
}

/// The first line of `msg`, at most 200 characters.
fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or("");
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_owned(),
    }
}

fn fail_setup(why: &str) -> ExitCode {
    eprintln!("conformance: {why}");
    ExitCode::from(101)
}
