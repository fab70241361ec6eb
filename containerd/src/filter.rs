//! containerd's filter expressions, as `List` receives them (`ctr snapshots ls`, the garbage
//! collector, the test suite): `kind==committed`, `parent==base`, `name~=^layer-`,
//! `labels."containerd.io/gc.root"`, `labels.x!=y`; selectors joined by `,` must all hold,
//! and a snapshot is listed when any one of the request's filters holds.

use regex::Regex;

use crate::model::{Info, Result, SnapshotError};

#[derive(Debug)]
enum Op {
    /// The field is present (and, for a plain field, not empty).
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// One filter: selectors that must all hold.
#[derive(Debug)]
pub struct Filter(Vec<Selector>);

fn invalid(text: &str, why: &str) -> SnapshotError {
    SnapshotError::InvalidArgument(format!("filter {text:?}: {why}"))
}

/// Reads a quoted string starting at `s[0]` (`"` or `/`, the regex form), with backslash
/// escapes; returns it and what follows.
fn quoted<'a>(text: &str, s: &'a str) -> Result<(String, &'a str)> {
    let mut chars = s.char_indices();
    let (_, q) = chars.next().ok_or_else(|| invalid(text, "missing value"))?;
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                // in a regex, keep the escape for the regex engine unless it escapes `/`
                Some((_, e)) if q == '/' && e != '/' => {
                    out.push('\\');
                    out.push(e);
                }
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e)) => out.push(e),
                None => break,
            },
            c if c == q => return Ok((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    Err(invalid(text, "unterminated quote"))
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Filter {
    /// Parses one filter.
    pub fn parse(text: &str) -> Result<Filter> {
        let mut rest = text.trim_start();
        let mut selectors = Vec::new();
        loop {
            // a field path: fields joined by '.', each plain or quoted
            let mut path = Vec::new();
            loop {
                if rest.starts_with('"') {
                    let (f, r) = quoted(text, rest)?;
                    path.push(f);
                    rest = r;
                } else {
                    let end = rest.find(|c| !is_field_char(c)).unwrap_or(rest.len());
                    if end == 0 {
                        return Err(invalid(text, "expected a field name"));
                    }
                    path.push(rest[..end].to_owned());
                    rest = &rest[end..];
                }
                match rest.strip_prefix('.') {
                    Some(r) => rest = r,
                    None => break,
                }
            }
            rest = rest.trim_start();
            let op = if let Some(r) = rest.strip_prefix("==") {
                let (v, r) = value(text, r)?;
                rest = r;
                Op::Equal(v)
            } else if let Some(r) = rest.strip_prefix("!=") {
                let (v, r) = value(text, r)?;
                rest = r;
                Op::NotEqual(v)
            } else if let Some(r) = rest.strip_prefix("~=") {
                let (v, r) = value(text, r)?;
                rest = r;
                Op::Matches(Regex::new(&v).map_err(|e| invalid(text, &e.to_string()))?)
            } else {
                Op::Present
            };
            selectors.push(Selector { path, op });
            rest = rest.trim_start();
            if rest.is_empty() {
                return Ok(Filter(selectors));
            }
            rest = rest
                .strip_prefix(',')
                .ok_or_else(|| invalid(text, "expected ',' between selectors"))?
                .trim_start();
        }
    }

    /// Whether `info` passes every selector.
    pub fn matches(&self, info: &Info) -> bool {
        self.0.iter().all(|s| {
            let field = field(info, &s.path);
            match (&s.op, field) {
                (Op::Present, Some(v)) => {
                    !v.is_empty() || s.path.first().is_some_and(|f| f == "labels")
                }
                (Op::Present, None) => false,
                (Op::Equal(want), Some(v)) => v == *want,
                (Op::Equal(_), None) => false,
                (Op::NotEqual(want), Some(v)) => v != *want,
                (Op::NotEqual(_), None) => true,
                (Op::Matches(re), Some(v)) => re.is_match(&v),
                (Op::Matches(_), None) => false,
            }
        })
    }
}

/// A selector's value: quoted (`"..."` or `/.../`) or plain up to the next `,`.
fn value<'a>(text: &str, s: &'a str) -> Result<(String, &'a str)> {
    let s = s.trim_start();
    if s.starts_with('"') || s.starts_with('/') {
        return quoted(text, s);
    }
    let end = s.find(',').unwrap_or(s.len());
    Ok((s[..end].trim_end().to_owned(), &s[end..]))
}

/// The value of a field path of a snapshot, as containerd's snapshot adaptor names them.
fn field(info: &Info, path: &[String]) -> Option<String> {
    match path {
        [f] if f == "name" => Some(info.name.clone()),
        [f] if f == "parent" => Some(info.parent.clone().unwrap_or_default()),
        [f] if f == "kind" => Some(info.kind.as_str().to_owned()),
        [f, rest @ ..] if f == "labels" && !rest.is_empty() => {
            info.labels.get(&rest.join(".")).cloned()
        }
        _ => None,
    }
}

/// Whether `info` passes any of `filters` (all pass when there are none).
pub fn any_matches(filters: &[Filter], info: &Info) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(info))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::*;
    use crate::model::Kind;

    fn info() -> Info {
        Info {
            name: "layer-2".into(),
            parent: Some("base".into()),
            kind: Kind::Committed,
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
            labels: BTreeMap::from([
                ("containerd.io/gc.root".to_owned(), "2024".to_owned()),
                ("x".to_owned(), "a,b".to_owned()),
            ]),
        }
    }

    fn holds(f: &str) -> bool {
        Filter::parse(f).unwrap().matches(&info())
    }

    #[test]
    fn fields_compare_by_equality_inequality_and_regex() {
        assert!(holds("kind==committed"));
        assert!(!holds("kind==active"));
        assert!(holds("parent==base"));
        assert!(holds("name~=^layer-[0-9]$"));
        assert!(holds("name!=other"));
        assert!(!holds("name~=/^base/"));
    }

    #[test]
    fn label_keys_with_dots_are_quoted_and_presence_needs_no_operator() {
        assert!(holds(r#"labels."containerd.io/gc.root""#));
        assert!(holds(r#"labels."containerd.io/gc.root"==2024"#));
        assert!(!holds("labels.missing"));
        assert!(holds("labels.missing!=1"));
        assert!(holds(r#"labels.x=="a,b""#));
    }

    #[test]
    fn selectors_joined_by_commas_must_all_hold() {
        assert!(holds("kind==committed,parent==base"));
        assert!(!holds("kind==committed, parent==other"));
    }

    #[test]
    fn malformed_filters_are_invalid_arguments() {
        for bad in ["", "==x", r#"labels."open"#, "name~=(", "kind==a b,"] {
            assert!(
                matches!(Filter::parse(bad), Err(SnapshotError::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}
