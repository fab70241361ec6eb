//! ChainIDs: the name of a stack of layers (OCI image-spec, config.md).

use graphdriver_api::LayerId;
use sha2::{Digest as _, Sha256};

use crate::{Digest, ImageError, Result};

/// The ChainIDs of a stack of layers given their DiffIDs, base first:
/// `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let mut h = Sha256::new();
                h.update(prev.as_str().as_bytes());
                h.update(b" ");
                h.update(d.as_str().as_bytes());
                Digest::from_hasher(h)
            }
        };
        out.push(next);
    }
    out
}

/// The driver layer that holds the stack a ChainID names: its 64 hex digits.
/// (64 lowercase hex digits are always a valid layer id, so this does not fail in practice.)
pub fn layer_id(chain_id: &Digest) -> Result<LayerId> {
    LayerId::new(chain_id.hex()).map_err(|e| ImageError::Invalid {
        entry: chain_id.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_base_is_its_diff_id_and_of_the_next_the_spec_hash() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert_eq!(layer_id(&ids[1]).unwrap().as_str(), ids[1].hex());
    }
}
