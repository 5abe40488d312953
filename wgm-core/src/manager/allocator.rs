//! The durable allocator state of a server ([`HeldRuns`]) from and along its peers: the
//! model-aware half (the runs themselves live in `ipam`, which knows no peers).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::ipam::{HeldEdit, HeldRuns, Pool};
use crate::model::{Change, Peer, Server, ServerState};
use crate::Result;

/// The two address pools of `server` (empty), to map addresses to host indices.
fn pools(server: &Server) -> Result<(Pool, Option<Pool>)> {
    let v6 = Pool::new(IpNet::V6(server.ipv6_pool))?;
    let v4 = server
        .ipv4_pool
        .map(|n| Pool::new(IpNet::V4(n)))
        .transpose()?;
    Ok((v6, v4))
}

/// The host indices of `p`'s addresses inside the pools (an address outside them, as
/// an imported peer may have, holds nothing).
fn indices(p: &Peer, v6: &Pool, v4: Option<&Pool>) -> (Option<u128>, Option<u128>) {
    (
        p.address_v6.and_then(|a| v6.index_of(IpAddr::V6(a))),
        p.address_v4
            .and_then(|a| v4.and_then(|pool| pool.index_of(IpAddr::V4(a)))),
    )
}

fn editor(held: &HeldRuns, server: &Server) -> Result<(HeldEdit, Pool, Option<Pool>)> {
    let (v6, v4) = pools(server)?;
    let e = held.edit(v6.size(), v4.as_ref().map_or(1, Pool::size));
    Ok((e, v6, v4))
}

/// The runs the peers of `state` hold (`O(n log n)`; once, when no durable state
/// exists yet).
pub(crate) fn held_of(state: &ServerState) -> Result<HeldRuns> {
    let (mut e, v6, v4) = editor(&HeldRuns::default(), &state.server)?;
    for p in state.peers.values() {
        let (i6, i4) = indices(p, &v6, v4.as_ref());
        e.hold(i6, i4);
    }
    Ok(e.finish())
}

/// `held` after `changes` of `server`; `None` when a change moves the pools or is not
/// about peers (build the state afresh then).
pub(crate) fn held_after(held: &HeldRuns, server: &Server, changes: &[Change]) -> Option<HeldRuns> {
    let (mut e, v6, v4) = editor(held, server).ok()?;
    for ch in changes {
        match ch {
            Change::PeerAdded { peer } => {
                let (a, b) = indices(peer, &v6, v4.as_ref());
                e.hold(a, b);
            }
            Change::PeerRemoved { peer } => {
                let (a, b) = indices(peer, &v6, v4.as_ref());
                e.release(a, b);
            }
            Change::PeerUpdated { before, after } => {
                let (a, b) = indices(before, &v6, v4.as_ref());
                e.release(a, b);
                let (a, b) = indices(after, &v6, v4.as_ref());
                e.hold(a, b);
            }
            Change::ServerUpdated { before, after }
                if before.ipv6_pool == after.ipv6_pool && before.ipv4_pool == after.ipv4_pool => {}
            _ => return None,
        }
    }
    Some(e.finish())
}
