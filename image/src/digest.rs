//! Validated content digests.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{ImageError, Result};

/// A content digest: `sha256:` followed by 64 lowercase hex digits, validated on construction
/// (the only algorithm this store accepts). Because the hex part is checked, a digest can name
/// a file (`blobs/sha256/<hex>`) or a layer without further checks.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

const PREFIX: &str = "sha256:";

impl Digest {
    /// Validates `s`; `entry` names where it was found, for the error.
    pub fn parse(s: &str, entry: &str) -> Result<Digest> {
        Self::validate(s).map_err(|reason| ImageError::InvalidDigest {
            digest: s.to_owned(),
            entry: entry.to_owned(),
            reason,
        })?;
        Ok(Digest(s.to_owned()))
    }

    fn validate(s: &str) -> Result<(), &'static str> {
        let Some(hex) = s.strip_prefix(PREFIX) else {
            return Err("it does not begin with sha256:");
        };
        if hex.len() != 64 {
            return Err("it does not have 64 hex digits");
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("it has a character outside [0-9a-f]");
        }
        Ok(())
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher holds.
    pub(crate) fn from_hasher(h: Sha256) -> Digest {
        let sum = h.finalize();
        let mut s = String::with_capacity(PREFIX.len() + 64);
        s.push_str(PREFIX);
        for b in sum.iter() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Digest(s)
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The whole digest, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The blob's path in an OCI image layout, `blobs/sha256/<hex>`.
    pub fn blob_path(&self) -> String {
        format!("blobs/sha256/{}", self.hex())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

validated_string_impls!(Digest);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_known_value() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn digests_other_than_lowercase_sha256_are_rejected() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(Digest::parse(&format!("sha256:{hex}"), "t").is_ok());
        for bad in [
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha512:{hex}"),
            format!("sha256:{}", &hex[1..]),
            "sha256:../../etc/passwd".to_owned(),
            hex.to_owned(),
        ] {
            assert!(
                matches!(
                    Digest::parse(&bad, "t"),
                    Err(ImageError::InvalidDigest { .. })
                ),
                "{bad}"
            );
        }
    }
}
