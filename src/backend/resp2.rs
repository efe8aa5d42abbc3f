//! A reply of a near cache's tracking connection, which speaks RESP3, as
//! Redis gives it to a RESP2 client: what every other connection of the
//! pool speaks, so turning the near cache on changes no reply a caller
//! sees. Pure.
//!
//! RESP3 adds types (maps, sets, doubles, booleans, verbatim strings, big
//! numbers, attributes) and nests some replies RESP2 gives flat (the
//! `[member, score]` pairs of `ZRANGE ... WITHSCORES`). Each is given back
//! in its RESP2 form: a map as a flat array of keys and values, a set as an
//! array, a boolean as 1 or 0, a verbatim string or a big number as a bulk
//! string, an attribute as its data, a pair-nesting command's pairs
//! flattened, and a double as the bulk string Redis writes in RESP2: the
//! reply's text is lost once `redis` has read it as an `f64`, so it is
//! written again the way the server does ([`Doubles`]).

use redis::{Arg, Cmd, Pipeline, Value};

/// How the server writes a double in RESP2 (and in RESP3: the same text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Doubles {
    /// `%.17g`: Redis before 7.2.
    #[default]
    Printf,
    /// The shortest text that reads back the same (Redis 7.2 and later:
    /// `d2string`, grisu2).
    Shortest,
}

impl Doubles {
    /// The way of the server whose `INFO server` is `info`.
    pub(crate) fn of_server(info: &str) -> Doubles {
        let version = info.lines().find_map(|line| line.strip_prefix("redis_version:"));
        let mut numbers = version.unwrap_or("").trim().split('.').map(|n| n.parse::<u32>().ok());
        match (numbers.next().flatten(), numbers.next().flatten()) {
            (Some(major), Some(minor)) if (major, minor) >= (7, 2) => Doubles::Shortest,
            _ => Doubles::Printf,
        }
    }
}

/// What a command's reply holds beyond the plain types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nothing in particular: its doubles are Redis's `addReplyDouble`.
    Plain,
    /// In RESP3 its items come in `[a, b]` pairs that RESP2 gives flat.
    Pairs,
    /// Its doubles are coordinates, written in Redis's "human" form.
    Geo,
}

fn kind(name: &[u8]) -> Kind {
    // No such command is longer than 24 bytes.
    let mut upper = [0u8; 24];
    let Some(upper) = upper.get_mut(..name.len()) else { return Kind::Plain };
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    match &*upper {
        b"ZRANGE" | b"ZRANGEBYSCORE" | b"ZREVRANGE" | b"ZREVRANGEBYSCORE" | b"ZUNION"
        | b"ZINTER" | b"ZDIFF" | b"ZRANDMEMBER" | b"HRANDFIELD" | b"ZPOPMIN" | b"ZPOPMAX" => {
            Kind::Pairs
        }
        b"GEOPOS"
        | b"GEORADIUS"
        | b"GEORADIUS_RO"
        | b"GEORADIUSBYMEMBER"
        | b"GEORADIUSBYMEMBER_RO"
        | b"GEOSEARCH" => Kind::Geo,
        _ => Kind::Plain,
    }
}

/// Whether `value` may differ from its RESP2 form: a RESP3 type somewhere,
/// or an array holding arrays (a pair-nesting command's reply). Most
/// replies (a bulk string, an integer, an array of bulk strings) are not,
/// and are handed on untouched.
fn differs(value: &Value) -> bool {
    match value {
        Value::Nil
        | Value::Int(_)
        | Value::BulkString(_)
        | Value::SimpleString(_)
        | Value::Okay
        | Value::ServerError(_) => false,
        Value::Array(items) => {
            items.iter().any(|item| matches!(item, Value::Array(_)) || differs(item))
        }
        _ => true,
    }
}

/// `value`, the reply to the command whose name is `name`, in its RESP2
/// form, written with `doubles`.
pub(crate) fn resp2(name: &[u8], value: Value, doubles: Doubles) -> Value {
    if !differs(&value) {
        return value;
    }
    let kind = kind(name);
    let value = match (kind, value) {
        (Kind::Pairs, Value::Array(items)) if is_pairs(&items) => {
            Value::Array(items.into_iter().flat_map(pair).collect())
        }
        (_, value) => value,
    };
    convert(value, kind, doubles)
}

/// The name of `cmd`, its first word.
fn name(cmd: &Cmd) -> &[u8] {
    match cmd.args_iter().next() {
        Some(Arg::Simple(name)) => name,
        _ => b"",
    }
}

/// [`resp2`] of the reply to `cmd`, if the connection speaks RESP3
/// (`doubles` says how its server writes them).
pub(crate) fn reply(cmd: &Cmd, value: Value, doubles: Option<Doubles>) -> Value {
    match doubles {
        Some(doubles) => resp2(name(cmd), value, doubles),
        None => value,
    }
}

/// [`reply`] for `values`, the replies to `pipeline` from `offset` on:
/// each given back as its command's (inside an atomic pipeline's `EXEC`,
/// each of its items).
pub(crate) fn replies(
    pipeline: &Pipeline,
    offset: usize,
    values: Vec<Value>,
    doubles: Option<Doubles>,
) -> Vec<Value> {
    let Some(doubles) = doubles.filter(|_| values.iter().any(differs)) else { return values };
    let sent = pipeline.cmd_iter().count();
    let exec = pipeline.is_transaction().then_some(sent + 1);
    let names: Vec<&[u8]> = pipeline.cmd_iter().map(name).collect();
    let one = |(position, value): (usize, Value)| match (exec, value) {
        (Some(exec), Value::Array(items)) if position == exec => Value::Array(
            names.iter().zip(items).map(|(name, item)| resp2(name, item, doubles)).collect(),
        ),
        // MULTI's and each QUEUED: plain.
        (Some(_), value) => resp2(b"", value, doubles),
        (None, value) => resp2(names.get(position).copied().unwrap_or(b""), value, doubles),
    };
    values.into_iter().enumerate().map(|(i, value)| one((offset + i, value))).collect()
}

fn is_pairs(items: &[Value]) -> bool {
    items.iter().all(|item| matches!(item, Value::Array(pair) if pair.len() == 2))
}

fn pair(item: Value) -> Vec<Value> {
    match item {
        Value::Array(pair) => pair,
        other => vec![other],
    }
}

fn convert(value: Value, kind: Kind, doubles: Doubles) -> Value {
    let all = |items: Vec<Value>| items.into_iter().map(|v| convert(v, kind, doubles)).collect();
    match value {
        Value::Array(items) => Value::Array(all(items)),
        Value::Set(items) => Value::Array(all(items)),
        Value::Map(pairs) => Value::Array(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [convert(k, kind, doubles), convert(v, kind, doubles)])
                .collect(),
        ),
        Value::Attribute { data, .. } => convert(*data, kind, doubles),
        Value::Boolean(b) => Value::Int(i64::from(b)),
        Value::VerbatimString { text, .. } => Value::BulkString(text.into_bytes()),
        Value::Double(d) => Value::BulkString(
            match (kind, doubles) {
                (Kind::Geo, _) => human(d),
                (_, Doubles::Printf) => printf_g17(d),
                (_, Doubles::Shortest) => shortest(d),
            }
            .into_bytes(),
        ),
        // The borrow picks `DisplayDigits` when `Digits` has no bytes.
        #[allow(clippy::needless_borrow)]
        Value::BigNumber(ref n) => Value::BulkString((&Digits(n)).digits()),
        value => value,
    }
}

/// A big number's digits, whichever type `redis` holds them in (bytes, or
/// with its `num-bigint` feature a `BigInt`).
struct Digits<'a, T>(&'a T);

// Called unless `redis` holds big numbers as `BigInt`.
#[allow(dead_code)]
trait BytesDigits {
    fn digits(&self) -> Vec<u8>;
}

impl BytesDigits for Digits<'_, Vec<u8>> {
    fn digits(&self) -> Vec<u8> {
        self.0.clone()
    }
}

// Called only when `redis` holds big numbers as `BigInt`: a feature of
// `redis` the application may turn on, which fluster cannot see.
#[allow(dead_code)]
trait DisplayDigits {
    fn digits(&self) -> Vec<u8>;
}

impl<T: std::fmt::Display> DisplayDigits for &Digits<'_, T> {
    fn digits(&self) -> Vec<u8> {
        self.0.to_string().into_bytes()
    }
}

/// Special values, as every one of Redis's ways writes them.
fn special(d: f64) -> Option<&'static str> {
    match d {
        d if d.is_nan() => Some("nan"),
        f64::INFINITY => Some("inf"),
        f64::NEG_INFINITY => Some("-inf"),
        _ => None,
    }
}

/// Trailing zeros of a fraction removed, and its point if nothing follows.
fn trim_fraction(text: &str) -> &str {
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.'),
        false => text,
    }
}

/// C's `%.17g`, as Redis before 7.2 writes a double.
pub(crate) fn printf_g17(d: f64) -> String {
    if let Some(text) = special(d) {
        return text.to_owned();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // 17 significant digits, rounded as printf rounds; the exponent is the
    // rounded number's.
    let scientific = format!("{d:.16e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..17).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim_fraction(mantissa), exponent.unsigned_abs());
    }
    let decimals = (16 - exponent) as usize;
    trim_fraction(&format!("{d:.decimals$}")).to_owned()
}

/// Redis's "human" form of a long double (`ld2string`, `LD_STR_HUMAN`):
/// 17 decimals, trailing zeros removed. Coordinates are written so.
pub(crate) fn human(d: f64) -> String {
    if let Some(text) = special(d) {
        return text.to_owned();
    }
    match trim_fraction(&format!("{d:.17}")) {
        "-0" => "0".to_owned(),
        text => text.to_owned(),
    }
}

/// Redis 7.2's `d2string`: an integer as one, else the shortest digits
/// that read back the same, laid out as its `fpconv_dtoa` lays them.
pub(crate) fn shortest(d: f64) -> String {
    if let Some(text) = special(d) {
        return text.to_owned();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    const HALF_I64: f64 = (i64::MAX / 2) as f64;
    if (-HALF_I64..=HALF_I64).contains(&d) && d.fract() == 0.0 {
        return (d as i64).to_string();
    }
    // The shortest digits, as `1.2345e-7`.
    let scientific = format!("{:e}", d.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let n = digits.len() as i32;
    // d = digits * 10^k.
    let k = exponent.parse::<i32>().unwrap_or(0) - (n - 1);
    let exp = (k + n - 1).abs();
    let sign = if d < 0.0 { "-" } else { "" };
    if k >= 0 && exp < n + 7 {
        return format!("{sign}{digits}{}", "0".repeat(k as usize));
    }
    if k < 0 && (k > -7 || exp < 4) {
        let offset = n + k;
        return match offset <= 0 {
            true => format!("{sign}0.{}{digits}", "0".repeat(offset.unsigned_abs() as usize)),
            false => format!("{sign}{}.{}", &digits[..offset as usize], &digits[offset as usize..]),
        };
    }
    let (first, rest) = digits.split_at(1);
    let point = if rest.is_empty() { "" } else { "." };
    let exp_sign = if k + n - 1 < 0 { '-' } else { '+' };
    format!("{sign}{first}{point}{rest}e{exp_sign}{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_are_written_as_each_redis_writes_them() {
        // Each text read back (as `redis` reads a RESP3 double) and written
        // again. Read off redis-server 7.0 in RESP2:
        let printf = [
            "0.10000000000000001",
            "1.5",
            "3",
            "2e+30",
            "0.099999998000000007",
            "1.0000000000000001e-05",
            "-9.9999999999999995e-08",
            "123456789",
            "-0",
            "inf",
            "-inf",
        ];
        for text in printf {
            assert_eq!(printf_g17(text.parse().unwrap()), text);
        }
        // Coordinates, and Redis's "human" form of others.
        for text in ["13.36138933897018433", "38.11555639549629859", "2.5", "0"] {
            assert_eq!(human(text.parse().unwrap()), text);
        }
        assert_eq!(human(-0.0), "0");
        // `d2string` and `fpconv_dtoa`'s layouts (Redis 7.2 on).
        let shortest_texts = [
            "0.1",
            "1.5",
            "3",
            "2e+30",
            "1e-7",
            "1.5e-7",
            "0.000123",
            "-12.25",
            "1e+300",
            "1.2345678e+21",
            "-0",
            "inf",
        ];
        for text in shortest_texts {
            assert_eq!(shortest(text.parse().unwrap()), text);
        }
    }

    #[test]
    fn the_version_says_how_doubles_are_written() {
        assert_eq!(Doubles::of_server("# Server\r\nredis_version:7.0.15\r\n"), Doubles::Printf);
        assert_eq!(Doubles::of_server("redis_version:7.2.4\r\n"), Doubles::Shortest);
        assert_eq!(Doubles::of_server("redis_version:8.0.0"), Doubles::Shortest);
        assert_eq!(Doubles::of_server("nothing"), Doubles::Printf);
    }

    #[test]
    fn resp3_shapes_come_back_as_resp2() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let pairs = Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(0.1)]),
            Value::Array(vec![bulk("b"), Value::Double(1.5)]),
        ]);
        let flat =
            Value::Array(vec![bulk("a"), bulk("0.10000000000000001"), bulk("b"), bulk("1.5")]);
        assert_eq!(resp2(b"zrange", pairs.clone(), Doubles::Printf), flat);
        // GEOPOS nests in both protocols.
        let geo = Value::Array(vec![Value::Array(vec![Value::Double(2.5), Value::Double(1.0)])]);
        let geo2 = Value::Array(vec![Value::Array(vec![bulk("2.5"), bulk("1")])]);
        assert_eq!(resp2(b"GEOPOS", geo, Doubles::Printf), geo2);
        let map = Value::Map(vec![(bulk("f"), Value::Set(vec![bulk("x")]))]);
        let flat_map = Value::Array(vec![bulk("f"), Value::Array(vec![bulk("x")])]);
        assert_eq!(resp2(b"HGETALL", map, Doubles::Printf), flat_map);
        assert_eq!(resp2(b"EVAL", Value::Boolean(true), Doubles::Printf), Value::Int(1));
        let plain = Value::Array(vec![bulk("1-1"), Value::Array(vec![bulk("a"), bulk("b")])]);
        assert_eq!(resp2(b"XRANGE", plain.clone(), Doubles::Printf), plain);
        assert_eq!(resp2(b"GET", bulk("v"), Doubles::Printf), bulk("v"));
    }
}
