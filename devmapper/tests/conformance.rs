//! The conformance suite on devmapper: one test per named case (`cargo test -p
//! graphdriver-devmapper --test conformance -- --list` names them); a case this machine cannot
//! run is `ignored` with its reason (all of them on a kernel without device-mapper), unless
//! `GRAPHDRIVER_REQUIRE=devmapper`.

fn main() -> std::process::ExitCode {
    graphdriver_conformance::libtest::main(graphdriver_conformance::Opener {
        name: "devmapper",
        open: |root, opts| Ok(Box::new(graphdriver_devmapper::open(root, opts)?)),
    })
}
