//! Limits that keep a hostile archive from exhausting memory or disk.

/// Limits applied while importing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// The most uncompressed bytes one layer may expand to.
    pub max_layer_bytes: u64,
    /// The most a layer may expand relative to its compressed bytes (uncompressed divided by
    /// compressed), checked once it is past [`ratio_floor`](Self::ratio_floor).
    pub max_ratio: u64,
    /// Uncompressed bytes below which the ratio is not checked (small layers of zeros are
    /// harmless).
    pub ratio_floor: u64,
    /// The largest JSON document (index, manifest, config) read into memory.
    pub max_document_bytes: u64,
}

impl Default for ImportLimits {
    /// 64 GiB a layer, 1000:1 past 64 MiB, 4 MiB documents (containerd's manifest limit).
    fn default() -> Self {
        ImportLimits {
            max_layer_bytes: 64 << 30,
            max_ratio: 1000,
            ratio_floor: 64 << 20,
            max_document_bytes: 4 << 20,
        }
    }
}
