//! What the node logs about the table and its peers.

use super::PeerEvent;
use crate::protocol::RemoveReason;
use crate::registry::{Change, ChangeKind};

/// Logs a change to the table (renewals only at trace level: they are many).
pub(super) fn log_change(change: &Change) {
    let what = match change.kind {
        ChangeKind::Registered => "registered",
        ChangeKind::Refreshed => {
            log::trace!("refreshed {} {} id={}", change.service, change.endpoint, change.id);
            return;
        }
        ChangeKind::Expired => "expired",
        // Logged with its reason where it was found.
        ChangeKind::Removed(RemoveReason::Unreachable) if !change.by_peer => return,
        ChangeKind::Removed(reason) => match reason {
            RemoveReason::Deregistered => "deregistered",
            RemoveReason::Goodbye => "said goodbye",
            RemoveReason::Unreachable => "removed as unreachable",
        },
    };
    let peer = if change.by_peer { " (from a peer)" } else { "" };
    log::info!("{what} {} {} id={} source={}{peer}", change.service, change.endpoint, change.id, change.source);
}

pub(super) fn log_peer_event(event: &PeerEvent) {
    match event {
        PeerEvent::Joined(addr) => log::info!("peer {addr} joined"),
        PeerEvent::Left(addr) => log::warn!("peer {addr} left"),
        PeerEvent::Restarted(addr) => log::info!("peer {addr} restarted"),
        PeerEvent::Forgotten(addr) => {
            log::info!("peer {addr} (found on the group) silent for the forget time: forgotten")
        }
        PeerEvent::CaughtUp { from: Some(addr), leases } => {
            log::info!("caught up: {leases} leases from peer {addr}")
        }
        PeerEvent::CaughtUp { from: None, .. } => {
            log::info!("no complete peer answered: this broker's table is complete")
        }
    }
}
