//! The torture run: real `redis-server` nodes, real processes each with a
//! pool of its own, a workload over every path and a schedule of faults
//! drawn from a seed, and a checker that judges the recorded history
//! against the README's Guarantees, rule by rule.
//!
//! ```sh
//! cargo run -p fluster-torture --release -- --seeds 20 --seconds 5
//! cargo run -p fluster-torture --release -- --seed 1234      # replay one
//! ```
//!
//! Options: `--seeds N` (seeds `--first`.. `--first + N - 1`, default 1
//! from 1), `--seed S` (one seed), `--seconds S` (each run's workload,
//! default 5), `--nodes N` (default 4), `--processes P` (default 4),
//! `--keep` (keep every run's history under `target/torture/`; a run with
//! a violation is always kept), `--check DIR` (judge a kept run again).
//! Exits 1 on any violation.

mod keys;
mod limits;
mod member;
mod nemesis;
mod plan;
mod race;
mod recorder;
mod run;
mod sentinel;
mod worker;
mod world;

use std::path::PathBuf;
use std::process::ExitCode;

use fluster_torture::check::{Report, check};

struct Args {
    seeds: Vec<u64>,
    seconds: f64,
    nodes: usize,
    processes: u32,
    keep: bool,
}

fn usage(problem: &str) -> ! {
    eprintln!("fluster-torture: {problem}");
    eprintln!(
        "usage: fluster-torture [--seeds N [--first S] | --seed S] [--seconds S] [--nodes N] [--processes P] [--keep]"
    );
    std::process::exit(2);
}

fn parse() -> Args {
    let mut args = std::env::args().skip(1);
    let (mut count, mut first, mut one) = (1u64, 1u64, None);
    let mut parsed = Args { seeds: Vec::new(), seconds: 5.0, nodes: 4, processes: 4, keep: false };
    while let Some(flag) = args.next() {
        let mut value =
            |name: &str| args.next().unwrap_or_else(|| usage(&format!("{name} needs a value")));
        let number = |name: &str, text: String| -> f64 {
            text.parse().unwrap_or_else(|_| usage(&format!("{name}: `{text}` is not a number")))
        };
        match flag.as_str() {
            "--seeds" => count = number("--seeds", value("--seeds")) as u64,
            "--first" => first = number("--first", value("--first")) as u64,
            "--seed" => one = Some(number("--seed", value("--seed")) as u64),
            "--seconds" => parsed.seconds = number("--seconds", value("--seconds")),
            "--nodes" => parsed.nodes = number("--nodes", value("--nodes")) as usize,
            "--processes" => parsed.processes = number("--processes", value("--processes")) as u32,
            "--keep" => parsed.keep = true,
            "--check" => usage("--check DIR comes alone"),
            other => usage(&format!("unknown option `{other}`")),
        }
    }
    if parsed.nodes < 2 || parsed.processes < 1 || parsed.seconds <= 0.0 {
        usage("at least 2 nodes, 1 process and a positive --seconds");
    }
    parsed.seeds = match one {
        Some(seed) => vec![seed],
        None => (first..first + count).collect(),
    };
    parsed
}

/// Judges a kept run's history again (`--check target/torture/seed-N`).
fn recheck(dir: &std::path::Path) -> ExitCode {
    let plan: plan::Plan = match std::fs::read(dir.join("plan.json")) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| usage(&format!("plan.json: {e}")))
        }
        Err(e) => usage(&format!("{}: {e}", dir.join("plan.json").display())),
    };
    let mut entries = Vec::new();
    for file in std::fs::read_dir(dir).unwrap().flatten() {
        if file.path().extension().is_some_and(|e| e == "jsonl") {
            entries.extend(recorder::read(&file.path()));
        }
    }
    let report = check(&plan.config, &entries);
    println!("{report}");
    if report.violations() > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn main() -> ExitCode {
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("--worker") {
        let job = raw.next().unwrap_or_else(|| usage("--worker needs a job file"));
        worker::run(&PathBuf::from(job));
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = std::env::args().skip_while(|a| a != "--check").nth(1) {
        return recheck(&PathBuf::from(dir));
    }
    let args = parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let root = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("torture");
    let mut total = Report::default();
    let mut failed = 0;
    for &seed in &args.seeds {
        let plan = plan::Plan::draw(seed, args.seconds, args.nodes, args.processes);
        let dir = root.join(format!("seed-{seed}"));
        let _ = std::fs::remove_dir_all(&dir);
        let entries = runtime.block_on(run::run(&plan, &dir));
        let report = check(&plan.config, &entries);
        let violations = report.violations();
        println!(
            "seed {seed}: {} entries, {} faults{}{}{}, {violations} violations{}",
            entries.len(),
            plan.faults.len(),
            match &plan.config.sentinel {
                None => String::new(),
                Some(shard) => format!(" ({shard} a Sentinel shard)"),
            },
            match &plan.membership {
                None => String::new(),
                Some(m) => format!(
                    " ({} added{}, then {}{})",
                    m.node,
                    if plan.config.resize_warmup_ms > 0 { " warm" } else { "" },
                    if m.out == fluster_torture::history::Change::Drain {
                        "drained"
                    } else {
                        "removed"
                    },
                    // Who made the calls through the sync flavour.
                    match plan.config.sync_processes.as_slice() {
                        [] => String::new(),
                        sync => format!(
                            ", sync {}",
                            sync.iter().map(|p| format!("p{p}")).collect::<Vec<_>>().join(" ")
                        ),
                    }
                ),
            },
            match plan.at_limits.is_empty() {
                true => String::new(),
                false => format!(" (at limits: {})", plan.at_limits.join(", ")),
            },
            if violations > 0 {
                format!(" (history kept in {})", dir.display())
            } else {
                String::new()
            }
        );
        if violations == 0 && !args.keep {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            let _ =
                std::fs::write(dir.join("plan.json"), serde_json::to_vec_pretty(&plan).unwrap());
        }
        failed += usize::from(violations > 0);
        total.merge(report);
    }
    println!("\n{total}");
    // Seeds without a violation pass: the plain closing line CI reads.
    println!("torture: {} passed, {failed} failed", args.seeds.len() - failed);
    if total.violations() > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
