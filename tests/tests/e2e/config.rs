//! Configuration through the `hubget` binary: where the config file is found, precedence
//! (command line > environment > config file > defaults) as `hubget config show` reports it,
//! the token never shown, and clear errors (file and key named) for unknown keys in the main
//! config and in a plugin's table, and for unknown backend names.

use hubget_tests::{TINY_ON_FAULTY, TestEnv, assert_contains, plugin_entry};
use serde_json::Value;

fn setting<'a>(doc: &'a Value, key: &str) -> (&'a Value, &'a str) {
    let entry = &doc["settings"][key];
    assert!(entry.is_object(), "no setting {key} in {doc:#}");
    (&entry["value"], entry["source"].as_str().unwrap())
}

#[test]
fn precedence_is_cli_then_env_then_file_then_default() {
    let env = TestEnv::new();
    let config = env.write_config(
        "[hub]\nendpoint = \"http://from-file.test\"\n\n[download]\nmax_workers = 3\nstall_timeout_secs = 12\n",
    );
    let cfg = config.to_str().unwrap();

    // File only.
    let doc = env
        .hubget(["--config", cfg, "config", "show", "--json"])
        .json();
    assert_eq!(doc["config_file"]["path"], cfg);
    assert_eq!(doc["config_file"]["origin"], "--config");
    let (v, s) = setting(&doc, "hub.endpoint");
    assert_eq!(
        (v.as_str().unwrap(), s),
        ("http://from-file.test", &*format!("config file {cfg}"))
    );
    let (v, s) = setting(&doc, "download.max_workers");
    assert_eq!(
        (v.as_u64().unwrap(), s),
        (3, &*format!("config file {cfg}"))
    );
    // Defaults for what the file does not set.
    let (v, s) = setting(&doc, "download.connections_per_file");
    assert_eq!((v.as_u64().unwrap(), s), (8, "default"));
    let (v, s) = setting(&doc, "backends.order");
    assert_eq!(
        (v.clone(), s),
        (serde_json::json!(["lfs", "xet", "mirror"]), "default")
    );

    // Environment beats the file (trailing slash trimmed like huggingface_hub).
    let envs = [("HF_ENDPOINT", "http://from-env.test/")];
    let doc = env
        .hubget_with_env(["--config", cfg, "config", "show", "--json"], &envs)
        .json();
    let (v, s) = setting(&doc, "hub.endpoint");
    assert_eq!(
        (v.as_str().unwrap(), s),
        ("http://from-env.test", "env HF_ENDPOINT")
    );

    // The command line beats both.
    let args = [
        "--config",
        cfg,
        "config",
        "show",
        "--json",
        "--endpoint",
        "http://from-cli.test",
        "--max-workers",
        "5",
        "--stall-timeout",
        "7",
    ];
    let doc = env.hubget_with_env(args, &envs).json();
    let (v, s) = setting(&doc, "hub.endpoint");
    assert_eq!(
        (v.as_str().unwrap(), s),
        ("http://from-cli.test", "--endpoint")
    );
    let (v, s) = setting(&doc, "download.max_workers");
    assert_eq!((v.as_u64().unwrap(), s), (5, "--max-workers"));
    let (v, s) = setting(&doc, "download.stall_timeout_secs");
    assert_eq!((v.as_u64().unwrap(), s), (7, "--stall-timeout"));

    // The plugin search path, in order: HUBGET_PLUGIN_DIR, the executable's directory, then
    // `<that>/../lib/hubget` (where the wheel and the release archive put the plugins).
    let dirs = doc["plugin_search_path"]
        .as_array()
        .expect("plugin_search_path");
    let origins: Vec<&str> = dirs.iter().map(|d| d["origin"].as_str().unwrap()).collect();
    assert_eq!(
        origins,
        ["HUBGET_PLUGIN_DIR", "executable dir", "install lib dir"],
        "{doc:#}"
    );
    assert_eq!(dirs[0]["path"], env.plugin_dir().to_str().unwrap());

    // Nothing at all: built-in defaults.
    let doc = env.hubget(["config", "show", "--json"]).json();
    assert!(doc["config_file"].is_null());
    let (v, s) = setting(&doc, "hub.endpoint");
    assert_eq!(
        (v.as_str().unwrap(), s),
        ("https://huggingface.co", "default")
    );

    // The text form shows value and source on one line.
    let text = env.hubget_with_env(["--config", cfg, "config", "show"], &envs);
    text.ok();
    assert!(
        text.stdout.lines().any(|l| l.starts_with("hub.endpoint")
            && l.contains("http://from-env.test")
            && l.ends_with("# env HF_ENDPOINT")),
        "{}",
        text.stdout
    );
}

#[test]
fn config_file_lookup_order() {
    let env = TestEnv::new();
    let default = env.write_default_config("[download]\nmax_workers = 2\n");
    let doc = env.hubget(["config", "show", "--json"]).json();
    assert_eq!(doc["config_file"]["path"], default.to_str().unwrap());
    assert_eq!(setting(&doc, "download.max_workers").0, 2);

    let other = env.write_config("[download]\nmax_workers = 4\n");
    let doc = env
        .hubget_with_env(
            ["config", "show", "--json"],
            &[("HUBGET_CONFIG", other.to_str().unwrap())],
        )
        .json();
    assert_eq!(doc["config_file"]["origin"], "HUBGET_CONFIG");
    assert_eq!(setting(&doc, "download.max_workers").0, 4);

    let missing = env.path("nope.toml");
    let run = env.hubget(["--config", missing.to_str().unwrap(), "config", "show"]);
    run.code_is(2);
    assert!(
        run.stderr.contains("nope.toml") && run.stderr.contains("--config"),
        "{}",
        run.stderr
    );
}

#[test]
fn hf_environment_variables_are_honoured() {
    let env = TestEnv::new();
    let hf_home = env.hf_home();
    let doc = env.hubget(["config", "show", "--json"]).json();
    let (v, _) = setting(&doc, "download.cache_dir");
    assert_eq!(v.as_str().unwrap(), hf_home.join("hub").to_str().unwrap());
    let (v, s) = setting(&doc, "offline");
    assert_eq!((v.as_bool().unwrap(), s), (false, "default"));

    let cache = env.path("cache");
    let envs = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "yes"),
    ];
    let doc = env
        .hubget_with_env(["config", "show", "--json"], &envs)
        .json();
    let (v, s) = setting(&doc, "download.cache_dir");
    assert_eq!(
        (v.as_str().unwrap(), s),
        (cache.to_str().unwrap(), "env HF_HUB_CACHE")
    );
    let (v, s) = setting(&doc, "offline");
    assert_eq!((v.as_bool().unwrap(), s), (true, "env HF_HUB_OFFLINE"));
    let doc = env
        .hubget_with_env(["config", "show", "--json", "--cache-dir", "/x"], &envs)
        .json();
    assert_eq!(setting(&doc, "download.cache_dir").1, "--cache-dir");
}

#[test]
fn the_token_is_never_printed_only_where_it_came_from() {
    let env = TestEnv::new();
    let secret = "hf_SeCrEtToKeN1234567890";
    for json in [false, true] {
        let mut args = vec!["config", "show"];
        if json {
            args.push("--json");
        }
        let run = env.hubget_with_env(&args, &[("HF_TOKEN", secret)]);
        run.ok();
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
        if json {
            let doc = run.json();
            assert_eq!(
                setting(&doc, "token"),
                (&Value::from("set"), "env HF_TOKEN")
            );
        } else {
            assert!(
                run.stdout.lines().any(|l| l.starts_with("token")
                    && l.contains("= set")
                    && l.ends_with("# env HF_TOKEN")),
                "{}",
                run.stdout
            );
        }
    }
    // From $HF_HOME/token, and --token beats it.
    std::fs::write(env.hf_home().join("token"), format!("{secret}\n")).unwrap();
    let run = env.hubget(["config", "show", "--json"]);
    assert!(!run.stdout.contains(secret));
    assert_eq!(setting(&run.json(), "token").1, "file $HF_HOME/token");
    let run = env.hubget(["config", "show", "--json", "--token", "hf_othertoken999"]);
    assert!(!run.stdout.contains("hf_othertoken999"));
    assert_eq!(setting(&run.json(), "token").1, "--token");
    // Plugins see no token in their log output either (nothing logs it here; checked by -vvv).
    let run = env.hubget_with_env(["-vvv", "plugins"], &[("HF_TOKEN", secret)]);
    assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret));
}

#[test]
fn an_unknown_key_in_the_config_file_is_a_clear_error() {
    let env = TestEnv::new();
    let config =
        env.write_config("[hub]\nendpoint = \"http://x.test\"\n\n[download]\nmax_wrokers = 4\n");
    let run = env.hubget_configured(&["plugins"]);
    run.code_is(2);
    let error = run.error_line().expect("error line");
    assert!(error.contains(config.to_str().unwrap()), "{error}");
    assert!(error.contains("line 5"), "{error}");
    assert!(error.contains("key `download.max_wrokers`"), "{error}");
    assert!(error.contains("expected one of"), "{error}");
    assert_contains(&run.stderr, "hint: ");
}

#[test]
fn an_unknown_key_in_a_plugin_table_is_a_clear_error_naming_table_key_and_file() {
    let env = TestEnv::with_faulty("log = \"x\"\nsleep_msec = 5");
    let config = env.path("config.toml");
    let run = env.hubget_configured(TINY_ON_FAULTY);
    run.code_is(2);
    let error = run.error_line().expect("error line");
    assert!(error.contains("[plugins.faulty]"), "{error}");
    assert!(error.contains("sleep_msec"), "{error}");
    assert!(error.contains(config.to_str().unwrap()), "{error}");
    // `hubget plugins` shows the same problem in place of the capabilities and still succeeds.
    let run = env.hubget_configured(&["plugins", "--json"]);
    run.ok();
    let doc = run.json();
    let faulty = plugin_entry(&doc, "faulty");
    assert!(
        faulty["error"].as_str().unwrap().contains("sleep_msec"),
        "{faulty}"
    );
}

#[test]
fn an_unknown_backend_name_is_a_usage_error_listing_the_loaded_backends() {
    let env = TestEnv::new();
    let run = env.hubget(["download", "acme/tiny", "--backend", "nope"]);
    run.code_is(2);
    let error = run.error_line().expect("error line");
    assert!(error.contains("unknown backend `nope`"), "{error}");
    for name in ["lfs", "xet", "mirror"] {
        assert!(error.contains(name), "{error}");
    }
    assert_contains(&run.stderr, "hint: run `hubget plugins`");
    // --no-fallback without a backend is a usage error too.
    env.hubget(["download", "acme/tiny", "--no-fallback"])
        .code_is(2);
    // And clap's own usage errors exit 2.
    env.hubget(["download", "acme/tiny", "--repo-type", "bucket"])
        .code_is(2);
}

#[test]
fn a_table_for_a_plugin_that_is_not_loaded_is_warned_about() {
    let env = TestEnv::new();
    env.write_config("[plugins.mirorr]\nendpoints = []\n");
    let run = env.hubget_configured(&["plugins"]);
    run.ok();
    let warning = run
        .stderr
        .lines()
        .find(|l| l.contains("[plugins.mirorr]"))
        .unwrap_or_else(|| panic!("no warning: {}", run.stderr));
    assert!(
        warning.contains("WARN") && warning.contains("configures no loaded plugin"),
        "{warning}"
    );
    assert!(
        warning.contains("mirror"),
        "lists the loaded ones: {warning}"
    );
}

#[test]
fn the_printed_defaults_are_a_config_file_that_sets_every_key_to_its_default() {
    let env = TestEnv::new();
    let defaults = env.hubget(["config", "show", "--defaults"]);
    defaults.ok();
    assert!(
        defaults
            .stdout
            .contains("# Files downloaded at once. (--max-workers)\nmax_workers = 8\n")
    );
    let config = env.write_config(&defaults.stdout);
    let cfg = config.to_str().unwrap();
    let from_file = env
        .hubget(["--config", cfg, "config", "show", "--json"])
        .json();
    let builtin = env.hubget(["config", "show", "--json"]).json();
    for key in [
        "hub.endpoint",
        "download.max_workers",
        "network.read_timeout_secs",
        "backends.order",
    ] {
        let (v, s) = setting(&from_file, key);
        assert_eq!(s, format!("config file {cfg}"), "{key}");
        assert_eq!(
            v,
            setting(&builtin, key).0,
            "{key}: the same value as the built-in default"
        );
    }
}
