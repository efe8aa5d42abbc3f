//! The penalty box alone: every decision of `penalty.rs`, with time and
//! randomness passed in: no runtime, no pool, no Redis.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;

/// Nodes the guard has boxed now.
fn boxed(guard: &BoxGuard) -> usize {
    guard.boxed.load(Ordering::Acquire)
}

fn policy() -> PenaltyPolicy {
    PenaltyPolicy {
        min_wait: Duration::from_millis(100),
        max_wait: Duration::from_secs(1),
        multiplier: 2.0,
        jitter: 0.0,
        timeout_threshold: 3,
        memory: Duration::ZERO,
        warmup: Duration::ZERO,
    }
}

fn at(now: Instant) -> Moment {
    Moment { now, random: 0.0 }
}

fn fail(h: &mut Health, kind: FailureKind, guard: &BoxGuard, now: Instant) -> Verdict {
    h.on_failure(kind, h.epoch(), false, guard, &policy(), at(now))
}

#[test]
fn refused_boxes_at_once_and_starts_an_epoch() {
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let mut h = Health::up();
    assert_eq!(
        fail(&mut h, FailureKind::Refused, &guard, now),
        Verdict::Boxed { wait: Duration::from_millis(100), level: 0 }
    );
    assert!(!h.is_up());
    assert_eq!((h.epoch(), h.penalties(), boxed(&guard)), (1, 1, 1));
    assert_eq!(h.remaining(now), Some(Duration::from_millis(100)));
    assert!(!h.start_probe(now + Duration::from_millis(99)));
    assert!(h.start_probe(now + Duration::from_millis(100)));
    assert!(!h.start_probe(now + Duration::from_secs(9)), "one at a time");
}

#[test]
fn timeouts_box_only_after_the_threshold_in_a_row() {
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let mut h = Health::up();
    let t = FailureKind::Timeout;
    assert_eq!(fail(&mut h, t, &guard, now), Verdict::Counted);
    assert_eq!(fail(&mut h, t, &guard, now), Verdict::Counted);
    assert_eq!(h.consecutive_timeouts(), 2);
    h.on_success();
    assert_eq!(h.consecutive_timeouts(), 0);
    assert_eq!(fail(&mut h, t, &guard, now), Verdict::Counted);
    assert_eq!(fail(&mut h, t, &guard, now), Verdict::Counted);
    assert_eq!(
        fail(&mut h, t, &guard, now),
        Verdict::Boxed { wait: Duration::from_millis(100), level: 0 }
    );
    // A node that does not answer at start is boxed by one timeout.
    let mut h = Health::up();
    let v = h.on_failure(t, 0, true, &BoxGuard::new(1), &policy(), at(now));
    assert_eq!(v, Verdict::Boxed { wait: Duration::from_millis(100), level: 0 });
}

#[test]
fn failures_from_an_earlier_epoch_are_stale() {
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let mut h = Health::up();
    fail(&mut h, FailureKind::Dropped, &guard, now);
    assert!(h.start_probe(now + Duration::from_secs(1)));
    let at_later = at(now + Duration::from_secs(1));
    let probed = h.finish_probe(Ok(()), &guard, &policy(), at_later);
    assert_eq!(probed, Probed::Returned);
    assert_eq!(boxed(&guard), 0);
    // A socket from before the boxing fails: the node stays up.
    let old = h.on_failure(FailureKind::Dropped, 0, false, &guard, &policy(), at(now));
    assert_eq!(old, Verdict::Stale);
    assert!(h.is_up());
    assert_eq!(
        fail(&mut h, FailureKind::Dropped, &guard, now),
        Verdict::Boxed { wait: Duration::from_millis(100), level: 0 }
    );
}

#[test]
fn the_guard_vetoes_boxing_past_its_cap_and_frees_places() {
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let (mut a, mut b) = (Health::up(), Health::up());
    assert_eq!(
        fail(&mut a, FailureKind::Refused, &guard, now),
        Verdict::Boxed { wait: Duration::from_millis(100), level: 0 }
    );
    assert_eq!(fail(&mut b, FailureKind::Refused, &guard, now), Verdict::Vetoed);
    assert!(b.is_up());
    assert_eq!(b.vetoes(), (1, Some(FailureKind::Refused)));
    assert_eq!(b.epoch(), 0, "a veto starts no epoch");
    // Timeouts below the threshold never need a place.
    assert_eq!(fail(&mut b, FailureKind::Timeout, &guard, now), Verdict::Counted);
    a.retire(&guard);
    assert_eq!(boxed(&guard), 0);
    assert_eq!(
        fail(&mut b, FailureKind::Refused, &guard, now),
        Verdict::Boxed { wait: Duration::from_millis(100), level: 0 }
    );
    guard.set_cap(2);
    let mut c = Health::up();
    assert_eq!(
        fail(&mut c, FailureKind::Io, &guard, now),
        Verdict::Boxed { wait: Duration::from_millis(100), level: 0 }
    );
}

#[test]
fn a_retired_node_is_never_boxed_or_returned() {
    let (now, guard) = (Instant::now(), BoxGuard::new(2));
    let mut h = Health::up();
    fail(&mut h, FailureKind::Refused, &guard, now);
    assert!(h.start_probe(now + Duration::from_secs(1)));
    h.retire(&guard);
    h.retire(&guard);
    assert_eq!(boxed(&guard), 0, "the place is given back once");
    let probed = h.finish_probe(Ok(()), &guard, &policy(), at(now));
    assert_eq!(probed, Probed::Ignored);
    assert_eq!(boxed(&guard), 0);
    let mut up = Health::up();
    up.retire(&guard);
    assert_eq!(fail(&mut up, FailureKind::Refused, &guard, now), Verdict::Stale);
}

#[test]
fn failed_probes_grow_the_wait_up_to_the_cap() {
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let mut h = Health::up();
    fail(&mut h, FailureKind::Dropped, &guard, now);
    let mut waits = vec![h.remaining(now).unwrap()];
    for _ in 0..6 {
        assert!(h.start_probe(now + Duration::from_secs(9)));
        let outcome = Err((FailureKind::Refused, "refused".to_owned()));
        let probed = h.finish_probe(outcome, &guard, &policy(), at(now));
        assert_eq!(probed, Probed::Failed { wait: h.remaining(now).unwrap() });
        waits.push(h.remaining(now).unwrap());
    }
    let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000, 1000]);
    assert_eq!(h.last_error(), Some("refused"));
    assert!(h.start_probe(now + Duration::from_secs(9)));
    let probed = h.finish_probe(Ok(()), &guard, &policy(), at(now));
    assert_eq!(probed, Probed::Returned);
    assert_eq!(h.last_error(), None);
    // A second trip starts again from the minimum.
    fail(&mut h, FailureKind::Refused, &guard, now);
    assert_eq!(h.remaining(now), Some(Duration::from_millis(100)));
    assert_eq!(h.penalties(), 2);
}

#[test]
fn jitter_only_shortens_within_its_fraction() {
    let p = PenaltyPolicy { jitter: 0.25, ..policy() };
    assert_eq!(p.wait(0, 0.0), Duration::from_millis(100));
    assert_eq!(p.wait(0, 1.0), Duration::from_millis(75));
    assert_eq!(p.wait(10, 0.5), Duration::from_secs_f64(0.875));
    for r in [0.0, 0.1, 0.5, 0.99] {
        let w = p.wait(50, r);
        assert!(w <= p.max_wait && w >= p.max_wait.mul_f64(0.75), "{w:?}");
    }
}

#[test]
fn huge_probe_counts_do_not_overflow() {
    let p = policy();
    assert_eq!(p.wait(u32::MAX, 0.0), p.max_wait);
    let unit = PenaltyPolicy { multiplier: 1.0, ..p };
    assert_eq!(unit.wait(u32::MAX, 0.0), unit.min_wait);
}

#[test]
fn failures_while_boxed_do_not_move_the_probe() {
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let mut h = Health::up();
    fail(&mut h, FailureKind::Refused, &guard, now);
    let before = h.state();
    let later = now + Duration::from_millis(50);
    assert_eq!(fail(&mut h, FailureKind::Refused, &guard, later), Verdict::Counted);
    assert_eq!(h.state(), before);
}

#[test]
fn probes_do_nothing_to_a_node_that_is_up() {
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let mut h = Health::up();
    assert!(!h.start_probe(now));
    let outcome = Err((FailureKind::Refused, String::new()));
    assert_eq!(h.finish_probe(outcome, &guard, &policy(), at(now)), Probed::Ignored);
    assert!(h.is_up());
}

#[test]
fn labels_are_stable() {
    assert_eq!(FailureKind::Refused.to_string(), "refused");
    assert_eq!(FailureKind::MasterDown.as_str(), "masterdown");
    let labels: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(labels.len(), 13);
}

/// Boxes `h` at `now` and lets it back in at the end of its stay; returns
/// the length of that stay.
fn flap(h: &mut Health, p: &PenaltyPolicy, guard: &BoxGuard, now: Instant) -> Duration {
    let v = h.on_failure(FailureKind::Dropped, h.epoch(), false, guard, p, at(now));
    let stay = h.remaining(now).unwrap();
    assert_eq!(v, Verdict::Boxed { wait: stay, level: h.level(now, p) });

    assert!(h.start_probe(now + stay));
    assert_eq!(h.finish_probe(Ok(()), guard, p, at(now + stay)), Probed::Returned);
    stay
}

#[test]
fn a_node_that_flaps_within_its_memory_stays_out_longer_each_time() {
    let p = PenaltyPolicy { memory: Duration::from_secs(60), ..policy() };
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let mut h = Health::up();
    let mut t = now;
    let mut stays = Vec::new();
    for _ in 0..5 {
        let stay = flap(&mut h, &p, &guard, t);
        stays.push(stay.as_millis());
        t += stay + Duration::from_millis(100); // up for 100 ms, then boxed again
    }
    assert_eq!(stays, vec![100, 200, 400, 800, 1000]);
    // Each full memory of staying up lowers the level by one.
    let back = t - Duration::from_millis(100);
    assert_eq!(h.level(back, &p), 5);
    assert_eq!(h.level(back + Duration::from_secs(60), &p), 4);
    assert_eq!(h.level(back + Duration::from_secs(299), &p), 1);
    assert_eq!(h.level(back + Duration::from_secs(300), &p), 0);
    // Stable for long enough, a failure starts at the minimum again.
    assert_eq!(flap(&mut h, &p, &guard, back + Duration::from_secs(300)), p.min_wait);
}

#[test]
fn without_memory_every_stay_starts_at_the_minimum() {
    let (now, guard, p) = (Instant::now(), BoxGuard::new(1), policy());
    let mut h = Health::up();
    for i in 0..5 {
        assert_eq!(flap(&mut h, &p, &guard, now + Duration::from_secs(i)), p.min_wait);
    }
    assert_eq!(h.penalties(), 5);
}

#[test]
fn failed_probes_in_a_damped_stay_grow_from_its_level() {
    let p = PenaltyPolicy { memory: Duration::from_secs(60), ..policy() };
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let mut h = Health::up();
    flap(&mut h, &p, &guard, now); // ends at level 0
    let later = now + Duration::from_secs(1);
    h.on_failure(FailureKind::Refused, h.epoch(), false, &guard, &p, at(later));
    assert_eq!(h.level(later, &p), 1);
    assert!(h.start_probe(later + Duration::from_secs(1)));
    let failed = Err((FailureKind::Refused, String::new()));
    h.finish_probe(failed, &guard, &p, at(later));
    assert_eq!(h.level(later, &p), 2);
    assert_eq!(h.remaining(later), Some(Duration::from_millis(400)));
}

#[test]
fn a_warmup_runs_from_the_return_and_ends_once() {
    let p = PenaltyPolicy { warmup: Duration::from_secs(3), ..policy() };
    let (now, guard) = (Instant::now(), BoxGuard::new(1));
    let mut h = Health::up();
    assert_eq!(h.warmed(now, &p), None, "no warm-up at start");
    let stay = flap(&mut h, &p, &guard, now);
    let back = now + stay;
    assert_eq!(h.warming(), Some(back));
    assert_eq!(h.warmed(back + Duration::from_secs(1), &p), Some(1.0 / 3.0));
    assert!(!h.end_warmup(back + Duration::from_secs(2), &p));
    assert!(h.end_warmup(back + Duration::from_secs(3), &p));
    assert!(!h.end_warmup(back + Duration::from_secs(4), &p), "once");
    assert_eq!(h.warmed(back + Duration::from_secs(1), &p), None);
    // Boxing ends a warm-up; the next return starts a new one.
    h.start_warmup(back, &p);
    h.on_failure(FailureKind::Refused, h.epoch(), false, &guard, &p, at(back));
    assert_eq!(h.warming(), None);
}
