//! PROTOCOL.md's answer table, over UDP and TCP against a running server.

use hickory_proto::op::{Edns, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, RecordType};

use crate::support::*;

#[tokio::test]
async fn apex_soa_is_authoritative() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        let r = s.ask(t, &query("example.com.", RecordType::SOA)).await;
        assert!(is_response(&r));
        assert_eq!(rcode(&r), ResponseCode::NoError, "{t}");
        assert!(r.metadata.authoritative, "{t}");
        assert!(!r.metadata.recursion_available, "{t}");
        assert_eq!(
            lines(&r.answers),
            [
                "example.com. SOA ns1.example.com. hostmaster.example.com. 2026112301 7200 3600 1209600 300"
            ]
        );
        assert_eq!(ttls(&r.answers), [3600]);
    }
    s.stop().await;
}

#[tokio::test]
async fn rrsets_are_answered_with_their_ttl() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        let r = s.ask(t, &query("www.example.com.", RecordType::AAAA)).await;
        assert!(r.metadata.authoritative);
        assert_eq!(lines(&r.answers), ["www.example.com. AAAA 2001:db8::80"]);
        assert_eq!(ttls(&r.answers), [60]);
        let r = s.ask(t, &query("info.example.com.", RecordType::TXT)).await;
        assert_eq!(
            lines(&r.answers),
            ["info.example.com. TXT first stringsecond string"]
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn cname_chain_is_chased_inside_the_zone() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        let r = s.ask(t, &query("alias.example.com.", RecordType::A)).await;
        assert_eq!(rcode(&r), ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(
            lines(&r.answers),
            [
                "alias.example.com. CNAME web.example.com.",
                "web.example.com. CNAME www.example.com.",
                "www.example.com. A 192.0.2.80",
            ]
        );
        // Asking for the CNAME itself does not chase.
        let r = s
            .ask(t, &query("alias.example.com.", RecordType::CNAME))
            .await;
        assert_eq!(
            lines(&r.answers),
            ["alias.example.com. CNAME web.example.com."]
        );
        // Out of zone: the CNAME only; the resolver continues.
        let r = s.ask(t, &query("out.example.com.", RecordType::A)).await;
        assert_eq!(
            lines(&r.answers),
            ["out.example.com. CNAME www.example.net."]
        );
        assert_eq!(rcode(&r), ResponseCode::NoError);
        // A loop ends without repeating records.
        let r = s.ask(t, &query("loop1.example.com.", RecordType::A)).await;
        assert_eq!(
            lines(&r.answers),
            [
                "loop1.example.com. CNAME loop2.example.com.",
                "loop2.example.com. CNAME loop1.example.com."
            ]
        );
        // RFC 6604: the RCODE is the last target's, with its SOA.
        let r = s.ask(t, &query("gone.example.com.", RecordType::A)).await;
        assert_eq!(rcode(&r), ResponseCode::NXDomain);
        assert_eq!(
            lines(&r.answers),
            ["gone.example.com. CNAME nothing.example.com."]
        );
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    }
    s.stop().await;
}

#[tokio::test]
async fn nodata_and_nxdomain_carry_the_soa_with_the_negative_ttl() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        for (name, qtype, code) in [
            ("www.example.com.", RecordType::TXT, ResponseCode::NoError),
            ("nope.example.com.", RecordType::A, ResponseCode::NXDomain),
            (
                "deep.nope.example.com.",
                RecordType::A,
                ResponseCode::NXDomain,
            ),
            // RFC 8020: an empty non-terminal exists.
            ("b.c.example.com.", RecordType::A, ResponseCode::NoError),
            ("c.example.com.", RecordType::A, ResponseCode::NoError),
            // Unknown types are NODATA or NXDOMAIN like any other.
            (
                "www.example.com.",
                RecordType::Unknown(65280),
                ResponseCode::NoError,
            ),
            (
                "nope.example.com.",
                RecordType::Unknown(65280),
                ResponseCode::NXDomain,
            ),
        ] {
            let r = s.ask(t, &query(name, qtype)).await;
            assert_eq!(rcode(&r), code, "{t} {name} {qtype}");
            assert!(r.metadata.authoritative, "{t} {name}");
            assert!(r.answers.is_empty(), "{t} {name}");
            assert_eq!(r.authorities.len(), 1, "{t} {name}");
            assert_eq!(r.authorities[0].name.to_string(), "example.com.");
            assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
            // RFC 2308 3: min(SOA TTL 3600, MINIMUM 300).
            assert_eq!(r.authorities[0].ttl, 300, "{t} {name}");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn wildcards_synthesize_the_query_name() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        let r = s
            .ask(t, &query("host.wild.example.com.", RecordType::A))
            .await;
        assert_eq!(rcode(&r), ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(lines(&r.answers), ["host.wild.example.com. A 192.0.2.99"]);
        let r = s
            .ask(t, &query("a.b.wild.example.com.", RecordType::TXT))
            .await;
        assert_eq!(lines(&r.answers), ["a.b.wild.example.com. TXT wildcard"]);
        // Wildcard NODATA.
        let r = s
            .ask(t, &query("host.wild.example.com.", RecordType::AAAA))
            .await;
        assert_eq!(rcode(&r), ResponseCode::NoError);
        assert!(r.answers.is_empty());
        // The wildcard does not cover an existing name (RFC 4592 2.2.1): b.c exists, so *.c does not apply,
        // and there is no *.b.c either.
        let r = s.ask(t, &query("x.b.c.example.com.", RecordType::A)).await;
        assert_eq!(rcode(&r), ResponseCode::NXDomain);
    }
    s.stop().await;
}

#[tokio::test]
async fn delegations_get_referrals_with_glue() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        for name in [
            "sub.example.com.",
            "host.sub.example.com.",
            "ns1.sub.example.com.",
        ] {
            let r = s.ask(t, &query(name, RecordType::A)).await;
            assert_eq!(rcode(&r), ResponseCode::NoError, "{t} {name}");
            assert!(
                !r.metadata.authoritative,
                "{t} {name}: referrals are not authoritative"
            );
            assert!(r.answers.is_empty(), "{t} {name}");
            assert_eq!(
                lines(&r.authorities),
                [
                    "sub.example.com. NS ns1.sub.example.com.",
                    "sub.example.com. NS ns.example.net."
                ]
            );
            assert_eq!(
                lines(&r.additionals),
                ["ns1.sub.example.com. A 192.0.2.153"]
            );
        }
        // DS lives on the parent side of the cut.
        let r = s.ask(t, &query("sub.example.com.", RecordType::DS)).await;
        assert!(r.metadata.authoritative);
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    }
    s.stop().await;
}

#[tokio::test]
async fn additional_section_has_in_zone_targets() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        let r = s.ask(t, &query("example.com.", RecordType::MX)).await;
        assert_eq!(lines(&r.answers), ["example.com. MX 10 mail.example.com."]);
        assert_eq!(lines(&r.additionals), ["mail.example.com. A 192.0.2.25"]);
        let r = s.ask(t, &query("example.com.", RecordType::NS)).await;
        assert_eq!(
            lines(&r.additionals),
            [
                "ns1.example.com. A 192.0.2.53",
                "ns2.example.com. A 192.0.2.54",
                "ns2.example.com. AAAA 2001:db8::54"
            ]
        );
        let r = s
            .ask(t, &query("_sip._tcp.example.com.", RecordType::SRV))
            .await;
        assert_eq!(
            lines(&r.answers),
            ["_sip._tcp.example.com. SRV 10 60 5060 sip.example.com."]
        );
        assert_eq!(lines(&r.additionals), ["sip.example.com. A 192.0.2.60"]);
    }
    s.stop().await;
}

#[tokio::test]
async fn names_outside_our_zones_and_other_classes_are_refused() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        let r = s.ask(t, &query("example.org.", RecordType::A)).await;
        assert_eq!(rcode(&r), ResponseCode::Refused);
        assert!(!r.metadata.authoritative);
        let r = s.ask(t, &query("com.", RecordType::NS)).await;
        assert_eq!(rcode(&r), ResponseCode::Refused);
        for class in [
            DNSClass::CH,
            DNSClass::HS,
            DNSClass::NONE,
            DNSClass::Unknown(99),
        ] {
            let r = s
                .ask(t, &query_class("www.example.com.", RecordType::A, class))
                .await;
            assert_eq!(rcode(&r), ResponseCode::Refused, "{t} {class:?}");
            assert!(r.answers.is_empty(), "{t} {class:?}: never IN data");
            assert!(!r.metadata.authoritative);
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn qclass_any_is_answered_as_in() {
    // PROTOCOL.md: QCLASS ANY (255) is answered as IN, like Knot and NSD.
    let s = Server::start().await;
    for t in Transport::BOTH {
        let r = s
            .ask(
                t,
                &query_class("www.example.com.", RecordType::A, DNSClass::ANY),
            )
            .await;
        assert_eq!(rcode(&r), ResponseCode::NoError, "{t}");
        assert!(r.metadata.authoritative, "{t}");
        assert_eq!(lines(&r.answers), ["www.example.com. A 192.0.2.80"], "{t}");
        assert_eq!(r.answers[0].dns_class, DNSClass::IN, "{t}: records are IN");
        assert_eq!(
            r.queries[0].query_class(),
            DNSClass::ANY,
            "{t}: question echoed"
        );
        let r = s
            .ask(
                t,
                &query_class("nothing.example.com.", RecordType::A, DNSClass::ANY),
            )
            .await;
        assert_eq!(rcode(&r), ResponseCode::NXDomain, "{t}");
        let r = s
            .ask(
                t,
                &query_class("example.org.", RecordType::A, DNSClass::ANY),
            )
            .await;
        assert_eq!(
            rcode(&r),
            ResponseCode::Refused,
            "{t}: still only our zones"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn any_gets_one_rrset() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        let r = s.ask(t, &query("example.com.", RecordType::ANY)).await;
        assert_eq!(rcode(&r), ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert!(!r.answers.is_empty());
        let first = r.answers[0].record_type();
        assert!(
            r.answers.iter().all(|rec| rec.record_type() == first),
            "RFC 8482: one RRset"
        );
        assert_eq!(r.answers.len(), 1);
        let r = s.ask(t, &query("b.c.example.com.", RecordType::ANY)).await;
        assert!(r.answers.is_empty());
        assert_eq!(rcode(&r), ResponseCode::NoError);
    }
    s.stop().await;
}

#[tokio::test]
async fn zone_transfers_are_refused() {
    let s = Server::start().await;
    for (t, qtype) in [
        (Transport::Tcp, RecordType::AXFR),
        (Transport::Tcp, RecordType::IXFR),
        (Transport::Udp, RecordType::AXFR),
        (Transport::Udp, RecordType::IXFR),
    ] {
        let r = s.ask(t, &query("example.com.", qtype)).await;
        assert_eq!(rcode(&r), ResponseCode::Refused, "{t} {qtype}");
        assert!(r.answers.is_empty());
    }
    s.stop().await;
}

#[tokio::test]
async fn other_opcodes_get_notimp_notify_refused_and_unsigned_update_notauth() {
    let s = Server::start().await;
    let question = b"\x07example\x03com\x00\x00\x06\x00\x01";
    for opcode in [1u16, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 4] {
        let packet = raw(0x7777, opcode << 11, [1, 0, 0, 0], question);
        let reply = s.udp_raw(&packet).await.expect("a reply");
        let (id, flags, _) = header(&reply);
        assert_eq!(id, 0x7777);
        assert_eq!((flags >> 11) & 0xF, opcode, "opcode echoed");
        // NOTIFY: REFUSED (weir is the primary); UPDATE (RFC 2136) unsigned: NOTAUTH
        // (tests/it/updates.rs has the rest); the others: NOTIMP.
        let want = match opcode {
            4 => 5,
            5 => 9,
            _ => 4,
        };
        assert_eq!(flags & RCODE_MASK, want, "opcode {opcode}");
    }
    s.stop().await;
}

#[tokio::test]
async fn edns_badvers_options_and_flags() {
    let s = Server::start().await;
    for t in Transport::BOTH {
        // Version 1: BADVERS (16 = high bits 1 in OPT, 0 in header), OPT version 0.
        let mut msg = query("example.com.", RecordType::SOA);
        let mut edns = Edns::new();
        edns.set_version(1).set_max_payload(1232);
        msg.set_edns(edns);
        let r = s.ask(t, &msg).await;
        assert_eq!(u16::from(rcode(&r)), 16, "{t}: BADVERS");
        assert!(r.answers.is_empty());
        assert_eq!(r.edns.as_ref().unwrap().version(), 0);

        // Unknown option and unknown flags: a normal answer, nothing echoed; DO echoed.
        let mut msg = query("example.com.", RecordType::SOA);
        let mut edns = Edns::new();
        edns.set_max_payload(4096).set_dnssec_ok(true);
        edns.flags_mut().z = 0x0100;
        edns.options_mut()
            .insert(EdnsOption::Unknown(65001, vec![1, 2, 3]));
        msg.set_edns(edns);
        let r = s.ask(t, &msg).await;
        assert_eq!(rcode(&r), ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        let edns = r.edns.as_ref().expect("OPT in reply");
        assert_eq!(edns.version(), 0);
        assert_eq!(edns.max_payload(), 1232, "we advertise 1232");
        assert!(
            edns.options().as_ref().is_empty(),
            "unknown options are not echoed"
        );
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.flags().z, 0, "unknown flags are not echoed");

        // No EDNS in, no OPT out.
        let r = s.ask(t, &query("example.com.", RecordType::SOA)).await;
        assert!(r.edns.is_none());
    }
    s.stop().await;
}

#[tokio::test]
async fn rd_ad_cd_are_answered_normally_and_0x20_case_is_echoed() {
    let s = Server::start().await;
    // RD=1, AD=1, CD=1, mixed-case name.
    let body = b"\x03WwW\x07eXaMpLe\x03CoM\x00\x00\x01\x00\x01";
    let packet = raw(0x1234, 0x0100 | 0x0020 | 0x0010, [1, 0, 0, 0], body);
    let reply = s.udp_raw(&packet).await.unwrap();
    let (id, flags, counts) = header(&reply);
    assert_eq!(id, 0x1234);
    assert_eq!(flags & 0x0100, 0x0100, "RD copied");
    assert_eq!(flags & 0x0080, 0, "RA=0");
    assert_eq!(flags & 0x0020, 0, "AD=0");
    assert_eq!(flags & RCODE_MASK, 0);
    assert_ne!(flags & AA, 0);
    assert_eq!(counts[1], 1);
    assert_eq!(
        &reply[12..12 + body.len()],
        body,
        "question echoed byte for byte"
    );
    let msg = hickory_proto::op::Message::from_vec(&reply).unwrap();
    assert_eq!(
        msg.answers[0].name.to_string(),
        "WwW.eXaMpLe.CoM.",
        "answer owner keeps the query's case"
    );
    s.stop().await;
}
