//! Plugin loading and isolation: the first-party plugins and the third-party example load;
//! broken files (garbage, a non-plugin library, a wrong interface layout, a `panic = "abort"`
//! build, world-writable places, duplicates) each get a one-line reason without stopping the
//! others; panics inside a plugin become structured errors and the host goes on; one backend
//! serves 4 host threads at once; plugin log records reach the host's stderr.

use std::path::Path;
use std::time::{Duration, Instant};

use hubget::loader::{ORIGIN_ENV, PluginDir};
use hubget::{BackendHandle, Registry};
use hubget_plugin_api::std_types::{ROption, RString};
use hubget_plugin_api::{
    API_VERSION, CancelToken, ErrorKind, FetchBatch, FetchItem, HostSettings, ManifestFile,
    RepoType, ResolveRequest,
};
use hubget_tests::plugins::{build_example_hello, build_example_statichttp, test_example};
use hubget_tests::{
    TINY_ON_FAULTY, TestEnv, assert_contains, first_party_plugin, plugin_entry, system_library,
    test_plugin,
};
use serde_json::Value;

fn plugin_names(doc: &Value) -> Vec<String> {
    doc["plugins"]
        .as_array()
        .expect("plugins array")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn failure_for<'a>(doc: &'a Value, file_name: &str) -> &'a str {
    doc["failures"]
        .as_array()
        .expect("failures array")
        .iter()
        .find(|f| f["path"].as_str().unwrap_or_default().ends_with(file_name))
        .and_then(|f| f["reason"].as_str())
        .unwrap_or_else(|| panic!("no failure entry for {file_name} in {doc:#}"))
}

#[test]
fn first_party_plugins_and_the_example_load_and_are_listed() {
    let hello = build_example_hello(false);
    let env = TestEnv::new();
    env.install_plugin(&hello, "hello");
    let run = env.hubget(["plugins", "--json"]);
    run.ok();
    let doc = run.json();
    let names = plugin_names(&doc);
    for name in ["lfs", "xet", "mirror", "s3", "hello"] {
        assert!(names.contains(&name.to_owned()), "{name} missing: {doc:#}");
    }
    assert_eq!(doc["failures"].as_array().unwrap().len(), 0, "{doc:#}");
    let plugins = doc["plugins"].as_array().unwrap();
    for p in plugins {
        assert_eq!(p["interface_version"], API_VERSION, "{p}");
        assert!(!p["version"].as_str().unwrap().is_empty(), "{p}");
        assert!(Path::new(p["path"].as_str().unwrap()).is_absolute(), "{p}");
        let repo_types = p["capabilities"]["repo_types"]
            .as_array()
            .expect("capabilities");
        assert!(repo_types.contains(&Value::from("model")), "{p}");
    }
    let hello = plugins.iter().find(|p| p["name"] == "hello").unwrap();
    assert_eq!(hello["origin"], "HUBGET_PLUGIN_DIR");
    assert_eq!(
        hello["capabilities"]["features"],
        serde_json::json!(["resolve", "resume", "non-xet-files", "local"])
    );
    let lfs = plugins.iter().find(|p| p["name"] == "lfs").unwrap();
    assert_eq!(lfs["origin"], "executable dir");
    // The human listing names them too.
    let text = env.hubget(["plugins"]);
    text.ok();
    assert_contains(
        &text.stdout,
        &format!("hello 0.1.0 (plugin-api {API_VERSION})"),
    );
}

#[test]
fn broken_files_each_get_a_one_line_reason_and_do_not_stop_the_others() {
    let env = TestEnv::new();
    env.install_bytes(
        "garbage",
        b"this is not an ELF file, just bytes with a plugin's name\n",
    );
    let system = system_library().expect("a system shared library (libz or libm) to copy");
    env.install_plugin(&system, "notaplugin");
    env.install_plugin(&test_plugin("wrong-layout"), "wronglayout");
    env.install_plugin(&test_plugin("faulty"), "faulty");

    let run = env.hubget(["plugins", "--json"]);
    run.ok();
    let doc = run.json();
    let names = plugin_names(&doc);
    for name in ["faulty", "lfs", "xet", "mirror"] {
        assert!(
            names.contains(&name.to_owned()),
            "{name} should still load: {doc:#}"
        );
    }
    let garbage = failure_for(&doc, "libhubget_garbage.so");
    assert!(garbage.starts_with("cannot load the library"), "{garbage}");
    let not_plugin = failure_for(&doc, "libhubget_notaplugin.so");
    assert!(
        not_plugin.starts_with("not a hubget plugin"),
        "{not_plugin}"
    );
    // It claims plugin-api 1.0.0: an older 1.x passes the host's version check (the v1 layout
    // is frozen), so what refuses it is the layout check.
    assert_ne!(
        API_VERSION, "1.0.0",
        "the host is newer than the plugin here"
    );
    let layout = failure_for(&doc, "libhubget_wronglayout.so");
    assert!(layout.contains("interface layout differs"), "{layout}");
    assert!(
        layout.contains("built against plugin-api 1.0.0"),
        "{layout}"
    );
    assert!(
        layout.contains("expected PluginMod, found WrongMod"),
        "{layout}"
    );
    for reason in [garbage, not_plugin, layout] {
        assert!(
            !reason.contains('\n') && reason.len() < 200,
            "one short line: {reason:?}"
        );
    }
    assert_eq!(doc["failures"].as_array().unwrap().len(), 3, "{doc:#}");

    // Text output: one line per failed file, and a warning per file on stderr.
    let text = env.hubget(["plugins"]);
    let listed: Vec<&str> = text
        .stdout
        .lines()
        .filter(|l| l.contains("libhubget_garbage.so") || l.contains("libhubget_wronglayout.so"))
        .collect();
    assert_eq!(listed.len(), 2, "{}", text.stdout);
    assert_contains(&text.stderr, "skipping plugin");
    // The full layout report is available at debug level only.
    assert!(!text.stderr.contains("--- Type Layout ---"));
    let debug = env.hubget_with_env(["plugins"], &[("RUST_LOG", "debug")]);
    assert_contains(&debug.stderr, "--- Type Layout ---");
}

#[test]
fn a_plugin_built_with_panic_abort_is_refused() {
    let abort = build_example_hello(true);
    let env = TestEnv::new();
    env.install_plugin(&abort, "hello");
    let run = env.hubget(["plugins", "--json"]);
    run.ok();
    let doc = run.json();
    assert!(!plugin_names(&doc).contains(&"hello".to_owned()), "{doc:#}");
    let reason = failure_for(&doc, "libhubget_hello.so");
    assert!(
        reason.contains("built with panic = \"abort\"")
            && reason.contains("rebuild with panic = \"unwind\""),
        "{reason}"
    );
}

#[test]
fn duplicate_plugin_names_keep_the_first_and_report_the_rest() {
    let env = TestEnv::new();
    env.install_plugin(&test_plugin("faulty"), "faulty");
    env.install_plugin(&test_plugin("faulty"), "faulty2");
    // Same name as the first-party lfs plugin, found earlier (HUBGET_PLUGIN_DIR comes first).
    env.install_plugin(&first_party_plugin("lfs"), "lfs");
    let doc = env.hubget(["plugins", "--json"]).json();
    let names = plugin_names(&doc);
    assert_eq!(
        names.iter().filter(|n| *n == "faulty").count(),
        1,
        "{doc:#}"
    );
    assert_eq!(names.iter().filter(|n| *n == "lfs").count(), 1, "{doc:#}");
    let dup = failure_for(&doc, "libhubget_faulty2.so");
    assert!(
        dup.starts_with("duplicate of ") && dup.contains("libhubget_faulty.so"),
        "{dup}"
    );
    let lfs = plugin_entry(&doc, "lfs");
    assert_eq!(lfs["origin"], "HUBGET_PLUGIN_DIR", "first one wins");
    let dup = failure_for(&doc, "target/debug/libhubget_lfs.so");
    assert!(dup.starts_with("duplicate of "), "{dup}");
}

#[cfg(unix)]
#[test]
fn world_writable_plugin_dirs_and_files_are_skipped_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let plugin = env.install_plugin(&test_plugin("faulty"), "faulty");
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = env.hubget(["plugins", "--json"]);
    let doc = run.json();
    assert!(
        !plugin_names(&doc).contains(&"faulty".to_owned()),
        "{doc:#}"
    );
    assert!(failure_for(&doc, "libhubget_faulty.so").contains("world-writable"));
    assert_contains(&run.stderr, "world-writable");

    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(env.plugin_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let run = env.hubget(["plugins", "--json"]);
    let doc = run.json();
    assert!(
        !plugin_names(&doc).contains(&"faulty".to_owned()),
        "{doc:#}"
    );
    assert!(
        run.stderr.contains("WARN") && run.stderr.contains("world-writable"),
        "{}",
        run.stderr
    );
    assert!(
        plugin_names(&doc).contains(&"lfs".to_owned()),
        "others still load"
    );
    std::fs::set_permissions(env.plugin_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let doc = env.hubget(["plugins", "--json"]).json();
    assert!(plugin_names(&doc).contains(&"faulty".to_owned()), "{doc:#}");

    // Group-writable is refused too.
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o775)).unwrap();
    let doc = env.hubget(["plugins", "--json"]).json();
    assert!(
        failure_for(&doc, "libhubget_faulty.so").contains("group-writable"),
        "{doc:#}"
    );
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Owned by another user (only checkable where we may chown, as root).
    if std::os::unix::fs::chown(&plugin, Some(65534), None).is_ok() {
        let doc = env.hubget(["plugins", "--json"]).json();
        assert!(
            failure_for(&doc, "libhubget_faulty.so").contains("owned by another user"),
            "{doc:#}"
        );
        std::fs::remove_file(&plugin).unwrap();
        env.install_plugin(&test_plugin("faulty"), "faulty");
    }

    // A symlinked plugin whose real directory is world-writable.
    let open_dir = env.path("open");
    std::fs::create_dir_all(&open_dir).unwrap();
    let real = open_dir.join("libhubget_faulty.so");
    std::fs::copy(test_plugin("faulty"), &real).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::remove_file(env.plugin_dir().join("libhubget_faulty.so")).unwrap();
    std::os::unix::fs::symlink(&real, env.plugin_dir().join("libhubget_faulty.so")).unwrap();
    let doc = env.hubget(["plugins", "--json"]).json();
    assert!(
        failure_for(&doc, "libhubget_faulty.so").contains("really lives in is world-writable"),
        "{doc:#}"
    );
}

#[test]
fn a_panic_in_resolve_is_a_structured_error_with_exit_code_1() {
    let env = TestEnv::with_faulty("panic_in = \"resolve\"");
    let run = env.hubget_configured(TINY_ON_FAULTY);
    run.code_is(1);
    let error = run
        .error_line()
        .unwrap_or_else(|| panic!("no error line: {}", run.stderr));
    assert!(
        error.contains("backend `faulty` failed to resolve"),
        "{error}"
    );
    assert!(error.contains("panicked in resolve"), "{error}");
    assert!(
        error.contains("deliberate panic in resolve of acme/tiny"),
        "{error}"
    );
    assert!(error.ends_with("(panic)"), "{error}");
    assert_contains(&run.stderr, "hint: this is a bug in the plugin");
    // The panic did not take the process down through abi_stable's FFI guard.
    assert!(
        !run.stderr
            .contains("Attempted to panic across the ffi boundary")
    );
}

/// [`hubget_tests::plugins::faulty_then_hello`] with `a.txt` = "hello".
fn faulty_then_hello(faulty_table: &str) -> TestEnv {
    hubget_tests::plugins::faulty_then_hello(faulty_table, &[("a.txt", "hello")])
}

#[test]
fn a_panic_in_fetch_hands_the_file_to_the_next_backend_and_the_download_completes() {
    let env = faulty_then_hello("panic_in = \"fetch\"");
    let run = env.hubget_configured(&["download", "acme/tiny", "--json"]);
    run.ok();
    let fallback = run.fallback_from("faulty");
    assert_eq!(fallback["to"], "hello");
    assert_eq!(fallback["error"]["kind"], "panic");
    let message = fallback["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("plugin `faulty` panicked in fetch"),
        "{message}"
    );
    let done = run.first("file_done");
    assert_eq!(done["backend"], "hello");
    let landed = std::path::PathBuf::from(done["local_path"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(landed).unwrap(), "hello");
}

#[test]
fn a_panic_in_fetch_with_no_fallback_is_a_structured_error_with_exit_code_1() {
    let env = TestEnv::with_faulty("panic_in = \"fetch\"\nfiles = { \"a.txt\" = \"hello\" }");
    let run = env.hubget_configured(TINY_ON_FAULTY);
    run.code_is(1);
    assert_contains(
        &run.stderr,
        "faulty (panic): plugin `faulty` panicked in fetch",
    );
    assert!(
        !run.stderr
            .contains("Attempted to panic across the ffi boundary")
    );
}

#[test]
fn a_panic_in_resolve_passes_to_the_next_backend_that_can_resolve() {
    let env = faulty_then_hello("panic_in = \"resolve\"");
    let run = env.hubget_configured_env(
        &["download", "acme/tiny", "--json"],
        &[("RUST_LOG", "info")],
    );
    run.ok();
    assert!(
        run.stderr.contains("panicked in resolve"),
        "the panic is reported: {}",
        run.stderr
    );
    let plan = run.first("plan");
    assert_eq!(plan["resolved_by"], "hello");
    // The backend whose resolve panicked still serves the file: one panic does not end it.
    let done = run.first("file_done");
    assert_eq!(done["backend"], "faulty", "{}", run.stdout);
}

#[test]
fn a_panic_in_new_backend_skips_that_backend_and_the_host_goes_on() {
    let env = TestEnv::with_faulty("panic_in = \"new_backend\"");
    let run = env.hubget_configured(&["plugins", "--json"]);
    run.ok();
    let doc = run.json();
    let faulty = plugin_entry(&doc, "faulty");
    let error = faulty["error"]
        .as_str()
        .expect("an error instead of capabilities");
    assert!(error.contains("panicked in new_backend"), "{error}");
    assert!(faulty["capabilities"].is_null());
    let lfs = plugin_entry(&doc, "lfs");
    assert!(lfs["capabilities"].is_object(), "the others still work");
}

#[test]
fn log_records_emitted_in_a_plugin_reach_the_host_stderr() {
    let env = TestEnv::with_faulty("log = \"marker-7f3a\"");
    let config = env.path("config.toml");
    let args = ["--config", config.to_str().unwrap(), "plugins"];
    let run = env.hubget_with_env(args, &[("RUST_LOG", "info")]);
    run.ok();
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("new_backend: marker-7f3a"))
        .unwrap_or_else(|| panic!("plugin record missing from stderr:\n{}", run.stderr));
    assert!(
        line.contains("INFO") && line.contains("plugin::faulty::"),
        "{line}"
    );
    // The host's level applies: at the default (warn) the info record is not shown.
    let quiet = env.hubget(args);
    assert!(!quiet.stderr.contains("marker-7f3a"), "{}", quiet.stderr);
    // -v raises the level like RUST_LOG does.
    let verbose = env.hubget(["-v", "--config", config.to_str().unwrap(), "plugins"]);
    assert_contains(&verbose.stderr, "new_backend: marker-7f3a");
}

// ---- library level: the host's BackendHandle with a real plugin ----

/// Loads the faulty test plugin (copied into a temp dir) and creates a backend from `table`.
fn faulty_backend(table: &str) -> (tempfile::TempDir, BackendHandle) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        test_plugin("faulty"),
        dir.path()
            .join(hubget_tests::library_file_name("hubget_faulty")),
    )
    .unwrap();
    let registry = Registry::discover(
        &[PluginDir {
            path: dir.path().to_path_buf(),
            origin: ORIGIN_ENV,
        }],
        &hubget::isolation::Policy::default(),
    );
    assert!(registry.failures().is_empty(), "{:?}", registry.failures());
    let plugin = registry.get("faulty").expect("faulty loaded");
    let backend = plugin
        .new_backend(&HostSettings::default(), table)
        .expect("new_backend");
    (dir, backend)
}

fn batch(dir: &Path, paths: &[&str]) -> FetchBatch {
    FetchBatch {
        repo_type: RepoType::MODEL,
        repo_id: "acme/tiny".into(),
        commit: "f".repeat(40).into(),
        revision: "main".into(),
        items: paths
            .iter()
            .map(|p| {
                let partial = dir.join(format!("{p}.partial"));
                std::fs::write(&partial, b"").unwrap();
                FetchItem {
                    file: ManifestFile {
                        path: (*p).into(),
                        size: 5,
                        git_oid: RString::new(),
                        sha256: ROption::RNone,
                        xet_hash: ROption::RNone,
                    },
                    partial_path: partial.to_str().unwrap().into(),
                    offset: 0,
                }
            })
            .collect(),
        options_json: RString::new(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// A panic in `fetch` through the host's BackendHandle (the `hubget download` path is tested
// above): every item gets the error, and the backend keeps answering.
#[test]
fn a_panic_in_fetch_gives_every_item_a_structured_error_and_the_backend_stays_usable() {
    let (dir, backend) = faulty_backend("panic_in = \"fetch\"\nfiles = { \"a\" = \"hello\" }\n");
    let rt = runtime();
    let (progress, _events) = hubget::backend::progress_channel();
    let outcomes =
        rt.block_on(backend.fetch(batch(dir.path(), &["a", "b"]), progress, CancelToken::new()));
    assert_eq!(outcomes.len(), 2);
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.index as usize, i);
        let error = outcome
            .result
            .as_ref()
            .into_result()
            .expect_err("fetch panicked");
        assert_eq!(error.kind, ErrorKind::PANIC);
        assert!(
            error.message.contains("plugin `faulty` panicked in fetch"),
            "{error}"
        );
        assert!(
            error
                .message
                .contains("deliberate panic in fetch (2 items)"),
            "{error}"
        );
    }
    // The host goes on: the same backend still answers.
    let echo = rt
        .block_on(backend.call("echo", "{\"still\":\"alive\"}"))
        .unwrap();
    assert_eq!(echo, "{\"still\":\"alive\"}");
    let manifest = rt
        .block_on(backend.resolve(
            ResolveRequest {
                repo_type: RepoType::MODEL,
                repo_id: "acme/tiny".into(),
                revision: "main".into(),
                options_json: RString::new(),
            },
            CancelToken::new(),
        ))
        .unwrap();
    assert_eq!(manifest.files.len(), 1);
}

#[test]
fn a_panic_in_resolve_through_the_handle_is_a_panic_error() {
    let (_dir, backend) = faulty_backend("panic_in = \"resolve\"\n");
    let err = runtime()
        .block_on(backend.resolve(
            ResolveRequest {
                repo_type: RepoType::MODEL,
                repo_id: "acme/x".into(),
                revision: "main".into(),
                options_json: RString::new(),
            },
            CancelToken::new(),
        ))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PANIC);
    assert!(err.message.contains("panicked in resolve"), "{err}");
}

#[test]
fn one_backend_serves_four_host_threads_at_once() {
    // `barrier = 4`: each fetch waits until 4 fetch calls are in flight at once (else it fails
    // with TIMEOUT after 10 s), so success proves the four calls ran concurrently.
    let (dir, backend) = faulty_backend("barrier = 4\nfiles = { \"a\" = \"hello\" }\n");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let backend = backend.clone();
            let sub = dir.path().join(format!("t{t}"));
            std::fs::create_dir_all(&sub).unwrap();
            std::thread::spawn(move || {
                let (progress, _events) = hubget::backend::progress_channel();
                let outcomes = runtime().block_on(backend.fetch(
                    batch(&sub, &["a"]),
                    progress,
                    CancelToken::new(),
                ));
                (sub, outcomes)
            })
        })
        .collect();
    for thread in threads {
        let (sub, outcomes) = thread.join().expect("host thread");
        assert_eq!(outcomes.len(), 1);
        let done = outcomes[0]
            .result
            .as_ref()
            .into_result()
            .expect("fetched concurrently");
        assert_eq!(done.bytes_transferred, 5);
        assert_eq!(std::fs::read(sub.join("a.partial")).unwrap(), b"hello");
    }
}

#[test]
fn a_fetch_that_ignores_cancel_can_be_abandoned_by_the_host() {
    let (dir, backend) =
        faulty_backend("sleep_ms = 5000\nignore_cancel = true\nfiles = { \"a\" = \"hello\" }\n");
    let rt = runtime();
    let cancel = CancelToken::new();
    let started = Instant::now();
    let result = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(200),
            backend.fetch(
                batch(dir.path(), &["a"]),
                hubget::backend::null_progress(),
                cancel.clone(),
            ),
        )
        .await
    });
    cancel.cancel();
    assert!(result.is_err(), "the call was abandoned");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_plugin_that_hangs_while_starting_is_reported_and_skipped() {
    let env = TestEnv::with_faulty("hang_in_new_backend_ms = 60000");
    let started = std::time::Instant::now();
    let run = env.hubget_configured_env(
        &["plugins", "--json"],
        &[("HUBGET_PLUGIN_LOAD_TIMEOUT_SECS", "1")],
    );
    run.ok();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "not waited for"
    );
    let doc = run.json();
    let faulty = plugin_entry(&doc, "faulty");
    let error = faulty["error"]
        .as_str()
        .expect("an error instead of capabilities");
    assert!(error.contains("did not answer within 1 s"), "{error}");
    let lfs = plugin_entry(&doc, "lfs");
    assert!(lfs["capabilities"].is_object(), "the others still work");
}

#[test]
fn the_statichttp_example_passes_its_own_tests() {
    // Built and tested outside the workspace, as a third party would, with plugin-api's public
    // test helpers (feature `testing`).
    if let Err(out) = test_example("statichttp-backend") {
        panic!("examples/statichttp-backend tests failed:\n{out}");
    }
}

/// Python's `http.server` over `dir` on a free loopback port (a static server that ignores
/// `Range`), stopped on drop.
struct StaticServer {
    child: std::process::Child,
    url: String,
}

impl StaticServer {
    fn start(dir: &Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "0",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected http.server output: {line}"));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `files` as `<root>/<repo>/<revision>/{index.json, files/...}`.
fn publish(root: &Path, repo: &str, revision: &str, files: &[(&str, &[u8])]) {
    let dir = root.join(repo).join(revision);
    let mut index = Vec::new();
    for (path, data) in files {
        let target = dir.join("files").join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, data).unwrap();
        let sha = hubget::verify::sha256_hex(data);
        index.push(serde_json::json!({"path": path, "size": data.len(), "sha256": sha}));
    }
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({ "files": index }).to_string(),
    )
    .unwrap();
}

#[test]
fn a_source_without_git_downloads_through_the_statichttp_example() {
    // In both modes: isolated (the default for a plugin outside hubget's install) and in
    // process; the plugin is the same binary.
    for mode in ["process", "none"] {
        statichttp_revisions(mode);
    }
}

fn statichttp_revisions(mode: &str) {
    let lib = build_example_statichttp();
    let env = TestEnv::new();
    env.install_plugin(&lib, "statichttp");
    let served = env.path("served");
    let weights: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    publish(
        &served,
        "acme/tiny",
        "v1",
        &[("config.json", b"{}"), ("sub/w.bin", &weights)],
    );
    publish(
        &served,
        "acme/tiny",
        "v2",
        &[("config.json", b"{\"a\":1}"), ("sub/w.bin", &weights)],
    );
    let server = StaticServer::start(&served);
    env.write_config(&format!(
        "[backends]\norder = [\"statichttp\"]\n[plugins.statichttp]\nbase_url = {:?}\n\
         isolation = {mode:?}\n",
        server.url
    ));
    let listed = env.hubget_configured(&["plugins", "--json"]);
    assert_eq!(
        plugin_entry(&listed.json(), "statichttp")["isolation"],
        mode
    );
    let download = |revision: &str| {
        let run =
            env.hubget_configured(&["download", "acme/tiny", "--revision", revision, "--json"]);
        run.ok();
        run.events()
    };
    let v1 = download("v1");
    let repo = env.hf_home().join("hub").join("models--acme--tiny");
    let commit1 = std::fs::read_to_string(repo.join("refs").join("v1")).unwrap();
    assert_eq!(commit1.len(), 40, "a content-addressed commit: {commit1}");
    let snapshot = repo.join("snapshots").join(&commit1);
    assert_eq!(std::fs::read(snapshot.join("sub/w.bin")).unwrap(), weights);
    // No git oid: the blob is named after the sha256 the host verified.
    let sha = v1
        .iter()
        .find(|e| e["event"] == "file_done" && e["path"] == "sub/w.bin")
        .and_then(|e| e["sha256"].as_str())
        .expect("file_done with sha256")
        .to_owned();
    assert!(repo.join("blobs").join(&sha).is_file());

    // A second revision with one changed file: its own snapshot; the unchanged file moves no byte.
    let v2 = download("v2");
    let commit2 = std::fs::read_to_string(repo.join("refs").join("v2")).unwrap();
    assert_ne!(commit1, commit2);
    assert_eq!(
        std::fs::read(repo.join("snapshots").join(&commit2).join("config.json")).unwrap(),
        b"{\"a\":1}"
    );
    let moved: Vec<&str> = v2
        .iter()
        .filter(|e| e["event"] == "file_done" && e["bytes_transferred"].as_u64() > Some(0))
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(moved, ["config.json"], "{v2:#?}");
}

#[test]
fn plugin_dirs_are_relative_to_the_config_file_and_a_relative_env_entry_is_ignored() {
    let env = TestEnv::new();
    // `plugin_dirs = ["my-plugins"]` in <env>/conf/config.toml means <env>/conf/my-plugins,
    // whatever the working directory (the env's root here).
    let conf = env.path("conf");
    let mine = conf.join("my-plugins");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::copy(
        test_plugin("faulty"),
        mine.join(hubget_tests::library_file_name("hubget_faulty")),
    )
    .unwrap();
    let config = conf.join("config.toml");
    std::fs::write(&config, "plugin_dirs = [\"my-plugins\"]\n").unwrap();
    let run = env.hubget(["--config", config.to_str().unwrap(), "plugins", "--json"]);
    run.ok();
    let doc = run.json();
    let faulty = plugin_entry(&doc, "faulty");
    assert_eq!(faulty["origin"], "config");
    let path = std::path::PathBuf::from(faulty["path"].as_str().unwrap());
    assert_eq!(
        path.parent().unwrap(),
        std::fs::canonicalize(&mine).unwrap()
    );

    // A relative HUBGET_PLUGIN_DIR entry is never searched (it would depend on the working
    // directory), even when it names a directory holding a plugin, and the user is told.
    let rel = env.path("rel");
    std::fs::create_dir_all(&rel).unwrap();
    std::fs::copy(
        test_plugin("faulty"),
        rel.join(hubget_tests::library_file_name("hubget_faulty")),
    )
    .unwrap();
    let run = env.hubget_with_env(["plugins", "--json"], &[("HUBGET_PLUGIN_DIR", "rel")]);
    run.ok();
    assert!(
        !plugin_names(&run.json()).contains(&"faulty".to_owned()),
        "{}",
        run.stdout
    );
    assert_contains(
        &run.stderr,
        "HUBGET_PLUGIN_DIR entry rel is relative; it is ignored",
    );
}
