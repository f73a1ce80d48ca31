//! The mDNS wire format, through hickory-proto (its `mdns` feature reads and writes the
//! unicast-response bit of questions and the cache-flush bit of records): decoding that never
//! panics, encoding within a packet's size (split into several packets where records do not fit
//! one), and the record comparisons RFC 6762 asks for.

use std::cmp::Ordering;

use hickory_proto::op::{Message, MessageType, Metadata, OpCode, ResponseCode, emit_message_parts};
use hickory_proto::rr::{DNSClass, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// The largest packet sent: an Ethernet MTU (1500) less IPv6's and UDP's headers, with room to
/// spare (RFC 6762 §17 allows up to 9000 bytes, which would fragment on most links).
pub const MAX_PACKET: usize = 1440;

/// A datagram as a message, if it is one mDNS handles (RFC 6762 §18: the opcode is QUERY and
/// the response code 0; anything else is ignored). Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Option<Message> {
    let message = Message::from_vec(bytes).ok()?;
    (message.op_code == OpCode::Query && message.response_code == ResponseCode::NoError).then_some(message)
}

/// A response as mDNS sends it: id 0 (RFC 6762 §18.1), QR and AA set, no question.
pub fn response() -> Message {
    let mut message = Message::new(0, MessageType::Response, OpCode::Query);
    message.metadata.authoritative = true;
    message
}

/// A query as mDNS sends it: id 0, no flags.
pub fn query() -> Message {
    Message::new(0, MessageType::Query, OpCode::Query)
}

/// Encodes `message` into packets of at most [`MAX_PACKET`] bytes each: whole when it fits;
/// else its additional records are dropped, and then its answers (and a query's known answers)
/// are spread over as many packets as they need, each with the questions and the authority
/// records (RFC 6762 §7.2 sets TC on all but a query's last packet).
pub fn encode(message: &Message) -> Vec<Vec<u8>> {
    if let Some(bytes) = emit(message) {
        return vec![bytes];
    }
    let mut lean = message.clone();
    lean.additionals.clear();
    if let Some(bytes) = emit(&lean) {
        return vec![bytes];
    }
    let answers = std::mem::take(&mut lean.answers);
    let mut packets = Vec::new();
    let mut chunk = lean.clone();
    for record in answers {
        chunk.answers.push(record);
        if chunk.answers.len() > 1 && emit(&chunk).is_none() {
            let record = chunk.answers.pop();
            push_chunk(&mut packets, &mut chunk, message.message_type == MessageType::Query);
            chunk = lean.clone();
            chunk.answers.extend(record);
        }
    }
    if let Some(bytes) = emit(&chunk) {
        packets.push(bytes);
    }
    packets
}

fn push_chunk(packets: &mut Vec<Vec<u8>>, chunk: &mut Message, query: bool) {
    chunk.metadata.truncation = query;
    packets.extend(emit(chunk));
}

/// The message's bytes if they fit [`MAX_PACKET`].
fn emit(message: &Message) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut out);
    encoder.set_max_size(MAX_PACKET as u16);
    let metadata: &Metadata = &message.metadata;
    let header = emit_message_parts(
        metadata,
        &mut message.queries.iter(),
        &mut message.answers.iter(),
        &mut message.authorities.iter(),
        &mut message.additionals.iter(),
        None,
        None,
        &mut encoder,
    )
    .ok()?;
    let counts = header.counts;
    let whole = usize::from(counts.queries) == message.queries.len()
        && usize::from(counts.answers) == message.answers.len()
        && usize::from(counts.authorities) == message.authorities.len()
        && usize::from(counts.additionals) == message.additionals.len();
    whole.then_some(out)
}

/// A record's data as bytes, uncompressed: what RFC 6762 §8.2 compares.
pub fn rdata_bytes(data: &RData) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = BinEncoder::new(&mut out);
    // A name in rdata compresses only against names before it in the buffer: there are none.
    let _ = data.emit(&mut encoder);
    out
}

/// Whether two records are the same record (name without regard to case, type, class, data),
/// whatever their TTLs and cache-flush bits.
pub fn same_record(a: &Record, b: &Record) -> bool {
    a.record_type() == b.record_type() && a.dns_class == b.dns_class && a.name == b.name && a.data == b.data
}

/// RFC 6762 §8.2's order of two sets of records for one name (a probe's authority section):
/// each set sorted by class, type, then data bytes, and compared record by record; the set
/// that runs out first is the lesser.
pub fn compare_sets(ours: &[&Record], theirs: &[&Record]) -> Ordering {
    fn key(record: &Record) -> (u16, u16, Vec<u8>) {
        (u16::from(record.dns_class), u16::from(record.record_type()), rdata_bytes(&record.data))
    }
    let mut ours: Vec<_> = ours.iter().map(|r| key(r)).collect();
    let mut theirs: Vec<_> = theirs.iter().map(|r| key(r)).collect();
    ours.sort();
    theirs.sort();
    ours.cmp(&theirs)
}

/// Whether `class` is IN (the only class mDNS service discovery uses) or ANY.
pub fn is_in(class: DNSClass) -> bool {
    matches!(class, DNSClass::IN | DNSClass::ANY)
}
