//! The responder's by-name index: which instances answer a name, so that a question costs the
//! instances that answer it rather than every instance advertised.
//!
//! A question names one of four kinds of name (see [`records`](super::super::records)):
//!
//! - an instance name (`10-0-0-5:8080._web._tcp.local.`): its one instance;
//! - a type name (`_web._tcp.local.`): the instances of that service, each a PTR of its own;
//! - a host name (`10-0-0-5.makler.local.`): the instances at that address, whose A records
//!   are one record, so the first that answers is enough;
//! - `_services._dns-sd._udp.local.`: one PTR per service type, so one instance per type.
//!
//! So a question visits at most as many instances as it has answers, plus those still probing
//! (which do not answer yet) among them. Names are kept in lower case, as DNS compares them.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use hickory_proto::rr::Name;

use super::super::records::InstanceRecords;

/// An instance's key: its service and endpoint.
pub(super) type Key = (String, SocketAddr);

/// What a name is (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Instance,
    Type,
    Host,
}

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub(super) struct NameIndex {
    names: HashMap<String, (Kind, BTreeSet<Key>)>,
    /// The type names with at least one instance, in lower case.
    types: BTreeSet<String>,
}

/// A name in the index's spelling.
pub(super) fn spelling(name: &Name) -> String {
    name.to_lowercase().to_ascii()
}

impl NameIndex {
    fn names(records: &InstanceRecords) -> [(String, Kind); 3] {
        [
            (spelling(&records.srv.name), Kind::Instance),
            (spelling(&records.ptr.name), Kind::Type),
            (spelling(&records.host.name), Kind::Host),
        ]
    }

    /// Indexes an instance under the names of `records`.
    pub fn insert(&mut self, key: &Key, records: &InstanceRecords) {
        for (name, kind) in Self::names(records) {
            if kind == Kind::Type {
                self.types.insert(name.clone());
            }
            self.names.entry(name).or_insert_with(|| (kind, BTreeSet::new())).1.insert(key.clone());
        }
    }

    /// Takes an instance out from under the names of `records` (those it was indexed with).
    pub fn remove(&mut self, key: &Key, records: &InstanceRecords) {
        for (name, kind) in Self::names(records) {
            let Some((_, keys)) = self.names.get_mut(&name) else { continue };
            keys.remove(key);
            if keys.is_empty() {
                self.names.remove(&name);
                if kind == Kind::Type {
                    self.types.remove(&name);
                }
            }
        }
    }

    /// The instances indexed under `name` (in the index's spelling), and what the name is.
    pub fn get(&self, name: &str) -> Option<(Kind, &BTreeSet<Key>)> {
        self.names.get(name).map(|(kind, keys)| (*kind, keys))
    }

    /// The type names with instances.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(String::as_str)
    }

    /// How many names are indexed (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.names.len()
    }
}
