//! Nanoseconds per routing lookup, side by side in one run: fluster's
//! router; the floor (one SipHash-1-3 of the key alone); the `hrw` and
//! `rendezvous_hash` crates on the same nodes and keys; and a ketama ring
//! of 160 points per node with binary search.
//!
//!     cargo bench --bench route
//!
//! Each lookup walks a list of 1024 distinct keys, so no result is cached;
//! `node_for` also walks 200,000, which do not stay in cache.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fluster::route::{Router, key_hash};
use rendezvous_hash::{Capacity, RendezvousNodes, WeightedNode};

const NODE_COUNTS: [usize; 4] = [3, 10, 100, 1000];

fn keys(len: usize) -> Vec<Vec<u8>> {
    many_keys(len, 1024)
}

fn many_keys(len: usize, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut k = format!("user:{i}:").into_bytes();
            k.resize(len, b'x');
            k
        })
        .collect()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cache-{i:04}.example:6379")).collect()
}

/// Unequal weights 1, 2, 3, 4, 1, 2, ...
fn weight(i: usize) -> f64 {
    1.0 + (i % 4) as f64
}

/// The classic alternative: 160 points per node on a ring, binary search
/// for the first point at or after the key's hash.
struct Ketama {
    ring: Vec<(u64, usize)>,
}

impl Ketama {
    fn new(names: &[String]) -> Self {
        let mut ring: Vec<(u64, usize)> = names
            .iter()
            .enumerate()
            .flat_map(|(n, name)| {
                (0..160).map(move |p| (key_hash(format!("{name}-{p}").as_bytes()), n))
            })
            .collect();
        ring.sort_unstable();
        Ketama { ring }
    }

    fn node(&self, key: &[u8]) -> usize {
        let h = key_hash(key);
        let i = self.ring.partition_point(|&(point, _)| point < h);
        self.ring[i % self.ring.len()].1
    }
}

/// Runs `lookup` over the keys, one key per iteration.
fn bench<R>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    keys: &[Vec<u8>],
    lookup: impl Fn(&[u8]) -> R,
) {
    group.bench_function(id, |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            if i == keys.len() {
                i = 0;
            }
            black_box(lookup(black_box(&keys[i])))
        })
    });
}

fn lookup(c: &mut Criterion) {
    for key_len in [16, 64] {
        let keys = keys(key_len);
        let mut group = c.benchmark_group(format!("route-{key_len}B"));
        bench(&mut group, BenchmarkId::new("floor-siphash13", 1), &keys, key_hash);
        for n in NODE_COUNTS {
            let names = names(n);
            let equal = Router::new(names.iter().map(|s| (s.as_str(), 1.0)));
            let weighted =
                Router::new(names.iter().enumerate().map(|(i, s)| (s.as_str(), weight(i))));
            bench(&mut group, BenchmarkId::new("fluster-equal", n), &keys, |k| equal.home(k));
            bench(&mut group, BenchmarkId::new("fluster-weighted", n), &keys, |k| weighted.home(k));

            let hrw = hrw::Rendezvous::from_nodes(names.iter().cloned());
            bench(&mut group, BenchmarkId::new("hrw", n), &keys, |k| hrw.pick_top(&k).cloned());

            let mut rh = RendezvousNodes::default();
            names.iter().for_each(|s| {
                rh.insert(s.as_str());
            });
            bench(&mut group, BenchmarkId::new("rendezvous_hash", n), &keys, |k| {
                rh.calc_candidates(&k).next().copied()
            });
            let mut rhw = RendezvousNodes::default();
            names.iter().enumerate().for_each(|(i, s)| {
                rhw.insert(WeightedNode::new(s.as_str(), Capacity::new(weight(i)).unwrap()));
            });
            bench(&mut group, BenchmarkId::new("rendezvous_hash-weighted", n), &keys, |k| {
                rhw.calc_candidates(&k).next().map(|w| w.node)
            });

            let ketama = Ketama::new(&names);
            bench(&mut group, BenchmarkId::new("ketama-160", n), &keys, |k| ketama.node(k));
        }
        group.finish();
    }
}

/// `ShardedPool::node_for` through the public API: the routing policy, the
/// health flag of the winner and the name handed back, with every node up
/// and with one node boxed (its keys take the failover path).
fn public(c: &mut Criterion) {
    for count in [1024, 200_000] {
        node_for(c, count);
    }
}

fn node_for(c: &mut Criterion, count: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let keys = many_keys(16, count);
    let mut group = c.benchmark_group(format!("node_for-16B-{count}keys"));
    bench(&mut group, BenchmarkId::new("floor-siphash13", 1), &keys, key_hash);
    for n in NODE_COUNTS.into_iter().filter(|&n| n >= 10) {
        // Never contacted: nothing is probed at build and nothing checked out.
        let pool = runtime.block_on(async {
            (0..n)
                .fold(fluster::ShardedPool::builder(), |b, i| {
                    b.named_node(&format!("node-{i}"), &format!("redis://127.0.0.1:{}", 10_000 + i))
                })
                .probe_at_build(false)
                .build()
                .await
                .unwrap()
        });
        let router = Router::new(
            (0..n)
                .map(|i| format!("node-{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(|s| (s.as_str(), 1.0)),
        );
        bench(&mut group, BenchmarkId::new("router-home", n), &keys, |k| router.home(k));
        bench(&mut group, BenchmarkId::new("node_for", n), &keys, |k| pool.node_for(k));
        bench(&mut group, BenchmarkId::new("home_node_for", n), &keys, |k| pool.home_node_for(k));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .sample_size(50);
    targets = lookup, public
}
criterion_main!(benches);
