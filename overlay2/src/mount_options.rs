//! Overlay mount parameters as data: which directories, which options, and whether the
//! legacy `mount(2)` option string fits in a page (pure logic, tested without root).

use std::path::PathBuf;

/// The kernel's limit on lower layers in one overlay mount (`OVL_MAX_STACK`).
pub const MAX_LOWERS: usize = 500;
/// `mount(2)` copies its data argument into one page: the option string and its NUL.
pub const PAGE_SIZE: usize = 4096;

/// Options that keep the upper directory a plain diff the native change list can read:
/// no index, no redirects (renamed directories are copied), no metadata-only copy-up; with
/// `userxattr` (which refuses `redirect_dir=off`, as it would follow redirects in lowers)
/// redirects are neither made nor followed.
pub fn fixed_options(userxattr: bool) -> [(&'static str, &'static str); 3] {
    [
        ("index", "off"),
        ("redirect_dir", if userxattr { "nofollow" } else { "off" }),
        ("metacopy", "off"),
    ]
}

/// One overlay mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// Lower directories, top-most first.
    pub lowers: Vec<PathBuf>,
    /// Upper and work directories, for a writable mount.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// overlayfs keeps its xattrs as `user.overlay.*` (`userxattr`: what an unprivileged
    /// user in a user namespace may set) rather than `trusted.overlay.*`.
    pub userxattr: bool,
}

/// Why a mount cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TooDeep {
    /// More lower layers than the kernel stacks.
    Stack {
        /// How many lower layers the mount needs.
        lowers: usize,
    },
    /// The legacy option string does not fit in a page.
    Page {
        /// How many lower layers the mount needs.
        lowers: usize,
        /// The option string's length with its NUL.
        bytes: usize,
    },
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TooDeep::Stack { lowers } => write!(
                f,
                "{lowers} lower layers exceed the kernel's overlay limit of {MAX_LOWERS}"
            ),
            TooDeep::Page { lowers, bytes } => write!(
                f,
                "{lowers} lower layers need {bytes} bytes of mount options, more than the \
                 {PAGE_SIZE}-byte page legacy mount(2) takes; a kernel with the new mount \
                 API (6.8 or later, lowerdir+) has no such limit"
            ),
        }
    }
}

impl OverlayMount {
    /// Checks the kernel's stacking limit.
    pub fn check_stack(&self) -> Result<(), TooDeep> {
        if self.lowers.len() > MAX_LOWERS {
            return Err(TooDeep::Stack {
                lowers: self.lowers.len(),
            });
        }
        Ok(())
    }

    /// The mount's options, one per item, in the order the kernel takes them; not checked
    /// against the page (see [`legacy_options`](Self::legacy_options)).
    pub fn options(&self) -> Result<Vec<String>, TooDeep> {
        self.check_stack()?;
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut o = vec![format!("lowerdir={}", lowers.join(":"))];
        if let Some((upper, work)) = &self.upper {
            o.push(format!("upperdir={}", upper.display()));
            o.push(format!("workdir={}", work.display()));
        }
        o.extend(
            fixed_options(self.userxattr)
                .iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        if self.userxattr {
            o.push("userxattr".into());
        }
        Ok(o)
    }

    /// The option string for legacy `mount(2)` (paths as given, typically relative to the
    /// driver home), refused when it would not fit in a page: the kernel would cut it and
    /// may then mount only some of the layers.
    pub fn legacy_options(&self) -> Result<String, TooDeep> {
        let s = self.options()?.join(",");
        if s.len() + 1 > PAGE_SIZE {
            return Err(TooDeep::Page {
                lowers: self.lowers.len(),
                bytes: s.len() + 1,
            });
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize, each: &str) -> OverlayMount {
        OverlayMount {
            lowers: (0..n)
                .map(|i| PathBuf::from(format!("{each}{i:05}")))
                .collect(),
            upper: Some(("top/diff".into(), "top/work".into())),
            userxattr: false,
        }
    }

    #[test]
    fn legacy_options_name_every_layer_in_order() {
        let m = chain(2, "l/");
        assert_eq!(
            m.legacy_options().unwrap(),
            "lowerdir=l/00000:l/00001,upperdir=top/diff,workdir=top/work,index=off,redirect_dir=off,metacopy=off"
        );
    }

    #[test]
    fn legacy_options_that_overflow_a_page_are_refused() {
        // 28-byte short links ("l/" + 26 characters): 128 layers fit, 150 do not
        let each = format!("l/{}", "X".repeat(21));
        assert!(chain(128, &each).legacy_options().is_ok());
        let e = chain(150, &each).legacy_options().unwrap_err();
        assert!(matches!(e, TooDeep::Page { lowers: 150, .. }), "{e:?}");
        assert!(e.to_string().contains("new mount API"));
    }

    #[test]
    fn more_than_500_lowers_are_refused_by_name() {
        assert!(chain(500, "l/").check_stack().is_ok());
        let e = chain(501, "l/").check_stack().unwrap_err();
        assert!(e.to_string().contains("limit of 500"), "{e}");
    }
}
