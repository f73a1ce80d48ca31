//! TSIG (RFC 8945) on the DNS face: the DNS face's own seal. With `--require-key all` (and a key
//! file), the DNS face answers only queries signed with HMAC-SHA256 under a secret derived from
//! the key file ([`secret`]), named [`KEY_NAME`], and signs its answers; `makler key dns` prints
//! them as `dig -y` takes them ([`dig_key`]).
//!
//! - An unsigned query is answered REFUSED, unsigned.
//! - A query signed under another key name or algorithm gets NOTAUTH with the TSIG error BADKEY,
//!   and one whose MAC does not match NOTAUTH with BADSIG, both unsigned (RFC 8945 §5.2).
//! - A query whose time signed is further from the broker's clock than its fudge (RFC 8945
//!   §5.2.3; `dig` and hickory sign with [`FUDGE`]) gets NOTAUTH with BADTIME, signed, with the
//!   query's time and fudge and the broker's time in its other data, as §5.2.3 asks.
//!
//! Each of these is counted with the unsealed requests refused (`refused_key`). TSIG keeps no
//! replay window: a signed query copied within the fudge can be asked again, and gets the same
//! answer the signer would (the DNS face has no writes).

use std::ops::RangeInclusive;

use hickory_proto::op::{Message, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record, signed_bitmessage_to_buf};
use hickory_proto::rr::{Name, Record, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::protocol::seal::Key;

/// The TSIG key's name, which the query names and `dig -y` is given.
pub const KEY_NAME: &str = "makler-tsig.";

/// How far a query's signing time may be from the broker's clock, in seconds: RFC 8945's
/// recommended 300.
pub const FUDGE: u16 = 300;

/// The room a TSIG record takes at the end of an answer (the key name, the algorithm's name,
/// a 32-byte MAC), kept free when the answer is made.
pub const RESERVE: usize = 96;

/// The length of an HMAC-SHA256 MAC: the only length taken.
const MAC_LEN: usize = 32;

/// The key derivation context of the TSIG secret.
const CONTEXT: &str = "makler 2026-12 DNS TSIG key (hmac-sha256)";

/// The TSIG secret of a key file: its own key derived from the seal's key, so that `dig`, which
/// must hold it, holds nothing that seals anything else.
pub fn secret(key: &Key) -> [u8; 32] {
    key.derive(CONTEXT)
}

/// The key as `dig -y` takes it: `hmac-sha256:makler-tsig:<base64 secret>`.
pub fn dig_key(key: &Key) -> String {
    format!("hmac-sha256:{}:{}", KEY_NAME.trim_end_matches('.'), data_encoding::BASE64.encode(&secret(key)))
}

/// The DNS face's signer. See the [module documentation](self).
#[derive(Clone)]
pub struct Tsig {
    signer: TSigner,
}

impl std::fmt::Debug for Tsig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsig").field("name", &KEY_NAME).finish_non_exhaustive()
    }
}

/// What [`Tsig::check`] found.
#[derive(Debug)]
pub enum Checked {
    /// Signed with the key, in time: answer, then [`Tsig::sign`] the answer with this MAC (the
    /// query's).
    Signed(Vec<u8>),
    /// Refused (unsigned, another key, a MAC that does not match, out of time): the refusal to
    /// send, if any, is written.
    Refused,
    /// Not a query that decodes: the DNS face's own rules apply (no answer, or FORMERR).
    NotAQuery,
}

impl Tsig {
    /// The signer of `key`'s TSIG secret.
    pub fn new(key: &Key) -> Tsig {
        let name = Name::from_ascii(KEY_NAME).expect("a valid constant name");
        let signer = TSigner::new(secret(key).to_vec(), TsigAlgorithm::HmacSha256, name, FUDGE)
            .expect("HMAC-SHA256 is supported");
        Tsig { signer }
    }

    /// Checks the signature of `query` at `unix_s` (the broker's clock, in Unix seconds); on a
    /// refusal, writes the reply to send into `out` (cleared first; empty: none).
    pub fn check(&self, query: &[u8], unix_s: u64, out: &mut Vec<u8>) -> Checked {
        out.clear();
        let Ok(request) = Message::from_vec(query) else { return Checked::NotAQuery };
        if request.metadata.message_type != MessageType::Query {
            return Checked::NotAQuery;
        }
        let Some(signature) = request.signature() else {
            self.refuse(&request, ResponseCode::Refused, None, out);
            return Checked::Refused;
        };
        let known =
            signature.name == *self.signer.signer_name() && signature.data.algorithm == *self.signer.algorithm();
        if !known {
            let context = TSigResponseContext::unknown_key(request.id, unix_s, signature.name.clone());
            self.refuse(&request, ResponseCode::NotAuth, Some(context), out);
            return Checked::Refused;
        }
        let Some(signed) = self.verify(query) else {
            let context = TSigResponseContext::bad_signature(request.id, unix_s, self.signer.clone());
            self.refuse(&request, ResponseCode::NotAuth, Some(context), out);
            return Checked::Refused;
        };
        // The interval the query names (RFC 8945 §5.2.3): its time signed, give or take its fudge.
        let fudge = u64::from(signed.fudge);
        if !RangeInclusive::new(signed.time.saturating_sub(fudge), signed.time + fudge).contains(&unix_s) {
            self.refuse(&request, ResponseCode::NotAuth, None, out);
            if !out.is_empty() && !self.append_bad_time(&signed, unix_s, out) {
                out.clear();
            }
            return Checked::Refused;
        }
        Checked::Signed(signed.mac)
    }

    /// The TSIG record of `query` if its MAC is the key's (hickory's `verify_message_byte`,
    /// without its time window, which underflows on a time signed within the fudge of 1970).
    fn verify(&self, query: &[u8]) -> Option<TSIG> {
        let (signed_data, record) = signed_bitmessage_to_buf(query, None, true).ok()?;
        let known = record.name == *self.signer.signer_name() && record.data.algorithm == *self.signer.algorithm();
        // A full-length MAC only: a truncated one is refused as a MAC that does not match.
        if !known || record.data.mac.len() != MAC_LEN {
            return None;
        }
        // ring's HMAC verification, in constant time.
        self.signer.verify(&signed_data, &record.data.mac).ok()?;
        Some(record.data)
    }

    /// Appends the signed TSIG record of a BADTIME refusal of `signed` (RFC 8945 §5.2.3): the
    /// query's time signed and fudge, and the broker's time `unix_s` in the other data, so
    /// that the client can verify the refusal and learn the clock it was refused by.
    fn append_bad_time(&self, signed: &TSIG, unix_s: u64, message: &mut Vec<u8>) -> bool {
        let Some(id) = message.first_chunk::<2>().map(|id| u16::from_be_bytes(*id)) else { return false };
        let server_time = unix_s.to_be_bytes()[2..].to_vec();
        let stub = TSIG::new(
            self.signer.algorithm().clone(),
            signed.time,
            signed.fudge,
            Vec::new(),
            id,
            Some(TsigError::BadTime),
            server_time,
        );
        let Ok(to_sign) = self.signer.encode_response_tbs(&signed.mac, message, &stub) else { return false };
        let Ok(mac) = self.signer.sign(&to_sign) else { return false };
        push(&make_tsig_record(self.signer.signer_name().clone(), stub.set_mac(mac)), message)
    }

    /// Signs the answer in `reply` to a query whose MAC was `request_mac`: appends the TSIG
    /// record (RFC 8945 §5.3). Returns whether it could (else `reply` is cleared).
    pub fn sign(&self, request_mac: &[u8], unix_s: u64, reply: &mut Vec<u8>) -> bool {
        let Some(id) = reply.first_chunk::<2>().map(|id| u16::from_be_bytes(*id)) else { return false };
        let context = TSigResponseContext::new(id, unix_s, self.signer.clone(), request_mac.to_vec(), None);
        let signed = append(context, reply);
        if !signed {
            reply.clear();
        }
        signed
    }

    /// Writes the refusal of `request` with `code`, and the TSIG record `context` makes.
    fn refuse(&self, request: &Message, code: ResponseCode, context: Option<TSigResponseContext>, out: &mut Vec<u8>) {
        let mut response = Message::new(request.id, MessageType::Response, request.op_code);
        response.metadata = Metadata::response_from_request(&request.metadata);
        response.metadata.response_code = code;
        if let [query] = request.queries.as_slice() {
            response.queries.push(query.clone());
        }
        let mut encoder = BinEncoder::new(out);
        if response.emit(&mut encoder).is_err() {
            out.clear();
            return;
        }
        if let Some(context) = context {
            if !append(context, out) {
                out.clear();
            }
        }
    }
}

/// Appends the TSIG record `context` makes of the message in `message`, and counts it in the
/// header's additional records.
fn append(context: TSigResponseContext, message: &mut Vec<u8>) -> bool {
    let Ok(record) = context.sign(message) else { return false };
    push(&record, message)
}

/// Appends `record` to the message in `message`, and counts it in the header's additional
/// records.
fn push(record: &Record<TSIG>, message: &mut Vec<u8>) -> bool {
    let Some(count) = message.get(10..12).map(|c| u16::from_be_bytes([c[0], c[1]])) else { return false };
    let Some(count) = count.checked_add(1) else { return false };
    let mut tail = Vec::new();
    if record.emit(&mut BinEncoder::new(&mut tail)).is_err() {
        return false;
    }
    message[10..12].copy_from_slice(&count.to_be_bytes());
    message.extend_from_slice(&tail);
    true
}

#[cfg(test)]
#[path = "tsig_tests.rs"]
mod tests;
