//! Isolated plugins: a plugin in a helper process can crash, abort, overflow its stack,
//! allocate without bound or hang without taking the run down; its in-flight files go to the
//! next backend with the cause named. Cancellation reaches it; every plugin in the tree works
//! in both modes; the sandbox keeps an isolated plugin out of the home and writing only where
//! partial files go.

use std::time::{Duration, Instant};

use hubget_tests::hub::{Dl, TINY};
use hubget_tests::plugins::faulty_then_hello;
use hubget_tests::{Run, TestEnv, assert_contains, plugin_entry};

/// Four files the faulty plugin lists and the hello example serves too.
const FILES: [(&str, &str); 4] = [
    ("a.txt", "alpha"),
    ("b.txt", "bravo"),
    ("c.txt", "charlie"),
    ("d.txt", "delta"),
];

/// A download whose first backend (faulty, isolated as a third-party plugin) writes two files
/// of its batch and then dies `how`.
fn crash_mid_batch(how: &str) -> (TestEnv, Run) {
    let env = faulty_then_hello(
        &format!("crash_in_fetch = {how:?}\ncrash_after = 2\nmemory_limit_mib = 1024"),
        &FILES,
    );
    let run = run_leaving_no_temp_dir(&env, &["download", "acme/files", "--json"]);
    (env, run)
}

/// Runs `hubget <args>` with its own `TMPDIR`, and checks that the helpers' temp dirs are gone
/// afterwards, however the helpers ended.
fn run_leaving_no_temp_dir(env: &TestEnv, args: &[&str]) -> Run {
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let run = env.hubget_configured_env(args, &[("TMPDIR", tmp.to_str().unwrap())]);
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temp dirs left behind: {left:?}");
    run
}

/// Every file of [`FILES`] the run asked for landed once, from `hello`, with its content;
/// the run says it succeeded.
fn assert_all_from_hello(run: &Run, files: usize) {
    run.ok();
    let done = run.of("file_done");
    assert_eq!(done.len(), files, "{}", run.stdout);
    for d in &done {
        assert_eq!(d["backend"], "hello", "{d}");
        let path = d["path"].as_str().unwrap();
        let content = FILES.iter().find(|(n, _)| *n == path).unwrap().1;
        let landed = std::fs::read_to_string(d["local_path"].as_str().unwrap()).unwrap();
        assert_eq!(landed, content, "{path}");
    }
    assert_eq!(run.first("done")["files_failed"], 0);
}

/// The first fallback away from `faulty`, whose message names the cause.
fn crash_message(run: &Run) -> String {
    let fallback = run.fallback_from("faulty");
    assert_eq!(fallback["to"], "hello");
    fallback["error"]["message"].as_str().unwrap().to_owned()
}

#[test]
fn a_segfault_mid_batch_costs_only_that_plugins_files() {
    let (_env, run) = crash_mid_batch("segfault");
    assert_all_from_hello(&run, FILES.len());
    assert_contains(&crash_message(&run), "plugin `faulty` crashed: SIGSEGV");
}

#[test]
fn an_abort_mid_batch_costs_only_that_plugins_files() {
    let (_env, run) = crash_mid_batch("abort");
    assert_all_from_hello(&run, FILES.len());
    assert_contains(&crash_message(&run), "plugin `faulty` crashed: SIGABRT");
}

#[test]
fn a_stack_overflow_mid_batch_is_named_and_the_files_fall_back() {
    let (_env, run) = crash_mid_batch("stack_overflow");
    assert_all_from_hello(&run, FILES.len());
    let message = crash_message(&run);
    assert_contains(&message, "plugin `faulty` crashed: SIGABRT");
    assert_contains(&message, "has overflowed its stack");
}

#[test]
fn an_allocation_without_bound_ends_at_the_memory_limit_and_the_files_fall_back() {
    let started = Instant::now();
    let (_env, run) = crash_mid_batch("alloc");
    assert_all_from_hello(&run, FILES.len());
    let message = crash_message(&run);
    assert_contains(&message, "plugin `faulty` crashed");
    assert_contains(&message, "memory allocation");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_crashed_plugin_stays_failed_for_the_run() {
    // One file per batch: after the crash, the remaining files are not offered to a helper
    // that is gone (each fails at once with the same cause and goes to hello).
    let env = faulty_then_hello("crash_in_fetch = \"abort\"\nmax_batch_files = 1", &FILES);
    let run = env.hubget_configured(&["download", "acme/files", "--json"]);
    assert_all_from_hello(&run, FILES.len());
    let causes: Vec<String> = run
        .of("fallback")
        .iter()
        .map(|f| f["error"]["message"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(causes.len(), FILES.len(), "{causes:?}");
    assert!(
        causes.iter().all(|c| c.contains("crashed: SIGABRT")),
        "{causes:?}"
    );
}

#[test]
fn a_helper_that_ignores_cancellation_is_killed_and_its_files_fall_back() {
    let env = faulty_then_hello("sleep_ms = 120000\nignore_cancel = true", &FILES[..1]);
    let started = Instant::now();
    let run = run_leaving_no_temp_dir(
        &env,
        &["download", "acme/files", "--json", "--stall-timeout", "2"],
    );
    assert_all_from_hello(&run, 1);
    assert_contains(&crash_message(&run), "ignored cancellation");
    assert_contains(
        &run.stderr,
        "plugin `faulty`: killing its helper process: a call was abandoned",
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not waited for: {:?}",
        started.elapsed()
    );
}

#[test]
fn ctrl_c_reaches_an_isolated_plugin_and_the_partial_is_kept_for_the_next_run() {
    crate::download::ctrl_c_keeps_the_partial_file_and_the_next_run_resumes(&[(
        "HUBGET_PLUGIN_ISOLATION",
        "process",
    )]);
}

#[test]
fn first_party_plugins_download_the_same_in_both_modes() {
    for mode in ["process", "none"] {
        let dl = Dl::new();
        let env = [("HUBGET_PLUGIN_ISOLATION", mode)];
        let listed = dl.hubget(&["plugins", "--json"], &env);
        listed.ok();
        let doc = listed.json();
        for name in ["lfs", "xet", "mirror", "s3"] {
            let entry = plugin_entry(&doc, name);
            assert_eq!(entry["isolation"], mode, "{name}: {entry}");
        }
        for backend in ["lfs", "xet"] {
            let cache = dl.env.path(&format!("cache-{mode}-{backend}"));
            let run = dl.run_env(
                &[
                    TINY,
                    "--backend",
                    backend,
                    "--no-fallback",
                    "--json",
                    "--cache-dir",
                    cache.to_str().unwrap(),
                ],
                &env,
            );
            run.ok();
            assert_tiny_landed(&dl, &run, backend);
        }
        // The mirror, pointed at the same Hub-compatible server.
        let cfg = dl.env.path(&format!("mirror-{mode}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[plugins.mirror]\nendpoints = [{{ url = {:?} }}]\n",
                dl.sim.hub_url()
            ),
        )
        .unwrap();
        let run = dl.run_env(
            &[
                TINY,
                "--backend",
                "mirror",
                "--json",
                "--config",
                cfg.to_str().unwrap(),
                "--cache-dir",
                dl.env
                    .path(&format!("cache-{mode}-mirror"))
                    .to_str()
                    .unwrap(),
            ],
            &env,
        );
        run.ok();
        assert!(
            run.of("file_done").iter().any(|d| d["backend"] == "mirror"),
            "{}",
            run.stdout
        );
    }
}

/// Every file of acme/tiny landed from `backend`, byte-exact.
fn assert_tiny_landed(dl: &Dl, run: &Run, backend: &str) {
    let done = run.of("file_done");
    assert!(!done.is_empty());
    for d in &done {
        let path = d["path"].as_str().unwrap();
        let landed = std::fs::read(d["local_path"].as_str().unwrap()).unwrap();
        assert_eq!(landed, dl.sim.content(TINY, path), "{backend}: {path}");
        if path.ends_with(".bin") && backend == "xet" && path.starts_with("xet") {
            assert_eq!(d["backend"], "xet", "{d}");
        }
    }
}

#[test]
fn third_party_plugins_download_the_same_in_both_modes() {
    for mode in ["process", "none"] {
        let env = faulty_then_hello(&format!("isolation = {mode:?}"), &FILES);
        let listed = env.hubget_configured(&["plugins", "--json"]);
        listed.ok();
        assert_eq!(plugin_entry(&listed.json(), "faulty")["isolation"], mode);
        let run = env.hubget_configured(&["download", "acme/files", "--json"]);
        run.ok();
        let done = run.of("file_done");
        assert_eq!(done.len(), FILES.len());
        assert!(
            done.iter().all(|d| d["backend"] == "faulty"),
            "{}",
            run.stdout
        );
    }
}

/// The faulty plugin, isolated, trying to read `read` and write `write` while it starts
/// (`hubget plugins` starts every backend).
fn probe(env: &TestEnv, read: &std::path::Path, write: &std::path::Path, extra: &str) -> Run {
    env.write_config(&format!(
        "[plugins.faulty]\nisolation = \"process\"\ntry_read = {:?}\ntry_write = {:?}\n{extra}\n",
        read.display().to_string(),
        write.display().to_string()
    ));
    let run = env.hubget_configured(&["plugins", "--json"]);
    run.ok();
    run
}

#[test]
fn the_sandbox_keeps_an_isolated_plugin_out_of_the_home_and_writing_only_where_allowed() {
    let env = TestEnv::with_faulty("");
    let secret = env.home().join(".ssh/id_ed25519");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "private key").unwrap();
    // Outside the home, and not where partial files go.
    let outside = env.path("outside.txt");
    let run = probe(&env, &secret, &outside, "");
    let sandbox = plugin_entry(&run.json(), "faulty")["sandbox"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if sandbox.starts_with("none") {
        // A kernel without Landlock: isolated, not sandboxed, and said so.
        assert_contains(&sandbox, "Landlock");
        assert_contains(&run.stderr, "allowed");
        return;
    }
    assert_eq!(sandbox, "landlock");
    assert_contains(
        &run.stderr,
        &format!("faulty: read {}: refused", secret.display()),
    );
    assert_contains(
        &run.stderr,
        &format!("faulty: write {}: refused", outside.display()),
    );
    assert!(!outside.exists(), "nothing written outside");

    // The same plugin without the sandbox can do both: the refusals above are the sandbox's.
    let open = probe(&env, &secret, &outside, "sandbox = false");
    assert_contains(
        &open.stderr,
        &format!("faulty: read {}: allowed", secret.display()),
    );
    assert!(outside.exists());
}

#[test]
fn an_isolated_plugin_reads_the_cache_and_writes_its_partial_files_and_temp_dir() {
    let env = TestEnv::with_faulty("");
    let in_cache = env.hf_home().join("hub/readable.txt");
    std::fs::create_dir_all(in_cache.parent().unwrap()).unwrap();
    std::fs::write(&in_cache, "cached").unwrap();
    let state = env.hf_home().join("hub/.hubget/faulty-state.txt");
    let run = probe(&env, &in_cache, &state, "");
    assert_contains(
        &run.stderr,
        &format!("faulty: read {}: allowed", in_cache.display()),
    );
    assert_contains(
        &run.stderr,
        &format!("faulty: write {}: allowed", state.display()),
    );
    // And a download through it lands (its partial files are writable).
    let env = faulty_then_hello("isolation = \"process\"", &FILES);
    let run = env.hubget_configured(&["download", "acme/files", "--json"]);
    run.ok();
    assert!(run.of("file_done").iter().all(|d| d["backend"] == "faulty"));
}
