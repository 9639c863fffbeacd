//! The stored state record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// What a state stands for, as stored by
/// [`StateManager::create_state`](super::StateManager::create_state) and
/// returned by [`consume_state`](super::StateManager::consume_state).
///
/// Stored as JSON `{"state", "created_at", "expires_at", "metadata"}` with
/// times in Unix seconds (floating point, like the Python original), plus
/// `"binding"` for bound states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateData {
    /// The state token itself.
    pub state: String,
    /// When it was created (by the manager's clock).
    #[serde(with = "unix_seconds")]
    pub created_at: SystemTime,
    /// When it stops being accepted.
    #[serde(with = "unix_seconds")]
    pub expires_at: SystemTime,
    /// What the application stored with it (e.g. the page to return to, a
    /// PKCE verifier, the provider name); `None` when nothing was.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The client binding, compared in constant time on consumption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) binding: Option<String>,
}

impl StateData {
    /// Whether the state was created with a client binding
    /// ([`create_bound_state`](super::StateManager::create_bound_state)).
    pub fn is_bound(&self) -> bool {
        self.binding.is_some()
    }

    /// Whether the state is expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// Deserialises the metadata into `T`; a state without metadata reads as
    /// JSON `null` (so `Option<T>` gives `None`).
    ///
    /// # Errors
    ///
    /// When the metadata does not have the shape of `T`.
    pub fn metadata_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match &self.metadata {
            Some(v) => T::deserialize(v),
            None => T::deserialize(Value::Null),
        }
    }
}

/// `SystemTime` as floating-point Unix seconds, rejecting values that do not
/// fit instead of panicking on them.
mod unix_seconds {
    use super::*;
    use serde::{Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        };
        s.serialize_f64(secs)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs = f64::deserialize(d)?;
        let out_of_range = || D::Error::custom(format!("timestamp {secs} is out of range"));
        let magnitude = Duration::try_from_secs_f64(secs.abs()).map_err(|_| out_of_range())?;
        if secs >= 0.0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
        .ok_or_else(out_of_range)
    }
}
