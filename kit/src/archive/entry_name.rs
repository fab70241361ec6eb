//! Archive entry names: normalisation, validation and whiteout markers (pure logic).

/// The prefix that marks a whiteout: `.wh.<name>` deletes `<name>` of a lower layer.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The marker that makes its directory opaque: lower layers' entries in it are hidden.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Metadata names of aufs, which other tools skip.
const AUFS_META: [&str; 3] = [".wh..wh.plnk", ".wh..wh.aufs", ".wh..wh.orph"];

/// Splits an archive path into its components, relative to the layer root.
///
/// `./` prefixes, repeated and trailing slashes and `.` components are dropped; an absolute
/// path or one with a `..` component is rejected (it could only mean "outside the layer").
/// An empty result names the layer root itself.
pub fn components(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What a base name means in an OCI layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    /// An ordinary entry.
    Entry,
    /// `.wh..wh..opq`: the directory is opaque.
    Opaque,
    /// `.wh.<name>`: `<name>` is deleted.
    Whiteout(&'a [u8]),
    /// aufs bookkeeping (`.wh..wh.plnk` and the like), skipped.
    AufsMeta,
}

/// Classifies a base name, rejecting whiteouts of `.`, `..`, empty names and other
/// `.wh..wh.` names.
pub fn marker(base: &[u8]) -> Result<Marker<'_>, &'static str> {
    if base == OPAQUE_MARKER.as_bytes() {
        return Ok(Marker::Opaque);
    }
    let Some(target) = base.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(Marker::Entry);
    };
    if AUFS_META.iter().any(|m| base.starts_with(m.as_bytes())) {
        return Ok(Marker::AufsMeta);
    }
    match target {
        b"" => Err("whiteout names no file"),
        b"." | b".." => Err("whiteout of '.' or '..'"),
        t if t.starts_with(WHITEOUT_PREFIX.as_bytes()) => Err("whiteout of a whiteout name"),
        t => Ok(Marker::Whiteout(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_relative_paths() {
        assert_eq!(
            components(b"./a//b/./c/").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b".").unwrap().is_empty());
    }

    #[test]
    fn rejects_escapes() {
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"../x").is_err());
        assert!(components(b"a/../../x").is_err());
        assert!(components(b"a/..").is_err());
    }

    #[test]
    fn classifies_markers() {
        assert_eq!(marker(b"file").unwrap(), Marker::Entry);
        assert_eq!(marker(b".wh..wh..opq").unwrap(), Marker::Opaque);
        assert_eq!(marker(b".wh.file").unwrap(), Marker::Whiteout(b"file"));
        assert_eq!(
            marker(b".wh..hidden").unwrap(),
            Marker::Whiteout(b".hidden")
        );
        assert_eq!(marker(b".wh..wh.plnk").unwrap(), Marker::AufsMeta);
        assert!(marker(b".wh.").is_err());
        assert!(marker(b".wh..").is_err());
        assert!(marker(b".wh...").is_err());
        assert!(marker(b".wh..wh.x").is_err());
    }
}
