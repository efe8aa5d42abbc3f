//! Dropping the last handle of a synchronous pool stops its probing
//! thread. Alone in its binary, so no other test's pool is counted.

mod support;

use std::time::{Duration, Instant};

/// Threads of this process named `fluster-prober` (Linux: /proc).
fn probers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "fluster-prober")
        .count()
}

#[test]
#[cfg(target_os = "linux")]
fn dropping_the_last_handle_stops_the_probing_thread() {
    let mut dead = support::RedisServer::start();
    let url = dead.url();
    dead.kill();
    assert_eq!(probers(), 0);
    // A boxed node keeps the thread busy probing.
    let pool = fluster::sync::ShardedPool::builder()
        .node(&url)
        .penalty_min_wait(Duration::from_millis(5))
        .penalty_max_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    assert!(!pool.status()[0].up);
    // The new thread names itself once it runs: poll for it.
    until(|| probers() == 1, "the probing thread did not start");
    let clone = pool.clone();
    drop(pool);
    assert_eq!(probers(), 1, "a clone still holds the pool");
    drop(clone);
    until(|| probers() == 0, "the probing thread did not stop");
}

/// Polls `condition` every 5 ms for up to 5 s, failing with `what`.
fn until(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
