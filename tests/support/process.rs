//! Copies of the running test binary, started by a test to stand for the
//! other processes of a service: each runs one ignored test of the binary
//! (which does nothing unless started this way), is told what to do through
//! environment variables, and writes what it sees to a log, a line at a
//! time, for the test to read.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Set in a copy: where it logs.
pub const LOG: &str = "FLUSTER_PROCESS_LOG";

/// A copy of this test binary; killed, and its log removed, when dropped.
pub struct Process {
    pub child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts the ignored test `test` of this binary in a process of its
    /// own, with the environment variables `vars`.
    pub fn start(test: &str, vars: &[(&str, String)]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("fluster-process-{}-{n}.log", std::process::id()));
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"]);
        command.env(LOG, &log).envs(vars.iter().map(|(k, v)| (k, v))).stdout(Stdio::null());
        Process { child: command.spawn().unwrap(), log }
    }

    /// The lines of its log so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Whether it has ended.
    pub fn ended(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Ends it now (`kill -9`).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// In a copy: where its lines go (`None` when this is no copy), each
/// written at once, so that a copy killed midway leaves what it saw.
pub fn log() -> Option<impl Fn(String) + Clone + Send + Sync + 'static> {
    let file = std::fs::File::create(std::env::var(LOG).ok()?).unwrap();
    let file = Arc::new(Mutex::new(file));
    Some(move |line: String| {
        let _ = writeln!(file.lock().unwrap_or_else(|e| e.into_inner()), "{line}");
    })
}
