//! The other process of the cases that need one: a case kills it at a crash point
//! (`GRAPHDRIVER_FAILPOINT`), kills it mid-apply, or races several of it on one root.
//!
//! `PROGRAM [ARGS..] --driver NAME --root ROOT [--opt KEY=VALUE].. VERB ..` with the verbs
//! `create ID [--parent P] [--rw]`, `remove ID`, `mount ID` (prints the path), `unmount ID`,
//! `apply ID [-i FILE]` (stdin without `-i`; prints the size), `hold ID N` (mounts N times and
//! exits without unmounting), `cycle ID N` (mounts and unmounts N times), and `failpoints`
//! (prints whether this build has crash points, the cargo feature `failpoints`). Ids are
//! taken as strings and parsed as the driver's callers would. Errors go to stderr, exit
//! status 1.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use graphdriver_api::{CreateOpts, LayerId, MountOpts};

use crate::Opener;

/// The first argument that makes a program (`graphctl`, a backend's conformance test) this
/// helper.
pub const ARG: &str = "__conformance-helper";

/// Runs the helper on `args` (those after [`ARG`]), finding the driver by name with `find`.
pub fn main(args: &[String], find: impl Fn(&str) -> Result<Opener>) -> ExitCode {
    match run(args, find) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helper: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String], find: impl Fn(&str) -> Result<Opener>) -> Result<()> {
    let mut driver = None;
    let mut root = None;
    let mut opts = BTreeMap::new();
    let mut rest = args.iter();
    let verb = loop {
        match rest.next().map(String::as_str) {
            Some("--driver") => driver = Some(rest.next().context("--driver needs a value")?),
            Some("--root") => {
                root = Some(PathBuf::from(rest.next().context("--root needs a value")?))
            }
            Some("--opt") => {
                let kv = rest.next().context("--opt needs KEY=VALUE")?;
                let (k, v) = kv.split_once('=').context("--opt needs KEY=VALUE")?;
                opts.insert(k.to_owned(), v.to_owned());
            }
            Some(verb) => break verb,
            None => bail!("no verb"),
        }
    };
    if verb == "failpoints" {
        println!("{}", graphdriver_kit::failpoint::ENABLED);
        return Ok(());
    }
    let opener = find(driver.context("no --driver")?)?;
    let root = root.context("no --root")?;
    let args: Vec<&str> = rest.map(String::as_str).collect();
    let d = opener.open(&root, &opts)?;
    let lid = |s: &str| -> Result<LayerId> { Ok(LayerId::new(s)?) };
    let mut out = std::io::stdout().lock();
    match (verb, args.as_slice()) {
        ("create", [id, flags @ ..]) => {
            let mut parent = None;
            let mut opts = CreateOpts::default();
            let mut flags = flags.iter();
            while let Some(f) = flags.next() {
                match *f {
                    "--parent" => {
                        parent = Some(lid(flags.next().context("--parent needs an id")?)?)
                    }
                    "--rw" => opts.read_write = true,
                    other => bail!("create: unknown flag {other}"),
                }
            }
            d.create(&lid(id)?, parent.as_ref(), &opts)?;
        }
        ("remove", [id]) => d.remove(&lid(id)?)?,
        ("mount", [id]) => writeln!(
            out,
            "{}",
            d.get(&lid(id)?, &MountOpts::default())?.display()
        )?,
        ("unmount", [id]) => d.put(&lid(id)?)?,
        ("apply", [id, input @ ..]) => {
            let id = lid(id)?;
            let mut r: Box<dyn Read> = match input {
                [] => Box::new(std::io::stdin().lock()),
                ["-i", file] => {
                    Box::new(std::fs::File::open(file).with_context(|| format!("open {file}"))?)
                }
                other => bail!("apply: unknown arguments {other:?}"),
            };
            if !d.exists(&id) {
                d.create(&id, None, &CreateOpts::default())?;
            }
            writeln!(out, "{}", d.apply_diff(&id, None, &mut r)?)?;
        }
        ("hold", [id, n]) => {
            let id = lid(id)?;
            for _ in 0..n.parse::<u32>()? {
                d.get(&id, &MountOpts::default())?;
            }
        }
        ("cycle", [id, n]) => {
            let id = lid(id)?;
            for _ in 0..n.parse::<u32>()? {
                d.get(&id, &MountOpts::default())?;
                d.put(&id)?;
            }
        }
        (verb, args) => bail!("unknown verb or arguments: {verb} {args:?}"),
    }
    Ok(())
}
