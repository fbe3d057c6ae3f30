//! The declared minimum Rust version (`rust-version` in Cargo.toml) holds for
//! what the library builds with: every crate in its dependency graph (normal
//! and build dependencies, all features, as locked) declares a
//! `rust-version` no newer than the crate's own.
//!
//! This machine has one toolchain, so the library is not compiled with the
//! declared version itself. The other half of the check is clippy's
//! `incompatible_msrv` lint, which reads the same `rust-version` and refuses
//! standard-library items stabilised after it (CI runs clippy with
//! `-D warnings`).

use std::collections::{HashMap, HashSet};
use std::process::Command;

use serde_json::Value;

/// `"1.85"` or `"1.85.0"` as a comparable triple.
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text
        .split('.')
        .map(|p| p.parse::<u64>().expect("a numeric rust-version"));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn no_dependency_needs_a_newer_rust_than_the_crate_declares() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--locked",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");

    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("an id"), p))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("an id"), n))
        .collect();
    let root = metadata["resolve"]["root"]
        .as_str()
        .expect("the root package");
    let declared = version(
        packages[root]["rust_version"]
            .as_str()
            .expect("Cargo.toml declares rust-version"),
    );

    // Walk what the library builds with: no dev-dependencies, at any depth.
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let for_the_library = dep["dep_kinds"]
                .as_array()
                .expect("dep kinds")
                .iter()
                .any(|k| k["kind"].as_str() != Some("dev"));
            if for_the_library {
                stack.push(dep["pkg"].as_str().expect("a package id"));
            }
        }
    }
    assert!(
        seen.len() > 20,
        "the walk found the dependency graph: {}",
        seen.len()
    );

    let too_new: Vec<String> = seen
        .iter()
        .filter_map(|id| {
            let package = packages[id];
            let needs = package["rust_version"].as_str()?;
            (version(needs) > declared).then(|| format!("{} {needs}", package["name"]))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "rust-version {declared:?} is not true: these need a newer Rust: {too_new:?}"
    );
}
