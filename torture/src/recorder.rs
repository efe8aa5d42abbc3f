//! A process's history file: one JSON line an entry, each written with one
//! `write` as it happens (no buffer), so that a process killed midway
//! leaves every line it wrote.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fluster_torture::history::{Entry, ProcessId};

/// Where a process records; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    file: Arc<Mutex<File>>,
    /// The process recording.
    pub process: ProcessId,
    next: Arc<AtomicU64>,
}

impl Recorder {
    /// A new history file at `path` for `process`.
    pub fn create(path: &Path, process: ProcessId) -> Recorder {
        let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Recorder { file: Arc::new(Mutex::new(file)), process, next: Arc::new(AtomicU64::new(0)) }
    }

    /// Writes one entry.
    pub fn record(&self, entry: &Entry) {
        let mut line = serde_json::to_vec(entry).expect("an entry serializes");
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.write_all(&line);
    }

    /// A fresh operation id (also the counter of the values it writes).
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The unique value of operation `id`.
    pub fn value(&self, id: u64) -> String {
        format!("p{}:{id}", self.process)
    }
}

/// Reads every entry of the history file at `path` (a line cut short by a
/// kill is skipped).
pub fn read(path: &Path) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}
