//! One seed's run: the world started, the pool processes and the nemesis
//! let loose on it, the sampler reading the nodes, everything stopped, the
//! history gathered.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fluster::route::Router;
use fluster_torture::history::{Entry, HARNESS, Sample, now};

use crate::nemesis::{Stage, sample};
use crate::plan::Plan;
use crate::recorder::{Recorder, read};
use crate::worker::Job;
use crate::world::{DieWithParent, Node, Proxy};

/// How long the pools get to build before the workload begins.
const SETTLE: Duration = Duration::from_millis(1_500);

/// How often the sampler reads every node.
const SAMPLE_EVERY: Duration = Duration::from_millis(400);

/// The run of `plan` in `dir` (made, and left for the caller to remove):
/// every entry of every process's history.
pub async fn run(plan: &Plan, dir: &Path) -> Vec<Entry> {
    std::fs::create_dir_all(dir).unwrap();
    let config = &plan.config;
    // The node added at run time comes last: the nemesis's faults never
    // reach it (their node index stops before it).
    let names: Vec<&String> =
        config.nodes.iter().chain(&config.gutters).chain(&config.extra).collect();
    let mut nodes: Vec<Node> =
        tokio::task::block_in_place(|| names.iter().map(|name| Node::start(name, dir)).collect());
    // The Sentinel shard's replica and sentinel, beside its master.
    let group = config.sentinel.as_ref().map(|name| {
        let master = nodes.iter().find(|n| &n.name == name).expect("the shard's master");
        tokio::task::block_in_place(|| crate::sentinel::Group::start(master, dir))
    });
    let mut proxies = Vec::new();
    for _ in 1..=config.processes {
        let mut ways = Vec::new();
        for node in &nodes {
            ways.push(Proxy::start(node.port).await);
        }
        proxies.push(ways);
    }
    let rec = Recorder::create(&dir.join("harness.jsonl"), HARNESS);
    let start = now() + SETTLE.as_nanos() as u64;
    let end = start + (plan.seconds * 1e9) as u64;
    let mut workers = Vec::new();
    for process in 1..=config.processes {
        let ways = &proxies[process as usize - 1];
        let job = Job {
            plan: plan.clone(),
            process,
            sentinel: group.as_ref().map(crate::sentinel::Group::url),
            extra: config.extra.as_ref().map(|_| {
                let way = ways.last().expect("a proxy to the added node");
                format!("redis://127.0.0.1:{}", way.port)
            }),
            nodes: nodes
                .iter()
                .zip(ways)
                .filter(|(node, _)| config.extra.as_ref() != Some(&node.name))
                .map(|(node, way)| {
                    let gutter = config.gutters.contains(&node.name);
                    (node.name.clone(), format!("redis://127.0.0.1:{}", way.port), gutter)
                })
                .collect(),
            start,
            end,
            history: history(dir, process),
        };
        let path = dir.join(format!("job-{process}.json"));
        std::fs::write(&path, serde_json::to_vec(&job).unwrap()).unwrap();
        let log = std::fs::File::create(dir.join(format!("process-{process}.log"))).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .arg("--worker")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .die_with_parent()
            .spawn()
            .unwrap();
        workers.push(Some(child));
    }

    let mut ports: Vec<(String, u16)> = nodes.iter().map(|n| (n.name.clone(), n.port)).collect();
    if let (Some(name), Some(group)) = (&config.sentinel, &group) {
        ports.push((name.clone(), group.replica.port));
    }
    let shard = config.sentinel.as_ref().and_then(|name| {
        let index = nodes.iter().position(|n| &n.name == name)?;
        Some((index, group.as_ref()?.replica.port))
    });
    let sampler = tokio::spawn(sample_until(ports.clone(), rec.clone(), end + 500_000_000));
    let router = Router::new(config.nodes.iter().map(|n| (n.as_str(), 1.0)));
    let home = |key: &str| router.home(key.as_bytes()).unwrap_or(0);
    let fleet = config.fleet.then(|| format!("torture-{}", config.seed));
    {
        let mut stage = Stage {
            nodes: &mut nodes,
            proxies: &proxies,
            workers: &mut workers,
            fleet,
            rec: &rec,
            sentinel: shard,
        };
        let mut outside = plan.outside.clone();
        outside.sort_by_key(|o| o.at_ms);
        let mut outside = outside.into_iter().peekable();
        for fault in &plan.faults {
            let at = start + fault.at_ms * 1_000_000;
            while let Some(op) = outside.next_if(|o| start + o.at_ms * 1_000_000 <= at) {
                sleep_until(start + op.at_ms * 1_000_000).await;
                stage.outside(&op, home).await;
            }
            sleep_until(at).await;
            stage.inject(fault).await;
        }
        for op in outside {
            sleep_until(start + op.at_ms * 1_000_000).await;
            stage.outside(&op, home).await;
        }
    }
    // Every process stops at `end` by itself; one that does not has hung.
    let deadline = end + 20_000_000_000;
    for (i, slot) in workers.iter_mut().enumerate() {
        let Some(child) = slot.as_mut() else { continue };
        let process = i as u32 + 1;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    let message = format!("process {process} exited with {status}");
                    rec.record(&Entry::Panic { process, message, at: now() });
                    break;
                }
                _ if now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let message = format!("process {process} had not stopped 20 s after the run");
                    rec.record(&Entry::Panic { process, message, at: now() });
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    let _ = sampler.await;
    drop(proxies);
    drop(group);
    drop(nodes);
    let mut entries = read(&dir.join("harness.jsonl"));
    for process in 1..=config.processes {
        entries.extend(read(&history(dir, process)));
    }
    entries
}

fn history(dir: &Path, process: u32) -> PathBuf {
    dir.join(format!("process-{process}.jsonl"))
}

async fn sleep_until(at: u64) {
    tokio::time::sleep(Duration::from_nanos(at.saturating_sub(now()))).await;
}

/// Reads every node's keys, values and TTLs until `end`.
async fn sample_until(nodes: Vec<(String, u16)>, rec: Recorder, end: u64) {
    while now() < end {
        for (name, port) in &nodes {
            let sent = now();
            let keys = sample(*port).await.unwrap_or_default();
            let at = now();
            for (key, value, pttl_ms) in keys {
                if key.starts_with("fluster:") {
                    continue;
                }
                let node = name.clone();
                rec.record(&Entry::Sample(Sample { node, key, value, pttl_ms, sent, at }));
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}
