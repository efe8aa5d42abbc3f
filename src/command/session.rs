//! What a command does to the session of the connection it is sent on
//! ([`Effect`]), and to the caller's transaction ([`Turn`]). Pure: the
//! command's words come in, as `words.rs` reads them; the connections
//! follow the effects (`node/session.rs`) or refuse them.

use super::table::Known;

/// What a command does to the caller's transaction on its connection, as
/// the session rules read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// `MULTI`: the commands after it are queued, until `EXEC`.
    Opens,
    /// `EXEC` or `DISCARD`: `EXEC`'s reply holds the queued commands'.
    Ends,
    /// Any other command: queued while a transaction is open.
    Other,
}

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

/// The effect of the command whose words (name first) are `args`, sent to
/// a node whose table is `known` (a blocking command the rules below do
/// not name is told by the server's own flags).
#[inline]
pub(crate) fn effect<'a>(mut args: impl Iterator<Item = &'a [u8]>, known: &Known) -> Effect {
    let Some(name) = args.next() else { return Effect::None };
    // No session command is shorter than 4 bytes or longer than 12: most
    // commands (`GET`, `SET`, `DEL`) are passed by their length alone,
    // inline, without a call.
    if name.len() < 4 {
        return Effect::None;
    }
    named(name, args, Some(known))
}

/// What the command whose words (name first) are `args` does to a
/// transaction, for a stand-in's connection that follows it
/// (`StandIn::wrap`).
pub(crate) fn turn(args: &[&[u8]]) -> Turn {
    let Some((name, rest)) = args.split_first() else { return Turn::Other };
    if name.len() < 4 {
        return Turn::Other;
    }
    match named(name, rest.iter().copied(), None) {
        Effect::Multi => Turn::Opens,
        Effect::Exec => Turn::Ends,
        _ => Turn::Other,
    }
}

/// [`effect`] for a command of four letters or more.
fn named<'a>(
    name: &[u8],
    mut args: impl Iterator<Item = &'a [u8]>,
    known: Option<&Known>,
) -> Effect {
    let mut upper = [0u8; 12];
    let Some(upper) = upper.get_mut(..name.len()) else { return blocks(name, known) };
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
        b"XREAD" | b"XREADGROUP" => Effect::None,
        _ => blocks(name, known),
    }
}

/// [`Effect::Blocks`] if the node's server flags `name`, a command the
/// rules above do not name, blocking; else none.
fn blocks(name: &[u8], known: Option<&Known>) -> Effect {
    if known.is_some_and(|known| known.blocks(name)) { Effect::Blocks } else { Effect::None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(words: &[&str]) -> Effect {
        effect(words.iter().map(|w| w.as_bytes()), &Known::default())
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
        assert_eq!(turn(&[b"multi"]), Turn::Opens);
        assert_eq!(turn(&[b"DISCARD"]), Turn::Ends);
        assert_eq!(turn(&[b"SET", b"k", b"v"]), Turn::Other);
    }
}
