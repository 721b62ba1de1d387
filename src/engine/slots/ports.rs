//! Ports of slot processes, and who really listens on them.
//!
//! A port is leased for the life of a slot process ([`PortLease`]): no two
//! slot processes of this Slipway are ever given the same port, even when
//! one restarts. Ports come from [`SLOT_PORTS`], below Linux's ephemeral
//! range (32768–60999 by default), so the local ends of outgoing
//! connections never take them between the check and the process's bind.
//! Another program may still bind a port first; [`owner`] tells, from
//! `/proc`, whether the listener on a port belongs to a process group, so
//! that health checks (and the router behind them) never take another
//! program's answer for the slot's.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

/// Where slot ports are taken from.
pub const SLOT_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The ports leased now, by this process.
static LEASED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn leased() -> std::sync::MutexGuard<'static, BTreeSet<u16>> {
    LEASED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A port held for one slot process; given back when dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Holds `port`, which the caller chose (tests: a port the OS gave).
    pub fn adopt(port: u16) -> PortLease {
        leased().insert(port);
        PortLease { port }
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        leased().remove(&self.port);
    }
}

/// Whether nothing listens on `127.0.0.1:port` now.
fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Leases `preferred` (the slot's port before a restart of Slipway) when no
/// slot process holds it and nothing listens on it, else a free port of
/// [`SLOT_PORTS`], starting the search at a random place.
pub fn lease(preferred: Option<u16>) -> std::io::Result<PortLease> {
    let mut held = leased();
    if let Some(port) = preferred.filter(|p| *p != 0)
        && !held.contains(&port)
        && bindable(port)
    {
        held.insert(port);
        return Ok(PortLease { port });
    }
    let size = SLOT_PORTS.end - SLOT_PORTS.start;
    let start = rand::random_range(0..size);
    for i in 0..size {
        let port = SLOT_PORTS.start + (start + i) % size;
        if !held.contains(&port) && bindable(port) {
            held.insert(port);
            return Ok(PortLease { port });
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!(
            "no free port in {}–{} on 127.0.0.1",
            SLOT_PORTS.start,
            SLOT_PORTS.end - 1
        ),
    ))
}

/// Who listens on a port, as seen from a slot's process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A process of the group holds the listening socket.
    Group,
    /// Something else listens there.
    Other,
    /// Nothing listens there.
    Nobody,
}

/// Who listens on TCP `port` (on any local address, IPv4 or IPv6): a
/// process of process group `group`, another program, or nobody. Reads
/// `/proc/net/tcp{,6}` and the open files of the group's processes (which
/// are this user's, so readable).
pub fn owner(port: u16, group: i32) -> std::io::Result<Owner> {
    let error = |e: procfs::ProcError| std::io::Error::other(e.to_string());
    let mut inodes: HashSet<u64> = HashSet::new();
    for table in [procfs::net::tcp(), procfs::net::tcp6()] {
        let Ok(entries) = table else { continue };
        inodes.extend(
            entries
                .iter()
                .filter(|e| {
                    e.state == procfs::net::TcpState::Listen && e.local_address.port() == port
                })
                .map(|e| e.inode),
        );
    }
    if inodes.is_empty() {
        return Ok(Owner::Nobody);
    }
    for process in procfs::process::all_processes().map_err(error)? {
        let Ok(process) = process else { continue };
        let Ok(stat) = process.stat() else { continue };
        if stat.pgrp != group {
            continue;
        }
        let Ok(fds) = process.fd() else { continue };
        let holds = fds.flatten().any(|fd| {
            matches!(fd.target, procfs::process::FDTarget::Socket(inode) if inodes.contains(&inode))
        });
        if holds {
            return Ok(Owner::Group);
        }
    }
    Ok(Owner::Other)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_and_given_back() {
        let a = lease(None).unwrap();
        let b = lease(Some(a.port())).unwrap();
        assert_ne!(a.port(), b.port(), "a held port is never leased twice");
        assert!(SLOT_PORTS.contains(&b.port()));
        let port = a.port();
        drop(a);
        let again = lease(Some(port)).unwrap();
        assert_eq!(again.port(), port, "a returned port may be leased again");
    }

    #[test]
    fn a_port_someone_listens_on_is_not_leased() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let busy = listener.local_addr().unwrap().port();
        let lease = lease(Some(busy)).unwrap();
        assert_ne!(lease.port(), busy);
    }

    #[test]
    fn the_owner_of_a_listener_is_found_by_process_group() {
        // A leased port: nobody else in this process binds it meanwhile.
        let lease = lease(None).unwrap();
        let port = lease.port();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let ours = rustix::process::getpgrp().as_raw_nonzero().get();
        assert_eq!(owner(port, ours).unwrap(), Owner::Group);
        assert_eq!(owner(port, ours + 1_000_000).unwrap(), Owner::Other);
        drop(listener);
        assert_eq!(owner(port, ours).unwrap(), Owner::Nobody);
    }
}
