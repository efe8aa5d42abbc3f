//! The nemesis: the plan's faults, injected at their times and healed at
//! their ends, each recorded; and the outside client's writes.

use std::time::Duration;

use fluster::redis::{self, AsyncCommands};
use fluster_torture::history::{Entry, Fault, FaultKind, Kind, Outcome, Path, now};

use crate::keys::KEYS;
use crate::plan::{Outside, Planned};
use crate::recorder::Recorder;
use crate::worker::{Act, Call};
use crate::world::{Node, Proxy, Way, free_port, signal};

/// What the nemesis acts on.
pub struct Stage<'a> {
    /// Every node (gutters last).
    pub nodes: &'a mut [Node],
    /// `proxies[p - 1][n]`: process `p`'s way to node `n`.
    pub proxies: &'a [Vec<Proxy>],
    /// The pool processes' ids by process (`None` once killed).
    pub workers: &'a mut [Option<std::process::Child>],
    /// The fleet's channel, if there is a fleet.
    pub fleet: Option<String>,
    /// The harness's history.
    pub rec: &'a Recorder,
    /// The Sentinel shard, if there is one: its node's index and the
    /// replica's port.
    pub sentinel: Option<(usize, u16)>,
}

async fn admin(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let connect = client.get_multiplexed_async_connection();
    tokio::time::timeout(Duration::from_millis(500), connect).await.ok()?.ok()
}

/// Sends `cmd` to the node on `port`, giving up after a second.
pub(crate) async fn send(port: u16, cmd: &redis::Cmd) -> Result<redis::Value, String> {
    let mut conn = admin(port).await.ok_or("no connection")?;
    let reply = tokio::time::timeout(Duration::from_secs(1), cmd.query_async(&mut conn)).await;
    reply.map_err(|_| "timed out".to_owned())?.map_err(|e| e.to_string())
}

impl Stage<'_> {
    /// Injects `fault`, waits its length, heals it; records it.
    pub async fn inject(&mut self, fault: &Planned) {
        if fault.race {
            return self.race(fault).await;
        }
        let start = now();
        let length = Duration::from_millis(fault.length_ms);
        let index = fault.node;
        let port = self.nodes[index].port;
        let mut process = None;
        match fault.kind {
            FaultKind::Kill => {
                self.nodes[index].kill();
                tokio::time::sleep(length).await;
                self.nodes[index].restart();
            }
            FaultKind::FailOver => {
                // The master dies; the sentinel names the replica; the old
                // master comes back empty, as the new master's replica.
                self.nodes[index].kill();
                tokio::time::sleep(length).await;
                if let Some((_, replica)) = self.sentinel {
                    let args = ["--replicaof".into(), "127.0.0.1".into(), replica.to_string()];
                    self.nodes[index].set_args(&args);
                }
                tokio::task::block_in_place(|| self.nodes[index].restart());
            }
            FaultKind::Flap => {
                let step = length / 6;
                for _ in 0..3 {
                    self.nodes[index].kill();
                    tokio::time::sleep(step).await;
                    self.nodes[index].restart();
                    tokio::time::sleep(step).await;
                }
            }
            FaultKind::Pause if fault.stutter => {
                // The processes stutter from a little before the node wakes
                // to a little after its return.
                let lead = Duration::from_millis(100).min(length);
                self.nodes[index].pause(true);
                tokio::time::sleep(length - lead).await;
                let until = now() + (lead + Duration::from_millis(700)).as_nanos() as u64;
                let stutters: Vec<_> = self
                    .workers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| Some((i as u32 + 1, w.as_ref()?.id() as i32)))
                    .map(|(process, pid)| {
                        let seed = fault.at_ms ^ (u64::from(process) << 40);
                        tokio::spawn(stutter(process, pid, seed, until, self.rec.clone()))
                    })
                    .collect();
                tokio::time::sleep(lead).await;
                self.nodes[index].pause(false);
                // Awake, it answers reads at once and holds writes a while:
                // a return's deletes on it crawl behind the others' reads.
                let hold = redis::cmd("CLIENT").arg("PAUSE").arg(400).arg("WRITE").clone();
                let _ = send(port, &hold).await;
                for task in stutters {
                    let _ = task.await;
                }
            }
            FaultKind::Pause => {
                self.nodes[index].pause(true);
                tokio::time::sleep(length).await;
                self.nodes[index].pause(false);
            }
            FaultKind::Slow => {
                self.slow(&[index], Way::Slow(20 + fault.length_ms % 41));
                tokio::time::sleep(length).await;
                self.slow(&[index], Way::Open);
            }
            FaultKind::Partition => {
                process = Some(fault.process);
                let proxy = &self.proxies[fault.process as usize - 1][index];
                proxy.set_cut(true);
                tokio::time::sleep(length).await;
                proxy.set_cut(false);
            }
            FaultKind::Blackhole => {
                self.proxies.iter().for_each(|ways| ways[index].set_cut(true));
                tokio::time::sleep(length).await;
                self.proxies.iter().for_each(|ways| ways[index].set_cut(false));
            }
            FaultKind::ClientKill => {
                let kinds = ["normal", "pubsub"];
                for kind in kinds {
                    let kill = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg(kind)
                        .arg("SKIPME")
                        .arg("yes")
                        .clone();
                    let _ = send(port, &kill).await;
                }
            }
            FaultKind::Replica => {
                let nowhere = free_port();
                let _ = send(port, redis::cmd("REPLICAOF").arg("127.0.0.1").arg(nowhere)).await;
                tokio::time::sleep(length).await;
                let _ = send(port, redis::cmd("REPLICAOF").arg("NO").arg("ONE")).await;
            }
            FaultKind::Sleep => {
                let seconds = format!("{:.3}", length.as_secs_f64());
                // The reply comes only after the sleep: sent from a task.
                let sleep = tokio::spawn(async move {
                    let mut conn = admin(port).await?;
                    redis::cmd("DEBUG")
                        .arg("SLEEP")
                        .arg(seconds)
                        .query_async::<()>(&mut conn)
                        .await
                        .ok()
                });
                tokio::time::sleep(length).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), sleep).await;
            }
            FaultKind::FlushAll => {
                let _ = send(port, &redis::cmd("FLUSHALL")).await;
            }
            FaultKind::SwapDb => {
                let _ = send(port, redis::cmd("SWAPDB").arg(0).arg(1)).await;
                tokio::time::sleep(length).await;
                let _ = send(port, redis::cmd("SWAPDB").arg(0).arg(1)).await;
            }
            FaultKind::KillProcess => {
                process = Some(fault.process);
                if let Some(mut child) = self.workers[fault.process as usize - 1].take() {
                    signal(child.id() as i32, libc::SIGKILL);
                    let _ = child.wait();
                }
            }
            FaultKind::PauseProcess => {
                process = Some(fault.process);
                if let Some(child) = &self.workers[fault.process as usize - 1] {
                    let pid = child.id() as i32;
                    signal(pid, libc::SIGSTOP);
                    tokio::time::sleep(length.min(Duration::from_millis(300))).await;
                    signal(pid, libc::SIGCONT);
                }
            }
            FaultKind::ForgedNews => {
                if let Some(channel) = &self.fleet {
                    self.forge(channel, length).await;
                }
            }
        }
        let node = match fault.kind {
            FaultKind::KillProcess | FaultKind::ForgedNews | FaultKind::PauseProcess => None,
            _ => Some(self.nodes[index].name.clone()),
        };
        self.rec.record(&Entry::Fault(Fault {
            kind: fault.kind,
            node,
            process,
            start,
            end: now(),
        }));
    }

    /// Sets every process's way to each of `nodes`.
    fn slow(&self, nodes: &[usize], way: Way) {
        for ways in self.proxies {
            nodes.iter().for_each(|&i| ways[i].set(way));
        }
    }

    /// Publishes garbage, long messages, news of unknown nodes and forged
    /// `returned` news of real ones on the fleet's channel, on every node.
    async fn forge(&self, channel: &str, length: Duration) {
        let until = tokio::time::Instant::now() + length;
        let mut n = 0u64;
        while tokio::time::Instant::now() < until {
            let known = &self.nodes[n as usize % self.nodes.len()].name;
            let messages = [
                format!("fluster1 returned {:016x} {n} {known}", 0xdead_0000 + n),
                format!("fluster1 boxed {:016x} {n} {known}", 0xbeef_0000 + n),
                format!("fluster1 returned {:016x} {n} unknown-node-{n}", 0xfeed_0000 + n),
                "x".repeat(64 * 1024),
                "\u{0}\u{1}garbage\r\n*3\r\n".to_owned(),
            ];
            for node in self.nodes.iter() {
                let Some(mut conn) = admin(node.port).await else { continue };
                for message in &messages {
                    let _: Result<i64, _> = conn.publish(channel, message).await;
                }
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An outside client's write, straight to the key's home node.
    pub async fn outside(&self, op: &Outside, home: impl Fn(&str) -> usize) {
        let key = KEYS[op.key];
        let port = self.nodes[home(key)].port;
        match op.what {
            0 => {
                let call = Call::begin(self.rec, Path::Outside);
                let value = call.value();
                call.invoke(key, &value);
                let done = send(port, redis::cmd("SET").arg(key).arg(&value)).await;
                let node = &self.nodes[home(key)].name;
                call.done(
                    Act::new(Kind::Write, key, Some(value)),
                    Some(node),
                    Some(true),
                    &result(&done),
                );
            }
            1 => {
                let call = Call::begin(self.rec, Path::Outside);
                call.intend(&Act::new(Kind::Delete, key, None));
                let done = send(port, redis::cmd("DEL").arg(key)).await;
                let node = &self.nodes[home(key)].name;
                call.done(
                    Act::new(Kind::Delete, key, None),
                    Some(node),
                    Some(true),
                    &result(&done),
                );
            }
            _ => {
                // RENAME within one node: only to a key with the same home.
                let other = KEYS[op.other];
                if home(other) != home(key) || other == key {
                    return;
                }
                let call = Call::begin(self.rec, Path::Outside);
                let script = "local v = redis.call('GET', KEYS[1]) \
                    if v then redis.call('RENAME', KEYS[1], KEYS[2]) end return v";
                let done =
                    send(port, redis::cmd("EVAL").arg(script).arg(2).arg(key).arg(other)).await;
                let node = &self.nodes[home(key)].name;
                let moved = match &done {
                    Ok(v) => crate::worker::text(v),
                    Err(_) => None,
                };
                if let Some(value) = moved {
                    call.done(
                        Act::new(Kind::Delete, key, None),
                        Some(node),
                        Some(true),
                        &Outcome::Ok,
                    );
                    call.done(
                        Act::new(Kind::Write, other, Some(value)),
                        Some(node),
                        Some(true),
                        &Outcome::Ok,
                    );
                }
            }
        }
    }
}

/// Stops and continues the pool process `pid` at random moments until
/// `until`, recording each stop.
async fn stutter(process: u32, pid: i32, seed: u64, until: u64, rec: Recorder) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    while now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..60))).await;
        let start = now();
        signal(pid, libc::SIGSTOP);
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
        signal(pid, libc::SIGCONT);
        let stop = Fault {
            kind: FaultKind::PauseProcess,
            node: None,
            process: Some(process),
            start,
            end: now(),
        };
        rec.record(&Entry::Fault(stop));
    }
}

fn result(done: &Result<redis::Value, String>) -> Outcome {
    match done {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Failed(e.clone()),
    }
}

/// Every string key on `port` with its value and `PTTL`, read in one script.
pub async fn sample(port: u16) -> Option<Vec<(String, String, i64)>> {
    let script = "local r = {} for _, k in ipairs(redis.call('KEYS', '*')) do \
        if redis.call('TYPE', k).ok == 'string' then \
        r[#r + 1] = k r[#r + 1] = redis.call('GET', k) r[#r + 1] = redis.call('PTTL', k) end end return r";
    let mut conn = admin(port).await?;
    let cmd = redis::cmd("EVAL").arg(script).arg(0).clone();
    let read = cmd.query_async::<Vec<redis::Value>>(&mut conn);
    let values = tokio::time::timeout(Duration::from_millis(300), read).await.ok()?.ok()?;
    let mut out = Vec::new();
    for triple in values.chunks(3) {
        if let [k, v, ttl] = triple {
            let text = |v: &redis::Value| crate::worker::text(v).unwrap_or_default();
            let ttl = match ttl {
                redis::Value::Int(n) => *n,
                _ => continue,
            };
            out.push((text(k), text(v), ttl));
        }
    }
    Some(out)
}
