//! The listing replies: the services a broker knows with their instance counts
//! ([`Request::Services`](super::Request::Services)), and one service's instances with their
//! age and source ([`Request::Instances`](super::Request::Instances)). Both come a page at a
//! time, each page within [`MAX_REPLY_LEN`](super::MAX_REPLY_LEN); `next` is the cursor to ask
//! for the following page with, `None` on the last one.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Check, Source};

/// One page of the services a broker knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePage {
    /// How many services have live instances (on every page).
    pub total: u64,
    /// The services on this page, in the table's order (not sorted).
    pub services: Vec<ServiceCount>,
    /// The cursor of the next page; `None`: this is the last.
    pub next: Option<u32>,
}

/// A service and how many live instances it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCount {
    /// The service's name.
    pub name: String,
    /// Its live instances.
    pub instances: u64,
}

/// One page of a service's live instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancePage {
    /// How many live instances the service has (on every page).
    pub total: u64,
    /// The instances on this page.
    pub instances: Vec<InstanceInfo>,
    /// The cursor of the next page; `None`: this is the last.
    pub next: Option<u32>,
}

/// One live instance as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Where it listens.
    pub endpoint: SocketAddr,
    /// Milliseconds since the broker first held it (its oldest lease's age).
    pub age_ms: u64,
    /// Milliseconds until it expires unless renewed.
    pub expires_ms: u64,
    /// How many leases hold it: one per source that registered or announced it.
    pub leases: u64,
    /// Who registered it (the oldest lease's source).
    pub source: Source,
    /// The health check its oldest lease declares. The text form prints it (`check=tcp`); the
    /// binary form does not carry it, so that its encoding stays what older clients read.
    #[serde(skip)]
    pub check: Check<Box<str>>,
    /// Its metadata (see [`crate::meta`]): the text form prints the pairs after the check;
    /// the binary form carries them only in [`Response::InstanceListMeta`](super::Response::InstanceListMeta),
    /// so that this encoding stays what older clients read.
    #[serde(skip)]
    pub meta: crate::meta::Metadata,
}

/// One instance's metadata as the binary replies carry it: its pairs, `(key, value)`, a boolean
/// attribute's value `None`.
pub type MetaPairs = Vec<(String, Option<Vec<u8>>)>;

/// A [`Metadata`](crate::meta::Metadata) as [`Response::InstanceListMeta`](super::Response::InstanceListMeta)
/// carries it: its pairs, `(key, value)`, a boolean attribute's value `None`.
pub fn pairs_of(meta: &crate::meta::Metadata) -> Vec<(String, Option<Vec<u8>>)> {
    meta.iter().map(|pair| (pair.key.to_owned(), pair.value.map(<[u8]>::to_vec))).collect()
}

/// The [`Metadata`](crate::meta::Metadata) of pairs [`pairs_of`] wrote (read as a TXT record
/// is: pairs that break a rule are left out).
pub fn metadata_of(pairs: &[(String, Option<Vec<u8>>)]) -> crate::meta::Metadata {
    let strings: Vec<Vec<u8>> = pairs
        .iter()
        .map(|(key, value)| {
            let mut string = key.as_bytes().to_vec();
            if let Some(value) = value {
                string.push(b'=');
                string.extend_from_slice(value);
            }
            string
        })
        .collect();
    crate::meta::Metadata::from_txt(&strings)
}
