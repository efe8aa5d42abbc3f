//! A pool process: the same binary started with `--worker JOB`, with a
//! `ShardedPool` of its own (async or sync flavour, as the plan says),
//! running the workload until the run's end and recording every operation.

mod blocking;
mod fills;
mod member;
mod ops;
mod race;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fluster::redis;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use fluster_torture::history::{Entry, Kind, Op, Outcome, Path as OpPath, ProcessId, View, now};

use crate::plan::Plan;
use crate::recorder::Recorder;

/// What a pool process is told.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Job {
    /// The run.
    pub plan: Plan,
    /// This process.
    pub process: ProcessId,
    /// Its nodes: name, URL (through its own proxy), gutter or not.
    pub nodes: Vec<(String, String, bool)>,
    /// The URL of the Sentinel shard's sentinel (straight: no proxy).
    #[serde(default)]
    pub sentinel: Option<String>,
    /// The URL (through its own proxy) of the node it adds at run time.
    #[serde(default)]
    pub extra: Option<String>,
    /// When the workload begins and ends ([`now`]).
    pub start: u64,
    /// See `start`.
    pub end: u64,
    /// Its history file.
    pub history: PathBuf,
}

/// The panic message of a fill that panics on purpose.
pub const INTENDED_PANIC: &str = "torture: a fill that panics on purpose";

/// Longest an operation may take before the harness calls it a hang.
pub const HANG: Duration = Duration::from_secs(15);

/// Runs the pool process of the job file at `path`.
pub fn run(path: &Path) {
    let job: Job = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let rec = Recorder::create(&job.history, job.process);
    record_panics(rec.clone());
    log_to_stderr();
    let sync = job.plan.config.sync_processes.contains(&job.process);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let memory = rec.clone();
    runtime.spawn(async move {
        loop {
            memory.record(&Entry::Memory { process: memory.process, rss: rss(), at: now() });
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    if sync {
        blocking::run(&job, &rec, runtime.handle());
    } else {
        runtime.block_on(run_async(&job, &rec));
    }
    // Tasks still in flight (a hung one) are the harness's to judge: leave.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

/// The pool's own log (its WARN "node boxed", INFO "node back in
/// rotation", the drain's progress...) on stderr, which the harness keeps
/// as `process-N.log` beside the history: each line stamped with the
/// history's clock (ms), so a violation's excerpt can be read against it.
fn log_to_stderr() {
    struct HistoryClock;
    impl tracing_subscriber::fmt::time::FormatTime for HistoryClock {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            write!(w, "{:.1}", now() as f64 / 1e6)
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(HistoryClock)
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

/// Every panic other than the intended ones, recorded.
fn record_panics(rec: Recorder) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.to_string();
        if !message.contains(INTENDED_PANIC) {
            rec.record(&Entry::Panic { process: rec.process, message: message.clone(), at: now() });
            default(info);
        }
    }));
}

/// The process's resident memory in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// The builder's settings from the plan, for either flavour.
pub fn configure<F>(
    mut builder: fluster::Builder<fluster::RedisManager, F>,
    job: &Job,
) -> fluster::Builder<fluster::RedisManager, F> {
    let plan = &job.plan;
    let c = &plan.config;
    for (name, url, gutter) in &job.nodes {
        builder = match (gutter, &job.sentinel) {
            (false, Some(sentinel)) if c.sentinel.as_ref() == Some(name) => {
                builder.sentinel_node(name, fluster::SentinelShard::new(name, [sentinel]))
            }
            (true, _) => builder.named_gutter_node(name, url),
            (false, _) => builder.named_node(name, url),
        };
    }
    let ms = Duration::from_millis;
    builder = builder
        .penalty_min_wait(ms(100))
        .penalty_max_wait(ms(c.penalty_max_wait_ms))
        .checkout_timeout(ms(c.checkout_timeout_ms))
        .response_timeout(ms(c.response_timeout_ms))
        .connect_timeout(ms(c.connect_timeout_ms))
        .probe_timeout(ms(c.probe_timeout_ms))
        .timeouts_before_penalty(2)
        .heartbeat(ms(c.heartbeat_ms))
        .lease(ms(c.lease_ms))
        .near_cache(plan.near_cache)
        .invalidate_on_return(c.invalidate_on_return)
        .stand_in_ttl(c.stand_in_ttl_ms.map(ms))
        .resize_warmup(ms(c.resize_warmup_ms));
    builder = crate::limits::configure(builder, &plan.limits);
    if c.fleet {
        builder = builder.fleet(&format!("torture-{}", c.seed));
    }
    if plan.fail_fast {
        builder = builder.failover(fluster::Failover::FailFast);
    }
    if plan.probe_panics {
        let calls = std::sync::atomic::AtomicU64::new(0);
        builder = builder.probe_with(move |_conn| {
            let call = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::pin(async move {
                if call % 3 == 2 {
                    panic!("{INTENDED_PANIC} (a probe check)");
                }
                Ok(())
            })
        });
    }
    builder
}

/// Records a pool's view of its nodes from its events.
pub async fn record_views(
    mut events: tokio::sync::broadcast::Receiver<fluster::NodeEvent>,
    rec: Recorder,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let (node, view) = match &event {
            fluster::NodeEvent::Boxed { node, .. } => (node.to_string(), View::Boxed),
            fluster::NodeEvent::Returned { node, .. } => (node.to_string(), View::Returned),
            _ => continue,
        };
        rec.record(&Entry::View { process: rec.process, node, view, at: now() });
    }
}

async fn run_async(job: &Job, rec: &Recorder) {
    let pool = match configure(fluster::ShardedPool::builder(), job).build().await {
        Ok(pool) => pool,
        Err(e) => panic!("build: {e}"),
    };
    tokio::spawn(record_views(pool.events(), rec.clone()));
    for channel in crate::keys::CHANNELS {
        tokio::spawn(ops::listen(pool.clone(), channel, rec.clone(), job.end));
    }
    resize(&pool, job, rec, &Handle::current());
    wait_until(job.start).await;
    // The tasks run together in this one future (not spawned): a
    // transaction's async closure is not `Send` for every lifetime.
    let tasks = (0..job.plan.tasks).map(|task| {
        let seed = job.plan.config.seed ^ (u64::from(job.process) << 32) ^ task as u64;
        let ctx = ops::Ctx {
            pool: pool.clone(),
            rec: rec.clone(),
            plan: job.plan.clone(),
            races: race::windows(job),
        };
        let end = job.end;
        async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            while now() < end {
                ops::one(&ctx, &mut rng).await;
            }
        }
    });
    futures_util::future::join_all(tasks).await;
}

/// Starts the run's membership changes, if it draws any, on `runtime`:
/// the same calls at the same instants for either flavour's `pool`.
fn resize<P: member::Resizable>(pool: &P, job: &Job, rec: &Recorder, runtime: &Handle) {
    if let (Some(membership), Some(url)) = (&job.plan.membership, &job.extra) {
        let (pool, rec) = (pool.clone(), rec.clone());
        let warm = job.plan.config.resize_warmup_ms > 0;
        let target = (url.clone(), warm);
        runtime.spawn(member::run(pool, membership.clone(), target, job.start, rec));
    }
}

async fn wait_until(at: u64) {
    let left = at.saturating_sub(now());
    tokio::time::sleep(Duration::from_nanos(left)).await;
}

/// One key's part of an operation: what it did, before it completed.
pub struct Act {
    /// What it did.
    pub kind: Kind,
    /// The key.
    pub key: String,
    /// The value written or read.
    pub value: Option<String>,
    /// A TTL it set.
    pub ttl_ms: Option<u64>,
}

impl Act {
    /// `kind` on `key` with `value`.
    pub fn new(kind: Kind, key: &str, value: Option<String>) -> Act {
        Act { kind, key: key.to_owned(), value, ttl_ms: None }
    }

    /// With a TTL.
    pub fn ttl(mut self, ttl_ms: Option<u64>) -> Act {
        self.ttl_ms = ttl_ms;
        self
    }
}

/// An operation under way: its id, path and invocation time.
pub struct Call {
    rec: Recorder,
    /// Its id, also the counter of the value it writes.
    pub id: u64,
    path: OpPath,
    invoke: u64,
}

impl Call {
    /// Begins an operation; `writes` are recorded as invoked at once.
    pub fn begin(rec: &Recorder, path: OpPath) -> Call {
        let id = rec.next_id();
        Call { rec: rec.clone(), id, path, invoke: now() }
    }

    /// The value this operation writes.
    pub fn value(&self) -> String {
        self.rec.value(self.id)
    }

    /// Records that `value` is about to be written to `key`.
    pub fn invoke(&self, key: &str, value: &str) {
        self.intend(&Act::new(Kind::Write, key, Some(value.to_owned())));
    }

    /// Records that `act` (a write, delete, expire, `INCR`, publish, or an
    /// `aside` call whose fill may store) is about to be sent: a process
    /// killed before its completion still leaves it in the history, as an
    /// operation that may have happened.
    pub fn intend(&self, act: &Act) {
        self.rec.record(&Entry::Invoke {
            process: self.rec.process,
            id: self.id,
            kind: act.kind,
            key: act.key.clone(),
            value: act.value.clone(),
            ttl_ms: act.ttl_ms,
            at: now(),
        });
    }

    /// Records the completion of one key's part, now.
    pub fn done(&self, act: Act, node: Option<&str>, home: Option<bool>, outcome: &Outcome) {
        self.rec.record(&Entry::Op(Op {
            id: self.id,
            process: self.rec.process,
            path: self.path,
            kind: act.kind,
            key: act.key,
            value: act.value,
            ttl_ms: act.ttl_ms,
            node: node.map(str::to_owned),
            home,
            invoke: self.invoke,
            complete: now(),
            outcome: outcome.clone(),
        }));
    }
}

/// An outcome from a result.
pub fn outcome<T, E: std::fmt::Display>(result: &Result<T, E>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// A value read, as the history keeps it.
pub fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Checks that `EXEC` of one queued `SET` answered `[OK]`, recording the
/// reply otherwise.
pub fn check_exec(rec: &Recorder, path: OpPath, reply: &redis::Value) {
    use redis::Value::{Array, Okay, SimpleString};
    let exact = match reply {
        Array(items) => matches!(items.as_slice(), [Okay] | [SimpleString(_)]),
        _ => false,
    };
    if !exact {
        rec.record(&Entry::Reply {
            process: rec.process,
            path,
            expected: "[OK]".to_owned(),
            got: format!("{reply:?}"),
            at: now(),
        });
    }
}
