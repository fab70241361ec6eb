//! The conformance suite on overlay2: one test per named case (`cargo test -p graphdriver-overlay2
//! --test conformance -- --list` names them); a case this machine cannot run is `ignored`
//! with its reason, unless `GRAPHDRIVER_REQUIRE=overlay2`.

fn main() -> std::process::ExitCode {
    graphdriver_conformance::libtest::main(graphdriver_conformance::Opener {
        name: "overlay2",
        open: |root, opts| Ok(Box::new(graphdriver_overlay2::open(root, opts)?)),
    })
}
