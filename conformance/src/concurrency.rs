//! Several processes and threads using one driver root at once.

use std::process::Child;

use anyhow::{ensure, Context, Result};
use graphdriver_api::{CreateOpts, DriverError, MountOpts};
use graphdriver_kit::fs::mountinfo::MountTable;

use super::support::*;
use super::{Case, Ctx};

/// The concurrency cases.
pub const CASES: &[Case] = &[
    Case {
        name: "concurrency::processes_mount_and_unmount_one_layer",
        run: processes_mount_and_unmount_one_layer,
    },
    Case {
        name: "concurrency::processes_create_children_of_one_parent",
        run: processes_create_children_of_one_parent,
    },
    Case {
        name: "concurrency::threads_create_mount_and_remove",
        run: threads_create_mount_and_remove,
    },
];

const PROCS: usize = 4;

fn wait_all(children: Vec<Child>, what: &str) -> Result<()> {
    for mut c in children {
        let st = c.wait()?;
        ensure!(st.success(), "{what}: a process exited {st:?}");
    }
    Ok(())
}

fn processes_mount_and_unmount_one_layer(ctx: &mut Ctx) -> Result<()> {
    let l = layer(ctx, "shared", None, |p| write(&p.join("f"), "x"))?;
    let path = ctx.d().get(&l, &MountOpts::default())?;
    ctx.d().put(&l)?;
    ctx.close();
    // each process takes 5 mounts and exits holding them
    let holders = (0..PROCS)
        .map(|_| ctx.helper().args(["hold", "shared", "5"]).spawn())
        .collect::<std::io::Result<Vec<_>>>()?;
    wait_all(holders, "hold")?;
    // and some mount and unmount at the same time
    let cyclers = (0..PROCS)
        .map(|_| ctx.helper().args(["cycle", "shared", "10"]).spawn())
        .collect::<std::io::Result<Vec<_>>>()?;
    wait_all(cyclers, "cycle")?;
    ctx.reopen()?;
    ensure!(
        MountTable::read()?.contains(&path),
        "the layer is not mounted while 20 mounts are held"
    );
    for i in 0..PROCS * 5 {
        ctx.d()
            .put(&l)
            .with_context(|| format!("put {} of {}", i + 1, PROCS * 5))?;
    }
    expect_err(ctx.d().put(&l), "one put more than the gets", |e| {
        matches!(e, DriverError::NotMounted(_))
    })?;
    ensure!(
        !MountTable::read()?.contains(&path),
        "a mount was left behind"
    );
    Ok(())
}

fn processes_create_children_of_one_parent(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| write(&p.join("f"), "x"))?;
    ctx.close();
    let procs = (0..PROCS)
        .map(|p| {
            let script = (0..5)
                .map(|i| format!("\"$0\" \"$@\" create c{p}-{i} --parent base --rw"))
                .collect::<Vec<_>>()
                .join(" && ");
            let mut c = ctx.helper();
            let exe = c.get_program().to_owned();
            let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
            c = std::process::Command::new("sh");
            c.arg("-c").arg(script).arg(exe).args(args);
            c.spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    wait_all(procs, "create")?;
    ctx.reopen()?;
    let list = ctx.d().list()?;
    ensure!(
        list.len() == 1 + PROCS * 5,
        "{} layers listed: {list:?}",
        list.len()
    );
    let e = expect_err(ctx.d().remove(&base), "remove the shared parent", |e| {
        matches!(e, DriverError::HasChildren { .. })
    })?;
    if let DriverError::HasChildren { children, .. } = e {
        ensure!(
            children.len() == PROCS * 5,
            "{} children recorded",
            children.len()
        );
    }
    for c in list.iter().filter(|c| **c != base) {
        ensure!(
            view(ctx, c)?.get("f").is_some(),
            "{c} does not see its parent"
        );
    }
    Ok(())
}

fn threads_create_mount_and_remove(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| write(&p.join("f"), "x"))?;
    let d = ctx.d();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..PROCS)
            .map(|t| {
                let base = base.clone();
                s.spawn(move || -> Result<()> {
                    for i in 0..8 {
                        let l = id(&format!("t{t}-{i}"));
                        d.create(
                            &l,
                            Some(&base),
                            &CreateOpts {
                                read_write: true,
                                ..CreateOpts::default()
                            },
                        )?;
                        let p = d.get(&l, &MountOpts::default())?;
                        write(&p.join(format!("w{t}")), "y")?;
                        ensure!(p.join("f").exists(), "{l} does not see its parent");
                        d.put(&l)?;
                        d.remove(&l)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a thread panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    ensure!(
        d.list()? == vec![base.clone()],
        "layers left: {:?}",
        d.list()?
    );
    d.remove(&base)?;
    Ok(())
}
