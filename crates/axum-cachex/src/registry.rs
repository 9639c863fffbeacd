//! [`Registry`]: what a monitoring view watches, as a handle passed to the
//! parts that report to it.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError, Weak},
};

use crate::{
    StatsSnapshot,
    cache::shared::Shared,
    manager_stats::{ManagerCounters, ManagerCounting, ManagerStats},
};

/// A set of cache layers and managers reported together, e.g. by one
/// `Monitoring` view (feature `monitoring`).
///
/// Nothing is registered behind your back: a [`CacheLayer`](crate::CacheLayer)
/// joins a registry when its builder is given one
/// ([`CacheLayerBuilder::registry`](crate::CacheLayerBuilder::registry)), and
/// so do the managers ([`StateManagerBuilder::registry`](crate::state::StateManagerBuilder::registry),
/// [`CacheManagerBuilder::registry`](crate::app_cache::CacheManagerBuilder::registry),
/// and `SessionManager::with_registry` with the `session` feature). Two
/// applications, or two tests, in one process each use their own registry and
/// never see each other's counters. There is no process-wide registry.
///
/// Cloning is cheap: clones are handles to the same registry.
///
/// ```
/// use std::time::Duration;
/// use axum_cachex::{CacheLayer, Registry};
///
/// let registry = Registry::new();
/// let layer = CacheLayer::builder()
///     .ttl(Duration::from_secs(60))
///     .name("products")
///     .registry(&registry)
///     .build()?;
/// let reports = registry.layer_reports();
/// assert_eq!(reports.len(), 1);
/// assert_eq!(reports[0].route, "products");
/// assert!(Registry::new().layer_reports().is_empty(), "another registry sees nothing");
/// # drop(layer);
/// # Ok::<(), axum_cachex::CacheLayerConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The registered layers; a dropped layer leaves the list.
    layers: Mutex<Vec<Weak<Shared>>>,
    /// The registered managers' counters (one set for all of them).
    managers: Arc<ManagerCounters>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("layers", &self.layer_reports().len())
            .field("managers", &self.manager_stats())
            .finish()
    }
}

/// What one live [`CacheLayer`](crate::CacheLayer) reports.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct LayerReport {
    /// The layer's name: set with
    /// [`CacheLayerBuilder::name`](crate::CacheLayerBuilder::name), else
    /// the route it first served (axum's `MatchedPath`), else `unnamed`.
    pub route: String,
    /// The `Cache-Control` value it emits.
    pub cache_control: String,
    /// Its counters.
    pub stats: StatsSnapshot,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn register_layer(&self, shared: &Arc<Shared>) {
        let mut layers = self
            .inner
            .layers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        layers.retain(|w| w.strong_count() > 0);
        layers.push(Arc::downgrade(shared));
    }

    /// The backend of the first registered layer still alive: what a
    /// monitoring view of this registry lists by default.
    #[cfg(feature = "monitoring")]
    pub(crate) fn layer_backend(&self) -> Option<Arc<dyn axum_cachex_core::Backend>> {
        let layers = self
            .inner
            .layers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        layers
            .iter()
            .find_map(Weak::upgrade)
            .map(|shared| shared.options.backend.resolve())
    }

    /// Where a manager given this registry counts.
    pub(crate) fn manager_counting(&self) -> ManagerCounting {
        ManagerCounting::new(Some(Arc::clone(&self.inner.managers)))
    }

    /// Reports of the registered cache layers still alive, sorted by route.
    pub fn layer_reports(&self) -> Vec<LayerReport> {
        let layers = self
            .inner
            .layers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut reports: Vec<LayerReport> = layers
            .iter()
            .filter_map(Weak::upgrade)
            .map(|shared| LayerReport {
                route: shared.route_label(),
                cache_control: shared.cache_control.to_str().unwrap_or("").to_owned(),
                stats: shared.stats.snapshot(),
            })
            .collect();
        drop(layers);
        reports.sort_by(|a, b| a.route.cmp(&b.route));
        reports
    }

    /// The counters of the registered managers, summed.
    pub fn manager_stats(&self) -> ManagerStats {
        self.inner.managers.snapshot()
    }
}
