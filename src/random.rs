//! Random numbers for jitter and lease tokens. std's `RandomState` is
//! seeded per process from the OS, which is all the randomness they need
//! (nothing here is a secret): each call hashes a counter with it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A random number, different at each call and in each process.
pub(crate) fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A random number in `[0, 1)`.
pub(crate) fn fraction() -> f64 {
    (random() >> 11) as f64 / (1u64 << 53) as f64
}

/// A random delay of at most `most`.
pub(crate) fn jitter(most: Duration) -> Duration {
    let nanos = u64::try_from(most.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random() % nanos.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_within_their_bounds_and_differ() {
        let most = Duration::from_millis(25);
        assert!((0..1000).all(|_| jitter(most) < most));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        assert!((0..1000).map(|_| fraction()).all(|f| (0.0..1.0).contains(&f)));
        assert_ne!(random(), random());
    }
}
