//! A snapshot of the environment variables hubget reads, taken once at start-up so that every
//! layer (config, settings, commands) reads the same values and tests can supply their own.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// A snapshot of the environment variables hubget reads (taken once at startup).
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, OsString>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may hold tokens: show names only.
        f.debug_list().entries(self.vars.keys()).finish()
    }
}

impl Env {
    /// The current process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
                .collect(),
        }
    }

    /// An environment made of `pairs` only (for tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), OsString::from(v)))
                .collect(),
        }
    }

    /// The value of `name` if set, non-empty and valid UTF-8.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .and_then(|v| v.to_str())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// The raw value of `name` if set and non-empty (paths may be non-UTF-8).
    pub fn get_os(&self, name: &str) -> Option<&OsString> {
        self.vars.get(name).filter(|v| !v.is_empty())
    }

    /// `$HOME`, or `/` if unset.
    pub fn home(&self) -> PathBuf {
        self.get_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    /// huggingface_hub's boolean rule: true for `1`, `ON`, `YES`, `TRUE` in any case.
    pub fn is_true(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| is_true(&v))
    }
}

/// huggingface_hub's `_is_true`: `1`, `ON`, `YES`, `TRUE`, case-insensitive.
pub fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}
