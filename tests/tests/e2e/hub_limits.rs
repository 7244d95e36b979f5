//! The Hub as it is: requests metered per bucket and window, announced on every response, 429s
//! without `Retry-After` (hubsim's Hub profile). A spent quota is a wait hubget shows, never a
//! failure, and the budget is shared by every worker, so few requests ever meet a 429.

use hubsim::{HubProfile, HubSim, Origin};

use hubget_tests::hub::{Dl, one_commit};

/// A dataset of `n` small regular files (`data/NNNN.txt`).
fn many_small(n: usize) -> hubsim::FixtureSpec {
    let files: String = (0..n)
        .map(|i| {
            format!(
                "\n  {{ path = \"data/{i:04}.txt\", content = {{ kind = \"text\", text = \"row {i}\\n\" }} }},"
            )
        })
        .collect();
    one_commit("acme/rows", "dataset", "many small files", &files)
}

/// Requests hubsim answered 429.
fn rejected(dl: &Dl) -> usize {
    dl.sim
        .counters()
        .log
        .iter()
        .filter(|r| r.origin == Origin::Hub && r.status == 429)
        .count()
}

#[test]
fn a_run_across_several_quota_windows_waits_them_out_and_shows_the_wait() {
    const FILES: usize = 36;
    const QUOTA: u64 = 12;
    const WORKERS: usize = 8;
    let dl = Dl::with(
        HubSim::builder()
            .fixtures(many_small(FILES))
            .hub_profile(HubProfile {
                api: Some(QUOTA),
                resolvers: Some(QUOTA),
                pages: Some(QUOTA),
                window_secs: 2,
            }),
    );
    let run = dl.run(&[
        "acme/rows",
        "--repo-type",
        "dataset",
        "--max-workers",
        &WORKERS.to_string(),
        "--json",
    ]);
    run.ok();
    assert_eq!(run.of("file_done").len(), FILES, "{}", run.stderr);
    let waits = run.of("rate_limited");
    assert!(!waits.is_empty(), "no wait shown: {}", run.stdout);
    assert_eq!(waits[0]["bucket"], "resolvers");
    assert!(waits[0]["reset_in_ms"].as_u64().unwrap() <= 3_000);
    assert!(
        rejected(&dl) <= WORKERS,
        "{} requests met a 429: the budget is not shared",
        rejected(&dl)
    );
    assert!(run.of("fallback").is_empty(), "a wait is not a failure");
    for i in [0, FILES - 1] {
        let path = format!("data/{i:04}.txt");
        let file = dl
            .repo_dir("datasets--acme--rows")
            .join("snapshots")
            .join(dl.head("acme/rows"))
            .join(&path);
        let on_disk = std::fs::read(file).unwrap();
        assert_eq!(on_disk, dl.sim.content("acme/rows", &path));
    }
}

#[test]
fn a_wait_past_the_limit_fails_naming_the_bucket_and_the_token_hint() {
    let dl = Dl::with(
        HubSim::builder()
            .fixtures(many_small(4))
            .hub_profile(HubProfile {
                api: Some(1),
                resolvers: Some(1),
                pages: Some(1),
                window_secs: 120,
            }),
    );
    let run = dl.run(&[
        "acme/rows",
        "--repo-type",
        "dataset",
        "--max-rate-limit-wait",
        "1",
    ]);
    assert_ne!(run.code, Some(0));
    let err = run.stderr.clone();
    hubget_tests::assert_contains(&err, "rate limited by");
    hubget_tests::assert_contains(&err, "HF_TOKEN");
}
