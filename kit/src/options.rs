//! Driver options: each backend's are a typed struct (`VfsOptions`, `Overlay2Options`, ...)
//! that its `open_with` takes, made from the `key=value` map of a command line or a
//! runtime's configuration by `TryFrom<&BTreeMap<String, String>>`, which refuses an unknown
//! key or a bad value with [`DriverError::Unsupported`] before anything is made on disk.
//!
//! Keys are `<backend>.<name>` (`overlay2.mount_api`, `dm.basesize`), plus the layer store's
//! own, which every backend takes ([`StoreOptions`]): `store.native_diff=false`. Library code
//! reads no environment variable; `graphctl` maps the ones it documents to options.

use std::collections::BTreeMap;

use crate::{DriverError, Result};

/// What the layer store takes whatever the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// `store.native_diff` (default `true`): `changes` and `diff` against a layer's own
    /// parent read the backend's native change list where it has one (overlay2's upper
    /// directory, btrfs's changed inodes). `false` makes them walk both trees, the naive way,
    /// whose answers the native ones must equal (a check, and a way out of a native bug).
    pub native_diff: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { native_diff: true }
    }
}

/// A backend's options being parsed: hands each key to the backend, the store's (`store.*`)
/// to [`StoreOptions`], and refuses what neither takes.
#[derive(Debug)]
pub struct OptionParser<'a> {
    driver: &'static str,
    opts: &'a BTreeMap<String, String>,
}

impl<'a> OptionParser<'a> {
    /// Parses `opts` for `driver`.
    pub fn new(driver: &'static str, opts: &'a BTreeMap<String, String>) -> Self {
        OptionParser { driver, opts }
    }

    /// The store's options, and each other key and value given to `backend`, which answers
    /// whether it took the key (`Ok(false)`: not its key, an unknown option).
    pub fn parse(
        &self,
        mut backend: impl FnMut(&str, &str) -> Result<bool>,
    ) -> Result<StoreOptions> {
        let mut store = StoreOptions::default();
        for (k, v) in self.opts {
            let taken = match k.as_str() {
                "store.native_diff" => {
                    store.native_diff = self.bool(k, v)?;
                    true
                }
                _ => backend(k, v)?,
            };
            if !taken {
                return Err(self.unsupported(format!("unknown option {k}")));
            }
        }
        Ok(store)
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    pub fn bool(&self, key: &str, value: &str) -> Result<bool> {
        match value {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(self.unsupported(format!("{key}={value}: want true or false"))),
        }
    }

    /// A size in bytes: a number with an optional `K`, `M`, `G` or `T` (powers of 1024).
    pub fn size(&self, key: &str, value: &str) -> Result<u64> {
        parse_size(value)
            .ok_or_else(|| self.unsupported(format!("{key}={value}: want a size like 10G")))
    }

    /// The error for a value the backend refuses.
    pub fn unsupported(&self, reason: impl Into<String>) -> DriverError {
        DriverError::unsupported(self.driver, reason)
    }
}

/// A backend's typed options: how one `key=value` sets them. [`parse`] makes them from a map,
/// and [`driver_options!`](crate::driver_options) gives them `TryFrom<&BTreeMap<..>>`.
pub trait DriverOptions: Default {
    /// The driver's name, for errors.
    const DRIVER: &'static str;

    /// Sets the option `key` to `value` if it is this backend's; `Ok(false)` when it is not
    /// (then it is an unknown option, unless it is the store's).
    fn set(&mut self, parser: &OptionParser<'_>, key: &str, value: &str) -> Result<bool>;

    /// The layer store's options, which every backend's hold.
    fn store_mut(&mut self) -> &mut StoreOptions;

    /// Checks the options together, once every key is set (also what `open_with` runs first,
    /// since the fields are public).
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// `T` from the `key=value` map `opts`: each key set once, the store's taken, unknown keys
/// and bad values refused by name.
pub fn parse<T: DriverOptions>(opts: &BTreeMap<String, String>) -> Result<T> {
    let mut o = T::default();
    let parser = OptionParser::new(T::DRIVER, opts);
    *o.store_mut() = parser.parse(|k, v| o.set(&parser, k, v))?;
    o.check()?;
    Ok(o)
}

/// `impl TryFrom<&BTreeMap<String, String>>` for a [`DriverOptions`] type, through [`parse`].
#[macro_export]
macro_rules! driver_options {
    ($t:ty) => {
        impl TryFrom<&std::collections::BTreeMap<String, String>> for $t {
            type Error = graphdriver_api::DriverError;

            fn try_from(
                opts: &std::collections::BTreeMap<String, String>,
            ) -> graphdriver_api::Result<Self> {
                $crate::options::parse(opts)
            }
        }
    };
}

/// A size in bytes: a number with an optional `K`, `M`, `G` or `T` suffix (powers of 1024,
/// either case); `None` when it is not one or overflows.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 10),
        'M' | 'm' => (&s[..s.len() - 1], 20),
        'G' | 'g' => (&s[..s.len() - 1], 30),
        'T' | 't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_the_rest() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("-1K"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
        assert_eq!(parse_size("20000000T"), None, "overflows u64");
    }

    #[test]
    fn the_store_takes_its_keys_and_an_unknown_key_is_refused_by_name() {
        let o = map(&[("store.native_diff", "false"), ("x.size", "1K")]);
        let mut size = 0;
        let store = OptionParser::new("x", &o)
            .parse(|k, v| match k {
                "x.size" => {
                    size = parse_size(v).unwrap();
                    Ok(true)
                }
                _ => Ok(false),
            })
            .unwrap();
        assert!(!store.native_diff);
        assert_eq!(size, 1024);
        assert!(StoreOptions::default().native_diff);

        let o = map(&[("x.colour", "blue")]);
        let e = OptionParser::new("x", &o)
            .parse(|_, _| Ok(false))
            .unwrap_err();
        assert!(
            matches!(&e, DriverError::Unsupported { driver: "x", reason } if reason == "unknown option x.colour"),
            "{e:?}"
        );
        let o = map(&[("store.native_diff", "maybe")]);
        let e = OptionParser::new("x", &o)
            .parse(|_, _| Ok(false))
            .unwrap_err();
        assert!(e.to_string().contains("want true or false"), "{e}");
    }
}
