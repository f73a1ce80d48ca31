//! DNS-SD (RFC 6763) over multicast DNS (RFC 6762): makler's services in the LAN's own
//! discovery language.
//!
//! - [`names`]: the instance label, `<ip>:<port>`, shared by the unicast DNS face
//!   (`<instance>._<service>._tcp.<domain>`, [`crate::node::dns`]) and the link.

pub mod names;
