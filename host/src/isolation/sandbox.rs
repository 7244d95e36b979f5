//! What an isolated plugin's helper may do: entered by the helper itself, first thing, before
//! the plugin's library is opened (its initialisers run sandboxed too), while the helper is
//! still one thread (Landlock restricts the calling thread and the threads it starts).
//!
//! - **Files** (Linux Landlock, best effort down to the kernel's ABI): read anything outside
//!   the user's home, and inside it only the paths the host names (the cache, the config file,
//!   the plugin's directory, a CA bundle); write only below the write roots (the target's
//!   partial-file directories, hubget's state directory in the cache, the helper's temp dir)
//!   and to `/dev/null`. Landlock rules only allow, so "everything but the home" is every
//!   sibling along the path from `/` to the home.
//! - **Network**: left alone (the plugin's transport needs it).
//! - **Memory**: an address-space limit (`RLIMIT_AS`): a runaway allocation fails inside the
//!   helper, not on the machine.
//! - **Lifetime**: the helper dies with the host (`PR_SET_PDEATHSIG`).
//!
//! Where the kernel has no Landlock the plugin still runs isolated, unsandboxed, and the status
//! says so (`hubget plugins` shows it).

use std::path::{Path, PathBuf};

use super::protocol::SandboxPolicy;

/// The directories to allow reading below so that everything is readable except `home`,
/// plus `read_in_home`. `None` home (or `/`): everything.
pub fn read_roots(home: Option<&Path>, read_in_home: &[PathBuf]) -> Vec<PathBuf> {
    let Some(home) = home.filter(|h| h.is_absolute() && h.parent().is_some()) else {
        return vec![PathBuf::from("/")];
    };
    let mut roots = Vec::new();
    let mut at = PathBuf::from("/");
    for part in home.iter().skip(1) {
        if let Ok(entries) = std::fs::read_dir(&at) {
            roots.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name() != part)
                    .map(|e| e.path()),
            );
        }
        at.push(part);
    }
    roots.extend(read_in_home.iter().cloned());
    roots
}

/// Enters the sandbox of `policy` (and the helper's other limits); returns what is enforced,
/// for `hubget plugins` ("landlock", "landlock (partial: …)", or why none).
pub fn enter(policy: &SandboxPolicy, memory_limit_mib: u64) -> String {
    die_with_parent();
    limit_memory(memory_limit_mib);
    if !policy.enabled {
        return "off".to_owned();
    }
    landlock(policy)
}

#[cfg(target_os = "linux")]
fn landlock(policy: &SandboxPolicy) -> String {
    use landlock::{
        ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus,
    };
    let abi = ABI::V5;
    let rule = |path: &Path, access: landlock::BitFlags<AccessFs>| {
        // Directory rights apply to directories only (a device such as /dev/null is a file).
        let file = !std::fs::metadata(path).ok()?.is_dir();
        let access = if file {
            access & AccessFs::from_file(abi)
        } else {
            access
        };
        Some(PathBeneath::new(PathFd::new(path).ok()?, access))
    };
    let reads = read_roots(policy.home.as_deref(), &policy.read_in_home);
    let writes = policy
        .write
        .iter()
        .cloned()
        .chain([PathBuf::from("/dev/null")]);
    let result = (|| -> Result<RulesetStatus, landlock::RulesetError> {
        let status = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .create()?
            .add_rules(
                reads
                    .iter()
                    .filter_map(|p| rule(p, AccessFs::from_read(abi)))
                    .map(Ok::<_, landlock::RulesetError>),
            )?
            .add_rules(
                writes
                    .filter_map(|p| rule(&p, AccessFs::from_all(abi)))
                    .map(Ok::<_, landlock::RulesetError>),
            )?
            .restrict_self()?;
        Ok(status.ruleset)
    })();
    match result {
        Ok(RulesetStatus::FullyEnforced) => "landlock".to_owned(),
        Ok(RulesetStatus::PartiallyEnforced) => {
            "landlock (partial: an older kernel ABI)".to_owned()
        }
        Ok(RulesetStatus::NotEnforced) => "none (the kernel has no Landlock)".to_owned(),
        Err(e) => format!("none (Landlock: {e})"),
    }
}

#[cfg(not(target_os = "linux"))]
fn landlock(_policy: &SandboxPolicy) -> String {
    "none (Landlock is Linux only)".to_owned()
}

#[cfg(target_os = "linux")]
fn die_with_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent() {}

#[cfg(unix)]
fn limit_memory(mib: u64) {
    if mib == 0 {
        return;
    }
    let bytes = mib.saturating_mul(1 << 20) as libc::rlim_t;
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads the struct we pass; no other memory is touched.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        log::debug!(
            "cannot limit the helper's memory: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(unix))]
fn limit_memory(_mib: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_readable_but_the_home_except_what_is_named() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home/alice");
        for d in [
            "home/alice/.ssh",
            "home/alice/.cache/huggingface",
            "home/bob",
            "opt",
        ] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        let cache = home.join(".cache/huggingface");
        let roots = read_roots(Some(&home), std::slice::from_ref(&cache));
        assert!(roots.contains(&root.path().join("home/bob")));
        assert!(roots.contains(&root.path().join("opt")));
        assert!(roots.contains(&cache));
        assert!(
            !roots
                .iter()
                .any(|r| home.starts_with(r) || r == &home.join(".ssh")),
            "nothing at or above the home, nothing else in it: {roots:?}"
        );
        assert_eq!(read_roots(None, &[]), [PathBuf::from("/")]);
    }
}
