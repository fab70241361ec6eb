//! Crash points for tests: with the cargo feature `failpoints`, `GRAPHDRIVER_FAILPOINT=<name>`
//! makes the process abort (as a `kill -9` would stop it) when it reaches the point of that
//! name, so crash recovery can be tested at exact steps; unset, a point costs one environment
//! lookup. Without the feature (any build no test asked for it in) a point is nothing.

/// The layer store's crash points, in the order an operation reaches them. The conformance
/// case `lifecycle::kill_at_every_store_failpoint_leaves_layers_whole` kills its helper process at
/// each on every backend; a test here checks this list against the calls in the source.
pub const STORE_POINTS: &[&str] = &[
    "create.after-journal",
    "create.after-make",
    "create.after-record",
    "remove.after-record",
    "remove.after-destroy",
    "get.after-mount",
    "put.after-unmount",
    "apply.staged",
    "apply.merge",
    "apply.merge.after-deletions",
    "apply.merge.mid-tree",
    "apply.after-merge",
];

/// Whether this build has crash points (the cargo feature `failpoints`).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Aborts the process if `GRAPHDRIVER_FAILPOINT` names `point` (in a build with the
/// `failpoints` feature; nothing otherwise).
#[inline]
pub fn hit(point: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var_os("GRAPHDRIVER_FAILPOINT").is_some_and(|v| v == point) {
        // stderr itself, not a tracing event: nothing is flushed after an abort
        eprintln!("graphdriver: failpoint {point}: aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = point;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The name of every crash point hit in the Rust files below `dir`.
    fn points_in(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                points_in(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let call = concat!("failpoint::", "hit(\"");
                for (at, _) in text.match_indices(call) {
                    let rest = &text[at + call.len()..];
                    out.insert(rest[..rest.find('"').unwrap()].to_owned());
                }
            }
        }
    }

    /// A build without the feature (a runtime's) never aborts, whatever the environment says.
    #[test]
    #[cfg(not(feature = "failpoints"))]
    fn without_the_feature_a_named_point_is_nothing() {
        std::env::set_var("GRAPHDRIVER_FAILPOINT", "test.point");
        super::hit("test.point");
    }

    #[test]
    fn the_list_names_every_crash_point_of_the_store() {
        let mut found = BTreeSet::new();
        points_in(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        let listed: BTreeSet<String> = super::STORE_POINTS.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            found, listed,
            "STORE_POINTS and the failpoint::hit calls in graphdriver-kit differ"
        );
    }
}
