//! The conformance suite on vfs: one test per named case (`cargo test -p graphdriver-vfs
//! --test conformance -- --list` names them); a case this machine cannot run is `ignored`
//! with its reason, unless `GRAPHDRIVER_REQUIRE=vfs`.

fn main() -> std::process::ExitCode {
    graphdriver_conformance::libtest::main(graphdriver_conformance::Opener {
        name: "vfs",
        open: |root, opts| Ok(Box::new(graphdriver_vfs::open(root, opts)?)),
    })
}
