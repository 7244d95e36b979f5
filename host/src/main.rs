//! The `hubget` command: parses the command line and runs it (the CLI lands next; for now it
//! lists the plugins it can load).

use std::io::Write;

fn main() -> std::process::ExitCode {
    env_logger::init();
    let dirs = hubget::loader::search_path(&[], std::env::var_os("HUBGET_PLUGIN_DIR").as_deref());
    let registry = hubget::Registry::discover(&dirs);
    let mut out = std::io::stdout().lock();
    for p in registry.plugins() {
        let _ = writeln!(
            out,
            "{} {} {}",
            p.info.name,
            p.info.version,
            p.path.display()
        );
    }
    for f in registry.failures() {
        let _ = writeln!(out, "failed: {}: {}", f.path.display(), f.reason);
    }
    std::process::ExitCode::SUCCESS
}
