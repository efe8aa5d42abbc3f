//! The workload's `aside` calls: fills that succeed, fail, run slow, are
//! cancelled by a timeout around the call, and panic, each recorded as it
//! ends, however it ends. Half of them (a seeded draw) are `aside_early`,
//! whose hits near their expiry refill in the background: each such fill
//! is recorded like any other, so the checker judges what it stores.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use fluster_torture::history::{Entry, Fill, FillEnd, Kind, Outcome, Path, now};

use super::ops::{Ctx, HUNG};
use super::{Act, Call, HANG, INTENDED_PANIC};
use crate::recorder::Recorder;

/// How a fill of the workload behaves.
#[derive(Clone, Copy)]
enum FillKind {
    Quick,
    Slow,
    Fails,
    Panics,
    Cancelled,
}

/// Records a fill's run when it ends, however it ends (a drop mid-run is
/// a cancellation, an unwind a panic).
struct FillGuard {
    rec: Recorder,
    fill: Option<Fill>,
}

impl FillGuard {
    fn end(&mut self, result: FillEnd, value: Option<String>) {
        if let Some(mut fill) = self.fill.take() {
            fill.end = now();
            fill.result = result;
            fill.value = value;
            self.rec.record(&Entry::Fill(fill));
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let result = if std::thread::panicking() { FillEnd::Panicked } else { FillEnd::Cancelled };
        self.end(result, None);
    }
}

pub async fn aside(ctx: &Ctx, key: &str, rng: &mut ChaCha8Rng) {
    let lease = ctx.plan.config.lease_ms;
    let kind = match rng.random_range(0..20) {
        0..14 => FillKind::Quick,
        14..16 => FillKind::Slow,
        16..17 => FillKind::Fails,
        17..18 => FillKind::Panics,
        _ => FillKind::Cancelled,
    };
    let ttl_ms = rng.random_range(300..3_000);
    let early = rng.random_bool(0.5);
    let call = Call::begin(&ctx.rec, Path::Aside);
    let value = call.value();
    let slow = rng.random_range(lease / 4..ctx.plan.config.longest_fill_ms);
    let rec = ctx.rec.clone();
    let fill_value = value.clone();
    let fill_key = key.to_owned();
    let fill = move || async move {
        let mut guard = FillGuard {
            rec: rec.clone(),
            fill: Some(Fill {
                process: rec.process,
                key: fill_key,
                value: None,
                ttl_ms,
                start: now(),
                end: u64::MAX,
                result: FillEnd::Ok,
            }),
        };
        // Recorded at its start too: a process killed mid-fill leaves it.
        if let Some(fill) = &guard.fill {
            rec.record(&Entry::Fill(fill.clone()));
        }
        let pause = match kind {
            FillKind::Quick => 2,
            FillKind::Slow | FillKind::Cancelled => slow,
            FillKind::Fails | FillKind::Panics => 5,
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match kind {
            FillKind::Fails => {
                guard.end(FillEnd::Err, None);
                Err(std::io::Error::other("torture: a fill that fails"))
            }
            FillKind::Panics => panic!("{INTENDED_PANIC}"),
            _ => {
                guard.end(FillEnd::Ok, Some(fill_value.clone()));
                Ok(fill_value)
            }
        }
    };
    let ttl = Duration::from_millis(ttl_ms);
    let run = match early {
        true => ctx.pool.aside_early(key, ttl, fill).boxed(),
        false => ctx.pool.aside(key, ttl, fill).boxed(),
    };
    let run = AssertUnwindSafe(run).catch_unwind();
    let limit = match kind {
        FillKind::Cancelled => Duration::from_millis(slow / 2),
        _ => HANG,
    };
    let act = |v: Option<String>| Act::new(Kind::Read, key, v).ttl(Some(ttl_ms));
    // Its fill may store `value` (and its lease may hold the key a while):
    // invoked before the call, like any write.
    call.intend(&Act::new(Kind::Write, key, Some(value.clone())).ttl(Some(ttl_ms)));
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(Ok(v))) => call.done(act(Some(v)), None, None, &Outcome::Ok),
        Ok(Ok(Err(e))) => call.done(act(None), None, None, &Outcome::Failed(e.to_string())),
        Ok(Err(_panic)) => {
            call.done(act(None), None, None, &Outcome::Failed("fill panicked".into()))
        }
        Err(_) if matches!(kind, FillKind::Cancelled) => {
            call.done(act(None), None, None, &Outcome::Failed("cancelled by the caller".into()))
        }
        Err(_) => call.done(act(None), None, None, &HUNG),
    }
}
