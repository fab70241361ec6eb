//! The README's crate map (the first block of its "The code" section) names every crate of
//! the workspace, by directory and package name, and nothing else.

use std::path::Path;

fn package_name(manifest: &str) -> Option<String> {
    let package = manifest.split("[package]").nth(1)?;
    let line = package
        .lines()
        .find(|l| l.trim_start().starts_with("name"))?;
    Some(line.split('"').nth(1)?.to_owned())
}

#[test]
fn the_readme_crate_map_matches_the_workspace() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(top.join("README.md")).unwrap();
    let section = readme
        .split("\n## The code\n")
        .nth(1)
        .expect("README has a \"## The code\" section");
    let block = section
        .split("```")
        .nth(1)
        .expect("the section opens with a code block");
    let mut listed: Vec<(String, String)> = block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            let dir = w.next().unwrap().trim_end_matches('/').to_owned();
            let name = w.next().unwrap_or("").to_owned();
            (dir, name)
        })
        .collect();
    let manifest = std::fs::read_to_string(top.join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|m| m.split(']').next())
        .expect("the workspace lists its members");
    let mut tree: Vec<(String, String)> = members
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .map(|dir| {
            let m = std::fs::read_to_string(top.join(&dir).join("Cargo.toml")).unwrap();
            let name = package_name(&m).unwrap_or_else(|| panic!("{dir} has no package name"));
            (dir, name)
        })
        .collect();
    listed.sort();
    tree.sort();
    assert_eq!(
        listed, tree,
        "README's crate map against the workspace's members"
    );
}
