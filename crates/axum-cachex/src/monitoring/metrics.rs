//! Counters of the cache layers: summed per route, as JSON (`/stats`) and as
//! Prometheus text (`/metrics`).

use std::collections::BTreeMap;

use axum_cachex_core::Backend;
use prometheus_client::{
    encoding::prometheus_text,
    metrics::{counter::Counter, family::Family},
    registry::Registry as PromRegistry,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{ManagerStats, Registry, StatsSnapshot};

/// Counters read from [`StatsSnapshot`]s as a name → value map.
///
/// Going through the serialized form (rather than naming each field) means
/// a counter added to the layer shows up in `/stats` and `/metrics` without
/// a change here.
pub(crate) type Counters = BTreeMap<String, u64>;

fn counters_of(snapshot: &StatsSnapshot) -> Counters {
    match serde_json::to_value(snapshot) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .filter_map(|(name, value)| value.as_u64().map(|v| (name, v)))
            .collect(),
        _ => Counters::new(),
    }
}

fn add(into: &mut Counters, from: &Counters) {
    for (name, value) in from {
        let slot = into.entry(name.clone()).or_default();
        *slot = slot.saturating_add(*value);
    }
}

/// Hits over hits plus misses (the same rule as
/// [`StatsSnapshot::hit_ratio`]), rounded to 4 places.
fn hit_ratio(counters: &Counters) -> f64 {
    let hits = counters.get("hits").copied().unwrap_or(0);
    let misses = counters.get("misses").copied().unwrap_or(0);
    if hits + misses == 0 {
        return 0.0;
    }
    let ratio = hits as f64 / (hits + misses) as f64;
    (ratio * 10_000.0).round() / 10_000.0
}

/// The summed counters of the layers reporting one route name.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RouteStats {
    route: String,
    /// The `Cache-Control` value of the first of those layers.
    cache_control: String,
    /// How many live layers report this name (usually 1).
    layers: usize,
    hit_ratio: f64,
    stats: Counters,
}

/// Every live layer of `registry` accepted by `filter`, merged by route
/// name (Prometheus allows one series per label set, so `/stats` merges the
/// same way).
pub(crate) fn route_stats(registry: &Registry, filter: &dyn Fn(&str) -> bool) -> Vec<RouteStats> {
    let mut routes: BTreeMap<String, RouteStats> = BTreeMap::new();
    for report in registry.layer_reports() {
        if !filter(&report.route) {
            continue;
        }
        let counters = counters_of(&report.stats);
        match routes.get_mut(&report.route) {
            Some(route) => {
                route.layers += 1;
                add(&mut route.stats, &counters);
            }
            None => {
                routes.insert(
                    report.route.clone(),
                    RouteStats {
                        route: report.route,
                        cache_control: report.cache_control,
                        layers: 1,
                        hit_ratio: 0.0,
                        stats: counters,
                    },
                );
            }
        }
    }
    routes
        .into_values()
        .map(|mut r| {
            r.hit_ratio = hit_ratio(&r.stats);
            r
        })
        .collect()
}

/// The sum over routes.
pub(crate) fn totals(routes: &[RouteStats]) -> Counters {
    let mut total = counters_of(&StatsSnapshot::default());
    for route in routes {
        add(&mut total, &route.stats);
    }
    total
}

/// Totals plus their hit ratio, as embedded in the listing bodies.
pub(crate) fn totals_json(routes: &[RouteStats]) -> Map<String, Value> {
    let total = totals(routes);
    let ratio = hit_ratio(&total);
    let mut map: Map<String, Value> = total
        .into_iter()
        .map(|(name, value)| (name, Value::from(value)))
        .collect();
    map.insert("hit_ratio".to_owned(), Value::from(ratio));
    map
}

/// The body of `GET {prefix}/stats`.
#[derive(Debug, Serialize)]
pub(crate) struct StatsBody {
    backend: &'static str,
    /// Values the backend dropped to stay within its bound; `None` when it
    /// does not count them.
    evictions: Option<u64>,
    hit_ratio: f64,
    total: Counters,
    routes: Vec<RouteStats>,
    /// Counters of the session, OAuth state and application cache managers.
    managers: ManagerStats,
}

pub(crate) fn stats_body(
    backend: &dyn Backend,
    routes: Vec<RouteStats>,
    managers: ManagerStats,
) -> StatsBody {
    let total = totals(&routes);
    StatsBody {
        backend: backend.name(),
        evictions: backend.eviction_count(),
        hit_ratio: hit_ratio(&total),
        total,
        routes,
        managers,
    }
}

/// Prefix of every metric name.
const NAMESPACE: &str = "axum_cachex";

/// Counters named `bypass_<reason>` become one family with a `reason` label.
const BYPASS_PREFIX: &str = "bypass_";

fn help(counter: &str) -> String {
    let text = match counter {
        "hits" => "Requests answered from the store (200 or 304) without running the handler",
        "misses" => "Cacheable requests that ran the handler",
        "stores" => "Responses written to the backend",
        "not_modified" => "304 Not Modified answers",
        "stale_served" => "Stale entries served while a background refresh ran",
        "revalidations" => "Background refreshes started",
        "stale_if_error_served" => "Stale entries served because the handler failed",
        "handler_failures" => "Handler failures inside a stale-if-error window",
        "coalesced_waits" => "Requests that waited for another request's handler run",
        "not_storable" => "Responses the handler made uncacheable",
        "backend_errors" => "Backend calls that failed (timeouts excluded)",
        "backend_timeouts" => "Backend calls that timed out",
        "decode_failures" => "Stored entries that could not be decoded",
        other => return format!("Cache layer counter {other}"),
    };
    text.to_owned()
}

type Labels = Vec<(String, String)>;

/// The Prometheus text exposition (format 0.0.4) of the routes' counters
/// and the backend's evictions, built in a fresh registry at scrape time.
///
/// Metric names: `axum_cachex_<counter>_total{route="…"}` for each layer
/// counter, `axum_cachex_bypasses_total{route="…",reason="…"}` for the
/// `bypass_*` counters, and `axum_cachex_backend_evictions_total{backend="…"}`
/// when the backend counts evictions.
pub(crate) fn prometheus_text(
    routes: &[RouteStats],
    managers: ManagerStats,
    backend: &dyn Backend,
) -> Result<String, std::fmt::Error> {
    let mut registry = PromRegistry::with_prefix(NAMESPACE);
    // Every counter name any route reports, plus the layer's own list so
    // that families exist (with no series) before the first layer does.
    let mut names: Vec<String> = counters_of(&StatsSnapshot::default()).into_keys().collect();
    for route in routes {
        names.extend(route.stats.keys().cloned());
    }
    names.sort();
    names.dedup();

    let bypasses: Family<Labels, Counter> = Family::default();
    for name in &names {
        if let Some(reason) = name.strip_prefix(BYPASS_PREFIX) {
            for route in routes {
                let value = route.stats.get(name).copied().unwrap_or(0);
                bypasses
                    .get_or_create(&vec![
                        ("route".to_owned(), route.route.clone()),
                        ("reason".to_owned(), reason.to_owned()),
                    ])
                    .inc_by(value);
            }
            continue;
        }
        let family: Family<Labels, Counter> = Family::default();
        for route in routes {
            let value = route.stats.get(name).copied().unwrap_or(0);
            family
                .get_or_create(&vec![("route".to_owned(), route.route.clone())])
                .inc_by(value);
        }
        registry.register(name.as_str(), help(name), family);
    }
    registry.register(
        "bypasses",
        "Requests that bypassed the cache, by reason (method, no_store, authorization, too_large)",
        bypasses,
    );
    if let Some(evictions) = backend.eviction_count() {
        let family: Family<Labels, Counter> = Family::default();
        family
            .get_or_create(&vec![("backend".to_owned(), backend.name().to_owned())])
            .inc_by(evictions);
        registry.register(
            "backend_evictions",
            "Values the backend dropped to stay within its size bound",
            family,
        );
    }
    // The managers' counters: one family, labelled by manager and event
    // (`sessions_created` → manager="sessions", event="created").
    let manager_events: Family<Labels, Counter> = Family::default();
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(managers) {
        for (name, value) in fields {
            let (manager, event) = split_manager_counter(&name);
            manager_events
                .get_or_create(&vec![
                    ("manager".to_owned(), manager.to_owned()),
                    ("event".to_owned(), event.to_owned()),
                ])
                .inc_by(value.as_u64().unwrap_or(0));
        }
    }
    registry.register(
        "manager_events",
        "Events of the session, OAuth state and application cache managers",
        manager_events,
    );
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// `app_cache_hits` → (`app_cache`, `hits`), `states_created` → (`states`,
/// `created`).
fn split_manager_counter(name: &str) -> (&str, &str) {
    for manager in ["app_cache", "states", "sessions"] {
        if let Some(event) = name.strip_prefix(manager).and_then(|r| r.strip_prefix('_')) {
            return (manager, event);
        }
    }
    ("other", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_come_from_the_snapshot_fields() {
        let counters = counters_of(&StatsSnapshot::default());
        for name in [
            "hits",
            "misses",
            "stores",
            "bypass_method",
            "decode_failures",
        ] {
            assert_eq!(counters.get(name), Some(&0), "{name}");
        }
    }

    #[test]
    fn ratio() {
        let mut c = Counters::new();
        assert_eq!(hit_ratio(&c), 0.0);
        c.insert("hits".into(), 2);
        c.insert("misses".into(), 1);
        assert_eq!(hit_ratio(&c), 0.6667);
    }
}
