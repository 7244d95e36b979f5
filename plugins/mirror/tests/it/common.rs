//! Helpers: a progress handle with plugin-api's recorder, batches, and a fake Hugging Face cache on disk.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hubget_mirror::Mirror;
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::std_types::{ROption, RString};
use hubget_plugin_api::testing::{BatchBuilder, RecordingProgress};
use hubget_plugin_api::{FetchBatch, HostSettings, ManifestFile, Progress};

/// A progress handle and the recorder behind it.
pub fn progress() -> (Progress, RecordingProgress) {
    let rec = RecordingProgress::new();
    (rec.progress(), rec)
}

/// A backend from a TOML table.
pub fn mirror(toml: &str, offline: bool) -> Mirror {
    let settings = HostSettings {
        offline,
        ..HostSettings::default()
    };
    Mirror::new(settings, toml).expect("valid config")
}

/// A `dirs = [..]` table (plus `extra` lines).
pub fn dirs_config(dirs: &[&Path], extra: &str) -> String {
    let list: Vec<String> = dirs
        .iter()
        .map(|d| format!("{:?}", d.display().to_string()))
        .collect();
    format!("dirs = [{}]\n{extra}\n", list.join(", "))
}

/// A manifest file.
pub fn mfile(path: &str, size: u64, git_oid: &str, sha256: Option<&str>) -> ManifestFile {
    ManifestFile {
        path: path.into(),
        size,
        git_oid: git_oid.into(),
        sha256: sha256.map(RString::from).into(),
        xet_hash: ROption::RNone,
    }
}

/// A batch of one model repo at `commit`, each file with a partial file in `work` holding
/// `prefix` bytes of `contents` (what the host prepares).
pub fn batch(
    repo: &str,
    commit: &str,
    work: &Path,
    files: &[(ManifestFile, &[u8], u64)],
) -> FetchBatch {
    let builder = BatchBuilder::new(repo, commit, work);
    files
        .iter()
        .fold(builder, |b, (file, content, offset)| {
            b.item(file.clone(), &content[..*offset as usize])
        })
        .build()
}

/// Writes a Hugging Face cache layout by hand: blobs, snapshot symlinks, refs.
pub struct FakeCache {
    pub root: PathBuf,
}

impl FakeCache {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// Adds `path` with `content` under blob name `etag` to the snapshot `commit`.
    pub fn add(&self, repo: &str, commit: &str, path: &str, etag: &str, content: &[u8]) {
        let repo_dir = self.repo_dir(repo);
        std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
        std::fs::write(repo_dir.join("blobs").join(etag), content).unwrap();
        let link = repo_dir.join("snapshots").join(commit).join(path);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = path.split('/').count() + 1;
        let target = format!("{}blobs/{etag}", "../".repeat(depth));
        std::os::unix::fs::symlink(target, &link).unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), content, "symlink resolves");
    }

    /// Writes `refs/<rev>` = `commit` (no newline, as hf-hub does).
    pub fn set_ref(&self, repo: &str, rev: &str, commit: &str) {
        let path = self.repo_dir(repo).join("refs").join(rev);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, commit).unwrap();
    }
}

/// Calls the backend's `fetch` through the trait, as the SDK would.
pub fn fetch(m: &Mirror, b: &FetchBatch, p: &Progress) -> Vec<hubget_plugin_api::FileOutcome> {
    m.fetch(b, p, &hubget_plugin_api::CancelToken::new())
}

/// Log lines captured from the backend (`log` records at info and above), shared by all tests.
pub fn captured_logs() -> Vec<String> {
    install_logger();
    LOGS.lock().unwrap().clone()
}

/// Installs the capturing logger (once per test binary).
pub fn install_logger() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
    });
}

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CAPTURE: Capture = Capture;

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            LOGS.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}
