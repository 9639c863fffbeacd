//! The background task that keeps a memory tier coherent: it subscribes to
//! the invalidation channel, applies other instances' messages, and sends
//! the heartbeats that let the tier be trusted (see [`super::tier`]).
//!
//! It owns its pub/sub connection, so it knows when it lost it: the tier is
//! then flushed and distrusted until a new subscription's first heartbeat
//! comes back. It holds only a weak reference to the backend and ends once
//! the backend is dropped (at its next heartbeat).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use futures_util::{
    StreamExt,
    future::{Either, select},
};
use tracing::{debug, warn};

use super::{
    Inner, RedisBackend,
    tier::message::{self, Received},
};

/// The pause before resubscribing after a lost subscription (doubling up to
/// [`RETRY_MAX`]).
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Heartbeats that may go unanswered before the subscription is taken for
/// dead and replaced (a connection that hangs without closing).
const MISSED_HEARTBEATS: u32 = 8;

/// Starts the task for `inner`'s tier (on the current runtime).
pub(super) fn spawn(inner: &Arc<Inner>) {
    tokio::spawn(run(Arc::downgrade(inner)));
}

enum End {
    /// The backend was dropped.
    Stop,
    /// The subscription failed or went quiet: resubscribe.
    Lost,
}

async fn run(weak: Weak<Inner>) {
    let mut pause = RETRY_FIRST;
    for attempt in 0usize.. {
        match subscribe_and_listen(&weak, attempt).await {
            End::Stop => return,
            End::Lost => {}
        }
        if let Some(inner) = weak.upgrade() {
            if let Some(sub) = &inner.subscription {
                sub.tier.distrust().await;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// One subscription, until it fails. `attempt` picks the node among the
/// seeds (round robin, so one dead seed is skipped on the next attempt).
async fn subscribe_and_listen(weak: &Weak<Inner>, attempt: usize) -> End {
    let Some(inner) = weak.upgrade() else {
        return End::Stop;
    };
    let Some(sub) = &inner.subscription else {
        return End::Stop;
    };
    let Some(client) = sub.clients.get(attempt % sub.clients.len().max(1)).cloned() else {
        return End::Stop;
    };
    let channel = sub.channel.clone();
    let connect_timeout = inner.connect_timeout;
    let every = sub.tier.heartbeat_every();
    drop(inner);

    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, ::redis::RedisError>(pubsub)
    };
    let pubsub = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => {
            debug!(error = %e, "memory tier: could not subscribe to the invalidation channel");
            return End::Lost;
        }
        Err(_) => return End::Lost,
    };
    // Messages may have been missed before this subscription existed.
    if let Some(inner) = weak.upgrade() {
        if let Some(sub) = &inner.subscription {
            sub.tier.distrust().await;
        }
    }
    // The sink half keeps the connection open; only the stream is read.
    let (_sink, mut stream) = pubsub.split();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unanswered = 0u32;
    loop {
        let tick = std::pin::pin!(tick.tick());
        let event = match select(stream.next(), tick).await {
            Either::Left((received, _)) => Some(received),
            Either::Right(_) => None,
        };
        match event {
            Some(received) => {
                let Some(msg) = received else {
                    warn!("memory tier: the invalidation subscription closed; the tier is flushed");
                    return End::Lost;
                };
                let Some(inner) = weak.upgrade() else {
                    return End::Stop;
                };
                if apply(&inner, msg.get_payload_bytes()).await {
                    unanswered = 0;
                }
            }
            None => {
                let Some(inner) = weak.upgrade() else {
                    return End::Stop;
                };
                if unanswered >= MISSED_HEARTBEATS {
                    warn!("memory tier: heartbeats stopped coming back; resubscribing");
                    return End::Lost;
                }
                unanswered += 1;
                send_heartbeat(RedisBackend { inner }).await;
            }
        }
    }
}

/// Applies one message; true when it was our own heartbeat coming back.
async fn apply(inner: &Inner, payload: &[u8]) -> bool {
    let Some(sub) = &inner.subscription else {
        return false;
    };
    match message::decode(payload) {
        Some((sender, Received::Heartbeat(sequence))) if sender == sub.instance => {
            sub.tier.heartbeat_received(sequence);
            true
        }
        // Our own changes were applied when they were made.
        Some((sender, Received::Invalidate(scope))) if sender != sub.instance => {
            sub.tier.invalidate(&scope).await;
            false
        }
        _ => false,
    }
}

/// Publishes a heartbeat: on the server, or on every Cluster primary (a
/// change's message comes from its key's primary over the cluster bus, and
/// only a heartbeat sent the same way proves it arrived).
async fn send_heartbeat(backend: RedisBackend) {
    let Some(sub) = &backend.inner.subscription else {
        return;
    };
    if !backend.is_cluster() {
        let sequence = sub.next_heartbeat();
        sub.tier.heartbeat_sent(sequence, "");
        let payload = message::heartbeat(&sub.instance, sequence);
        if let Err(e) = backend.publish(payload).await {
            debug!(error = %e, "memory tier: heartbeat not sent");
        }
        return;
    }
    let Some(primaries) = backend.inner.breakers.primaries() else {
        backend.refresh_slots_if_due(false);
        return; // untrusted until the slot map is known
    };
    sub.tier
        .publish_to(primaries.iter().map(ToString::to_string).collect());
    for node in &primaries {
        let sequence = sub.next_heartbeat();
        sub.tier.heartbeat_sent(sequence, &node.to_string());
        let payload = message::heartbeat(&sub.instance, sequence);
        if let Err(e) = backend.publish_on(node, payload).await {
            debug!(error = %e, %node, "memory tier: heartbeat not sent");
        }
    }
}
