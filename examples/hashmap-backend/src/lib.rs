//! A complete axum-cachex store over a `HashMap`, checked by the published
//! conformance suite (the test at the bottom): the six required operations
//! and the [`Listing`] ability, which lets the HTTP cache clear its entries
//! and invalidate by path. It depends on `axum-cachex-core` only; plug it in
//! with `CacheLayer::builder().backend(Arc::new(HashMapBackend::default()))`.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use axum_cachex_core::{Backend, BackendError, Listing, StoredValue};
use bytes::Bytes;

/// One stored value and when it stops being readable.
#[derive(Debug, Clone)]
struct Item {
    value: Bytes,
    expires_at: Option<Instant>,
}

/// An in-process store: a `HashMap` behind a mutex. Expired items are
/// dropped when they are next touched.
#[derive(Debug, Default)]
pub struct HashMapBackend {
    items: Mutex<HashMap<String, Item>>,
}

impl HashMapBackend {
    /// Every operation holds the lock for one map operation, never across an
    /// await, so a poisoned map is still consistent.
    fn items(&self) -> MutexGuard<'_, HashMap<String, Item>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live value of `key`, dropping it if it expired.
    fn live(items: &mut HashMap<String, Item>, key: &str) -> Option<Bytes> {
        let item = items.get(key)?;
        if item.expires_at.is_some_and(|at| at <= Instant::now()) {
            items.remove(key);
            return None;
        }
        Some(item.value.clone())
    }

    /// Writes `value` (or removes the key when `None`) if `condition`
    /// holds for the live value, in one critical section: the atomic core of
    /// set, add, replace and delete.
    fn write_if(
        &self,
        key: &str,
        condition: impl FnOnce(Option<&Bytes>) -> bool,
        value: Option<(Bytes, Option<Duration>)>,
    ) -> bool {
        let mut items = self.items();
        if !condition(Self::live(&mut items, key).as_ref()) {
            return false;
        }
        match value {
            // A TTL too large for the clock means "no expiry".
            Some((value, ttl)) => {
                let expires_at = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
                items.insert(key.to_owned(), Item { value, expires_at });
            }
            None => drop(items.remove(key)),
        }
        true
    }

    /// Live entries under `prefix`, with their remaining lifetime.
    fn live_under(&self, prefix: &str) -> Vec<StoredValue> {
        let now = Instant::now();
        let mut items = self.items();
        items.retain(|_, item| item.expires_at.is_none_or(|at| at > now));
        let under = items.iter().filter(|(key, _)| key.starts_with(prefix));
        under
            .map(|(key, item)| StoredValue {
                key: key.clone(),
                value: item.value.clone(),
                ttl_remaining: item.expires_at.map(|at| at - now),
            })
            .collect()
    }
}

#[async_trait]
impl Backend for HashMapBackend {
    fn name(&self) -> &'static str {
        "hashmap"
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        Ok(Self::live(&mut self.items(), key))
    }

    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.write_if(key, |_| true, Some((value, ttl)));
        Ok(())
    }

    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        Ok(self.write_if(key, |v| v.is_none(), Some((value, ttl))))
    }

    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        Ok(self.write_if(key, |v| v.is_some(), Some((value, ttl))))
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let mut items = self.items();
        let value = Self::live(&mut items, key);
        items.remove(key);
        Ok(value)
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        Ok(self.write_if(key, |v| v.is_some(), None))
    }

    fn listing(&self) -> Option<&dyn Listing> {
        Some(self)
    }
}

#[async_trait]
impl Listing for HashMapBackend {
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        Ok(self.live_under(prefix).into_iter().map(|v| v.key).collect())
    }

    async fn entries(&self, prefix: &str) -> Result<Vec<StoredValue>, BackendError> {
        Ok(self.live_under(prefix))
    }
}

#[cfg(test)]
mod tests {
    use axum_cachex_core::conformance::Suite;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let store = super::HashMapBackend::default();
        let report = Suite::new(&store)
            .sleep(|d| Box::pin(tokio::time::sleep(d)))
            .run()
            .await
            .expect("conformance");
        // Abilities not implemented here are not checked: compare-and-swap
        // and the path-invalidation fast path.
        assert_eq!(report.skipped.len(), 2, "{report:?}");
    }
}
