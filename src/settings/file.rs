//! Settings as a file or the environment writes them (feature `serde`):
//! a node ([`NodeConfig`]), a duration (`"250ms"`, `"never"`), a failover
//! policy; each error shows the text and how to write it.

use std::time::Duration;

use super::Failover;
use super::url::redact_url;

/// `"reroute"` or `"fail_fast"`, as the variants are spelt in Rust too
/// (`"Reroute"`, `"FailFast"`); anything else is an error naming both.
impl<'de> serde::Deserialize<'de> for Failover {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "reroute" | "Reroute" => Ok(Failover::Reroute),
            "fail_fast" | "FailFast" => Ok(Failover::FailFast),
            _ => Err(serde::de::Error::custom(format!(
                "unknown failover `{text}`: expected \"reroute\" or \"fail_fast\""
            ))),
        }
    }
}

/// One node of a [`Config`](crate::Config): a URL alone, a URL with a name
/// and weight (or a gutter node's: `{ url = "...", gutter = true }`), or a
/// Sentinel shard.
///
/// A table with a key none of these has, or without `url` (or `sentinel`),
/// is an error naming the key; a `sentinel` table without the `sentinel`
/// feature is an error naming the feature.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum NodeConfig {
    /// A URL; the node is named after its address, with weight 1.
    Url(String),
    /// A URL with an optional name and weight.
    Full {
        /// The node's URL.
        url: String,
        /// The node's name (default: its `host:port`).
        name: Option<String>,
        /// The node's weight (default 1).
        weight: Option<f64>,
        /// Whether it is a gutter node (default false; see
        /// [`Builder::gutter_node`](crate::Builder::gutter_node)).
        gutter: bool,
    },
    /// A shard served by a Sentinel master group (feature `sentinel`):
    /// `{ name = "orders-a", sentinel = { master = "orders-a",
    /// sentinels = ["redis://127.0.0.1:26379"], password = "..." } }`.
    #[cfg(feature = "sentinel")]
    Sentinel {
        /// The node's name.
        name: String,
        /// The master group and its sentinels.
        sentinel: crate::settings::sentinel::SentinelShard,
        /// The node's weight (default 1).
        weight: Option<f64>,
    },
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeConfig::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            NodeConfig::Full { url, name, weight, gutter } => f
                .debug_struct("Full")
                .field("url", &redact_url(url))
                .field("name", name)
                .field("weight", weight)
                .field("gutter", gutter)
                .finish(),
            #[cfg(feature = "sentinel")]
            NodeConfig::Sentinel { name, sentinel, weight } => f
                .debug_struct("Sentinel")
                .field("name", name)
                .field("sentinel", sentinel)
                .field("weight", weight)
                .finish(),
        }
    }
}

/// How a node is written, for errors.
const NODE_SHAPE: &str = if cfg!(feature = "sentinel") {
    "a node is a URL, a table of `url` and optional `name`, `weight` and `gutter`, \
     or a table of `name`, `sentinel` and optional `weight`"
} else {
    "a node is a URL, or a table of `url` and optional `name`, `weight` and `gutter`"
};

/// The keys a node table may have.
const NODE_KEYS: &[&str] = &["url", "name", "weight", "gutter", "sentinel"];

impl<'de> serde::Deserialize<'de> for NodeConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// A node: a string is its URL, a map its table, read key by key so an
/// error names the key (an untagged enum could only say that no variant
/// matched).
struct NodeVisitor;

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = NodeConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a node ({NODE_SHAPE})")
    }

    fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<NodeConfig, E> {
        Ok(NodeConfig::Url(url.to_owned()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NodeConfig, A::Error> {
        use serde::de::Error as _;
        let (mut url, mut name, mut weight, mut gutter) = (None, None, None, None);
        #[cfg(feature = "sentinel")]
        let mut sentinel: Option<crate::settings::sentinel::SentinelShard> = None;
        #[cfg(not(feature = "sentinel"))]
        let mut sentinel: Option<serde::de::IgnoredAny> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "url" => url = Some(map.next_value::<String>()?),
                "name" => name = Some(map.next_value::<String>()?),
                "weight" => weight = Some(map.next_value::<f64>()?),
                "gutter" => gutter = Some(map.next_value::<bool>()?),
                "sentinel" => sentinel = Some(map.next_value()?),
                other => {
                    let hint = match closest(other, NODE_KEYS.iter().copied()) {
                        Some(key) => format!(" (did you mean `{key}`?)"),
                        None => String::new(),
                    };
                    return Err(A::Error::custom(format!(
                        "unknown key `{other}` in a node table{hint}: {NODE_SHAPE}"
                    )));
                }
            }
        }
        let named = |name: &Option<String>| match name {
            Some(name) => format!("node `{name}`"),
            None => "a node".to_owned(),
        };
        match (url, sentinel) {
            (Some(url), None) => {
                Ok(NodeConfig::Full { url, name, weight, gutter: gutter.unwrap_or(false) })
            }
            (Some(_), Some(_)) => Err(A::Error::custom(format!(
                "{} has both `url` and `sentinel`: a node is one or the other",
                named(&name)
            ))),
            #[cfg(not(feature = "sentinel"))]
            (None, Some(_)) => Err(A::Error::custom(format!(
                "{} is a Sentinel shard (its `sentinel` key): that needs fluster's `sentinel` \
                 feature",
                named(&name)
            ))),
            #[cfg(feature = "sentinel")]
            (None, Some(sentinel)) => {
                let Some(name) = name else {
                    return Err(A::Error::custom("a `sentinel` node needs a `name`"));
                };
                if gutter.is_some() {
                    return Err(A::Error::custom(format!(
                        "node `{name}`: `gutter` is for a node given by `url`, not a Sentinel shard"
                    )));
                }
                Ok(NodeConfig::Sentinel { name, sentinel, weight })
            }
            (None, None) => {
                Err(A::Error::custom(format!("{} has no `url`: {NODE_SHAPE}", named(&name))))
            }
        }
    }
}

/// The known word closest to `word`, if one is close enough to be a slip
/// of the keyboard (two edits, or one in four characters of a long word).
pub(crate) fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let best = known.into_iter().map(|k| (distance(word, k), k)).min_by_key(|(d, _)| *d);
    best.filter(|(d, _)| *d <= (word.chars().count() / 4).max(2)).map(|(_, k)| k)
}

/// Levenshtein distance: the fewest inserts, deletes and changes of one
/// character that turn `a` into `b`.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// How a duration is written, for errors.
const DURATION_SHAPE: &str =
    "write a duration with its unit, like \"250ms\", \"30s\" or \"1m 30s\"";

/// A duration as a file or a variable writes it, or (`never` true) the
/// word `"never"` for none; an error shows the text and how to write it.
fn written_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
    never: bool,
) -> Result<Option<Duration>, D::Error> {
    use serde::Deserialize;
    use serde::de::Error as _;
    /// A bare number arrives as one when the environment is parsed.
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(f64),
    }
    let or_never = if never { ", or \"never\" for none" } else { "" };
    match Option::<Written>::deserialize(d)? {
        None if never => Ok(None),
        None => Err(D::Error::custom(format!("a duration is needed: {DURATION_SHAPE}"))),
        Some(Written::Number(n)) => {
            Err(D::Error::custom(format!("`{n}` has no unit: {DURATION_SHAPE}{or_never}")))
        }
        Some(Written::Text(text)) if never && text.trim().eq_ignore_ascii_case("never") => Ok(None),
        Some(Written::Text(text)) => {
            humantime::parse_duration(text.trim()).map(Some).map_err(|_| {
                D::Error::custom(format!("`{text}` is not a duration: {DURATION_SHAPE}{or_never}"))
            })
        }
    }
}

pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    written_duration(d, false).map(Option::unwrap_or_default)
}

pub(crate) fn never_or_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    written_duration(d, true)
}

/// What `build` says when no node was added: where the README's quick
/// start looks for settings (`fluster.toml` in the working directory, then
/// `FLUSTER__*` variables), what it finds there now, and how each place
/// writes a node. Never a variable's value (it may hold a password).
pub(crate) fn no_nodes() -> String {
    let cwd = std::env::current_dir().map(|dir| dir.display().to_string());
    let cwd = cwd.unwrap_or_else(|_| "the working directory".into());
    let file = match std::path::Path::new("fluster.toml").is_file() {
        true => "one is there, but no nodes came from it",
        false => "there is none",
    };
    let variable = match std::env::var_os("FLUSTER__NODES") {
        None => "is not set",
        Some(value) if value.to_string_lossy().trim().is_empty() => {
            "is set but empty, and an empty list replaces the file's `nodes`"
        }
        Some(_) => "is set, but no nodes came from it (was the environment read?)",
    };
    let one_underscore: String = one_underscore().iter().map(|told| format!("; {told}")).collect();
    format!(
        "no nodes were added. Settings read as the README's quick start reads them come from \
         `fluster.toml` in the working directory ({cwd}: {file}), then from `FLUSTER__*` \
         environment variables (`FLUSTER__NODES` {variable}{one_underscore}). Add nodes in the \
         file (`nodes = [\"redis://HOST:PORT\", \"redis://HOST:PORT\"]`), in the environment \
         (`FLUSTER__NODES=redis://HOST:PORT,redis://HOST:PORT`) or in code (`Builder::node(url)`)"
    )
}

/// Each setting's variable set with one underscore after `FLUSTER`
/// (`FLUSTER_NODES` for `FLUSTER__NODES`: set, but never read), told with
/// the one that is read; never its value (it may hold a password).
pub(crate) fn one_underscore() -> Vec<String> {
    let mut told: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| misses_an_underscore(name))
        .map(|name| {
            let read = name.replacen('_', "__", 1);
            format!("`{name}` is set, but settings are read from `{read}`, with two underscores")
        })
        .collect();
    told.sort();
    told
}

/// Whether the variable `name` is one of the quick start's, written with
/// one underscore after `FLUSTER` (`FLUSTER_NODES`, `FLUSTER_LEASE`,
/// `FLUSTER_TLS_CLIENT_CERTIFICATE__KEY`): a setting's name, in any case.
/// Other `FLUSTER_*` variables (an application's own) are not.
fn misses_an_underscore(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("FLUSTER_").filter(|rest| !rest.starts_with('_')) else {
        return false;
    };
    let setting = rest.split("__").next().unwrap_or_default();
    setting_names().iter().any(|known| known.eq_ignore_ascii_case(setting))
}

/// The names of the fields of [`Settings`](super::Settings), `nodes`
/// among them, as its derived `Deserialize` lists them: the one list, read
/// by a deserializer that only asks for it.
fn setting_names() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor, value::Error};
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("only a struct's fields are asked for"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = fields;
            Err(Error::custom("only a struct's fields are asked for"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = <super::Settings as serde::Deserialize>::deserialize(Fields(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("url", "urll"), 1);
        assert_eq!(distance("penalty_max_wiat", "penalty_max_wait"), 2);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(closest("urll", NODE_KEYS.iter().copied()), Some("url"));
        assert_eq!(closest("colour", NODE_KEYS.iter().copied()), None);
    }

    /// A setting's variable with one underscore after `FLUSTER` is told;
    /// the right spelling, and an application's own variables, are not.
    #[test]
    fn one_underscore_is_told_for_settings_only() {
        assert!(setting_names().contains(&"nodes"), "{:?}", setting_names());
        assert!(setting_names().contains(&"penalty_max_wait"), "{:?}", setting_names());
        for told in ["FLUSTER_NODES", "FLUSTER_PENALTY_MAX_WAIT", "FLUSTER_lease"] {
            assert!(misses_an_underscore(told), "{told}");
        }
        for untold in ["FLUSTER__NODES", "FLUSTER_CONFIG", "FLUSTER_", "FLUSTER", "NODES"] {
            assert!(!misses_an_underscore(untold), "{untold}");
        }
    }
}
