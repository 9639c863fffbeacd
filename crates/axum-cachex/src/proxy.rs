//! Runtime backend selection.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering::Relaxed},
};

use arc_swap::ArcSwap;
use axum_cachex_core::Backend;

use crate::backend::MemoryBackend;

/// A swappable handle to the backend in use, looked up on every request.
///
/// Clones share one slot: a backend set with [`set_backend`] after layers
/// were built is used by all of them from the next request on. Until one is
/// set, a [`MemoryBackend`] with default settings is used, so zero
/// configuration gives a working cache.
///
/// [`CacheLayer`](crate::CacheLayer)s that were not given a backend or a
/// proxy of their own use [`BackendProxy::global`]. That global proxy is the
/// one process-wide default of the crate, kept because the original's API
/// is built on it (`BackendProxy.set_backend(..)`, then `@cache` routes and
/// the `CacheBackend` dependency with no further wiring). The
/// [`CacheBackend`](crate::CacheBackend) extractor falls back to it outside
/// a layer only once it is in use: its backend was set with
/// [`set_backend`], or a layer was built on it.
///
/// ```
/// use std::sync::Arc;
/// use axum_cachex::{BackendProxy, backend::MemoryBackend};
///
/// let proxy = BackendProxy::global();
/// proxy.set_backend(Arc::new(MemoryBackend::builder().max_capacity(1 << 20).build()?));
/// assert_eq!(proxy.backend().name(), "memory");
/// # Ok::<(), axum_cachex::backend::MemoryBackendConfigError>(())
/// ```
///
/// [`set_backend`]: BackendProxy::set_backend
#[derive(Clone)]
pub struct BackendProxy {
    slot: Arc<Slot>,
}

struct Slot {
    backend: ArcSwap<Arc<dyn Backend>>,
    /// Set by `set_backend` and by building a layer on this proxy.
    in_use: AtomicBool,
}

impl std::fmt::Debug for BackendProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendProxy")
            .field("backend", &self.backend().name())
            .finish()
    }
}

impl Default for BackendProxy {
    fn default() -> Self {
        Self::new(Arc::new(MemoryBackend::new()))
    }
}

impl BackendProxy {
    /// A proxy (not the global one) starting with `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            slot: Arc::new(Slot {
                backend: ArcSwap::from_pointee(backend),
                in_use: AtomicBool::new(false),
            }),
        }
    }

    /// The process-wide proxy used by layers that were given no backend.
    /// Starts with a default [`MemoryBackend`].
    pub fn global() -> &'static BackendProxy {
        static GLOBAL: OnceLock<BackendProxy> = OnceLock::new();
        GLOBAL.get_or_init(BackendProxy::default)
    }

    /// Replaces the backend; requests already running keep the old one.
    pub fn set_backend(&self, backend: Arc<dyn Backend>) {
        self.slot.backend.store(Arc::new(backend));
        self.mark_in_use();
    }

    /// The backend in use now.
    pub fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.slot.backend.load())
    }

    /// Records that a layer uses this proxy, or that its backend was set.
    pub(crate) fn mark_in_use(&self) {
        self.slot.in_use.store(true, Relaxed);
    }

    /// Whether [`set_backend`](Self::set_backend) was called or a layer was
    /// built on this proxy.
    pub(crate) fn in_use(&self) -> bool {
        self.slot.in_use.load(Relaxed)
    }
}
