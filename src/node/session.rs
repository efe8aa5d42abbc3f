//! The session a pooled connection's commands have left behind.
//!
//! A pooled connection goes from caller to caller, and a multiplexed one is
//! shared by many at once: a `SELECT`, an open `MULTI` or `WATCH`, a
//! `SUBSCRIBE` or a `CLIENT SETNAME` left on it would reach whoever comes
//! next. [`Session`] follows the [`Effect`]s of the commands a pooled
//! connection carried (what each does is the command room's to say), so
//! the pool drops one whose session changed instead of handing it on; the
//! shared path refuses the commands outright.

use crate::command::session::Effect;

/// The session state a connection's commands have left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Session {
    multi: bool,
    watching: bool,
    changed: bool,
}

impl Session {
    /// Follows one command.
    pub(crate) fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Multi => self.multi = true,
            // Without a `MULTI`, the server refuses them: the watch stays.
            Effect::Exec if self.multi => (self.multi, self.watching) = (false, false),
            Effect::Exec => {}
            Effect::Watch => self.watching = true,
            Effect::Unwatch => self.watching = false,
            Effect::Changes => self.changed = true,
            Effect::None | Effect::Blocks => {}
        }
    }

    /// Whether a transaction is open: a write sent now is queued, and runs
    /// at `EXEC`.
    pub(crate) fn in_multi(&self) -> bool {
        self.multi
    }

    /// Whether no transaction is open and no key watched: a command sent
    /// now runs at once, and aborts nothing of the caller's.
    pub(crate) fn is_quiet(&self) -> bool {
        !self.multi && !self.watching
    }

    /// Marks the session changed in ways the pool cannot follow.
    #[cfg(feature = "r2d2")]
    pub(crate) fn taint(&mut self) {
        self.changed = true;
    }

    /// Whether the next caller would find the connection as a new one.
    pub(crate) fn is_clean(&self) -> bool {
        *self == Session::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_ended_leaves_nothing_behind() {
        let mut s = Session::default();
        for e in [Effect::Watch, Effect::Multi, Effect::None, Effect::Exec] {
            s.apply(e);
        }
        assert!(s.is_clean(), "WATCH, MULTI ... EXEC leaves nothing behind");
        s.apply(Effect::Multi);
        assert!(!s.is_clean(), "an open MULTI");
    }

    #[test]
    fn an_exec_without_multi_keeps_the_watch() {
        let mut s = Session::default();
        s.apply(Effect::Watch);
        s.apply(Effect::Exec);
        assert!(!s.is_quiet(), "`EXEC` (or `DISCARD`) without `MULTI` is refused: still watching");
        s.apply(Effect::Unwatch);
        assert!(s.is_quiet());
    }
}
