//! The metrics port's HTTP endpoint: `/metrics` (Prometheus text), `/health` (the process
//! is alive and serving HTTP), `/health/ready` (every role of the node is ready) and
//! `/health/ready/<role>` (that role is ready: what a load balancer in front of the
//! gateways checks, so that a full disk under the node's block daemon, which the gateway
//! writes around, does not move its clients).
//!
//! Owns the readiness of a node as a set of named [`Signal`]s, one per role, each fed by
//! its role's own probe (metad: it gets a read index; gateway: metad answers a linearizable
//! read). A signal is *not ready* only once it has failed for longer than
//! [`READY_GRACE`]: a leader election (about a second) must not mark every gateway down at
//! once in front of a load balancer; a gateway on the minority side of a partition, or one
//! that lost metad, must be marked down within a few seconds so that its clients move.
//! Must never: block on a role (a probe's outcome is read, never awaited, when a request
//! comes), or answer ready before every role has reported ready once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::shutdown::Shutdown;

/// How long a role may fail its probe before the node stops being ready.
pub const READY_GRACE: Duration = Duration::from_secs(3);
/// How often roles probe.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// A role's readiness, as its probe last found it.
#[derive(Debug)]
pub struct Signal {
    name: &'static str,
    state: Mutex<SignalState>,
}

#[derive(Debug)]
struct SignalState {
    /// The last time the probe succeeded (`None`: never yet).
    last_ok: Option<Instant>,
    /// Why the last probe failed, if it did.
    last_error: Option<String>,
}

impl Signal {
    fn new(name: &'static str) -> Signal {
        Signal { name, state: Mutex::new(SignalState { last_ok: None, last_error: Some("starting".into()) }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The probe succeeded now.
    pub fn ok(&self) {
        let mut s = self.lock();
        s.last_ok = Some(Instant::now());
        s.last_error = None;
    }

    /// The probe failed now, for `why`.
    pub fn failed(&self, why: impl Into<String>) {
        self.lock().last_error = Some(why.into());
    }

    /// `None` when ready at `now`; otherwise why not.
    fn not_ready(&self, now: Instant) -> Option<String> {
        let s = self.lock();
        match (s.last_ok, &s.last_error) {
            (Some(_), None) => None,
            (Some(ok), Some(_)) if now.saturating_duration_since(ok) <= READY_GRACE => None,
            (Some(ok), Some(e)) => {
                Some(format!("{}: {e} (for {:.1} s)", self.name, now.saturating_duration_since(ok).as_secs_f64()))
            }
            (None, e) => Some(format!("{}: {}", self.name, e.as_deref().unwrap_or("not ready yet"))),
        }
    }
}

/// The node's roles' signals.
#[derive(Debug, Default)]
pub struct Readiness {
    signals: Mutex<Vec<Arc<Signal>>>,
}

impl Readiness {
    pub fn new() -> Arc<Readiness> {
        Arc::new(Readiness::default())
    }

    /// A new signal named `name` (a role), not ready until its probe first succeeds.
    pub fn signal(&self, name: &'static str) -> Arc<Signal> {
        let s = Arc::new(Signal::new(name));
        self.signals.lock().unwrap_or_else(|e| e.into_inner()).push(s.clone());
        s
    }

    /// Why the node is not ready (empty: ready). A node with no signal yet is starting.
    pub fn problems(&self) -> Vec<String> {
        let signals = self.signals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if signals.is_empty() {
            return vec!["starting".into()];
        }
        let now = Instant::now();
        signals.iter().filter_map(|s| s.not_ready(now)).collect()
    }

    /// Why the role `name` is not ready (empty: ready); `None` if the node runs no such role.
    pub fn problems_of(&self, name: &str) -> Option<Vec<String>> {
        let signals = self.signals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = Instant::now();
        let mut of_role = signals.iter().filter(|s| s.name == name).peekable();
        of_role.peek()?;
        Some(of_role.filter_map(|s| s.not_ready(now)).collect())
    }
}

/// Spawns a task that runs `probe` every [`PROBE_EVERY`] (each bounded by `timeout`) and
/// feeds `signal`, until `stop`.
pub fn spawn_probe<F, Fut>(signal: Arc<Signal>, timeout: Duration, stop: &Shutdown, probe: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match tokio::time::timeout(timeout, probe()).await {
                Ok(Ok(())) => signal.ok(),
                Ok(Err(e)) => signal.failed(e),
                Err(_) => signal.failed(format!("no answer within {timeout:?}")),
            }
        }
    });
}

#[derive(Debug, thiserror::Error)]
#[error("binding the metrics port {addr}: {source}")]
pub struct HealthError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds `addr` and serves `/metrics`, `/health` and `/health/ready` until `stop`.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
    stop: &Shutdown,
) -> Result<SocketAddr, HealthError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| HealthError { addr, source })?;
    let local = listener.local_addr().map_err(|source| HealthError { addr, source })?;
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics port: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (metrics, readiness) = (metrics.clone(), readiness.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let reply = answer(req.uri().path(), &metrics, &readiness);
                    async move { Ok::<_, Infallible>(reply) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // A scraper or checker that goes away mid-request is not our error.
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    Ok(local)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The reply to a request for `path` (any method: checkers send GET or HEAD).
fn answer(path: &str, metrics: &PrometheusHandle, readiness: &Readiness) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => text(StatusCode::OK, metrics.render()),
        "/health" => text(StatusCode::OK, "alive\n".into()),
        "/health/ready" => ready_or_not(readiness.problems()),
        _ => match path.strip_prefix("/health/ready/").map(|role| readiness.problems_of(role)) {
            Some(Some(problems)) => ready_or_not(problems),
            Some(None) => text(StatusCode::NOT_FOUND, "this node runs no such role\n".into()),
            None => text(StatusCode::NOT_FOUND, NOT_FOUND.into()),
        },
    }
}

const NOT_FOUND: &str = "not found: try /metrics, /health, /health/ready or /health/ready/<role>\n";

fn ready_or_not(problems: Vec<String>) -> Response<Full<Bytes>> {
    if problems.is_empty() {
        text(StatusCode::OK, "ready\n".into())
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}\n", problems.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_is_not_ready_until_its_first_success_then_only_after_failing_past_the_grace() {
        let r = Readiness::default();
        assert_eq!(r.problems(), ["starting"], "no role yet");
        let gw = r.signal("gateway");
        assert_eq!(r.problems(), ["gateway: starting"]);
        gw.failed("metad unreachable");
        assert_eq!(r.problems(), ["gateway: metad unreachable"], "never ready yet");
        gw.ok();
        assert!(r.problems().is_empty());
        gw.failed("metad unreachable");
        assert!(r.problems().is_empty(), "a failure shorter than the grace (an election) changes nothing");
        let later = Instant::now() + READY_GRACE + Duration::from_millis(100);
        let why = gw.not_ready(later).expect("not ready past the grace");
        assert!(why.starts_with("gateway: metad unreachable (for "), "{why}");
        gw.ok();
        assert_eq!(gw.not_ready(later), None, "ready again at the first success");
    }

    #[test]
    fn one_role_is_ready_or_not_on_its_own() {
        let r = Readiness::default();
        let gw = r.signal("gateway");
        let blockd = r.signal("blockd");
        gw.ok();
        blockd.failed("disk full");
        assert_eq!(r.problems(), ["blockd: disk full"], "the node is not ready");
        assert_eq!(r.problems_of("gateway"), Some(vec![]), "its gateway is");
        assert_eq!(r.problems_of("blockd"), Some(vec!["blockd: disk full".to_string()]));
        assert_eq!(r.problems_of("metad"), None, "no such role here");
    }
}
