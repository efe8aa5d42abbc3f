//! Nanoseconds per routing lookup, side by side with the floor: one
//! SipHash-1-3 of the key alone. Run with `cargo bench --bench route`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fluster::route::{Router, key_hash};

fn keys(len: usize) -> Vec<Vec<u8>> {
    (0..1024)
        .map(|i| {
            let mut k = format!("user:{i}:").into_bytes();
            k.resize(len, b'x');
            k
        })
        .collect()
}

fn routers(n: usize) -> (Router, Router) {
    let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
    let equal = Router::new(names.iter().map(|s| (s.as_str(), 1.0)));
    let weighted = Router::new(
        names
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), 1.0 + (i % 4) as f64)),
    );
    (equal, weighted)
}

fn lookup(c: &mut Criterion) {
    for key_len in [16, 64] {
        let keys = keys(key_len);
        let mut group = c.benchmark_group(format!("route/{key_len}B-keys"));
        let mut i = 0;
        group.bench_function("siphash-1-3 floor", |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(key_hash(black_box(&keys[i])))
            })
        });
        for n in [3, 10, 100, 1000] {
            let (equal, weighted) = routers(n);
            group.bench_with_input(BenchmarkId::new("fluster equal", n), &equal, |b, r| {
                b.iter(|| {
                    i = (i + 1) % keys.len();
                    black_box(r.home(black_box(&keys[i])))
                })
            });
            group.bench_with_input(
                BenchmarkId::new("fluster weighted", n),
                &weighted,
                |b, r| {
                    b.iter(|| {
                        i = (i + 1) % keys.len();
                        black_box(r.home(black_box(&keys[i])))
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, lookup);
criterion_main!(benches);
