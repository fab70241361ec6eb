//! The conformance suite on zfs: one test per named case (`cargo test -p graphdriver-zfs
//! --test conformance -- --list` names them); a case this machine cannot run is `ignored`
//! with its reason, unless `GRAPHDRIVER_REQUIRE=zfs`.

fn main() -> std::process::ExitCode {
    graphdriver_conformance::libtest::main(graphdriver_conformance::Opener {
        name: "zfs",
        open: |root, opts| Ok(Box::new(graphdriver_zfs::open(root, opts)?)),
    })
}
