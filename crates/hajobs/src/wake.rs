//! Waking the replicas that have a job, so that a trigger asked of the
//! cluster starts in milliseconds instead of at their next poll.
//!
//! A requester (`hajobs trigger`, `POST /jobs/{type}`, a stopping replica
//! handing its attempts over) first records its request in Cassandra — the
//! record every replica reads and claims with an LWT — and then wakes the
//! replicas that have the job: the one in its own process at once (when it
//! has the job), else one whose node registry entry names an address, with
//! `POST /wake`; the others too if none claimed within [`STAGGER`]. A wake
//! carries nothing and grants nothing (it asks a replica to read the
//! requests now; bursts make one read per
//! [`WAKE_GAP`](hajobs_scheduler::requests::WAKE_GAP)), so it needs no token,
//! and a wake that never arrives costs only time: the replicas' poll claims
//! the request all the same, and a request nobody claims is withdrawn by its
//! requester.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hajobs_core::{NodeRecord, NodeStore, TriggerId};
use hajobs_scheduler::{JobManager, RequestWake};
use hyper_util::rt::TokioIo;

/// How long the first woken replica has to claim before the others are
/// woken too (one at a time keeps the claims' LWTs from contending).
pub(crate) const STAGGER: Duration = Duration::from_millis(200);
/// How long one wake may take (connecting included).
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whom a requester can wake.
#[derive(Clone)]
pub(crate) struct Waker {
    nodes: Arc<NodeStore>,
    /// The replica in this process, and its watcher's wake.
    local: Option<(JobManager, RequestWake)>,
    /// This machine's host name: another machine's loopback address is not
    /// a replica reachable from here.
    host: String,
}

/// One replica to wake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The replica in this process.
    Here,
    /// A replica at this advertised address.
    At(String),
}

impl Waker {
    /// A waker reading the registry in `nodes`.
    pub(crate) fn new(nodes: Arc<NodeStore>) -> Self {
        Self {
            nodes,
            local: None,
            host: host_name(),
        }
    }

    /// The same, with the replica of this process woken in-process.
    pub(crate) fn with_local(mut self, manager: JobManager, wake: RequestWake) -> Self {
        self.local = Some((manager, wake));
        self
    }

    /// Wakes this process's own replica (`POST /wake`): false when this
    /// process runs none.
    pub(crate) fn wake_here(&self) -> bool {
        match &self.local {
            Some((manager, wake)) => {
                // Its requests and its scheduled triggers are read now.
                wake.wake();
                manager.wake_scheduled();
                true
            }
            None => false,
        }
    }

    /// The replicas to wake for a request of `job_type`, in order: this
    /// process's own first when it has the job, then the live replicas of
    /// the registry that have it and name an address reachable from here,
    /// in an order that `trigger_id` spreads over them.
    pub(crate) async fn targets(&self, job_type: &str, trigger_id: TriggerId) -> Vec<Target> {
        let mut out = Vec::new();
        let here = self
            .local
            .as_ref()
            .map(|(m, _)| m.node().as_str().to_owned());
        if let Some((manager, _)) = &self.local {
            if manager.spec(job_type).is_ok() {
                out.push(Target::Here);
            }
        }
        let nodes = match self.nodes.list().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::debug!(error = %e, "registry unreadable: no replica woken; their poll claims the request");
                return out;
            }
        };
        let mut remote: Vec<(u64, String)> = nodes
            .into_iter()
            .filter(|n| Some(&n.node_id) != here.as_ref())
            .filter(|n| n.job_types.iter().any(|j| j == job_type))
            .filter_map(|n| {
                let address = reachable(&n, &self.host)?;
                let mut h = std::hash::DefaultHasher::new();
                (trigger_id, &n.node_id).hash(&mut h);
                Some((h.finish(), address))
            })
            .collect();
        remote.sort();
        out.extend(remote.into_iter().map(|(_, a)| Target::At(a)));
        out
    }

    /// Wakes `target` (best effort: a failure is logged at debug level).
    pub(crate) async fn wake(&self, target: &Target) {
        match target {
            Target::Here => {
                self.wake_here();
            }
            Target::At(address) => {
                if let Err(e) = post_wake(address).await {
                    tracing::debug!(address, error = %e, "replica not woken; its poll claims the request");
                }
            }
        }
    }

    /// Wakes the replicas that have `job_type`: the first at once, the
    /// others after [`STAGGER`] (the caller drops the future once a replica
    /// claimed).
    pub(crate) async fn wake_for(&self, job_type: &str, trigger_id: TriggerId) {
        let targets = self.targets(job_type, trigger_id).await;
        let Some((first, rest)) = targets.split_first() else {
            return;
        };
        self.wake(first).await;
        if rest.is_empty() {
            return;
        }
        tokio::time::sleep(STAGGER).await;
        futures::future::join_all(rest.iter().map(|t| self.wake(t))).await;
    }

    /// Wakes every replica that has `job_type`, this process's own
    /// included, at once (a trigger scheduled for sooner than their next
    /// read of the scheduled triggers).
    pub(crate) async fn wake_every(&self, job_type: &str, trigger_id: TriggerId) {
        let targets = self.targets(job_type, trigger_id).await;
        futures::future::join_all(targets.iter().map(|t| self.wake(t))).await;
    }

    /// Wakes every other replica that has `job_type`, at once (a stopping
    /// replica's handover).
    pub(crate) async fn wake_all(&self, job_type: &str, trigger_id: TriggerId) {
        let targets = self.targets(job_type, trigger_id).await;
        futures::future::join_all(
            targets
                .iter()
                .filter(|t| **t != Target::Here)
                .map(|t| self.wake(t)),
        )
        .await;
    }
}

/// `node`'s advertised address, unless it is the loopback address of a
/// machine other than `host` (this one's).
fn reachable(node: &NodeRecord, host: &str) -> Option<String> {
    let address = node.http.clone()?;
    let name = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback || node.host == host).then_some(address)
}

/// `POST /wake` to the replica at `address`, within [`WAKE_TIMEOUT`].
async fn post_wake(address: &str) -> Result<(), String> {
    let wake = async {
        let socket = tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("cannot resolve: {e}"))?
            .next()
            .ok_or("resolves to no address")?;
        let stream = tokio::net::TcpStream::connect(socket)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let request = axum::http::Request::post("/wake")
            // An IP address: the Host every replica answers to.
            .header(axum::http::header::HOST, socket.to_string())
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from("{}"))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        if response.status() == axum::http::StatusCode::NO_CONTENT {
            Ok(())
        } else {
            Err(format!("answered {}", response.status()))
        }
    };
    tokio::time::timeout(WAKE_TIMEOUT, wake)
        .await
        .map_err(|_| format!("no answer within {WAKE_TIMEOUT:?}"))?
}

/// This machine's host name.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The address this replica publishes in the registry for its HTTP
/// listener bound at `bound`: `http.advertise` when set, else the bound
/// address, or this machine's host name with its port when it listens on
/// every interface.
pub(crate) fn advertised(advertise: Option<&str>, bound: std::net::SocketAddr) -> String {
    match advertise {
        Some(a) => a.to_owned(),
        None if bound.ip().is_unspecified() => format!("{}:{}", host_name(), bound.port()),
        None => bound.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_address_is_one_other_machines_can_use() {
        let any: std::net::SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert_eq!(advertised(None, any), format!("{}:7070", host_name()));
        let one: std::net::SocketAddr = "10.1.2.3:7070".parse().unwrap();
        assert_eq!(advertised(None, one), "10.1.2.3:7070");
        assert_eq!(advertised(Some("node-1:80"), one), "node-1:80");
    }

    #[test]
    fn another_machines_loopback_is_never_woken() {
        let node = |host: &str, http: Option<&str>| NodeRecord {
            node_id: "n".into(),
            host: host.into(),
            pid: 1,
            version: String::new(),
            http: http.map(str::to_owned),
            started_at_ms: 0,
            seen_at_ms: 0,
            job_types: vec!["j".into()],
            running: Vec::new(),
        };
        let here = "box-a";
        for loopback in ["127.0.0.1:7070", "[::1]:7070", "localhost:7070"] {
            assert_eq!(
                reachable(&node(here, Some(loopback)), here).as_deref(),
                Some(loopback)
            );
            assert_eq!(reachable(&node("box-b", Some(loopback)), here), None);
        }
        assert_eq!(
            reachable(&node("box-b", Some("10.0.0.7:7070")), here).as_deref(),
            Some("10.0.0.7:7070")
        );
        assert_eq!(reachable(&node("box-b", None), here), None);
    }
}
