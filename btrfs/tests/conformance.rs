//! The conformance suite on btrfs: one test per named case (`cargo test -p graphdriver-btrfs
//! --test conformance -- --list` names them); a case this machine cannot run is `ignored`
//! with its reason, unless `GRAPHDRIVER_REQUIRE=btrfs`.

fn main() -> std::process::ExitCode {
    graphdriver_conformance::libtest::main(graphdriver_conformance::Opener {
        name: "btrfs",
        open: |root, opts| Ok(Box::new(graphdriver_btrfs::open(root, opts)?)),
    })
}
