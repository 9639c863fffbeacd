//! The process-wide list of cache layers, read by the monitoring routes.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::{shared::Shared, stats::StatsSnapshot};

static LAYERS: OnceLock<Mutex<Vec<Weak<Shared>>>> = OnceLock::new();

fn layers() -> &'static Mutex<Vec<Weak<Shared>>> {
    LAYERS.get_or_init(|| Mutex::new(Vec::new()))
}

pub(crate) fn register(shared: &Arc<Shared>) {
    let mut list = layers().lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(shared));
}

/// What one live [`CacheLayer`](super::CacheLayer) reports.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct LayerReport {
    /// The layer's name: set with
    /// [`CacheLayerBuilder::name`](super::CacheLayerBuilder::name), else
    /// the route it first served (axum's `MatchedPath`), else `unnamed`.
    pub route: String,
    /// The `Cache-Control` value it emits.
    pub cache_control: String,
    /// Its counters.
    pub stats: StatsSnapshot,
}

/// Reports of every cache layer alive in the process, sorted by route.
pub fn layer_reports() -> Vec<LayerReport> {
    let list = layers().lock().unwrap_or_else(|p| p.into_inner());
    let mut reports: Vec<LayerReport> = list
        .iter()
        .filter_map(Weak::upgrade)
        .map(|shared| LayerReport {
            route: shared.route_label(),
            cache_control: shared.cache_control.to_str().unwrap_or("").to_owned(),
            stats: shared.stats.snapshot(),
        })
        .collect();
    reports.sort_by(|a, b| a.route.cmp(&b.route));
    reports
}
