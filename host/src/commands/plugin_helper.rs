//! The hidden `__plugin-helper` command: the process that serves one isolated plugin (see
//! [`crate::isolation`]). Order matters: `TMPDIR` and the sandbox come before the plugin's
//! library is opened, while this process is still one thread.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Mutex;

use crate::isolation::protocol::{self, FromHelper, ToHelper};
use crate::isolation::sandbox;
use crate::isolation::serve::{ForwardLogs, Outbox, serve};
use crate::loader::Registry;

/// Runs the helper until the host closes its end of the pipe.
pub fn run() -> ExitCode {
    let mut input = std::io::stdin().lock();
    let Ok(Some(ToHelper::Open {
        protocol: version,
        path,
        max_log_level,
        memory_limit_mib,
        mut sandbox,
        temp_dir,
    })) = protocol::read::<ToHelper>(&mut input)
    else {
        return ExitCode::from(2);
    };
    // The plugin's own temp dir (the host made it and removes it), inside the write roots.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("TMPDIR", &temp_dir) };
    sandbox.write.push(temp_dir);
    let status = sandbox::enter(&sandbox, memory_limit_mib);
    let outbox = Outbox::start(std::io::stdout());
    if version != protocol::VERSION {
        outbox.send(FromHelper::LoadFailed {
            reason: format!(
                "the helper speaks protocol {}, the host {version} (a different hubget install)",
                protocol::VERSION
            ),
            detail: String::new(),
        });
        return finish(outbox);
    }
    let level = protocol::log_level(max_log_level.min(5))
        .map_or(log::LevelFilter::Off, |l| l.to_level_filter());
    if log::set_boxed_logger(Box::new(ForwardLogs(Mutex::new(outbox.clone())))).is_ok() {
        log::set_max_level(level);
    }
    let plugin = match Registry::load_one(&path) {
        Ok(plugin) => plugin,
        Err(failure) => {
            outbox.send(FromHelper::LoadFailed {
                reason: failure.reason,
                detail: failure.detail,
            });
            return finish(outbox);
        }
    };
    outbox.send(FromHelper::Hello {
        protocol: protocol::VERSION,
        info: plugin.info.clone(),
        interface_version: plugin.interface_version.clone(),
        sandbox: status,
    });
    serve(
        &mut input as &mut dyn BufRead,
        &outbox,
        |settings, config| plugin.raw_backend(settings, config),
    );
    finish(outbox)
}

/// Waits until the writer thread has sent what is queued, then ends the process (plugin
/// threads with it).
fn finish(outbox: Outbox) -> ExitCode {
    outbox.flush();
    std::process::exit(0)
}
