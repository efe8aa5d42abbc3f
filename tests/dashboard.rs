//! The Grafana dashboard in `contrib/` is valid JSON, charts every metric
//! the pool records (`fluster::metrics::ALL`, which `tests/metrics.rs` holds
//! to what a recorder sees), and queries no metric the pool does not record.

use fluster::metrics::ALL;
use serde_json::Value;

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_charts_exactly_the_pools_metrics() {
    let text = include_str!("../contrib/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(text).expect("dashboard is valid JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(!queries.is_empty());

    let known = ALL;
    let mut used = Vec::new();
    for query in &queries {
        for word in query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(name) = word.strip_prefix("fluster_").map(|_| word) {
                let base = name.strip_suffix("_bucket").unwrap_or(name);
                assert!(known.contains(&base), "`{query}` uses unknown metric {name}");
                used.push(base);
            }
        }
    }
    for &metric in known {
        assert!(used.contains(&metric), "{metric} is not charted");
    }
}
