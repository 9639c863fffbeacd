//! In-process request coalescing ("single flight") for `get_or_set`.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::OnceCell;

/// One flight per (prefixed key, result type). Keying by type means callers
/// that disagree on the value type of a key never share a result; each type
/// gets its own flight.
type FlightKey = (String, TypeId);

/// The flights in progress. Values are `Arc<OnceCell<R>>` with the type
/// erased, because one map serves every `get_or_set::<T, E>`.
#[derive(Default)]
pub(super) struct Flights {
    map: Mutex<HashMap<FlightKey, Arc<dyn Any + Send + Sync>>>,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<FlightKey, Arc<dyn Any + Send + Sync>>> {
        // The critical sections cannot panic half-way, so a poisoned map is
        // still consistent.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the flight of `key`, starting one when none is in progress.
    pub(super) fn join<R: Send + Sync + 'static>(&self, key: String) -> Flight<'_, R> {
        let key = (key, TypeId::of::<R>());
        let mut map = self.lock();
        let existing = map
            .get(&key)
            .and_then(|cell| Arc::clone(cell).downcast::<OnceCell<R>>().ok());
        let cell = match existing {
            Some(cell) => cell,
            None => {
                let cell = Arc::new(OnceCell::new());
                map.insert(key.clone(), Arc::clone(&cell) as Arc<dyn Any + Send + Sync>);
                cell
            }
        };
        drop(map);
        Flight {
            flights: self,
            key,
            cell: Some(cell),
        }
    }

    /// How many flights are in progress (for tests and debugging).
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A caller's membership in a flight. The first caller to run
/// [`OnceCell::get_or_init`] computes the value, everyone else waits for it;
/// when that caller is cancelled, the next waiter runs its own initialiser
/// (tokio's `OnceCell` semantics).
pub(super) struct Flight<'a, R: Send + Sync + 'static> {
    flights: &'a Flights,
    key: FlightKey,
    /// Always `Some` until dropped.
    cell: Option<Arc<OnceCell<R>>>,
}

impl<R: Send + Sync + 'static> Flight<'_, R> {
    /// The shared result slot.
    pub(super) fn cell(&self) -> Option<&OnceCell<R>> {
        self.cell.as_deref()
    }
}

impl<R: Send + Sync + 'static> Drop for Flight<'_, R> {
    fn drop(&mut self) {
        let Some(cell) = self.cell.take() else {
            return;
        };
        let mut map = self.flights.lock();
        let current = map
            .get(&self.key)
            .is_some_and(|c| std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(&cell)));
        // A finished flight leaves the map as soon as one of its callers is
        // done, so a later call never sees an old result (an error in
        // particular is shared with the callers that waited for it, never
        // cached). An unfinished one, whose callers were all cancelled,
        // leaves with its last caller: one reference here, one in the map.
        if current && (cell.initialized() || Arc::strong_count(&cell) == 2) {
            map.remove(&self.key);
        }
        // Released while the map is locked: every change of the count
        // happens under the lock, so the check above cannot race a join.
        drop(cell);
        drop(map);
    }
}
