//! Tidy checks: the workspace's dependency graph and the CLI's thinness, as written in
//! ARCHITECTURE.md ("Invariants"). Each crate of `crates/` must be listed in [`LAYERS`]; a
//! crate gaining a workspace dependency its layer does not allow fails here, naming the
//! manifest and the rule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every workspace crate and the workspace crates it may depend on (normal and build
/// dependencies). Dev-dependencies may also use `lcm-gradcheck`, and nothing else.
const LAYERS: &[(&str, &[&str])] = &[
    // foundations
    ("lcm-util", &[]),
    ("lcm-gradcheck", &[]),
    // Flat-buffer kernels: no tensor library, no other workspace crate.
    ("lcm-kernels", &[]),
    ("lcm-concept", &["lcm-util", "lcm-kernels"]),
    ("lcm-data", &["lcm-util", "lcm-concept"]),
    ("lcm-eval", &["lcm-util"]),
    // A generic loop: it knows nothing of LCMs, stores or encoders.
    ("lcm-train", &["lcm-util"]),
    // models
    ("lcm-model", &["lcm-util"]),
    // The fused engine mirrors the model crate's architectures over flat buffers; it knows
    // no trainer, store or encoder.
    // It also runs the SONAR decoder's architecture (lcm-sonar), for `lcm train-decoder`.
    ("lcm-engine", &["lcm-kernels", "lcm-model", "lcm-sonar"]),
    // A port (text ⇄ vector) never depends on trainers or stores.
    ("lcm-sonar", &["lcm-util", "lcm-concept"]),
    // capabilities
    (
        "lcm-decoder",
        &[
            "lcm-util",
            "lcm-concept",
            "lcm-data",
            "lcm-eval",
            "lcm-train",
            "lcm-sonar",
            // The fused engine computes the decoder trainer's steps.
            "lcm-engine",
        ],
    ),
    // Objective-driven planning never depends on the LCM stack (data, model, workflows).
    ("lcm-plan", &["lcm-util", "lcm-kernels", "lcm-train"]),
    // workflows: everything below, never an entry point
    (
        "lcm-workflows",
        &[
            "lcm-util",
            "lcm-concept",
            "lcm-data",
            "lcm-eval",
            "lcm-train",
            "lcm-model",
            "lcm-engine",
            "lcm-sonar",
            "lcm-decoder",
            "lcm-plan",
        ],
    ),
    // entry points
    ("lcm-serve", &["lcm-concept", "lcm-workflows"]),
    ("lcm-python", &["lcm-concept", "lcm-workflows"]),
    (
        "lcm-cli",
        &[
            "lcm-util",
            "lcm-concept",
            "lcm-data",
            "lcm-eval",
            "lcm-train",
            "lcm-model",
            "lcm-sonar",
            "lcm-decoder",
            "lcm-plan",
            "lcm-workflows",
            "lcm-serve",
        ],
    ),
];

/// Tensor libraries the CLI must not use: it calls the library and prints.
const TENSOR_LIBRARIES: &[&str] = &["candle-core", "candle-nn", "gemm"];

/// Longest CLI command file, in lines.
const MAX_COMMAND_LINES: usize = 260;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A manifest's package name and its dependencies by section (`dependencies`,
/// `dev-dependencies`, `build-dependencies`, including `target.….dependencies`). Only the
/// forms this workspace uses are accepted (`name.workspace = true`, `name = "1"`,
/// `name = { … }`); a `[dependencies.name]` table is reported so that no form escapes the
/// check.
struct Manifest {
    path: PathBuf,
    name: String,
    dependencies: BTreeMap<String, Vec<String>>,
}

fn read_manifest(path: &Path) -> Manifest {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut name = None;
    let mut section = String::new();
    let mut dependencies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_end_matches(']').trim().to_string();
            let last = section.rsplit('.').next().unwrap_or_default();
            assert!(
                !section.contains("dependencies.") || last.ends_with("dependencies"),
                "{}: table form [{section}] is not supported by the tidy check; write \
                 `name.workspace = true` under [dependencies]",
                path.display()
            );
            continue;
        }
        let key = line.split(['=', '.']).next().unwrap_or_default().trim();
        if section == "package" && line.starts_with("name") {
            name = line
                .split('=')
                .nth(1)
                .map(|v| v.trim().trim_matches('"').to_string());
        } else if section.ends_with("dependencies") && !key.is_empty() {
            let kind = section.rsplit('.').next().unwrap_or_default().to_string();
            dependencies.entry(kind).or_default().push(key.to_string());
        }
    }
    Manifest {
        path: path.to_path_buf(),
        name: name.unwrap_or_else(|| panic!("{}: no package name", path.display())),
        dependencies,
    }
}

fn manifests() -> Vec<Manifest> {
    let mut out: Vec<Manifest> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("Cargo.toml"))
        .filter(|p| p.is_file())
        .map(|p| read_manifest(&p))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[test]
fn workspace_dependencies_follow_the_layers() {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let manifests = manifests();
    assert!(manifests.len() >= LAYERS.len() - 1, "crates/ looks empty");
    let mut broken = Vec::new();
    for m in &manifests {
        let Some(allowed) = layers.get(m.name.as_str()) else {
            broken.push(format!(
                "{}: crate {} is not in the tidy test's LAYERS; add it with the crates it may \
                 depend on (and to ARCHITECTURE.md)",
                m.path.display(),
                m.name
            ));
            continue;
        };
        for (kind, deps) in &m.dependencies {
            for dep in deps.iter().filter(|d| d.starts_with("lcm-")) {
                let ok = allowed.contains(&dep.as_str())
                    || (kind == "dev-dependencies" && dep == "lcm-gradcheck");
                if !ok {
                    broken.push(format!(
                        "{}: {} must not depend on {dep} ([{kind}]); it may use only {:?}",
                        m.path.display(),
                        m.name,
                        allowed
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "\n{}", broken.join("\n"));
}

#[test]
fn the_cli_uses_no_tensor_library() {
    let cli = read_manifest(&workspace().join("crates/cli/Cargo.toml"));
    let normal = cli
        .dependencies
        .get("dependencies")
        .cloned()
        .unwrap_or_default();
    let used: Vec<&String> = normal
        .iter()
        .filter(|d| TENSOR_LIBRARIES.contains(&d.as_str()))
        .collect();
    assert!(
        used.is_empty(),
        "crates/cli/Cargo.toml depends on {used:?}: tensor work belongs in a library crate"
    );
}

#[test]
fn cli_command_files_stay_thin() {
    let mut long = Vec::new();
    let mut stack = vec![workspace().join("crates/cli/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("cli sources")
            .filter_map(|e| e.ok())
        {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let lines = std::fs::read_to_string(&path)
                    .expect("source")
                    .lines()
                    .count();
                if lines > MAX_COMMAND_LINES {
                    long.push(format!("{} has {lines} lines", path.display()));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "CLI files over {MAX_COMMAND_LINES} lines (move the logic into a library crate):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_tidy_check_reads_this_workspace_correctly() {
    // The parser itself must see what the manifests say, or the checks above prove nothing.
    let plan = read_manifest(&workspace().join("crates/plan/Cargo.toml"));
    assert_eq!(plan.name, "lcm-plan");
    let deps = &plan.dependencies["dependencies"];
    assert!(deps.contains(&"lcm-train".to_string()), "{deps:?}");
    assert!(deps.contains(&"candle-core".to_string()), "{deps:?}");
    let cli = read_manifest(&workspace().join("crates/cli/Cargo.toml"));
    assert!(cli.dependencies["dependencies"].contains(&"lcm-workflows".to_string()));
    assert!(cli.dependencies["dev-dependencies"].contains(&"tempfile".to_string()));
}
