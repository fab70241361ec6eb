//! Layer blob decompression (plain, gzip, zstd, sniffed) under small limits: a typed error
//! or a length within the limit, never a panic. The first byte picks the ratio limit.
#![no_main]

use graphdriver_image::fuzz::layer_stream;
use graphdriver_image::ImportLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, blob)) = data.split_first() else {
        return;
    };
    let limits = ImportLimits {
        max_layer_bytes: 1 << 20,
        max_ratio: 2 + u64::from(knob % 64),
        ratio_floor: 4096,
        max_document_bytes: 1 << 16,
    };
    if let Ok(n) = layer_stream(blob, limits) {
        assert!(n <= limits.max_layer_bytes, "{n} bytes past the limit");
        if n > limits.ratio_floor {
            // Checked after every read against the compressed bytes read so far (at most the
            // whole blob).
            let ratio = n / (blob.len() as u64).max(1);
            assert!(ratio <= limits.max_ratio, "{n} bytes out of {}", blob.len());
        }
    }
});
