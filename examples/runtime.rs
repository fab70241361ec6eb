//! A container runtime's use of graphdriver: import a root filesystem tar as an image layer,
//! create a container layer on it, mount it, write, list the changes, export the diff.
//!
//! ```text
//! cargo run --release -p graphdriver-examples --example runtime -- ROOT ROOTFS.tar
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use graphdriver_api::{CreateOpts, GraphDriver, LayerId, MountOpts};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(root), Some(rootfs)) = (args.next(), args.next()) else {
        eprintln!("usage: runtime ROOT ROOTFS.tar");
        std::process::exit(2);
    };

    // Any backend is a Box<dyn GraphDriver>; vfs runs everywhere.
    let driver: Box<dyn GraphDriver> = Box::new(graphdriver_vfs::open(&root, &Default::default())?);

    // 1. Import the image: an image layer filled from an OCI layer tar.
    let image = LayerId::new("image")?;
    driver.create(&image, None, &CreateOpts::default())?;
    let size = driver.apply_diff(&image, None, &mut File::open(&rootfs)?)?;
    println!("imported {} bytes into layer {image}", size);

    // 2. A container: a writable layer on the image, mounted.
    let container = LayerId::new("container")?;
    let rw = CreateOpts {
        read_write: true,
        ..CreateOpts::default()
    };
    driver.create(&container, Some(&image), &rw)?;
    let rootdir = driver.get(&container, &MountOpts::default())?;
    println!("container root at {}", rootdir.display());

    // 3. The container writes.
    std::fs::write(rootdir.join("etc/hostname"), "example\n")?;
    std::fs::remove_file(rootdir.join("usr/bin/cat"))?;
    driver.put(&container)?;

    // 4. What changed, as `docker diff` shows it.
    for change in driver.changes(&container, None)? {
        println!("{change}");
    }

    // 5. Commit: the container's diff as an OCI layer tar.
    let out = root.join("container-diff.tar");
    let mut w = BufWriter::new(File::create(&out)?);
    std::io::copy(&mut driver.diff(&container, None)?, &mut w)?;
    println!(
        "diff: {} bytes of file data in {}",
        driver.diff_size(&container, None)?,
        out.display()
    );

    driver.remove(&container)?;
    driver.remove(&image)?;
    Ok(())
}
