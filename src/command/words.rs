//! The one parse of a command's words, name first, from what carries them:
//! a [`Cmd`] (the async flavour, and every pipeline) or the RESP bytes a
//! blocking connection sends ([`packed`]). Every rule in this folder takes
//! the words as they come from here; nothing is copied.

use redis::{Arg, Cmd};

/// The words of `cmd`, name first.
pub(crate) fn words(cmd: &Cmd) -> impl Iterator<Item = &[u8]> {
    cmd.args_iter().filter_map(|arg| match arg {
        Arg::Simple(word) => Some(word),
        _ => None,
    })
}

/// What `of` makes of each command packed in `bytes` (RESP arrays of bulk
/// strings, as a blocking connection sends them), given its words (name
/// first) as they are read, nothing copied. A command cut short ends them.
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

/// The pipeline packed in `bytes` (as a blocking connection gets it, its
/// caller wanting `span` of the replies), read by [`packed`]: atomic if it
/// is wrapped in `MULTI` and `EXEC` and only `EXEC`'s reply is wanted (as
/// an atomic pipeline asks; one written by hand wants every reply). What
/// the synchronous flavour hands to a stand-in's `wrap`.
#[cfg(feature = "r2d2")]
pub(crate) fn unpacked(bytes: &[u8], span: (usize, usize)) -> redis::Pipeline {
    let mut commands: Vec<Cmd> = packed(bytes, |words| {
        let mut cmd = Cmd::new();
        for word in words {
            cmd.arg(word);
        }
        cmd
    })
    .collect();
    let is = |cmd: Option<&Cmd>, name: &[u8]| {
        cmd.and_then(|cmd| words(cmd).next()).is_some_and(|w| w.eq_ignore_ascii_case(name))
    };
    let wrapped =
        commands.len() >= 2 && is(commands.first(), b"MULTI") && is(commands.last(), b"EXEC");
    let atomic = wrapped && span == (commands.len() - 1, 1);
    let mut pipe = redis::pipe();
    if atomic {
        commands.pop();
        commands.remove(0);
        pipe.atomic();
    }
    for cmd in commands {
        pipe.add_command(cmd);
    }
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_commands_are_read_in_order() {
        let packed_bytes = redis::pipe()
            .cmd("SELECT")
            .arg(2)
            .cmd("GET")
            .arg("k")
            .cmd("MULTI")
            .get_packed_pipeline();
        let names: Vec<Vec<u8>> =
            packed(&packed_bytes, |words| words.next().unwrap_or_default().to_vec()).collect();
        assert_eq!(names, [&b"SELECT"[..], b"GET", b"MULTI"]);
        assert_eq!(packed(b"*1\r\n$4\r\nPI", |_| ()).count(), 0, "a cut command reads as none");
        let cmd = redis::cmd("SET").arg("k").arg(1).clone();
        assert_eq!(words(&cmd).collect::<Vec<_>>(), [&b"SET"[..], b"k", b"1"]);
    }
}
