//! `hubget.toml`: the repositories a project needs.
//!
//! ```toml
//! [repos."acme/tiny"]                 # a model, by its hf:// address without the scheme
//! revision = "main"                   # branch, tag, refs/pr/N or a commit (default: main)
//! include = ["*.json", "*.safetensors"]
//!
//! [repos."datasets/acme/rows"]
//! exclude = ["raw/"]
//! local_dir = "data/rows"             # relative to this file; default: the Hugging Face cache
//! ```
//!
//! Found in the current directory or above (or named with `--manifest`). `hubget add` and
//! `hubget remove` edit it with `toml_edit`, keeping its comments and layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hubget_plugin_api::RepoType;
use serde::Deserialize;

use crate::cli::HfUri;
use crate::error::HostError;

/// The manifest's file name.
pub const FILE_NAME: &str = "hubget.toml";

/// One declared repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name: `[type/]owner/name` as in an `hf://` address.
    pub name: String,
    /// Its type.
    pub repo_type: RepoType,
    /// `owner/name`.
    pub repo_id: String,
    /// The revision asked for.
    pub revision: String,
    /// `--include` patterns.
    pub include: Vec<String>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// Where the files go instead of the cache, relative to the manifest's folder.
    pub local_dir: Option<PathBuf>,
}

/// A loaded manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file.
    pub path: PathBuf,
    /// Its entries, by name.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    repos: BTreeMap<String, EntryDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDoc {
    revision: Option<String>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    local_dir: Option<PathBuf>,
}

/// Splits an entry name (or an `hf://` address) into its normal name, type and id.
pub fn parse_name(text: &str) -> Result<(String, RepoType, String), HostError> {
    let body = text.strip_prefix("hf://").unwrap_or(text);
    let uri = HfUri::parse(body).map_err(|why| HostError::Usage(format!("`{text}`: {why}")))?;
    if uri.revision.is_some() || !uri.path.is_empty() {
        return Err(HostError::Usage(format!(
            "`{text}`: name the repository alone (use --revision and --include for the rest)"
        )));
    }
    let repo_type = uri.repo_type.unwrap_or(RepoType::MODEL);
    Ok((name_of(repo_type, &uri.repo_id), repo_type, uri.repo_id))
}

/// `owner/name` for a model, `datasets/owner/name` for the other types.
pub fn name_of(repo_type: RepoType, repo_id: &str) -> String {
    match repo_type.plural() {
        Some(plural) if repo_type != RepoType::MODEL => format!("{plural}/{repo_id}"),
        _ => repo_id.to_owned(),
    }
}

/// The manifest in `dir` or the nearest folder above it.
pub fn find(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|p| p.is_file())
}

impl Manifest {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, HostError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            HostError::io(format!("cannot read the manifest {}", path.display()), e)
        })?;
        let doc: FileDoc = toml::from_str(&text).map_err(|e| HostError::Project {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut entries = Vec::new();
        for (key, e) in doc.repos {
            let (name, repo_type, repo_id) =
                parse_name(&key).map_err(|err| HostError::Project {
                    path: path.to_path_buf(),
                    message: format!("[repos.\"{key}\"]: {err}"),
                })?;
            if name != key {
                return Err(HostError::Project {
                    path: path.to_path_buf(),
                    message: format!("[repos.\"{key}\"]: write it as \"{name}\""),
                });
            }
            entries.push(Entry {
                name,
                repo_type,
                repo_id,
                revision: e.revision.unwrap_or_else(|| "main".to_owned()),
                include: e.include,
                exclude: e.exclude,
                local_dir: e.local_dir,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The folder relative paths are resolved from.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Adds (or replaces) `entry` in the manifest at `path`, creating the file when it does not
/// exist; everything else in the file, comments included, stays as it was.
pub fn add(path: &Path, entry: &Entry) -> Result<(), HostError> {
    let mut doc = edit(path)?;
    // A file of comments alone keeps them as the document's trailing text: they stay on top,
    // before the first entry.
    let leading = if doc.get("repos").is_none() {
        let text = doc.trailing().as_str().unwrap_or("").to_owned();
        doc.set_trailing("");
        text
    } else {
        String::new()
    };
    let repos = doc
        .entry("repos")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| bad(path, "`repos` is not a table"))?;
    let mut table = toml_edit::Table::new();
    if entry.revision != "main" {
        table["revision"] = toml_edit::value(entry.revision.as_str());
    }
    let list = |items: &[String]| {
        let mut a = toml_edit::Array::new();
        for i in items {
            a.push(i.as_str());
        }
        toml_edit::value(a)
    };
    if !entry.include.is_empty() {
        table["include"] = list(&entry.include);
    }
    if !entry.exclude.is_empty() {
        table["exclude"] = list(&entry.exclude);
    }
    if let Some(dir) = &entry.local_dir {
        table["local_dir"] = toml_edit::value(dir.to_string_lossy().as_ref());
    }
    if !leading.is_empty() {
        table.decor_mut().set_prefix(leading);
    }
    repos.insert(&entry.name, toml_edit::Item::Table(table));
    write(path, &doc)
}

/// Removes the entry `name` from the manifest at `path`; `false` when it had none.
pub fn remove(path: &Path, name: &str) -> Result<bool, HostError> {
    let mut doc = edit(path)?;
    let removed = doc
        .get_mut("repos")
        .and_then(toml_edit::Item::as_table_mut)
        .and_then(|t| t.remove(name))
        .is_some();
    if removed {
        write(path, &doc)?;
    }
    Ok(removed)
}

fn edit(path: &Path) -> Result<toml_edit::DocumentMut, HostError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(HostError::io(
                format!("cannot read the manifest {}", path.display()),
                e,
            ));
        }
    };
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|e| bad(path, &e.to_string()))
}

fn write(path: &Path, doc: &toml_edit::DocumentMut) -> Result<(), HostError> {
    std::fs::write(path, doc.to_string())
        .map_err(|e| HostError::io(format!("cannot write the manifest {}", path.display()), e))
}

fn bad(path: &Path, message: &str) -> HostError {
    HostError::Project {
        path: path.to_path_buf(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        let (name, repo_type, repo_id) = parse_name(name).unwrap();
        Entry {
            name,
            repo_type,
            repo_id,
            revision: "main".into(),
            include: vec!["*.json".into()],
            exclude: vec![],
            local_dir: None,
        }
    }

    #[test]
    fn add_and_remove_keep_comments_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            "# the models our service loads\n[repos.\"acme/tiny\"] # the small one\nrevision = \"v1.0\"\n",
        )
        .unwrap();
        add(&path, &entry("hf://datasets/acme/rows")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# the models our service loads\n"),
            "{text}"
        );
        assert!(text.contains("# the small one"), "{text}");
        let m = Manifest::load(&path).unwrap();
        let names: Vec<&str> = m.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["acme/tiny", "datasets/acme/rows"]);
        assert_eq!(m.entries[0].revision, "v1.0");
        assert_eq!(m.entries[1].repo_type, RepoType::DATASET);
        assert_eq!(m.entries[1].include, ["*.json"]);
        assert!(remove(&path, "datasets/acme/rows").unwrap());
        assert!(!remove(&path, "datasets/acme/rows").unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# the small one") && !text.contains("rows"),
            "{text}"
        );
    }

    #[test]
    fn names_are_hf_addresses_without_revision_or_path() {
        assert_eq!(parse_name("acme/tiny").unwrap().0, "acme/tiny");
        assert_eq!(
            parse_name("hf://spaces/acme/demo").unwrap(),
            (
                "spaces/acme/demo".to_owned(),
                RepoType::SPACE,
                "acme/demo".to_owned()
            )
        );
        assert!(parse_name("acme/tiny@v1").is_err());
        assert!(parse_name("hf://acme/tiny/config.json").is_err());
    }
}
