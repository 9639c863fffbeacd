//! The layer's builder, its validation and the `Cache-Control` it emits.

use std::{collections::HashSet, fmt, sync::Arc, time::Duration};

use axum_cachex_core::Backend;
use http::{HeaderName, HeaderValue, StatusCode, request::Parts};

use super::{KeyBuilder, credentials::CredentialNames, key::DefaultKeyBuilder};
use crate::{BackendProxy, Registry, clock::Clock};

/// Where a layer gets its backend from, per request.
#[derive(Clone)]
pub(crate) enum BackendSource {
    Fixed(Arc<dyn Backend>),
    Proxy(BackendProxy),
}

impl BackendSource {
    pub(crate) fn resolve(&self) -> Arc<dyn Backend> {
        match self {
            Self::Fixed(b) => Arc::clone(b),
            Self::Proxy(p) => p.backend(),
        }
    }
}

/// Which stale directive a [`stale_ttl`](CacheLayerBuilder::stale_ttl)
/// window applies to (the original's `stale="revalidate" | "error"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stale {
    /// `stale-while-revalidate=N`: serve the stale entry at once and refresh
    /// it in the background.
    Revalidate,
    /// `stale-if-error=N`: serve the stale entry when the handler fails.
    Error,
    /// Both directives with the same window.
    Both,
}

/// Why [`CacheLayerBuilder::build`] refused a configuration, with what to
/// change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheLayerConfigError {
    /// `public` and `private` were both set.
    #[error("`public` and `private` are mutually exclusive: keep one of them")]
    PublicAndPrivate,
    /// `no_store` was combined with an option that implies storing.
    #[error(
        "`no_store` cannot be combined with `{0}`: a no-store response is never stored; \
         remove `{0}` or remove `no_store`"
    )]
    NoStoreWith(&'static str),
    /// A stale window was set without a freshness lifetime.
    #[error(
        "`stale_ttl` needs a `ttl`: a response must be fresh before it can be stale; add `.ttl(..)`"
    )]
    StaleWithoutTtl,
    /// `stale_ttl` and `stale` must be set together.
    #[error(
        "`stale_ttl` and `stale` go together: set both (e.g. `.stale_ttl(d).stale(Stale::Revalidate)`) or neither"
    )]
    StaleIncomplete,
    /// `immutable` without a freshness lifetime.
    #[error(
        "`immutable` needs a `ttl`: add `.ttl(..)` (immutable means \"fresh for its whole lifetime\")"
    )]
    ImmutableWithoutTtl,
    /// Two options that contradict each other.
    #[error("`{0}` and `{1}` contradict each other: remove one of them")]
    Contradiction(&'static str, &'static str),
    /// A lifetime of zero seconds.
    #[error("`{0}` must be at least one second; use `no_cache` to revalidate every time")]
    ZeroLifetime(&'static str),
    /// No status is cacheable.
    #[error(
        "`cacheable_statuses` is empty: nothing would ever be cached; leave the default, list at least one status, or add one with `.cache_status(..)`"
    )]
    NoCacheableStatus,
    /// A zero body limit.
    #[error("`max_body_size` must be greater than zero")]
    ZeroBodyLimit,
    /// A number too large for what it counts.
    #[error("`{0}` is too large: use a bound the process can honour")]
    OutOfRange(&'static str),
    /// A status that a cache can never store and replay.
    #[error(
        "status {0} cannot be cached: 1xx, 206 Partial Content and 304 Not Modified are never stored; remove it from `cacheable_statuses`"
    )]
    UncacheableStatus(u16),
    /// A tag given to [`CacheLayerBuilder::tags`] cannot be one.
    #[error(
        "tag {0:?} cannot be used: a tag is 1 to 256 visible ASCII characters without `,` or `=`"
    )]
    InvalidTag(String),
    /// [`CacheLayerBuilder::tag_header`] names a header the cache reads or
    /// writes itself.
    #[error(
        "`{0}` cannot carry cache tags: the cache reads or writes it itself (use `Cache-Tag` or `Surrogate-Key`)"
    )]
    ReservedTagHeader(String),
}

/// Default largest body the layer buffers and stores: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;
/// Default bound on each backend call made by the layer: 250 ms.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_millis(250);
/// Default time a coalesced request waits for the leader: 5 s.
pub const DEFAULT_COALESCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on background refreshes running at once: 64.
pub const DEFAULT_MAX_REFRESHES: usize = 64;

/// Builder of a [`CacheLayer`](super::CacheLayer); see
/// [`CacheLayer::builder`](super::CacheLayer::builder).
///
/// Option names follow the original's `@cache(...)` arguments and the
/// `Cache-Control` directives they emit. [`build`](Self::build) checks the
/// combination and returns a [`CacheLayerConfigError`] that says what to change.
#[must_use]
#[derive(Clone)]
pub struct CacheLayerBuilder {
    pub(crate) ttl: Option<Duration>,
    pub(crate) s_maxage: Option<Duration>,
    pub(crate) stale_ttl: Option<Duration>,
    pub(crate) stale: Option<Stale>,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) public: bool,
    pub(crate) private: bool,
    pub(crate) immutable: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) no_transform: bool,
    pub(crate) must_understand: bool,
    pub(crate) key_builder: Arc<dyn KeyBuilder>,
    /// Targeted cache-control fields obeyed instead of `Cache-Control`
    /// (RFC 9213), most specific first.
    pub(crate) targets: Vec<HeaderName>,
    /// How stale a response may be served when the handler reports the
    /// origin unreachable; `None`: never.
    pub(crate) stale_if_unreachable: Option<Duration>,
    /// Whether `key_builder` was replaced (the default one is inlined).
    pub(crate) custom_keys: bool,
    pub(crate) backend: BackendSource,
    pub(crate) cacheable_statuses: HashSet<StatusCode>,
    pub(crate) max_body_size: usize,
    pub(crate) backend_timeout: Duration,
    pub(crate) coalesce: bool,
    pub(crate) coalesce_timeout: Duration,
    pub(crate) lock_ttl: Option<Duration>,
    pub(crate) max_refreshes: usize,
    pub(crate) clock: Clock,
    pub(crate) name: Option<String>,
    pub(crate) freshness: Freshness,
    pub(crate) credentials: CredentialNames,
    pub(crate) per_user: Option<Arc<dyn UserPartition>>,
    pub(crate) registry: Option<Registry>,
    pub(crate) tag_header: HeaderName,
    pub(crate) tags: Vec<String>,
}

/// Where the freshness of a stored response comes from; see
/// [`CacheLayerBuilder::freshness`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Freshness {
    /// The layer's configuration decides: a response is fresh for the
    /// layer's [`ttl`](CacheLayerBuilder::ttl), shortened (never lengthened)
    /// by the handler's own `s-maxage`, `max-age` or `Expires`. The default.
    #[default]
    Layer,
    /// The handler's response decides, as RFC 9111 §4.2 does for a shared
    /// cache: `s-maxage`, else `max-age`, else `Expires` − `Date`; what may
    /// be stored follows RFC 9111 §3; stale windows come from the
    /// response's `stale-while-revalidate` / `stale-if-error`. The layer's
    /// configured directives are the defaults for responses that carry
    /// none (its ttl, its stale window, its `Cache-Control`). Responses
    /// with neither get the heuristic freshness of RFC 9111 §4.2.2 (10 % of
    /// the time since `Last-Modified`, at most a day) when their status is
    /// heuristically cacheable. This is how a caching proxy behaves.
    FromResponse,
}

/// The user a request is for, when a `private` route is cached per user;
/// see [`CacheLayerBuilder::private_per_user`]. Implemented for every
/// `Fn(&Parts) -> Option<String> + Send + Sync`.
pub trait UserPartition: Send + Sync + 'static {
    /// The verified identity of the request's user, or `None` to not cache
    /// this request at all. It must come from something the client cannot
    /// forge (a session checked by a middleware that ran before, a verified
    /// token), never from a plain request header.
    fn user(&self, parts: &Parts) -> Option<String>;
}

impl<F> UserPartition for F
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn user(&self, parts: &Parts) -> Option<String> {
        self(parts)
    }
}

impl fmt::Debug for CacheLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("ttl", &self.ttl)
            .field("no_cache", &self.no_cache)
            .field("no_store", &self.no_store)
            .finish_non_exhaustive()
    }
}

impl Default for CacheLayerBuilder {
    fn default() -> Self {
        Self {
            ttl: None,
            s_maxage: None,
            stale_ttl: None,
            stale: None,
            no_cache: false,
            no_store: false,
            public: false,
            private: false,
            immutable: false,
            must_revalidate: false,
            proxy_revalidate: false,
            no_transform: false,
            must_understand: false,
            key_builder: Arc::new(DefaultKeyBuilder),
            targets: Vec::new(),
            stale_if_unreachable: None,
            custom_keys: false,
            backend: BackendSource::Proxy(BackendProxy::global().clone()),
            cacheable_statuses: DEFAULT_CACHEABLE_STATUSES.into_iter().collect(),
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            backend_timeout: DEFAULT_BACKEND_TIMEOUT,
            coalesce: true,
            coalesce_timeout: DEFAULT_COALESCE_TIMEOUT,
            lock_ttl: None,
            max_refreshes: DEFAULT_MAX_REFRESHES,
            clock: Clock::system(),
            name: None,
            freshness: Freshness::Layer,
            credentials: CredentialNames::default(),
            per_user: None,
            registry: None,
            tag_header: HeaderName::from_static("cache-tag"),
            tags: Vec::new(),
        }
    }
}

/// The statuses a layer stores by default: 200, 203, 204, 300, 301 and 308
/// — the statuses RFC 9110 §15.1 calls heuristically cacheable, minus
/// 404/405/410/414/501 (add those with
/// [`CacheLayerBuilder::cache_status`]) and 206 (partial content is not
/// assembled by this cache).
pub const DEFAULT_CACHEABLE_STATUSES: [StatusCode; 6] = [
    StatusCode::OK,
    StatusCode::NON_AUTHORITATIVE_INFORMATION,
    StatusCode::NO_CONTENT,
    StatusCode::MULTIPLE_CHOICES,
    StatusCode::MOVED_PERMANENTLY,
    StatusCode::PERMANENT_REDIRECT,
];

/// [`DEFAULT_CACHEABLE_STATUSES`] as a set, e.g. to start a
/// [`cacheable_statuses`](CacheLayerBuilder::cacheable_statuses) list from.
pub fn default_cacheable_statuses() -> HashSet<StatusCode> {
    DEFAULT_CACHEABLE_STATUSES.into_iter().collect()
}

impl CacheLayerBuilder {
    /// Freshness lifetime of stored responses; emitted as `max-age=N` (whole
    /// seconds, rounded down). Without a ttl nothing is served from the
    /// store: responses still get an `ETag` and conditional requests a 304.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Freshness lifetime for shared caches (`s-maxage=N`): those
    /// downstream, and this layer itself, which is one. With a
    /// [`ttl`](Self::ttl), stored responses are fresh for `s_maxage`
    /// (RFC 9111 §5.2.2.10), while browsers keep using `max-age`.
    pub fn s_maxage(mut self, ttl: Duration) -> Self {
        self.s_maxage = Some(ttl);
        self
    }

    /// Length of the stale window; pair it with [`stale`](Self::stale).
    pub fn stale_ttl(mut self, window: Duration) -> Self {
        self.stale_ttl = Some(window);
        self
    }

    /// Which stale directive the [`stale_ttl`](Self::stale_ttl) window is
    /// for. The layer honours it server-side: see the crate docs.
    pub fn stale(mut self, mode: Stale) -> Self {
        self.stale = Some(mode);
        self
    }

    /// `no-cache`: the handler runs on every request; a 304 is still sent
    /// when the fresh body's ETag matches `If-None-Match`.
    pub fn no_cache(mut self) -> Self {
        self.no_cache = true;
        self
    }

    /// `no-store`: emit only `no-store` and never store anything. Cannot be
    /// combined with options that imply storing.
    pub fn no_store(mut self) -> Self {
        self.no_store = true;
        self
    }

    /// `public`: shared caches may store the response, even for requests
    /// with credentials. This is the only option that makes the layer
    /// store and share responses to requests with `Authorization`, a
    /// session token or another [credential](Self::credential_header): set
    /// it only on routes whose response is the same for every user.
    ///
    /// RFC 9111 §3.5 also lets `s-maxage` and `must-revalidate` allow
    /// sharing authorized responses. The layer does not follow that: these
    /// two say how long and how strictly to cache, and are often set
    /// without a thought for who may see the response. Sharing something
    /// made for one user is the one mistake a shared cache must not make,
    /// so it takes the explicit `public`.
    pub fn public(mut self) -> Self {
        self.public = true;
        self
    }

    /// `private`: only the client's own cache may store the response. The
    /// layer never stores it in its (shared) backend; ETags and 304s still
    /// work. To cache per user on the server, see
    /// [`private_per_user`](Self::private_per_user).
    pub fn private(mut self) -> Self {
        self.private = true;
        self
    }

    /// `private`, and cached on the server once per user: `user` names the
    /// verified user of a request, and each user's responses are stored
    /// under a key of their own. Requests for which `user` returns `None`
    /// are not cached. Credentials do not bypass such a route (they are
    /// what tells the users apart); responses that set cookies or tokens
    /// are still never stored.
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum_cachex::CacheLayer;
    ///
    /// #[derive(Clone)]
    /// struct UserId(String); // inserted by your authentication middleware
    ///
    /// let layer = CacheLayer::builder()
    ///     .ttl(Duration::from_secs(30))
    ///     .private_per_user(|parts: &http::request::Parts| {
    ///         parts.extensions.get::<UserId>().map(|u| u.0.clone())
    ///     })
    ///     .build()
    ///     .expect("valid configuration");
    /// # let _ = layer;
    /// ```
    pub fn private_per_user(mut self, user: impl UserPartition) -> Self {
        self.private = true;
        self.per_user = Some(Arc::new(user));
        self
    }

    /// Also treats requests with this header as carrying credentials:
    /// they bypass the cache (see [`public`](Self::public)), and responses
    /// carrying it are never stored. `Authorization` and the session
    /// layer's header are always included.
    pub fn credential_header(mut self, name: HeaderName) -> Self {
        self.credentials.headers.push(name);
        self
    }

    /// Also treats requests with this cookie as carrying credentials. The
    /// session layer's cookie is always included.
    pub fn credential_cookie(mut self, name: impl Into<String>) -> Self {
        self.credentials.cookies.push(name.into());
        self
    }

    /// Obeys a targeted cache-control field (RFC 9213), e.g.
    /// `CDN-Cache-Control`: when a response carries it with a valid value
    /// (a Structured Field Dictionary), its directives replace
    /// `Cache-Control`'s for every decision of this cache (storing,
    /// freshness, stale windows); an invalid one is ignored. Call once per
    /// field, most specific first: the first one present wins. Default:
    /// none.
    pub fn targeted_cache_control(mut self, field: HeaderName) -> Self {
        self.targets.push(field);
        self
    }

    /// Serves a stored response stale by up to `window` when the handler
    /// answers with a response marked [`UpstreamUnreachable`] (a gateway's
    /// `502`/`504`): RFC 9111 §4.2.4 lets a cache that is disconnected from
    /// the origin do so, unless the response says `must-revalidate`,
    /// `proxy-revalidate`, `no-cache` or `s-maxage`. Errors the origin
    /// itself sends are served stale only under `stale-if-error`. Default:
    /// never.
    ///
    /// [`UpstreamUnreachable`]: super::UpstreamUnreachable
    pub fn stale_if_unreachable(mut self, window: Duration) -> Self {
        self.stale_if_unreachable = Some(window);
        self
    }

    /// Where the freshness of stored responses comes from: the layer's
    /// configuration (the default) or the handler's response headers, as a
    /// caching proxy does. See [`Freshness`].
    pub fn freshness(mut self, freshness: Freshness) -> Self {
        self.freshness = freshness;
        self
    }

    /// `immutable`: the response will not change while fresh.
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// `must-revalidate`: once stale, caches must revalidate.
    pub fn must_revalidate(mut self) -> Self {
        self.must_revalidate = true;
        self
    }

    /// `proxy-revalidate`: like `must-revalidate`, for shared caches only.
    pub fn proxy_revalidate(mut self) -> Self {
        self.proxy_revalidate = true;
        self
    }

    /// `no-transform`: intermediaries must not transform the body.
    pub fn no_transform(mut self) -> Self {
        self.no_transform = true;
        self
    }

    /// `must-understand`: caches that do not understand the status code must
    /// not store the response. With [`no_store`](Self::no_store) it also
    /// lets caches that *do* understand the status store the response
    /// despite `no-store` (RFC 9111 §5.2.2.3): set it only if that is
    /// meant.
    pub fn must_understand(mut self) -> Self {
        self.must_understand = true;
        self
    }

    /// Replaces the default key (method, host, path and query; see
    /// [`DefaultKeyBuilder`](crate::DefaultKeyBuilder)).
    pub fn key_builder(mut self, key_builder: impl KeyBuilder) -> Self {
        self.key_builder = Arc::new(key_builder);
        self.custom_keys = true;
        self
    }

    /// Uses this backend for this layer only. Default: the backend of
    /// [`BackendProxy::global`], looked up on every request.
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = BackendSource::Fixed(backend);
        self
    }

    /// Looks the backend up in this proxy on every request.
    pub fn backend_proxy(mut self, proxy: BackendProxy) -> Self {
        self.backend = BackendSource::Proxy(proxy);
        self
    }

    /// Also stores responses with this status, on top of the ones already
    /// configured (by default [`DEFAULT_CACHEABLE_STATUSES`]: 200, 203,
    /// 204, 300, 301, 308). Call it once per status, e.g.
    /// `.cache_status(StatusCode::NOT_FOUND)` to cache "not found" too.
    /// 1xx, 206 and 304 are refused by [`build`](Self::build).
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum_cachex::CacheLayer;
    /// use http::StatusCode;
    ///
    /// let layer = CacheLayer::builder()
    ///     .ttl(Duration::from_secs(60))
    ///     .cache_status(StatusCode::NOT_FOUND)
    ///     .cache_status(StatusCode::GONE)
    ///     .build()?;
    /// # drop(layer);
    /// # Ok::<(), axum_cachex::CacheLayerConfigError>(())
    /// ```
    pub fn cache_status(mut self, status: StatusCode) -> Self {
        self.cacheable_statuses.insert(status);
        self
    }

    /// **Replaces** the set of statuses whose responses are stored (the
    /// default set is [`DEFAULT_CACHEABLE_STATUSES`]: 200, 203, 204, 300,
    /// 301, 308). Only the statuses listed here are stored afterwards: to
    /// *add* a status to the defaults, use [`cache_status`](Self::cache_status)
    /// instead. 1xx, 206 and 304 are refused by [`build`](Self::build), and
    /// so is an empty list.
    pub fn cacheable_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.cacheable_statuses = statuses.into_iter().collect();
        self
    }

    /// Largest body that is buffered and stored, in bytes. Larger bodies
    /// (by `Content-Length` or once read past the limit) stream through to
    /// the client unbuffered and are not stored. Default: 1 MiB.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Bound on each backend call the layer makes; past it the request is
    /// served as if uncached (fail open). Default: 250 ms.
    pub fn backend_timeout(mut self, timeout: Duration) -> Self {
        self.backend_timeout = timeout;
        self
    }

    /// Whether concurrent misses of one key run the handler once and share
    /// its response (request coalescing). Default: on.
    pub fn coalesce(mut self, enabled: bool) -> Self {
        self.coalesce = enabled;
        self
    }

    /// How long a coalesced request waits for the leader's response before
    /// running the handler itself. Default: 5 s.
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.coalesce_timeout = timeout;
        self
    }

    /// Turns on the cross-instance lock: when several app instances share a
    /// backend (Redis), only one of them computes a cold key; the others
    /// poll the backend for its result for up to `lock_ttl`, then compute
    /// it themselves. `lock_ttl` should exceed the handler's usual run
    /// time. Uses `add` and `delete_if_equals`; on a third-party backend
    /// without the latter the lock is released with a plain delete. Off by
    /// default: within one instance, [`coalesce`](Self::coalesce) already
    /// runs the handler once.
    pub fn cross_instance_lock(mut self, lock_ttl: Duration) -> Self {
        self.lock_ttl = Some(lock_ttl);
        self
    }

    /// Bound on stale-while-revalidate refreshes running at once; past it a
    /// stale hit is served without scheduling another refresh. Default: 64.
    pub fn max_refreshes_in_flight(mut self, max: usize) -> Self {
        self.max_refreshes = max;
        self
    }

    /// Names the layer in monitoring reports and metrics. Default: the
    /// route it first serves (axum's `MatchedPath`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Reports this layer's counters to `registry` (and so to the
    /// monitoring routes watching it, feature `monitoring`).
    /// Default: no registry; the counters are still kept and readable with
    /// [`CacheLayer::stats`](super::CacheLayer::stats).
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// The response header a handler names its tags in (comma- or
    /// space-separated; e.g. `Cache-Tag: product:42, catalog`). The layer
    /// stores the tags with the response, removes the header from every
    /// response it sends, and
    /// [`CacheLayer::invalidate_tag`](super::CacheLayer::invalidate_tag)
    /// makes every response carrying a tag unreachable. Use
    /// `Surrogate-Key` to match a CDN's convention. Tags are 1 to
    /// [`MAX_TAG_LEN`](crate::MAX_TAG_LEN) visible ASCII characters without
    /// `,` or `=`; others are ignored. Default: `Cache-Tag`.
    ///
    /// Each tagged response costs one backend read per tag on every hit
    /// (from process memory on the memory backend or the Redis memory
    /// tier) and when it is stored; untagged responses cost nothing.
    pub fn tag_header(mut self, name: HeaderName) -> Self {
        self.tag_header = name;
        self
    }

    /// Tags every response this layer stores with `tags`, besides the ones
    /// the handler names in the [`tag_header`](Self::tag_header).
    /// [`build`](Self::build) refuses a tag that cannot be one.
    pub fn tags<I>(mut self, tags: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Replaces the clock used for freshness and `Age` (tests use it to
    /// move time forward without sleeping). Default: the system clock.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), CacheLayerConfigError> {
        if self.public && self.private {
            return Err(CacheLayerConfigError::PublicAndPrivate);
        }
        if self.no_store {
            let conflicts = [
                (self.ttl.is_some(), "ttl"),
                (self.s_maxage.is_some(), "s_maxage"),
                (
                    self.stale_ttl.is_some() || self.stale.is_some(),
                    "stale_ttl",
                ),
                (self.no_cache, "no_cache"),
                (self.public, "public"),
                (self.immutable, "immutable"),
                (self.must_revalidate, "must_revalidate"),
                (self.proxy_revalidate, "proxy_revalidate"),
            ];
            if let Some((_, name)) = conflicts.into_iter().find(|(set, _)| *set) {
                return Err(CacheLayerConfigError::NoStoreWith(name));
            }
        }
        if self.stale_ttl.is_some() != self.stale.is_some() {
            return Err(CacheLayerConfigError::StaleIncomplete);
        }
        if self.stale_ttl.is_some() && self.ttl.is_none() {
            return Err(CacheLayerConfigError::StaleWithoutTtl);
        }
        if self.immutable && self.ttl.is_none() {
            return Err(CacheLayerConfigError::ImmutableWithoutTtl);
        }
        if self.immutable && self.no_cache {
            return Err(CacheLayerConfigError::Contradiction(
                "immutable",
                "no_cache",
            ));
        }
        if self.no_cache && self.stale.is_some() {
            return Err(CacheLayerConfigError::Contradiction(
                "no_cache",
                "stale_ttl",
            ));
        }
        if self.stale.is_some() {
            if self.must_revalidate {
                return Err(CacheLayerConfigError::Contradiction(
                    "must_revalidate",
                    "stale_ttl",
                ));
            }
            if self.proxy_revalidate {
                return Err(CacheLayerConfigError::Contradiction(
                    "proxy_revalidate",
                    "stale_ttl",
                ));
            }
        }
        if super::tags::is_reserved_header(&self.tag_header) {
            return Err(CacheLayerConfigError::ReservedTagHeader(
                self.tag_header.as_str().to_owned(),
            ));
        }
        if let Some(tag) = self.tags.iter().find(|t| !super::tags::is_valid(t)) {
            return Err(CacheLayerConfigError::InvalidTag(tag.clone()));
        }
        if let Some(status) = self
            .cacheable_statuses
            .iter()
            .find(|s| s.is_informational() || matches!(s.as_u16(), 206 | 304))
        {
            return Err(CacheLayerConfigError::UncacheableStatus(status.as_u16()));
        }
        if self.private && self.s_maxage.is_some() {
            return Err(CacheLayerConfigError::Contradiction("private", "s_maxage"));
        }
        if self.private && self.proxy_revalidate {
            return Err(CacheLayerConfigError::Contradiction(
                "private",
                "proxy_revalidate",
            ));
        }
        for (value, name) in [
            (self.ttl, "ttl"),
            (self.s_maxage, "s_maxage"),
            (self.stale_ttl, "stale_ttl"),
        ] {
            if value.is_some_and(|d| d.as_secs() == 0) {
                return Err(CacheLayerConfigError::ZeroLifetime(name));
            }
        }
        if self.cacheable_statuses.is_empty() {
            return Err(CacheLayerConfigError::NoCacheableStatus);
        }
        if self.lock_ttl.is_some() && !self.coalesce {
            return Err(CacheLayerConfigError::Contradiction(
                "cross_instance_lock",
                "coalesce(false)",
            ));
        }
        if self.max_body_size == 0 {
            return Err(CacheLayerConfigError::ZeroBodyLimit);
        }
        if self.max_refreshes > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(CacheLayerConfigError::OutOfRange("max_refreshes_in_flight"));
        }
        Ok(())
    }

    /// Renders the directives in the original's order: scope, `no-cache`,
    /// `max-age`, `s-maxage`, `must-revalidate`, `proxy-revalidate`, stale
    /// directives, `immutable`, `no-transform`, `must-understand`.
    pub(crate) fn render_cache_control(&self) -> HeaderValue {
        if self.no_store {
            let value = if self.must_understand {
                "no-store, must-understand"
            } else {
                "no-store"
            };
            return HeaderValue::from_static(value);
        }
        let mut parts: Vec<String> = Vec::new();
        if self.public {
            parts.push("public".into());
        }
        if self.private {
            parts.push("private".into());
        }
        if self.no_cache {
            parts.push("no-cache".into());
        }
        if let Some(ttl) = self.ttl {
            parts.push(format!("max-age={}", ttl.as_secs()));
        }
        if let Some(s) = self.s_maxage {
            parts.push(format!("s-maxage={}", s.as_secs()));
        }
        if self.must_revalidate {
            parts.push("must-revalidate".into());
        }
        if self.proxy_revalidate {
            parts.push("proxy-revalidate".into());
        }
        if let (Some(window), Some(mode)) = (self.stale_ttl, self.stale) {
            let secs = window.as_secs();
            if matches!(mode, Stale::Revalidate | Stale::Both) {
                parts.push(format!("stale-while-revalidate={secs}"));
            }
            if matches!(mode, Stale::Error | Stale::Both) {
                parts.push(format!("stale-if-error={secs}"));
            }
        }
        if self.immutable {
            parts.push("immutable".into());
        }
        if self.no_transform {
            parts.push("no-transform".into());
        }
        if self.must_understand {
            parts.push("must-understand".into());
        }
        // Only ASCII directive names and digits: always a valid value.
        HeaderValue::from_str(&parts.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The `Cache-Control` for responses to requests with credentials:
    /// `private`, without `public`, `s-maxage` or `proxy-revalidate`.
    pub(crate) fn render_private_cache_control(&self) -> HeaderValue {
        let mut private = self.clone();
        private.public = false;
        private.private = !private.no_store;
        private.s_maxage = None;
        private.proxy_revalidate = false;
        private.render_cache_control()
    }

    pub(crate) fn stale_while_revalidate(&self) -> Duration {
        match (self.stale_ttl, self.stale) {
            (Some(w), Some(Stale::Revalidate | Stale::Both)) => w,
            _ => Duration::ZERO,
        }
    }

    pub(crate) fn stale_if_error(&self) -> Duration {
        match (self.stale_ttl, self.stale) {
            (Some(w), Some(Stale::Error | Stale::Both)) => w,
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(b: CacheLayerBuilder) -> String {
        b.validate().expect("valid");
        b.render_cache_control().to_str().expect("ascii").to_owned()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn renders_all_thirteen_directives_in_order() {
        let b = CacheLayerBuilder::default;
        assert_eq!(cc(b().ttl(secs(60))), "max-age=60");
        assert_eq!(
            cc(b()
                .public()
                .ttl(secs(60))
                .stale_ttl(secs(30))
                .stale(Stale::Revalidate)
                .immutable()),
            "public, max-age=60, stale-while-revalidate=30, immutable"
        );
        assert_eq!(
            cc(b().public().ttl(secs(60)).must_revalidate()),
            "public, max-age=60, must-revalidate"
        );
        assert_eq!(cc(b().no_cache()), "no-cache");
        assert_eq!(
            cc(b().no_cache().must_revalidate()),
            "no-cache, must-revalidate"
        );
        assert_eq!(cc(b().no_store()), "no-store");
        assert_eq!(
            cc(b().no_store().must_understand()),
            "no-store, must-understand"
        );
        assert_eq!(
            cc(b()
                .private()
                .ttl(secs(5))
                .stale_ttl(secs(9))
                .stale(Stale::Error)),
            "private, max-age=5, stale-if-error=9"
        );
        assert_eq!(
            cc(b()
                .public()
                .ttl(secs(1))
                .s_maxage(secs(2))
                .proxy_revalidate()
                .no_transform()
                .must_understand()),
            "public, max-age=1, s-maxage=2, proxy-revalidate, no-transform, must-understand"
        );
        assert_eq!(
            cc(b().ttl(secs(10)).stale_ttl(secs(20)).stale(Stale::Both)),
            "max-age=10, stale-while-revalidate=20, stale-if-error=20"
        );
    }

    #[test]
    fn cache_status_adds_to_the_defaults_and_cacheable_statuses_replaces_them() {
        let b = CacheLayerBuilder::default;
        let added = b()
            .cache_status(StatusCode::NOT_FOUND)
            .cache_status(StatusCode::GONE);
        let mut expected = default_cacheable_statuses();
        expected.extend([StatusCode::NOT_FOUND, StatusCode::GONE]);
        assert_eq!(added.cacheable_statuses, expected);
        assert!(added.validate().is_ok());

        let replaced = b().cacheable_statuses([StatusCode::NOT_FOUND]);
        assert_eq!(
            replaced.cacheable_statuses,
            HashSet::from([StatusCode::NOT_FOUND])
        );
        // Adding after replacing adds to the replacement.
        let both = b()
            .cacheable_statuses([StatusCode::OK])
            .cache_status(StatusCode::NOT_FOUND);
        assert_eq!(
            both.cacheable_statuses,
            HashSet::from([StatusCode::OK, StatusCode::NOT_FOUND])
        );
        assert_eq!(
            b().cache_status(StatusCode::PARTIAL_CONTENT)
                .validate()
                .expect_err("206"),
            CacheLayerConfigError::UncacheableStatus(206)
        );
    }

    #[test]
    fn rejects_impossible_combinations() {
        let b = CacheLayerBuilder::default;
        let err = |b: CacheLayerBuilder| b.validate().expect_err("must be rejected");
        assert_eq!(
            err(b().public().private()),
            CacheLayerConfigError::PublicAndPrivate
        );
        assert_eq!(
            err(b().no_store().ttl(secs(5))),
            CacheLayerConfigError::NoStoreWith("ttl")
        );
        assert_eq!(
            err(b().no_store().public()),
            CacheLayerConfigError::NoStoreWith("public")
        );
        assert_eq!(
            err(b().stale_ttl(secs(5)).stale(Stale::Revalidate)),
            CacheLayerConfigError::StaleWithoutTtl
        );
        assert_eq!(
            err(b().ttl(secs(5)).stale_ttl(secs(5))),
            CacheLayerConfigError::StaleIncomplete
        );
        assert_eq!(
            err(b().immutable()),
            CacheLayerConfigError::ImmutableWithoutTtl
        );
        assert_eq!(
            err(b().ttl(secs(5)).immutable().no_cache()),
            CacheLayerConfigError::Contradiction("immutable", "no_cache")
        );
        assert_eq!(
            err(b().private().s_maxage(secs(5))),
            CacheLayerConfigError::Contradiction("private", "s_maxage")
        );
        assert_eq!(
            err(b().ttl(Duration::from_millis(500))),
            CacheLayerConfigError::ZeroLifetime("ttl")
        );
        assert_eq!(
            err(b().cacheable_statuses([])),
            CacheLayerConfigError::NoCacheableStatus
        );
        assert_eq!(
            err(b().max_body_size(0)),
            CacheLayerConfigError::ZeroBodyLimit
        );
        assert_eq!(
            err(b()
                .ttl(secs(5))
                .must_revalidate()
                .stale_ttl(secs(5))
                .stale(Stale::Error)),
            CacheLayerConfigError::Contradiction("must_revalidate", "stale_ttl")
        );
        assert_eq!(
            err(b()
                .ttl(secs(5))
                .proxy_revalidate()
                .stale_ttl(secs(5))
                .stale(Stale::Revalidate)),
            CacheLayerConfigError::Contradiction("proxy_revalidate", "stale_ttl")
        );
        for code in [100u16, 206, 304] {
            let status = StatusCode::from_u16(code).expect("status");
            assert_eq!(
                err(b().cacheable_statuses([StatusCode::OK, status])),
                CacheLayerConfigError::UncacheableStatus(code)
            );
        }
        // Messages say what to change.
        assert!(
            CacheLayerConfigError::StaleWithoutTtl
                .to_string()
                .contains("add `.ttl(..)`")
        );
        assert!(
            CacheLayerConfigError::NoStoreWith("ttl")
                .to_string()
                .contains("remove `ttl`")
        );
    }
}
