//! The routing table: host labels to the [`Backend`] a slot's requests go
//! to, swapped whole so a swap moves both host names at the same instant.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::upstream::Upstream;
use super::{MAX_SPARE, PRODUCTION_SLOT};

/// The process a slot's requests go to: `127.0.0.1:PORT`, with the count
/// of requests it is serving.
#[derive(Debug)]
pub struct Backend {
    pub(super) addr: SocketAddr,
    /// For logs and pages: `APP/SLOT release VERSION`.
    pub(super) label: String,
    pub(super) in_flight: AtomicUsize,
    pub(super) retired: AtomicBool,
    /// Whether the slot's own process listens on the port now (see
    /// [`Backend::set_serving`]); while not, requests get a 503 page and
    /// never reach whatever else may listen there.
    pub(super) serving: AtomicBool,
    pub(super) idle: Notify,
    /// Idle keep-alive connections to the process, for the next client
    /// connection (touched when a client connection starts or ends).
    pub(super) spare: Mutex<Vec<Upstream>>,
}

impl Backend {
    /// A backend at `127.0.0.1:port`.
    pub fn new(port: u16, label: impl Into<String>) -> Backend {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Backend {
            addr,
            label: label.into(),
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            serving: AtomicBool::new(true),
            idle: Notify::new(),
            spare: Mutex::new(Vec::new()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Marks whether the slot's process is confirmed to listen on the port
    /// (the supervisor clears it when the process exits and sets it when
    /// the restarted process's own socket is listening). A new backend
    /// serves.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    /// Whether requests may go to it now.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Requests it is serving now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts a request in; `None` when the backend was retired (the
    /// caller looks the route up again).
    pub(super) fn enter(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(Arc::clone(self));
        // Checked after counting in (both SeqCst): either `drain` sees this
        // request, or this request sees the backend retired.
        if self.retired.load(Ordering::SeqCst) {
            drop(guard);
            return None;
        }
        Some(guard)
    }

    /// Takes no new requests (call after the route moved away), then waits
    /// until the ones it took have finished, at most `timeout`. Returns
    /// whether it drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.retired.store(true, Ordering::SeqCst);
        // Its idle connections close now; busy ones end with their client.
        self.spares().clear();
        let wait = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl Backend {
    pub(super) fn spares(&self) -> std::sync::MutexGuard<'_, Vec<Upstream>> {
        self.spare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection to the process, if one is open.
    pub(super) fn take_spare(&self) -> Option<Upstream> {
        let mut spare = self.spares();
        while let Some(conn) = spare.pop() {
            if conn.alive() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps an idle connection for the next client (unless retired).
    pub(super) fn give_back(&self, conn: Upstream) {
        if conn.sender.is_closed() {
            return;
        }
        let mut spare = self.spares();
        // Checked under the lock `drain` clears the spares with.
        if spare.len() < MAX_SPARE && !self.retired.load(Ordering::SeqCst) {
            spare.push(conn);
        }
    }
}

/// One request in flight on a backend, until dropped.
#[derive(Debug)]
pub(super) struct InFlight(pub(super) Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Where a host name leads.
#[derive(Debug, Clone)]
pub enum Route {
    /// A slot with a process.
    Backend(Arc<Backend>),
    /// A slot that runs nothing (503).
    Idle { app: String, slot: String },
}

/// Host label → route, swapped whole.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub(super) map: ArcSwap<HashMap<String, Route>>,
    /// Serializes writers (they copy, change and store the map).
    pub(super) write: Mutex<()>,
}

/// The labels a slot answers to: `APP-SLOT`, and `APP` for `production`.
pub fn labels(app: &str, slot: &str) -> Vec<String> {
    let mut labels = vec![format!("{app}-{slot}")];
    if slot == PRODUCTION_SLOT {
        labels.push(app.to_string());
    }
    labels
}

/// The host names of a slot under `domain`: `APP-SLOT.domain` (and `APP.domain`).
pub fn host_names(app: &str, slot: &str, domain: &str) -> Vec<String> {
    labels(app, slot)
        .into_iter()
        .map(|l| format!("{l}.{domain}"))
        .collect()
}

impl RouteTable {
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// The route of a label, without taking a lock.
    pub fn lookup(&self, label: &str) -> Option<Route> {
        self.map.load().get(label).cloned()
    }

    /// Applies `change` to a copy of the table and stores it: readers see
    /// the table before or after, never half of it.
    pub fn update(&self, change: impl FnOnce(&mut HashMap<String, Route>)) {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = HashMap::clone(&self.map.load());
        change(&mut next);
        self.map.store(Arc::new(next));
    }

    /// Points every label of (app, slot) at `route`, within `change`.
    pub fn set(map: &mut HashMap<String, Route>, app: &str, slot: &str, route: Route) {
        for label in labels(app, slot) {
            map.insert(label, route.clone());
        }
    }
}
