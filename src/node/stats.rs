//! The broker's counters as data: one table, in the order of the `stats` line.
//!
//! Each row names a counter, says what it is (for the metrics page) and reads its value from
//! the part of the node that counts it. The text line, the binary answer, the metrics page and
//! the CLI all loop over what [`collect`] makes of this table, so a new counter is one row here
//! (and its increment where it happens). The order is the text line's, which is kept byte for
//! byte: rows of one component are therefore not always together.

use std::time::Instant;

use super::Node;
use crate::protocol::stats::Def;
use crate::protocol::{BrokerStats, Counter};

/// One counter: what it is, and how to read it from a node.
pub(super) struct Row {
    /// Its name, kind, metric and help.
    pub(super) def: Def,
    /// Its value now.
    read: fn(&Node, Instant) -> u64,
}

const fn row(def: Def, read: fn(&Node, Instant) -> u64) -> Row {
    Row { def, read }
}

/// Every counter of a broker, in the order of the `stats` line.
#[rustfmt::skip]
pub(super) static COUNTERS: &[Row] = &[
    row(Def::gauge("instances", "makler_instances", "Live instances in the table."),
        |n, _| n.registry.len() as u64),
    row(Def::gauge("services", "makler_services", "Services with at least one live instance."),
        |n, _| n.registry.service_count() as u64),
    row(Def::counter("received", "makler_datagrams_received_total", "Request datagrams received."),
        |n, _| n.service.counters().received),
    row(Def::counter("rejected", "makler_rejected_total", "Requests answered with an error."),
        |n, _| n.service.counters().rejected),
    row(Def::counter("expired", "makler_expired_total", "Registrations that expired."),
        |n, _| n.registry.expired_total()),
    row(Def::counter("send_failures", "makler_send_failures_total", "Replies that could not be sent."),
        |n, _| n.counters.send_failures + n.outbox.dropped() + n.replies.dropped()),
    row(Def::counter("announcements", "makler_announcements_total",
            "Announcements and goodbyes taken from the multicast group."),
        |n, _| n.group.stats().announcements),
    row(Def::counter("multicast_ignored", "makler_multicast_ignored_total", "Multicast datagrams dropped."),
        |n, _| n.group.stats().ignored),
    row(Def::flag("complete", "makler_complete", "1 when the broker holds the whole table, 0 while it catches up."),
        |n, _| n.is_complete().into()),
    row(Def::gauge("peer_count", "makler_peers", "Peer brokers known."),
        |n, now| n.replicator.peer_stats(now).len() as u64),
    row(Def::gauge("peers_up", "makler_peers_up", "Peer brokers up."),
        |n, now| n.replicator.peer_stats(now).iter().filter(|p| p.up).count() as u64),
    row(Def::counter("replicated_out", "makler_replicated_out_total", "Lease changes sent to peers (once per peer)."),
        |n, _| n.replicator.stats().sent),
    row(Def::counter("replicated_in", "makler_replicated_in_total", "Lease changes received from peers and applied."),
        |n, _| n.replicator.stats().applied),
    row(Def::counter("retransmits", "makler_retransmits_total", "Deltas resent to peers."),
        |n, _| n.replicator.stats().retransmits),
    row(Def::counter("peer_rejected", "makler_peer_rejected_total", "Peer datagrams dropped."),
        |n, _| n.replicator.stats().rejected),
    row(Def::counter("probes", "makler_probes_total", "Probes started (TCP and HTTP; reports and health checks)."),
        |n, _| n.verifier.prober_stats().started),
    row(Def::counter("probes_dead", "makler_probes_dead_total", "Probes that found their target dead."),
        |n, _| n.verifier.prober_stats().dead),
    row(Def::counter("reports", "makler_reports_total", "Reports of dead instances received."),
        |n, _| n.verifier.reports()),
    row(Def::counter("reports_unchecked", "makler_reports_unchecked_total",
            "Reports of instances that declare no check: counted, not verified."),
        |n, _| n.verifier.reports_unchecked()),
    row(Def::counter("removed_unreachable", "makler_removed_unreachable_total", "Instances removed as unreachable."),
        |n, _| n.counters.removed_unreachable),
    row(Def::counter("refused_full", "makler_refused_total", REFUSED).labelled("reason", "full"),
        |n, _| n.service.counters().full),
    row(Def::counter("refused_quota", "makler_refused_total", REFUSED).labelled("reason", "quota"),
        |n, _| n.service.counters().quota),
    row(Def::counter("refused_policy", "makler_refused_total", REFUSED).labelled("reason", "policy"),
        |n, _| n.service.counters().not_allowed),
    row(Def::counter("refused_reports", "makler_refused_total", REFUSED).labelled("reason", "reports"),
        |n, _| n.service.counters().too_many),
    row(Def::counter("rate_dropped", "makler_rate_limited_total", RATE_LIMITED).labelled("action", "dropped"),
        |n, _| n.limiter.stats().dropped),
    row(Def::counter("rate_slipped", "makler_rate_limited_total", RATE_LIMITED).labelled("action", "slipped"),
        |n, _| n.limiter.stats().slipped),
    row(Def::counter("bridged", "makler_bridged_total", "Queries for services not held here, asked at the bridges."),
        |n, _| n.bridges.totals().bridged),
    row(Def::counter("bridged_found", "makler_bridged_found_total", "Bridged queries answered with instances."),
        |n, _| n.bridges.totals().found),
    row(Def::counter("bridge_queries", "makler_bridge_queries_total", "Other networks' bridge queries answered here."),
        |n, _| n.bridges.totals().answered),
    row(Def::gauge("watches", "makler_watches", "Watches (watch SERVICE) now."),
        |n, _| n.watches.len() as u64),
    row(Def::counter("watch_notifications", "makler_watch_notifications_total", "Notifications sent to watchers."),
        |n, _| n.watches.stats().sent),
    row(Def::counter("watch_dropped", "makler_watch_dropped_total",
            "Notifications held back by the rate limit or a full queue."),
        |n, _| n.watches.stats().dropped),
    row(Def::counter("foreign_hellos", "makler_foreign_hellos_total",
            "Hellos on the multicast group from brokers of another cluster, ignored."),
        |n, _| n.group.stats().foreign),
    row(Def::counter("digests_sent", "makler_digests_sent_total", "Anti-entropy digests sent to peers."),
        |n, _| n.replicator.stats().entropy.digests_sent),
    row(Def::counter("digest_mismatches", "makler_digest_mismatches_total",
            "Peers' digests that differed from this broker's table."),
        |n, _| n.replicator.stats().entropy.mismatches),
    row(Def::counter("repairs_pushed", "makler_repairs_pushed_total", "Leases pushed to a peer that lacked them."),
        |n, _| n.replicator.stats().entropy.pushed),
    row(Def::counter("repairs_removed", "makler_repairs_removed_total",
            "Removals sent back for leases a peer still held that were removed here."),
        |n, _| n.replicator.stats().entropy.removed),
    row(Def::counter("peer_bytes_out", "makler_peer_bytes_out_total", "Bytes of peer datagrams sent (sealed size)."),
        |n, _| n.counters.peer_bytes_out),
    row(Def::counter("peer_bytes_in", "makler_peer_bytes_in_total", "Bytes of peer datagrams received (sealed size)."),
        |n, _| n.counters.peer_bytes_in),
    row(Def::counter("refused_key", "makler_key_required_total",
            "Unsealed requests refused because --require-key asks for the key."),
        |n, _| n.service.counters().key_required + n.dns.refused()),
    row(Def::counter("sealed_dropped", "makler_sealed_dropped_total",
            "Sealed datagrams dropped: another key, forged, stale or replayed (peers' and clients')."),
        |n, _| n.counters.sealed_dropped),
    row(Def::counter("acks_dropped", "makler_acks_dropped_total",
            "Acknowledgements not sent: their source had more than its generous allowance (2,048 at once, 2,048 a second)."),
        |n, _| n.limiter.stats().acks_dropped),
    row(Def::counter("mdns_unicast_dropped", "makler_mdns_unicast_dropped_total",
            "mDNS unicast replies not sent: their source had 4 this second, or all sources 64 (--mdns)."),
        |n, _| n.mdns.unicast_dropped()),
];

const REFUSED: &str = "Requests refused, by reason.";
const RATE_LIMITED: &str = "Replies held back by the rate limit: dropped, or slipped (a short answer instead).";

/// Every counter's definition and value at `now`, in the table's order.
pub(super) fn values(node: &Node, now: Instant) -> impl Iterator<Item = (&'static Def, u64)> + '_ {
    COUNTERS.iter().map(move |row| (&row.def, (row.read)(node, now)))
}

/// The `stats` answer at `now`: every counter, peer and bridge.
pub(super) fn collect(node: &Node, now: Instant) -> BrokerStats {
    BrokerStats {
        counters: values(node, now).map(|(def, value)| Counter::new(def.name, value)).collect(),
        peers: node.replicator.peer_stats(now),
        bridges: node.bridges.stats(now),
    }
}

#[cfg(test)]
mod tests {
    use super::COUNTERS;

    #[test]
    fn names_are_unique_and_a_metrics_rows_are_together() {
        let mut names: Vec<&str> = COUNTERS.iter().map(|row| row.def.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COUNTERS.len());
        let mut metrics: Vec<&str> = COUNTERS.iter().map(|row| row.def.metric).collect();
        metrics.dedup();
        let all = metrics.len();
        metrics.sort_unstable();
        metrics.dedup();
        assert_eq!(metrics.len(), all, "the rows of one metric are next to each other");
    }
}
