//! `fluster::Config` loaded through the `config` crate from TOML and from
//! environment variables, and turned into a pool in one call.

mod support;

use std::time::Duration;

use config::{Environment, File, FileFormat};
use fluster::{Config, Error, Failover, NodeConfig, ShardedPool};
use redis::AsyncCommands;
use support::process::{self, Process};
use support::start_servers;

fn from_toml(text: &str) -> Result<Config, config::ConfigError> {
    config::Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()?
        .try_deserialize()
}

/// A `Config` from environment variables set up as the README shows.
/// `config`'s Environment source reads from a map here instead of the
/// process environment, so parallel tests cannot see each other's values.
fn from_env(env: std::collections::HashMap<String, String>) -> Config {
    try_from_env(env).unwrap()
}

fn try_from_env(env: std::collections::HashMap<String, String>) -> Result<Config, String> {
    config::Config::builder()
        .add_source(
            Environment::with_prefix("FLUSTER")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("nodes")
                .try_parsing(true)
                .source(Some(env)),
        )
        .build()
        .map_err(|e| e.to_string())?
        .try_deserialize()
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn toml_file_builds_a_pool() {
    let servers = start_servers(3);
    let text = format!(
        r#"
        nodes = [
            "{}",
            {{ name = "cache-b", url = "{}", weight = 2.0 }},
            {{ name = "gutter", url = "{}", gutter = true }},
        ]
        penalty_min_wait = "250ms"
        penalty_max_wait = "1m 30s"
        penalty_multiplier = 2.0
        response_timeout = "300ms"
        max_connections = 4
        min_idle = 1
        failover = "fail_fast"
        max_boxed_fraction = 0.5
        "#,
        servers[0].url(),
        servers[1].url(),
        servers[2].url()
    );
    let config = from_toml(&text).unwrap();
    assert_eq!(config.settings.penalty_min_wait, Duration::from_millis(250));
    assert_eq!(config.settings.penalty_max_wait, Duration::from_secs(90));
    assert_eq!(config.nodes[0], NodeConfig::Url(servers[0].url()));
    assert_eq!(config.settings.failover, Failover::FailFast);
    let pool = config.build().await.unwrap();
    let status = pool.status();
    assert_eq!(status[0].name, servers[0].name());
    assert_eq!(status[1].name, "cache-b");
    assert_eq!(status[1].weight, 2.0);
    assert_eq!((status[2].name.as_str(), status[2].gutter), ("gutter", true));
    assert!(!status[0].gutter && !status[1].gutter);
    assert!(status.iter().all(|s| s.up));
    let _conn = pool.get("k").await.unwrap();
}

#[tokio::test]
async fn environment_variables_build_a_pool() {
    let servers = start_servers(2);
    let env: std::collections::HashMap<String, String> = [
        ("FLUSTER__NODES".to_owned(), format!("{},{}", servers[0].url(), servers[1].url())),
        ("FLUSTER__PENALTY_MAX_WAIT".to_owned(), "5s".to_owned()),
        ("FLUSTER__TIMEOUTS_BEFORE_PENALTY".to_owned(), "2".to_owned()),
    ]
    .into();
    let config = from_env(env);
    assert_eq!(config.nodes.len(), 2);
    assert_eq!(config.settings.penalty_max_wait, Duration::from_secs(5));
    assert_eq!(config.settings.timeouts_before_penalty, 2);
    let pool = config.build().await.unwrap();
    assert_eq!(pool.status().iter().filter(|s| s.up).count(), 2);
}

#[tokio::test]
async fn invalid_values_name_their_field() {
    let parse_error = |text: &str| from_toml(text).unwrap_err().to_string();
    let err = parse_error(
        r#"nodes = ["redis://127.0.0.1:1"]
penalty_min_wait = "soon""#,
    );
    assert!(err.contains("penalty_min_wait"), "{err}");
    let err = parse_error(
        r#"nodes = ["redis://127.0.0.1:1"]
penalty_maxwait = "1s""#,
    );
    assert!(err.contains("penalty_maxwait"), "{err}");
    let err = parse_error(
        r#"nodes = ["redis://127.0.0.1:1"]
max_connections = -1"#,
    );
    assert!(err.contains("max_connections"), "{err}");

    // The variant's own spelling is read too; anything else names both.
    let config = from_toml("nodes = [\"redis://127.0.0.1:1\"]\nfailover = \"FailFast\"").unwrap();
    assert_eq!(config.settings.failover, Failover::FailFast);
    let err = parse_error("nodes = [\"redis://127.0.0.1:1\"]\nfailover = \"fail-fast\"");
    assert!(err.contains("`fail-fast`: expected \"reroute\" or \"fail_fast\""), "{err}");
    assert!(err.contains("failover"), "{err}");

    // Values that parse but make no sense are caught by the builder.
    let config = from_toml(
        r#"nodes = ["redis://127.0.0.1:1"]
penalty_multiplier = 0.5"#,
    )
    .unwrap();
    match config.build().await {
        Err(Error::Config { setting, .. }) => assert_eq!(setting, "penalty_multiplier"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    for (fleet, problem) in [("", "must not be empty"), ("a b", "must not contain spaces")] {
        let text = format!("nodes = [\"redis://127.0.0.1:1\"]\nfleet = {fleet:?}");
        match from_toml(&text).unwrap().build().await {
            Err(e @ Error::Config { .. }) => {
                assert!(e.to_string().contains(problem), "{e}");
                assert!(matches!(e, Error::Config { setting, .. } if setting == "fleet"));
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
    let config = from_toml(r#"nodes = [{ url = "redis://127.0.0.1:1", weight = -1.0 }]"#).unwrap();
    match config.build().await {
        Err(Error::Config { setting, .. }) => assert_eq!(setting, "weight of node `127.0.0.1:1`"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// The settings every test below sets, each away from its default.
fn every_setting() -> fluster::Settings {
    let mut s = fluster::Settings::default();
    s.penalty_min_wait = Duration::from_millis(150);
    s.penalty_max_wait = Duration::from_secs(20);
    s.penalty_multiplier = 2.5;
    s.penalty_jitter = 0.1;
    s.penalty_memory = Duration::from_secs(90);
    s.warmup = Duration::from_secs(4);
    s.timeouts_before_penalty = 5;
    s.connect_timeout = Duration::from_millis(700);
    s.response_timeout = Duration::from_millis(300);
    s.checkout_timeout = Duration::from_secs(2);
    s.probe_timeout = Duration::from_millis(800);
    s.max_connections = 7;
    s.min_idle = Some(2);
    s.idle_timeout = Some(Duration::from_secs(120));
    s.max_lifetime = None;
    s.test_on_checkout = true;
    s.failover = Failover::FailFast;
    s.max_boxed_fraction = 0.5;
    s.require_healthy = 1;
    s.probe_at_build = false;
    s.stand_in_ttl = Some(Duration::from_secs(30));
    s.invalidate_on_return = true;
    s.near_cache = 10_000;
    s.heartbeat = Duration::from_secs(5);
    s.fleet = Some("orders-cache".into());
    s.lease = Duration::from_secs(5);
    #[cfg(feature = "tls")]
    {
        s.tls_root_certificates = Some("-----BEGIN CERTIFICATE-----\nroots\n".into());
        s.tls_client_certificate =
            Some(fluster::TlsIdentity { cert: "chain".into(), key: "private".into() });
    }
    s
}

/// Every field of `Settings` can be set from a file: the builder's list and
/// the file's are one list.
#[test]
fn every_setting_is_read_from_toml() {
    let mut text = String::from(
        r#"nodes = ["redis://127.0.0.1:1"]
penalty_min_wait = "150ms"
penalty_max_wait = "20s"
penalty_multiplier = 2.5
penalty_jitter = 0.1
penalty_memory = "1m 30s"
warmup = "4s"
timeouts_before_penalty = 5
connect_timeout = "700ms"
response_timeout = "300ms"
checkout_timeout = "2s"
probe_timeout = "800ms"
max_connections = 7
min_idle = 2
idle_timeout = "2m"
max_lifetime = "never"
test_on_checkout = true
failover = "fail_fast"
max_boxed_fraction = 0.5
require_healthy = 1
probe_at_build = false
stand_in_ttl = "30s"
invalidate_on_return = true
near_cache = 10000
heartbeat = "5s"
fleet = "orders-cache"
lease = "5s"
"#,
    );
    if cfg!(feature = "tls") {
        text += "tls_root_certificates = \"-----BEGIN CERTIFICATE-----\\nroots\\n\"\n";
        text += "tls_client_certificate = { cert = \"chain\", key = \"private\" }\n";
    }
    let config = from_toml(&text).unwrap();
    assert_eq!(config.settings, every_setting());
    assert_ne!(config.settings, fluster::Settings::default());
    assert!(!format!("{config:?}").contains("private"), "the key shows in Debug");
}

/// The same from environment variables, the way the README sets up
/// `config::Environment`.
#[test]
fn every_setting_is_read_from_the_environment() {
    let mut env: Vec<(&str, &str)> = vec![
        ("FLUSTER__NODES", "redis://127.0.0.1:1,redis://127.0.0.1:2"),
        ("FLUSTER__PENALTY_MIN_WAIT", "150ms"),
        ("FLUSTER__PENALTY_MAX_WAIT", "20s"),
        ("FLUSTER__PENALTY_MULTIPLIER", "2.5"),
        ("FLUSTER__PENALTY_JITTER", "0.1"),
        ("FLUSTER__PENALTY_MEMORY", "90s"),
        ("FLUSTER__WARMUP", "4s"),
        ("FLUSTER__TIMEOUTS_BEFORE_PENALTY", "5"),
        ("FLUSTER__CONNECT_TIMEOUT", "700ms"),
        ("FLUSTER__RESPONSE_TIMEOUT", "300ms"),
        ("FLUSTER__CHECKOUT_TIMEOUT", "2s"),
        ("FLUSTER__PROBE_TIMEOUT", "800ms"),
        ("FLUSTER__MAX_CONNECTIONS", "7"),
        ("FLUSTER__MIN_IDLE", "2"),
        ("FLUSTER__IDLE_TIMEOUT", "2m"),
        ("FLUSTER__MAX_LIFETIME", "never"),
        ("FLUSTER__TEST_ON_CHECKOUT", "true"),
        ("FLUSTER__FAILOVER", "fail_fast"),
        ("FLUSTER__MAX_BOXED_FRACTION", "0.5"),
        ("FLUSTER__REQUIRE_HEALTHY", "1"),
        ("FLUSTER__PROBE_AT_BUILD", "false"),
        ("FLUSTER__STAND_IN_TTL", "30s"),
        ("FLUSTER__INVALIDATE_ON_RETURN", "true"),
        ("FLUSTER__NEAR_CACHE", "10000"),
        ("FLUSTER__HEARTBEAT", "5s"),
        ("FLUSTER__FLEET", "orders-cache"),
        ("FLUSTER__LEASE", "5s"),
    ];
    if cfg!(feature = "tls") {
        env.push(("FLUSTER__TLS_ROOT_CERTIFICATES", "-----BEGIN CERTIFICATE-----\nroots\n"));
        env.push(("FLUSTER__TLS_CLIENT_CERTIFICATE__CERT", "chain"));
        env.push(("FLUSTER__TLS_CLIENT_CERTIFICATE__KEY", "private"));
    }
    let env = env.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let config = from_env(env);
    assert_eq!(config.nodes.len(), 2);
    assert_eq!(config.settings, every_setting());
}

/// A Sentinel shard is a node of a file too.
#[cfg(feature = "sentinel")]
#[test]
fn a_sentinel_shard_is_read_from_toml() {
    let config = from_toml(
        r#"nodes = [
    "redis://127.0.0.1:1",
    { name = "orders", sentinel = { master = "orders", sentinels = ["redis://127.0.0.1:26379"], password = "hidden" }, weight = 2.0 },
]"#,
    )
    .unwrap();
    let expected =
        fluster::SentinelShard::new("orders", ["redis://127.0.0.1:26379"]).password("hidden");
    assert!(matches!(
        &config.nodes[1],
        NodeConfig::Sentinel { name, sentinel, weight: Some(2.0) } if name == "orders" && *sentinel == expected
    ));
    assert!(!format!("{config:?}").contains("hidden"), "the password shows in Debug");
}

/// Each message says what is wrong, shows the text, and how to write it.
#[tokio::test]
async fn messages_show_the_text_and_how_to_write_it() {
    let env = |pairs: &[(&str, &str)]| {
        let mut env: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.entry("FLUSTER__NODES".into()).or_insert_with(|| "redis://127.0.0.1:1".into());
        try_from_env(env)
    };
    // A list with spaces after its commas builds.
    let spaced = env(&[("FLUSTER__NODES", "redis://127.0.0.1:7001, redis://127.0.0.1:7002")]);
    let pool = spaced.unwrap().into_builder().probe_at_build(false).build().await.unwrap();
    assert_eq!(pool.nodes(), ["127.0.0.1:7001", "127.0.0.1:7002"]);
    // A misspelt variable is named as the variable.
    let err = env(&[("FLUSTER__PENALTY_MAX_WIAT", "1s")]).unwrap_err();
    assert!(err.contains("unknown setting `penalty_max_wiat`"), "{err}");
    assert!(err.contains("the variable `FLUSTER__PENALTY_MAX_WIAT`"), "{err}");
    // A bad duration shows its text and an example; "never" only where it
    // is accepted.
    let err = env(&[("FLUSTER__PENALTY_MAX_WAIT", "10 secs please")]).unwrap_err();
    assert!(err.contains("`10 secs please` is not a duration"), "{err}");
    assert!(err.contains(r#"like "250ms", "30s" or "1m 30s""#), "{err}");
    assert!(!err.contains("never"), "{err}");
    let err = env(&[("FLUSTER__IDLE_TIMEOUT", "sometimes")]).unwrap_err();
    assert!(err.contains(r#"or "never" for none"#), "{err}");
    // A bare number has no unit.
    let err = env(&[("FLUSTER__WARMUP", "30")]).unwrap_err();
    assert!(err.contains("`30` has no unit"), "{err}");
    let err = from_toml("nodes = []\nwarmup = 5").unwrap_err().to_string();
    assert!(err.contains("`5` has no unit") && err.contains("warmup"), "{err}");
}

/// The README's sample file, as it is written there: its `sentinel` node
/// is for feature `sentinel`.
const README_SAMPLE: &str = r#"
nodes = [
    "redis://127.0.0.1:7001",
    { name = "cache-b", url = "redis://127.0.0.1:7002/2", weight = 2.0 },
    # feature `sentinel`:
    { name = "orders", sentinel = { master = "orders", sentinels = ["redis://127.0.0.1:26379"] } },
]
penalty_max_wait = "10s"
warmup = "5s"
idle_timeout = "5m"
require_healthy = 1
"#;

/// A file and the environment together: `FLUSTER__NODES` replaces the
/// file's nodes (the README says so), and other variables override the
/// file's settings one by one.
#[test]
fn the_environments_nodes_replace_the_files() {
    let file = r#"
        nodes = ["redis://127.0.0.1:7001", { name = "b", url = "redis://127.0.0.1:7002" }]
        penalty_max_wait = "10s"
        warmup = "5s"
    "#;
    let env: std::collections::HashMap<String, String> = [
        ("FLUSTER__NODES".to_owned(), "redis://127.0.0.1:7003".to_owned()),
        ("FLUSTER__WARMUP".to_owned(), "1s".to_owned()),
    ]
    .into();
    let config: Config = config::Config::builder()
        .add_source(File::from_str(file, FileFormat::Toml))
        .add_source(
            Environment::with_prefix("FLUSTER")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("nodes")
                .try_parsing(true)
                .source(Some(env)),
        )
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    assert_eq!(config.nodes, [NodeConfig::Url("redis://127.0.0.1:7003".into())]);
    assert_eq!(config.settings.warmup, Duration::from_secs(1));
    assert_eq!(config.settings.penalty_max_wait, Duration::from_secs(10));
}

/// The README's sample with every feature it names builds its config.
#[cfg(feature = "sentinel")]
#[test]
fn the_readme_sample_is_read_with_its_features() {
    let config = from_toml(README_SAMPLE).unwrap();
    assert!(matches!(&config.nodes[2], NodeConfig::Sentinel { name, .. } if name == "orders"));
}

/// Without feature `sentinel`, the README's sample names the node and the
/// feature it needs (it said "data did not match any variant of untagged
/// enum NodeConfig for key `nodes[2]`").
#[cfg(not(feature = "sentinel"))]
#[test]
fn a_sentinel_node_without_the_feature_names_the_feature() {
    let err = from_toml(README_SAMPLE).unwrap_err().to_string();
    assert!(
        err.contains(
            "node `orders` is a Sentinel shard (its `sentinel` key): that needs fluster's \
             `sentinel` feature"
        ),
        "{err}"
    );
    assert!(err.contains("nodes[2]"), "{err}");
    assert!(!err.contains("untagged"), "{err}");
}

/// Without feature `tls`, a TLS setting names the feature, as a
/// `rediss://` URL does (it said "unknown setting").
#[cfg(not(feature = "tls"))]
#[test]
fn a_tls_setting_without_the_feature_names_the_feature() {
    let err = from_toml("nodes = []\ntls_root_certificates = \"-----BEGIN\"").unwrap_err();
    let err = err.to_string();
    assert!(err.contains("setting `tls_root_certificates` needs fluster's `tls` feature"), "{err}");
    assert!(!err.contains("unknown setting"), "{err}");
    let env =
        [("FLUSTER__NODES", "redis://127.0.0.1:1"), ("FLUSTER__TLS_CLIENT_CERTIFICATE__CERT", "c")];
    let err = try_from_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    let err = err.unwrap_err();
    assert!(
        err.contains("setting `tls_client_certificate` needs fluster's `tls` feature"),
        "{err}"
    );
}

/// A mistake inside a node's table is named: the key, the closest key a
/// node has, and the shape of a node (it said "data did not match any
/// variant of untagged enum NodeConfig").
#[test]
fn a_mistake_in_a_node_table_names_the_key() {
    let err = from_toml(
        r#"nodes = ["redis://127.0.0.1:1", { name = "b", urll = "redis://127.0.0.1:2" }]"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown key `urll` in a node table (did you mean `url`?)"), "{err}");
    assert!(err.contains("a table of `url` and optional `name`, `weight` and `gutter`"), "{err}");
    assert!(err.contains("nodes[1]") && !err.contains("untagged"), "{err}");
    let err = from_toml(r#"nodes = [{ name = "b", weight = 2.0 }]"#).unwrap_err().to_string();
    assert!(err.contains("node `b` has no `url`"), "{err}");
    let both = r#"nodes = [{ name = "b", url = "redis://127.0.0.1:2", sentinel = { master = "m", sentinels = [] } }]"#;
    let err = from_toml(both).unwrap_err().to_string();
    assert!(err.contains("node `b` has both `url` and `sentinel`"), "{err}");
    let err = from_toml("nodes = [7]").unwrap_err().to_string();
    assert!(err.contains("invalid type: integer `7`, expected a node (a node is a URL, "), "{err}");
    // A table with every key right still reads.
    let config = from_toml(r#"nodes = [{ url = "redis://127.0.0.1:2", gutter = true }]"#).unwrap();
    assert!(matches!(&config.nodes[0], NodeConfig::Full { gutter: true, name: None, .. }));
}

/// An unknown setting offers the closest known one, by its key and its
/// variable; a name near none offers nothing.
#[test]
fn an_unknown_setting_offers_the_closest() {
    let err = from_toml("nodes = []\npenalty_max_wiat = \"1s\"").unwrap_err().to_string();
    assert!(
        err.contains(
            "unknown setting `penalty_max_wiat` (from a file, that key; from the environment, the \
             variable `FLUSTER__PENALTY_MAX_WIAT`): did you mean `penalty_max_wait` \
             (`FLUSTER__PENALTY_MAX_WAIT`)?"
        ),
        "{err}"
    );
    let err = from_toml("node = [\"redis://127.0.0.1:1\"]").unwrap_err().to_string();
    assert!(err.contains("did you mean `nodes` (`FLUSTER__NODES`)?"), "{err}");
    let err = from_toml("nodes = []\ncolour = 1").unwrap_err().to_string();
    assert!(err.contains("unknown setting `colour`") && !err.contains("did you mean"), "{err}");
}

/// A pool with no nodes says where the quick start looked for them (the
/// file in the working directory, and whether it is there; the variable,
/// and whether it is set) and how each place writes a node, without
/// suggesting a port.
#[tokio::test]
async fn no_nodes_says_where_they_were_looked_for_and_how_to_add_them() {
    let err = from_toml("warmup = \"1s\"").unwrap().build().await.unwrap_err().to_string();
    let cwd = std::env::current_dir().unwrap();
    assert!(!cwd.join("fluster.toml").exists(), "the test runs where no fluster.toml is");
    let variable = match std::env::var_os("FLUSTER__NODES") {
        None => "`FLUSTER__NODES` is not set",
        Some(_) => "`FLUSTER__NODES` is",
    };
    for words in [
        "invalid nodes: no nodes were added",
        &format!("`fluster.toml` in the working directory ({}: there is none)", cwd.display()),
        variable,
        "`nodes = [\"redis://HOST:PORT\", \"redis://HOST:PORT\"]`",
        "`FLUSTER__NODES=redis://HOST:PORT,redis://HOST:PORT`",
        "`Builder::node(url)`",
    ] {
        assert!(err.contains(words), "`{words}` missing: {err}");
    }
    assert!(!err.contains("6379"), "{err}");
}

/// In a copy of this binary ([`Process`]): the README's quick start's
/// reading of `fluster.toml` and the process environment, then `build`;
/// logs the error.
#[tokio::test]
#[ignore = "run in a process of its own by the tests below"]
async fn quick_start_in_a_process() {
    let Some(line) = process::log() else { return };
    let (logs, _guard) = support::logs::capture();
    let built = async {
        let config: Config = config::Config::builder()
            .add_source(File::with_name("fluster.toml").required(false))
            .add_source(
                Environment::with_prefix("FLUSTER")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("nodes")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        config.build().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let said = built.await.map_or_else(|e| e.to_string(), |()| "built".into());
    line(logs.text());
    line(said);
}

/// What the quick start's `build` says in a process with these variables.
fn quick_start_says(vars: &[(&str, &str)]) -> String {
    assert!(std::env::var_os("FLUSTER__NODES").is_none(), "run where FLUSTER__NODES is not set");
    let vars: Vec<(&str, String)> = vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut copy = Process::start("quick_start_in_a_process", &vars);
    assert!(support::eventually_blocking(Duration::from_secs(60), || copy.ended()), "it hangs");
    copy.lines().concat()
}

/// `FLUSTER_NODES` (one underscore) is never read: the no-nodes message
/// says it is set and which variable is read, for every setting's name,
/// without its value; an application's own `FLUSTER_*` variable is left
/// out.
#[test]
fn a_setting_with_one_underscore_is_told_with_its_right_spelling() {
    let err = quick_start_says(&[
        ("FLUSTER_NODES", "redis://:hunter2@127.0.0.1:7001"),
        ("FLUSTER_PENALTY_MAX_WAIT", "10s"),
        ("FLUSTER_CONFIG", "hunter3.toml"),
    ]);
    for words in [
        "no nodes were added",
        "`FLUSTER__NODES` is not set; `FLUSTER_NODES` is set, but settings are read from \
         `FLUSTER__NODES`, with two underscores",
        "`FLUSTER_PENALTY_MAX_WAIT` is set, but settings are read from \
         `FLUSTER__PENALTY_MAX_WAIT`, with two underscores",
    ] {
        assert!(err.contains(words), "`{words}` missing: {err}");
    }
    for never in ["hunter2", "hunter3", "FLUSTER_CONFIG", "FLUSTER_PROCESS_LOG", "7001"] {
        assert!(!err.contains(never), "`{never}` shows: {err}");
    }
}

/// Beside nodes that are read, a setting's variable with one underscore
/// is still never read: a warning names it and the variable that is,
/// never its value.
#[test]
fn a_setting_with_one_underscore_beside_nodes_is_warned() {
    let server = support::RedisServer::start();
    let said = quick_start_says(&[
        ("FLUSTER__NODES", &server.url()),
        ("FLUSTER_LEASE", "hunter2s"),
        ("FLUSTER_CONFIG", "hunter3.toml"),
    ]);
    assert!(said.contains("built"), "{said}");
    let told = "`FLUSTER_LEASE` is set, but settings are read from `FLUSTER__LEASE`, with two \
        underscores: it is ignored";
    assert!(said.contains("WARN") && said.contains(told), "{said}");
    for never in ["hunter2", "hunter3", "FLUSTER_CONFIG"] {
        assert!(!said.contains(never), "`{never}` shows: {said}");
    }
}

/// An empty `FLUSTER__NODES` (a template's empty value) is no nodes: the
/// message says the variable is set but empty, not that a URL has no
/// scheme.
#[test]
fn an_empty_nodes_variable_is_told_as_empty() {
    assert!(from_env([("FLUSTER__NODES".into(), String::new())].into()).nodes.is_empty());
    let err = quick_start_says(&[("FLUSTER__NODES", "")]);
    assert!(err.contains("no nodes were added"), "{err}");
    assert!(err.contains("`FLUSTER__NODES` is set but empty"), "{err}");
    assert!(!err.contains("scheme"), "{err}");
}

/// The longest a duration setting may be.
const YEAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// What a pool built with a setting at one of its limits must do.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// `build` fails, naming this setting.
    Refused(&'static str),
    /// The pool serves a key, pooled and shared.
    Serves,
    /// It serves, fails over when the key's node is killed, and lets the
    /// node back in once it is restarted.
    Returns,
    /// It serves and fails over when the key's node is killed (its stay
    /// in the box is too long to see it back).
    FailsOver,
}

/// A setting at one of its limits: its name and value, how to set it, and
/// what the pool must do then.
type Limit = (&'static str, fn(&mut fluster::Settings), Then);

/// Each setting at its limits (0 and the type's largest, and the largest it
/// takes), with what the pool must do then.
fn limits() -> Vec<Limit> {
    use Then::*;
    const ZERO: Duration = Duration::ZERO;
    const MAX: Duration = Duration::MAX;
    macro_rules! set {
        ($($field:ident = $value:expr),+ => $then:expr) => {(
            concat!($(stringify!($field), " = ", stringify!($value), " "),+),
            (|s: &mut fluster::Settings| { $(s.$field = $value;)+ }) as fn(&mut _),
            $then,
        )};
    }
    macro_rules! refused {
        ($field:ident = $value:expr) => { set!($field = $value => Refused(stringify!($field))) };
    }
    vec![
        refused!(penalty_min_wait = ZERO),
        refused!(penalty_min_wait = MAX),
        refused!(penalty_max_wait = MAX),
        set!(penalty_min_wait = YEAR, penalty_max_wait = YEAR => FailsOver),
        refused!(penalty_multiplier = 0.0),
        set!(penalty_multiplier = f64::MAX => Returns),
        refused!(penalty_multiplier = f64::INFINITY),
        set!(penalty_jitter = 0.0 => Returns),
        set!(penalty_jitter = 1.0 => Returns),
        refused!(penalty_jitter = f64::MAX),
        set!(penalty_memory = ZERO => Returns),
        refused!(penalty_memory = MAX),
        set!(penalty_memory = YEAR => Returns),
        refused!(warmup = MAX),
        set!(warmup = YEAR => Returns),
        refused!(timeouts_before_penalty = 0),
        set!(timeouts_before_penalty = u32::MAX => Returns),
        refused!(connect_timeout = ZERO),
        refused!(connect_timeout = MAX),
        set!(connect_timeout = YEAR => Returns),
        refused!(response_timeout = ZERO),
        refused!(response_timeout = MAX),
        set!(response_timeout = YEAR => Returns),
        refused!(checkout_timeout = ZERO),
        refused!(checkout_timeout = MAX),
        set!(checkout_timeout = YEAR => Returns),
        refused!(probe_timeout = ZERO),
        refused!(probe_timeout = MAX),
        set!(probe_timeout = YEAR => Returns),
        refused!(max_connections = 0),
        set!(max_connections = 10_000 => Serves),
        set!(min_idle = Some(0) => Serves),
        refused!(min_idle = Some(u32::MAX)),
        refused!(idle_timeout = Some(ZERO)),
        refused!(idle_timeout = Some(MAX)),
        set!(idle_timeout = Some(YEAR) => Serves),
        refused!(max_lifetime = Some(ZERO)),
        refused!(max_lifetime = Some(MAX)),
        set!(max_lifetime = Some(YEAR) => Serves),
        refused!(max_boxed_fraction = 0.0),
        refused!(max_boxed_fraction = f64::MAX),
        refused!(require_healthy = usize::MAX),
        refused!(stand_in_ttl = Some(ZERO)),
        refused!(stand_in_ttl = Some(MAX)),
        set!(stand_in_ttl = Some(YEAR) => Returns),
        refused!(lease = ZERO),
        refused!(lease = MAX),
        set!(lease = YEAR => Serves),
        refused!(near_cache = usize::MAX),
        set!(near_cache = 1_000_000 => Serves),
        set!(heartbeat = ZERO => Returns),
        refused!(heartbeat = MAX),
        set!(heartbeat = YEAR => Returns),
        // Last: on r2d2, unchecked, it aborts the process.
        refused!(max_connections = u32::MAX),
    ]
}

/// The settings each case starts from: short stays in the box.
fn base() -> fluster::Settings {
    let mut s = fluster::Settings::default();
    (s.penalty_min_wait, s.penalty_max_wait) =
        (Duration::from_millis(20), Duration::from_millis(50));
    s
}

/// Checks what building gave against `then`: the setting named, or a pool.
fn refused_as<P>(built: Result<P, Error>, then: Then) -> Option<P> {
    match (built, then) {
        (Err(Error::Config { setting, reason }), Then::Refused(name)) => {
            assert_eq!(setting, name, "{reason}");
            None
        }
        (Err(e), _) => panic!("expected a pool, got {e}"),
        (Ok(_), Then::Refused(name)) => panic!("built, expected `{name}` refused"),
        (Ok(pool), _) => Some(pool),
    }
}

/// What a panic said.
fn said(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = panic.downcast_ref::<&str>().map(|s| s.to_string());
    text.or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default()
}

/// Every setting at its limits, from the builder, in the async flavour:
/// `build` names the setting, or the pool serves (a write, a read, a
/// shared read, an `aside` miss), fails over from a killed node, and lets
/// it back in. Each case that fails is listed, with why.
#[tokio::test]
async fn every_setting_at_its_limits_is_refused_by_name_or_works() {
    use futures_util::FutureExt;
    let mut servers = start_servers(2);
    let mut failed = Vec::new();
    for (what, set, then) in limits() {
        let case = std::panic::AssertUnwindSafe(at_limit(set, then, &mut servers));
        if let Err(panic) = case.catch_unwind().await {
            failed.push(format!("{what}: {}", said(panic)));
        }
        if !servers[0].answers_ping() {
            servers[0].restart();
        }
    }
    assert!(failed.is_empty(), "{} cases failed:\n{}", failed.len(), failed.join("\n"));
}

async fn at_limit(
    set: fn(&mut fluster::Settings),
    then: Then,
    servers: &mut [support::RedisServer],
) {
    let mut settings = base();
    set(&mut settings);
    let builder = ShardedPool::builder().settings(settings);
    let built = builder.node(&servers[0].url()).node(&servers[1].url()).build().await;
    let Some(pool) = refused_as(built, then) else { return };
    let key = support::key_on(&pool, &servers[0].name(), "limits");
    let mut conn = pool.get(&key).await.unwrap();
    let _: () = conn.set(&key, 1).await.unwrap();
    drop(conn);
    let read: Option<i64> = pool.get_shared(&key).await.unwrap().get(&key).await.unwrap();
    assert_eq!(read, Some(1));
    let fill = || async { Ok::<_, std::io::Error>(7_i64) };
    let filled: i64 = pool.aside(format!("{key}:aside"), YEAR, fill).await.unwrap();
    assert_eq!(filled, 7);
    if then == Then::Serves {
        return;
    }
    servers[0].kill();
    // A command on a connection from before the kill fails and boxes the
    // node (or the heartbeat finds it); then the key moves.
    if let Ok(mut conn) = pool.get(&key).await {
        let _ = conn.set::<_, _, ()>(&key, 2).await;
    }
    let moved = || pool.node_for(&key).is_some_and(|n| n == servers[1].name());
    assert!(support::eventually(Duration::from_secs(5), moved).await, "not boxed");
    let mut conn = pool.get(&key).await.unwrap();
    assert_eq!(conn.node(), servers[1].name(), "no failover");
    let _: () = conn.set(&key, 3).await.unwrap();
    drop(conn);
    servers[0].restart();
    if then == Then::Returns {
        let back = support::eventually(Duration::from_secs(5), || pool.status()[0].up).await;
        assert!(back, "the node never returned: {:?}", pool.status()[0]);
    }
    pool.close();
}

/// The same in the sync flavour, whose r2d2 pools take the same settings
/// (and allocate a slot per connection).
#[cfg(feature = "r2d2")]
#[test]
fn every_setting_at_its_limits_is_refused_by_name_or_works_in_the_sync_flavour() {
    let mut servers = start_servers(2);
    let mut failed = Vec::new();
    for (what, set, then) in limits() {
        let case = std::panic::AssertUnwindSafe(|| at_limit_sync(set, then, &mut servers));
        if let Err(panic) = std::panic::catch_unwind(case) {
            failed.push(format!("{what}: {}", said(panic)));
        }
        if !servers[0].answers_ping() {
            servers[0].restart();
        }
    }
    assert!(failed.is_empty(), "{} cases failed:\n{}", failed.len(), failed.join("\n"));
}

#[cfg(feature = "r2d2")]
fn at_limit_sync(
    set: fn(&mut fluster::Settings),
    then: Then,
    servers: &mut [support::RedisServer],
) {
    use redis::Commands;
    let mut settings = base();
    set(&mut settings);
    let builder = fluster::sync::ShardedPool::builder().settings(settings);
    let built = builder.node(&servers[0].url()).node(&servers[1].url()).build();
    let Some(pool) = refused_as(built, then) else { return };
    let key = support::key_on(&pool, &servers[0].name(), "limits");
    let mut conn = pool.get(&key).unwrap();
    let _: () = conn.set(&key, 1).unwrap();
    assert_eq!(conn.get::<_, i64>(&key).unwrap(), 1);
    drop(conn);
    if then == Then::Serves {
        return;
    }
    servers[0].kill();
    if let Ok(mut conn) = pool.get(&key) {
        let _ = conn.set::<_, _, ()>(&key, 2);
    }
    let moved = || pool.node_for(&key).is_some_and(|n| n == servers[1].name());
    assert!(support::eventually_blocking(Duration::from_secs(5), moved), "not boxed");
    let mut conn = pool.get(&key).unwrap();
    assert_eq!(conn.node(), servers[1].name(), "no failover");
    let _: () = conn.set(&key, 3).unwrap();
    drop(conn);
    servers[0].restart();
    if then == Then::Returns {
        let back = support::eventually_blocking(Duration::from_secs(5), || pool.status()[0].up);
        assert!(back, "the node never returned: {:?}", pool.status()[0]);
    }
    pool.close();
}

/// Limits reached from a file or the environment are refused by name too.
#[tokio::test]
async fn limits_from_a_file_or_the_environment_are_refused_by_name() {
    let cases = [
        ("idle_timeout = \"0s\"", "idle_timeout"),
        ("heartbeat = \"10000000000000000000s\"", "heartbeat"),
        ("near_cache = 10000000000", "near_cache"),
        ("max_connections = 4294967295", "max_connections"),
        ("lease = \"400 days\"", "lease"),
    ];
    for (line, setting) in cases {
        let config = from_toml(&format!("nodes = [\"redis://127.0.0.1:1\"]\n{line}")).unwrap();
        match config.build().await {
            Err(Error::Config { setting: named, .. }) => assert_eq!(named, setting, "{line}"),
            other => panic!("{line}: expected `{setting}` refused, got {other:?}"),
        }
    }
    let env = [("FLUSTER__NODES", "redis://127.0.0.1:1"), ("FLUSTER__MAX_LIFETIME", "0s")];
    let config = from_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    match config.build().await {
        Err(Error::Config { setting, .. }) => assert_eq!(setting, "max_lifetime"),
        other => panic!("expected `max_lifetime` refused, got {other:?}"),
    }
    #[cfg(feature = "r2d2")]
    {
        let config = from_toml("nodes = [\"redis://127.0.0.1:1\"]\nidle_timeout = \"0s\"");
        let builder = fluster::sync::ShardedPool::builder().settings(config.unwrap().settings);
        match builder.node("redis://127.0.0.1:1").build() {
            Err(Error::Config { setting, .. }) => assert_eq!(setting, "idle_timeout"),
            other => panic!("expected `idle_timeout` refused, got {:?}", other.map(|_| ())),
        }
    }
}
