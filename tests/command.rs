//! The command table: the vendored one (`src/command/commands.txt`,
//! Redis 7.0's) reads every command as the server's own `COMMAND` does.

mod support;

use std::collections::BTreeSet;

use redis::Value;
use support::RedisServer;

/// Words of a `COMMAND` reply item.
fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// The table's line for one `COMMAND` entry and its subcommands, written
/// as `src/command/commands.txt` writes it.
fn lines(entry: &Value, out: &mut BTreeSet<String>) {
    let fields = items(entry);
    if let Some(subs) = fields.get(9).filter(|s| !items(s).is_empty()) {
        items(subs).iter().for_each(|sub| lines(sub, out));
        return;
    }
    let name = text(&fields[0]).to_lowercase();
    let flags: Vec<String> = items(&fields[2]).iter().map(text).collect();
    let movable = flags.iter().any(|f| f == "movablekeys");
    // A key spec is a flat list of names and values; `flags` holds RW.
    let updates = fields.get(8).is_some_and(|specs| {
        items(specs).iter().any(|spec| {
            let spec = items(spec);
            spec.iter()
                .position(|f| text(f) == "flags")
                .is_some_and(|i| items(&spec[i + 1]).iter().any(|f| text(f) == "RW"))
        })
    });
    let line = if flags.iter().any(|f| f == "write") || (movable && updates) {
        let [first, last, step] = [3, 4, 5].map(|i| text(&fields[i]));
        format!("{name} {first} {last} {step}{}", if movable { " movable" } else { "" })
    } else {
        name
    };
    out.insert(line);
}

#[test]
fn the_command_table_is_the_servers_own() {
    // The vendored table is Redis 7.0's: against 7.0 it is the server's
    // own, line for line. A later server (Redis 7.2+, Valkey) may know
    // more commands, which a node reads from it at connect; every command
    // both know, the vendored table must read as the server does.
    let server = RedisServer::start();
    let mut client = server.client();
    let reply: Value = redis::cmd("COMMAND").query(&mut client).unwrap();
    let mut expected = BTreeSet::new();
    items(&reply).iter().for_each(|entry| lines(entry, &mut expected));
    let table = include_str!("../src/command/commands.txt");
    let ours: BTreeSet<String> =
        table.lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect();
    let info: String = redis::cmd("INFO").arg("server").query(&mut client).unwrap();
    let name = |line: &String| line.split(' ').next().unwrap_or_default().to_owned();
    let (theirs, mine) = if info.contains("redis_version:7.0.") {
        (expected, ours)
    } else {
        let names = |lines: &BTreeSet<String>| lines.iter().map(name).collect::<BTreeSet<_>>();
        let both: BTreeSet<String> =
            names(&expected).intersection(&names(&ours)).cloned().collect();
        let shared = |lines: BTreeSet<String>| -> BTreeSet<String> {
            lines.into_iter().filter(|line| both.contains(&name(line))).collect()
        };
        (shared(expected), shared(ours))
    };
    let missing: Vec<_> = theirs.difference(&mine).collect();
    let extra: Vec<_> = mine.difference(&theirs).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, not the server's {extra:?}"
    );
}
