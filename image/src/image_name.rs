//! Validated image names.

use serde::{Deserialize, Serialize};

use crate::{ImageError, Result};

/// The longest image name, in bytes.
pub const MAX_IMAGE_NAME_LEN: usize = 255;

/// An image's name: a reference such as `docker.io/library/debian:12`, a tag such as
/// `latest`, or the manifest (or, for `docker save` archives, config) digest of an image that
/// has no name. 1 to 255 bytes, no whitespace or control characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageName(String);

impl ImageName {
    /// Validates `s` as an image name.
    pub fn new(s: impl Into<String>) -> Result<ImageName> {
        let s = s.into();
        match Self::validate(&s) {
            Ok(()) => Ok(ImageName(s)),
            Err(reason) => Err(ImageError::InvalidName { name: s, reason }),
        }
    }

    fn validate(s: &str) -> Result<(), &'static str> {
        if s.is_empty() {
            return Err("it is empty");
        }
        if s.len() > MAX_IMAGE_NAME_LEN {
            return Err("it is longer than 255 bytes");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("it has whitespace or a control character");
        }
        Ok(())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

validated_string_impls!(ImageName);
