//! What a command does to the session of the connection it is sent on.
//!
//! A pooled connection goes from caller to caller, and a multiplexed one is
//! shared by many at once: a `SELECT`, an open `MULTI` or `WATCH`, a
//! `SUBSCRIBE` or a `CLIENT SETNAME` left on it would reach whoever comes
//! next. [`Session`] follows the commands a pooled connection carried, so the
//! pool drops one whose session changed instead of handing it on; the shared
//! path refuses the commands outright. Pure: the command's words come in.

use crate::stand_in::writes::Turn;

/// What a command does to its connection's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing: the common case.
    None,
    /// `MULTI`: a transaction is open until `EXEC` or `DISCARD`.
    Multi,
    /// `EXEC` or `DISCARD`: ends the transaction and every `WATCH`.
    Exec,
    /// `WATCH`: keys are watched until `EXEC`, `DISCARD` or `UNWATCH`.
    Watch,
    /// `UNWATCH`.
    Unwatch,
    /// The session changes for good: `SELECT`, `SUBSCRIBE` and its family,
    /// `MONITOR`, `HELLO`, `AUTH`, `RESET`, `CLIENT SETNAME`/`REPLY`/`TRACKING`...
    Changes,
    /// The command blocks its connection: `BLPOP` and the other blocking
    /// pops, `WAIT`, `XREAD ... BLOCK`.
    Blocks,
}

/// The effect of the command whose words (name first) are `args`.
#[inline]
pub(crate) fn effect<'a>(mut args: impl Iterator<Item = &'a [u8]>) -> Effect {
    let Some(name) = args.next() else { return Effect::None };
    // No session command is shorter than 4 bytes or longer than 12: most
    // commands (`GET`, `SET`, `DEL`) are passed by their length alone,
    // inline, without a call.
    if name.len() < 4 {
        return Effect::None;
    }
    named(name, args)
}

/// What the command whose words (name first) are `args` does to a
/// transaction, for a stand-in's connection that follows it
/// (`StandIn::wrap`).
pub(crate) fn turn(args: &[&[u8]]) -> Turn {
    match effect(args.iter().copied()) {
        Effect::Multi => Turn::Opens,
        Effect::Exec => Turn::Ends,
        _ => Turn::Other,
    }
}

/// [`effect`] for a command of four letters or more.
fn named<'a>(name: &[u8], mut args: impl Iterator<Item = &'a [u8]>) -> Effect {
    let mut upper = [0u8; 12];
    let Some(upper) = upper.get_mut(..name.len()) else { return Effect::None };
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    match &*upper {
        b"MULTI" => Effect::Multi,
        b"EXEC" | b"DISCARD" => Effect::Exec,
        b"WATCH" => Effect::Watch,
        b"UNWATCH" => Effect::Unwatch,
        b"SELECT" | b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"UNSUBSCRIBE"
        | b"PUNSUBSCRIBE" | b"SUNSUBSCRIBE" | b"MONITOR" | b"HELLO" | b"AUTH" | b"RESET"
        | b"READONLY" | b"READWRITE" => Effect::Changes,
        b"CLIENT" => match args.next().map(|sub| sub.to_ascii_uppercase()).as_deref() {
            Some(
                b"SETNAME" | b"REPLY" | b"TRACKING" | b"NO-EVICT" | b"NO-TOUCH" | b"SETINFO"
                | b"CACHING",
            ) => Effect::Changes,
            _ => Effect::None,
        },
        b"BLPOP" | b"BRPOP" | b"BLMOVE" | b"BRPOPLPUSH" | b"BZPOPMIN" | b"BZPOPMAX" | b"BLMPOP"
        | b"BZMPOP" | b"WAIT" | b"WAITAOF" => Effect::Blocks,
        b"XREAD" | b"XREADGROUP" if args.any(|a| a.eq_ignore_ascii_case(b"BLOCK")) => {
            Effect::Blocks
        }
        _ => Effect::None,
    }
}

/// The effects of the commands packed in `bytes` (RESP arrays of bulk
/// strings, as a blocking connection sends them), in order.
#[cfg(any(feature = "r2d2", test))]
pub(crate) fn packed_effects(bytes: &[u8]) -> impl Iterator<Item = Effect> + '_ {
    packed(bytes, |words| effect(words))
}

/// What `of` makes of each command packed in `bytes`, given its words
/// (name first) as they are read, nothing copied: the one reading of a
/// blocking connection's bytes, for the session rules and a stand-in's
/// caps. A command cut short ends them.
#[cfg(any(feature = "r2d2", test))]
pub(crate) fn packed<'a, T>(
    bytes: &'a [u8],
    mut of: impl FnMut(&mut dyn Iterator<Item = &'a [u8]>) -> T + 'a,
) -> impl Iterator<Item = T> + 'a {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let (mut left, after) = header(rest, b'*')?;
        rest = after;
        let mut cut = false;
        let mut words = std::iter::from_fn(|| {
            left = left.checked_sub(1)?;
            let word = header(rest, b'$').and_then(|(len, after)| {
                let word = after.get(..len)?;
                rest = after.get(len + 2..)?;
                Some(word)
            });
            cut |= word.is_none();
            word
        });
        let value = of(&mut words);
        // Past what `of` did not read.
        words.for_each(drop);
        (!cut).then_some(value)
    })
}

/// `<kind><number>\r\n` at the start of `bytes`: the number, and what follows.
#[cfg(any(feature = "r2d2", test))]
fn header(bytes: &[u8], kind: u8) -> Option<(usize, &[u8])> {
    let rest = bytes.strip_prefix(&[kind])?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let number = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((number, rest.get(end + 2..)?))
}

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
            Effect::Exec => (self.multi, self.watching) = (false, false),
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

    fn of(words: &[&str]) -> Effect {
        effect(words.iter().map(|w| w.as_bytes()))
    }

    #[test]
    fn commands_are_told_apart_by_their_words() {
        assert_eq!(of(&["get", "k"]), Effect::None);
        assert_eq!(of(&["multi"]), Effect::Multi);
        assert_eq!(of(&["Select", "3"]), Effect::Changes);
        assert_eq!(of(&["CLIENT", "setname", "x"]), Effect::Changes);
        assert_eq!(of(&["CLIENT", "ID"]), Effect::None);
        assert_eq!(of(&["XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "$"]), Effect::Blocks);
        assert_eq!(of(&["XREAD", "STREAMS", "s", "0"]), Effect::None);
        assert_eq!(of(&["A-COMMAND-LONGER-THAN-TWELVE"]), Effect::None);
        let mut s = Session::default();
        for e in [Effect::Watch, Effect::Multi, Effect::None, Effect::Exec] {
            s.apply(e);
        }
        assert!(s.is_clean(), "WATCH, MULTI ... EXEC leaves nothing behind");
        s.apply(Effect::Multi);
        assert!(!s.is_clean(), "an open MULTI");
    }

    #[test]
    fn packed_commands_are_read_in_order() {
        let packed = redis::pipe()
            .cmd("SELECT")
            .arg(2)
            .cmd("GET")
            .arg("k")
            .cmd("MULTI")
            .get_packed_pipeline();
        let effects: Vec<Effect> = packed_effects(&packed).collect();
        assert_eq!(effects, [Effect::Changes, Effect::None, Effect::Multi]);
        assert_eq!(packed_effects(b"*1\r\n$4\r\nPI").count(), 0, "a cut command reads as none");
    }
}
