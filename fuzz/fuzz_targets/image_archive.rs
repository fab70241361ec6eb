//! An image archive (a tar of an OCI layout or a `docker save` tar) read as an import reads
//! it before creating any layer: index, manifests, configs and their digests, blob paths.
//! A typed error or a plan, never a panic, and no path outside the archive is read (the
//! archive is a tar read in place, so there is nothing outside it to reach).
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use graphdriver_image::fuzz::plan_archive;
use graphdriver_image::ImportLimits;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(format!(
            "/dev/shm/graphdriver-fuzz-image-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch().join("image.tar");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(data).unwrap();
    drop(f);
    let limits = ImportLimits {
        max_document_bytes: 1 << 20,
        ..ImportLimits::default()
    };
    let _ = plan_archive(&path, &limits);
});
