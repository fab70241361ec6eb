//! Archive entry names: `components` never yields a component that could leave the layer,
//! and `marker` never names `.`, `..`, an empty name or a path as a whiteout's target.
#![no_main]

use graphdriver_kit::archive::{components, marker, Marker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parts) = components(data) {
        for c in &parts {
            assert!(
                !c.is_empty() && *c != b"." && *c != b"..",
                "component {c:?}"
            );
            assert!(!c.contains(&b'/'), "component {c:?} holds a slash");
        }
        assert!(data.first() != Some(&b'/'));
        if let Some(base) = parts.last() {
            if let Ok(Marker::Whiteout(t)) = marker(base) {
                assert!(
                    !t.is_empty() && t != b"." && t != b"..",
                    "whiteout of {t:?}"
                );
                assert!(!t.contains(&b'/'));
                assert!(!t.starts_with(b".wh."), "whiteout of a whiteout name {t:?}");
            }
        }
    }
});
