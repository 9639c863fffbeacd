//! One connection handle for both deployments: a standalone server behind
//! redis-rs's `ConnectionManager`, or a Cluster behind its
//! `ClusterConnection` (which routes each command by its key's slot and
//! follows `MOVED`/`ASK` redirections itself). Both are cheap to clone and
//! multiplex every call over their connections.

use std::time::Duration;

use ::redis::{
    Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};

/// What the backend connects to.
pub(super) enum Endpoint {
    Standalone(::redis::Client),
    Cluster {
        client: ClusterClient,
        /// A seed's settings (credentials, TLS), for direct connections
        /// to single nodes.
        node_template: Box<ConnectionInfo>,
        #[cfg(feature = "redis-tls")]
        certificates: Option<::redis::TlsCertificates>,
    },
}

impl Endpoint {
    /// A handle that connects on first use, with one connection attempt per
    /// call: retries are paced by the circuit breakers instead, so no call
    /// waits on a backoff sleep. The response timeout is the backend's own,
    /// applied around each call.
    pub(super) fn connect_lazily(&self, connect_timeout: Duration) -> RedisResult<Conn> {
        match self {
            Self::Standalone(client) => lazy_manager(client.clone(), connect_timeout),
            Self::Cluster { client, .. } => {
                let config = ClusterConfig::new().set_connection_timeout(connect_timeout);
                Ok(Conn::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }

    /// A handle to one Cluster node alone (a standalone server's own
    /// handle), connecting on first use like
    /// [`connect_lazily`](Self::connect_lazily). It never follows
    /// redirections: the caller handles `MOVED` and `ASK`.
    pub(super) fn connect_node_lazily(
        &self,
        node: &NodeAddr,
        connect_timeout: Duration,
    ) -> RedisResult<Conn> {
        lazy_manager(self.node_client(node)?, connect_timeout)
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// A client for one node, with the seeds' credentials and TLS settings
    /// (a standalone server's own client).
    pub(super) fn node_client(&self, node: &NodeAddr) -> RedisResult<::redis::Client> {
        let (node_template, certificates) = match self {
            Self::Standalone(client) => return Ok(client.clone()),
            Self::Cluster {
                node_template,
                #[cfg(feature = "redis-tls")]
                certificates,
                ..
            } => {
                #[cfg(not(feature = "redis-tls"))]
                let certificates = &None::<()>;
                (node_template, certificates)
            }
        };
        let (host, port) = (node.host.clone(), node.port);
        let addr = match node_template.addr() {
            ConnectionAddr::TcpTls { .. } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let info = (**node_template).clone().set_addr(addr);
        #[cfg(feature = "redis-tls")]
        if let Some(certs) = certificates {
            return ::redis::Client::build_with_tls(info, certs.clone());
        }
        #[cfg(not(feature = "redis-tls"))]
        let _ = certificates;
        ::redis::Client::open(info)
    }
}

/// A multiplexed connection to one server, made on first use; one attempt
/// per call (the breakers pace retries) and the backend's own timeout.
fn lazy_manager(client: ::redis::Client, connect_timeout: Duration) -> RedisResult<Conn> {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(None);
    ConnectionManager::new_lazy_with_config(client, config).map(Conn::Standalone)
}

/// A node of a Cluster, as `CLUSTER SLOTS` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct NodeAddr {
    pub(super) host: String,
    pub(super) port: u16,
}

impl NodeAddr {
    /// `host:port` as a redirection names a node (an IPv6 host may come
    /// with or without brackets).
    pub(super) fn parse(addr: &str) -> Option<Self> {
        let (host, port) = addr.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().ok()?;
        (!host.is_empty()).then(|| Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A connection handle (see the module docs).
#[derive(Clone)]
pub(super) enum Conn {
    /// One server: a standalone one, or a single Cluster node.
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Runs `cmd` on `node` (a Cluster primary, for `SCAN` and probes);
    /// routed as usual when `node` is `None` or the server is standalone.
    pub(super) async fn query_on<T: FromRedisValue>(
        &mut self,
        node: Option<&NodeAddr>,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Self::Cluster(cluster), Some(node)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                });
                let value = cluster.route_command(cmd.clone(), routing).await?;
                Ok(T::from_redis_value(value)?)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
