//! Turning one query into a reply: pure, synchronous, no I/O, so every rule is unit
//! tested and a hostile packet can only ever cost one decode.

use crate::Names;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The zone banger is authoritative for.
pub const ZONE: &str = "vm.";

/// TTL of every answer, positive or negative. One second: a deleted VM's name must
/// stop resolving at once, even through a caching resolver such as systemd-resolved.
pub const TTL: u32 = 1;

/// The EDNS payload size we advertise (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// What to do with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not ours: hand the query, unchanged, to an upstream resolver.
    Forward,
    /// Not a query worth answering (a response, or too short to carry an id): drop it,
    /// so two responders can never bounce packets between each other.
    Ignore,
}

/// Answer `packet`. `forward` says whether names outside `vm.` may be forwarded
/// (the guests' listener) or are refused (the host's listener, which must not be an
/// open resolver).
pub fn respond(packet: &[u8], names: &Names, forward: bool) -> Reply {
    if packet.len() < 12 {
        return Reply::Ignore;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    // QR bit set: a response. Never answer one.
    if packet[2] & 0x80 != 0 {
        return Reply::Ignore;
    }
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return error(id, ResponseCode::FormErr),
    };
    if req.metadata.message_type != MessageType::Query {
        return Reply::Ignore;
    }
    if req.metadata.op_code != OpCode::Query {
        return reply(&req, ResponseCode::NotImp, vec![], vec![]);
    }
    if req.queries.len() != 1 {
        return reply(&req, ResponseCode::FormErr, vec![], vec![]);
    }
    let q = &req.queries[0];
    let name = q.name().to_lowercase();
    let zone = zone();
    if !zone.zone_of(&name) {
        return if forward {
            Reply::Forward
        } else {
            // Not our zone: no AA (we are not its authority), just a refusal.
            let mut r = refusal(&req);
            r.metadata.authoritative = false;
            encode(&req, r)
        };
    }
    if q.query_class() != DNSClass::IN {
        return reply(&req, ResponseCode::Refused, vec![], vec![]);
    }
    let soa = vec![soa_record()];
    match name.num_labels() {
        // The apex: its SOA, nothing else.
        1 if q.query_type() == RecordType::SOA => reply(&req, ResponseCode::NoError, soa, vec![]),
        1 => reply(&req, ResponseCode::NoError, vec![], soa),
        2 => {
            let label = name
                .iter()
                .next()
                .map(|l| String::from_utf8_lossy(l).to_string());
            match label.and_then(|l| names.get(&l)) {
                Some(ip) if matches!(q.query_type(), RecordType::A | RecordType::ANY) => {
                    let rec = Record::from_rdata(name.clone(), TTL, RData::A(A(ip)));
                    reply(&req, ResponseCode::NoError, vec![rec], vec![])
                }
                // The name exists but has no record of that type (AAAA, MX...): NODATA.
                Some(_) => reply(&req, ResponseCode::NoError, vec![], soa),
                None => reply(&req, ResponseCode::NXDomain, vec![], soa),
            }
        }
        _ => reply(&req, ResponseCode::NXDomain, vec![], soa),
    }
}

fn zone() -> Name {
    // A constant that always parses; fall back to the root rather than panic.
    Name::from_ascii(ZONE).unwrap_or_else(|_| Name::root())
}

fn soa_record() -> Record {
    let zone = zone();
    let mname = Name::from_ascii("ns.vm.").unwrap_or_else(|_| zone.clone());
    let rname = Name::from_ascii("hostmaster.vm.").unwrap_or_else(|_| zone.clone());
    // minimum = negative-caching TTL (RFC 2308): as short as positive answers.
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, TTL);
    Record::from_rdata(zone, TTL, RData::SOA(soa))
}

/// A reply to `req`: its id, question and RD flag, AA set, our own OPT if it sent one.
fn reply(req: &Message, code: ResponseCode, answers: Vec<Record>, authority: Vec<Record>) -> Reply {
    let mut m = message(req, code);
    m.answers = answers;
    m.authorities = authority;
    encode(req, m)
}

/// REFUSED for `req` (AA set; callers outside the zone clear it).
fn refusal(req: &Message) -> Message {
    message(req, ResponseCode::Refused)
}

fn message(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.response_code = code;
    m.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD).set_version(0);
        m.edns = Some(e);
    }
    m
}

fn encode(req: &Message, m: Message) -> Reply {
    match m.to_vec() {
        Ok(bytes) => Reply::Answer(bytes),
        Err(_) => error(req.metadata.id, ResponseCode::ServFail),
    }
}

/// A bare error reply carrying only the id (the request could not be decoded).
fn error(id: u16, code: ResponseCode) -> Reply {
    let mut m = Message::response(id, OpCode::Query);
    m.metadata.response_code = code;
    match m.to_vec() {
        Ok(bytes) => Reply::Answer(bytes),
        Err(_) => Reply::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use std::net::Ipv4Addr;

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.edns = Some(e);
        }
        m.to_vec().unwrap()
    }

    fn answer(r: Reply) -> Message {
        match r {
            Reply::Answer(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn names() -> Names {
        let n = Names::new();
        n.set("dev", Ipv4Addr::new(172, 30, 0, 2));
        n
    }

    #[test]
    fn a_running_vm_resolves_authoritatively() {
        let m = answer(respond(
            &query("dev.vm.", RecordType::A, false),
            &names(),
            false,
        ));
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(172, 30, 0, 2))));
        assert_eq!(m.answers[0].ttl, TTL);
        // Case does not matter.
        let m = answer(respond(
            &query("DEV.Vm.", RecordType::A, false),
            &names(),
            false,
        ));
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn unknown_names_are_nxdomain_with_aa_and_soa() {
        for n in ["nope.vm.", "a.dev.vm."] {
            let m = answer(respond(&query(n, RecordType::A, false), &names(), true));
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{n}");
            assert!(m.metadata.authoritative);
            assert!(m.answers.is_empty());
            assert_eq!(m.authorities.len(), 1);
            assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        }
    }

    #[test]
    fn other_types_of_a_known_name_are_nodata() {
        let m = answer(respond(
            &query("dev.vm.", RecordType::AAAA, false),
            &names(),
            false,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        let m = answer(respond(
            &query("vm.", RecordType::SOA, false),
            &names(),
            false,
        ));
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn outside_names_forward_on_the_guest_listener_and_are_refused_on_the_host() {
        let q = query("example.com.", RecordType::A, false);
        assert_eq!(respond(&q, &names(), true), Reply::Forward);
        let m = answer(respond(&q, &names(), false));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative, "not our zone: no AA");
    }

    #[test]
    fn edns_is_answered_with_our_own_opt_record() {
        let m = answer(respond(
            &query("dev.vm.", RecordType::A, true),
            &names(),
            false,
        ));
        let e = m.edns.expect("an OPT record in the reply");
        assert_eq!(e.max_payload(), EDNS_PAYLOAD);
        assert_eq!(e.version(), 0);
        let m = answer(respond(
            &query("dev.vm.", RecordType::A, false),
            &names(),
            false,
        ));
        assert!(m.edns.is_none(), "no OPT for a query without one");
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        assert_eq!(respond(&[1, 2, 3], &names(), true), Reply::Ignore);
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x05];
        junk.extend([0xff; 40]);
        let m = answer(respond(&junk, &names(), true));
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // A response is never answered (no ping-pong between responders).
        let mut resp = query("dev.vm.", RecordType::A, false);
        resp[2] |= 0x80;
        assert_eq!(respond(&resp, &names(), true), Reply::Ignore);
    }
}
