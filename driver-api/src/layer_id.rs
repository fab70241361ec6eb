//! Validated layer identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DriverError;

/// The longest identifier a layer may have, in bytes.
pub const MAX_LAYER_ID_LEN: usize = 128;

/// The name of a layer: 1 to 128 characters from `[A-Za-z0-9_.-]`, not beginning with `.`.
///
/// A `LayerId` names directories, device-mapper devices and ZFS datasets, so it is validated on
/// construction and can be used in a path component without further checks: it is never empty,
/// never `.` or `..`, and never contains `/` or NUL.
///
/// Checked by the conformance case `lifecycle::invalid_ids_are_rejected`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LayerId(String);

impl LayerId {
    /// Validates `s` as a layer id.
    pub fn new(s: impl Into<String>) -> Result<Self, DriverError> {
        let s = s.into();
        match Self::validate(&s) {
            Ok(()) => Ok(LayerId(s)),
            Err(reason) => Err(DriverError::InvalidId { id: s, reason }),
        }
    }

    fn validate(s: &str) -> Result<(), &'static str> {
        if s.is_empty() {
            return Err("it is empty");
        }
        if s.len() > MAX_LAYER_ID_LEN {
            return Err("it is longer than 128 characters");
        }
        if s.starts_with('.') {
            return Err("it begins with '.'");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err("it has a character outside [A-Za-z0-9_.-]");
        }
        Ok(())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerId({:?})", self.0)
    }
}

impl FromStr for LayerId {
    type Err = DriverError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LayerId::new(s)
    }
}

impl TryFrom<String> for LayerId {
    type Error = DriverError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        LayerId::new(s)
    }
}

impl From<LayerId> for String {
    fn from(id: LayerId) -> String {
        id.0
    }
}

impl AsRef<str> for LayerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for LayerId {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for id in ["a", "base", "sha256_abc.1-x", &"x".repeat(128), "A9.b"] {
            assert!(LayerId::new(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_ids_that_could_escape_or_collide() {
        for id in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "/abs",
            "a\0b",
            "sp ace",
            "ü",
            &"x".repeat(129),
        ] {
            let err = LayerId::new(id).unwrap_err();
            assert!(matches!(err, DriverError::InvalidId { .. }), "{id}: {err}");
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<LayerId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<LayerId>("\"../x\"").is_err());
    }
}
