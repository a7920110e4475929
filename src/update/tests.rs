//! UPDATE messages built byte by byte (owner names compressed as nsupdate writes them), each
//! RFC 2136 error case, and each change against a small zone.

use std::path::Path;

use super::*;
use crate::model::{Grant, NamePattern};

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 7 7200 3600 1209600 60\n@ NS ns1\n@ NS ns2\nns1 A 192.0.2.1\nns2 A 192.0.2.2\nwww A 192.0.2.80\nalias CNAME www\ntxt TXT \"one\"\nsub NS ns.sub\nns.sub A 192.0.2.3\n";

fn zone() -> Zone {
    let origin = Name::parse("example.com.").unwrap();
    zones::from_text(ZONE, Path::new("z"), &origin).unwrap()
}

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

/// An UPDATE message: the zone `example.com.` at offset 12 (so owners can point at it).
struct Msg {
    bytes: Vec<u8>,
    counts: [u16; 4],
}

impl Msg {
    fn new() -> Msg {
        let mut bytes = vec![0x12, 0x34, 0x28, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(b"\x07example\x03com\x00\x00\x06\x00\x01");
        Msg {
            bytes,
            counts: [1, 0, 0, 0],
        }
    }

    /// Appends a record in `section` (1 prereq, 2 update, 3 additional); `label` is put in
    /// front of a pointer to the zone name ("" for the apex).
    fn rr(
        mut self,
        section: usize,
        label: &str,
        t: u16,
        class: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> Msg {
        // An absolute label (ending in a dot) is written whole, without the pointer.
        let absolute = label.ends_with('.');
        for part in label.split('.').filter(|p| !p.is_empty()) {
            self.bytes.push(part.len() as u8);
            self.bytes.extend_from_slice(part.as_bytes());
        }
        if absolute {
            self.bytes.push(0);
        } else {
            self.bytes.extend_from_slice(&[0xC0, 12]);
        }
        for v in [t, class] {
            self.bytes.extend_from_slice(&v.to_be_bytes());
        }
        self.bytes.extend_from_slice(&ttl.to_be_bytes());
        self.bytes
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.bytes.extend_from_slice(rdata);
        self.counts[section] += 1;
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut b = self.bytes.clone();
        for (i, c) in self.counts.iter().enumerate() {
            b[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        b
    }

    fn parse(&self) -> Result<Update, Rcode> {
        parse(&self.build(), None)
    }
}

fn txt(text: &str) -> Vec<u8> {
    let mut v = vec![text.len() as u8];
    v.extend_from_slice(text.as_bytes());
    v
}

const ANY: u16 = CLASS_ANY;

#[test]
fn every_section_parses_with_compressed_names() {
    // CNAME rdata pointing at the zone name: decompressed.
    let u = Msg::new()
        .rr(1, "www", rtype::A, ANY, 0, &[])
        .rr(1, "new", rtype::ANY, CLASS_NONE, 0, &[])
        .rr(1, "txt", rtype::TXT, CLASS_IN, 0, &txt("one"))
        .rr(2, "a", rtype::TXT, CLASS_IN, 60, &txt("hello"))
        .rr(
            2,
            "b",
            rtype::CNAME,
            CLASS_IN,
            60,
            &[3, b'w', b'w', b'w', 0xC0, 12],
        )
        .rr(2, "txt", rtype::TXT, ANY, 0, &[])
        .rr(2, "old", rtype::ANY, ANY, 0, &[])
        .rr(2, "txt", rtype::TXT, CLASS_NONE, 0, &txt("one"))
        .parse()
        .unwrap();
    assert_eq!(u.id, 0x1234);
    assert_eq!(u.zone, name("example.com."));
    assert_eq!(
        u.prereqs,
        vec![
            Prereq::Exists(name("www.example.com."), rtype::A),
            Prereq::NameNotInUse(name("new.example.com.")),
            Prereq::Equals(
                name("txt.example.com."),
                rtype::TXT,
                vec![Rdata::Opaque(txt("one").into())]
            ),
        ]
    );
    assert_eq!(u.ops.len(), 5);
    assert_eq!(
        u.ops[1],
        Op::Add(Record {
            owner: name("b.example.com."),
            rtype: rtype::CNAME,
            ttl: 60,
            rdata: Rdata::Name(name("www.example.com.")),
        })
    );
    assert_eq!(u.ops[3], Op::DeleteName(name("old.example.com.")));
}

#[test]
fn malformed_messages_get_the_rfc_rcode() {
    let bad = |m: Msg| m.parse().unwrap_err();
    // Two zones.
    let mut two = Msg::new();
    two.counts[0] = 2;
    assert_eq!(bad(two), Rcode::FormErr);
    // Zone type A.
    let mut a = Msg::new();
    let at = a.bytes.len() - 3;
    a.bytes[at] = 1;
    assert_eq!(bad(a), Rcode::FormErr);
    // Zone class CH: not a zone weir serves.
    let mut ch = Msg::new();
    let at = ch.bytes.len() - 1;
    ch.bytes[at] = 3;
    assert_eq!(bad(ch), Rcode::NotAuth);
    // A prerequisite with a TTL, or class ANY with rdata.
    assert_eq!(
        bad(Msg::new().rr(1, "x", rtype::A, ANY, 5, &[])),
        Rcode::FormErr
    );
    assert_eq!(
        bad(Msg::new().rr(1, "x", rtype::A, ANY, 0, &[1, 2, 3, 4])),
        Rcode::FormErr
    );
    // Delete with a TTL; add of a meta type; add of an A with 3 bytes; class CH.
    assert_eq!(
        bad(Msg::new().rr(2, "x", rtype::A, ANY, 5, &[])),
        Rcode::FormErr
    );
    assert_eq!(
        bad(Msg::new().rr(2, "x", rtype::ANY, CLASS_IN, 5, &[])),
        Rcode::FormErr
    );
    assert_eq!(
        bad(Msg::new().rr(2, "x", rtype::A, CLASS_IN, 5, &[1, 2, 3])),
        Rcode::FormErr
    );
    assert_eq!(
        bad(Msg::new().rr(2, "x", rtype::A, 3, 5, &[1, 2, 3, 4])),
        Rcode::FormErr
    );
    // A TXT whose string length runs past its rdata.
    assert_eq!(
        bad(Msg::new().rr(2, "x", rtype::TXT, CLASS_IN, 5, &[9, b'a'])),
        Rcode::FormErr
    );
    // Names outside the zone.
    let outside = Msg::new().rr(2, "x.example.org.", rtype::TXT, CLASS_IN, 5, &txt("t"));
    assert_eq!(bad(outside), Rcode::NotZone);
    let outside = Msg::new().rr(1, "example.org.", rtype::ANY, ANY, 0, &[]);
    assert_eq!(bad(outside), Rcode::NotZone);
    // Truncated, trailing bytes, a forward pointer.
    let whole = Msg::new()
        .rr(2, "x", rtype::TXT, CLASS_IN, 5, &txt("t"))
        .build();
    assert_eq!(parse(&whole[..whole.len() - 1], None), Err(Rcode::FormErr));
    let mut longer = whole.clone();
    longer.push(0);
    assert_eq!(parse(&longer, None), Err(Rcode::FormErr));
    let mut forward = whole.clone();
    forward[12] = 0xC0;
    forward[13] = 40;
    assert_eq!(parse(&forward, None), Err(Rcode::FormErr));
    // A TSIG position ends the records it follows.
    assert!(parse(&whole, Some(whole.len())).is_ok());
}

fn update(m: Msg) -> Update {
    m.parse().unwrap()
}

fn no_pools(_: &Name) -> bool {
    false
}

fn run(file: &Zone, edits: &ZoneEdits, u: &Update) -> Result<Option<Applied>, Refusal> {
    let served = served(file, edits).unwrap();
    apply(file, &served, edits, u, &no_pools)
}

#[test]
fn an_add_is_a_layer_with_the_next_serial_and_a_journal_entry() {
    let file = zone();
    let add = update(Msg::new().rr(
        2,
        "_acme-challenge",
        rtype::TXT,
        CLASS_IN,
        60,
        &txt("token"),
    ));
    let applied = run(&file, &ZoneEdits::default(), &add).unwrap().unwrap();
    assert_eq!(applied.edits.serial, 8);
    assert_eq!(applied.edits.rrsets.len(), 1);
    assert_eq!(
        applied.after,
        ["_acme-challenge.example.com. 60 IN TXT \"token\""]
    );
    assert!(applied.before.is_empty());
    let entry = &applied.edits.journal[0];
    assert_eq!((entry.from, entry.to), (7, 8));
    assert_eq!(entry.removed[0].rtype, rtype::SOA);
    assert_eq!(entry.added.len(), 2);
    // Served: the record and the serial.
    let now = served(&file, &applied.edits).unwrap();
    assert!(
        now.get(&name("_acme-challenge.example.com."), rtype::TXT)
            .is_some()
    );
    assert_eq!(soa_of(&now).unwrap().serial, 8);
    // The same add again changes nothing: no new serial.
    assert_eq!(run(&file, &applied.edits, &add), Ok(None));
    // Deleting it again leaves no layer entry (the file has none), one serial later.
    let delete = update(Msg::new().rr(
        2,
        "_acme-challenge",
        rtype::TXT,
        CLASS_NONE,
        0,
        &txt("token"),
    ));
    let gone = run(&file, &applied.edits, &delete).unwrap().unwrap();
    assert!(gone.edits.rrsets.is_empty());
    assert_eq!(gone.edits.serial, 9);
    assert_eq!(gone.edits.journal.len(), 2);
    assert_eq!(
        gone.before,
        ["_acme-challenge.example.com. 60 IN TXT \"token\""]
    );
}

#[test]
fn deleting_a_file_record_is_an_empty_set_in_the_layer() {
    let file = zone();
    let u = update(Msg::new().rr(2, "txt", rtype::TXT, ANY, 0, &[]));
    let applied = run(&file, &ZoneEdits::default(), &u).unwrap().unwrap();
    assert_eq!(applied.edits.rrsets.len(), 1);
    assert!(applied.edits.rrsets[0].rdata.is_empty());
    let now = served(&file, &applied.edits).unwrap();
    assert!(now.get(&name("txt.example.com."), rtype::TXT).is_none());
    // A serial newer in the file wins over the layer's.
    let mut newer = file.clone();
    let origin = newer.origin.clone();
    let sets = newer.rrsets.get_mut(&origin).unwrap();
    if let Some(Rdata::Soa(soa)) = sets
        .iter_mut()
        .find(|s| s.rtype == rtype::SOA)
        .unwrap()
        .rdatas
        .first_mut()
    {
        soa.serial = 100;
    }
    assert_eq!(
        soa_of(&served(&newer, &applied.edits).unwrap())
            .unwrap()
            .serial,
        100
    );
}

#[test]
fn failed_prerequisites_get_their_rcodes() {
    let file = zone();
    let none = ZoneEdits::default();
    let rcode = |m: Msg| run(&file, &none, &update(m)).unwrap_err().rcode;
    assert_eq!(
        rcode(Msg::new().rr(1, "nowhere", rtype::ANY, ANY, 0, &[])),
        Rcode::NxDomain
    );
    assert_eq!(
        rcode(Msg::new().rr(1, "www", rtype::ANY, CLASS_NONE, 0, &[])),
        Rcode::YxDomain
    );
    assert_eq!(
        rcode(Msg::new().rr(1, "www", rtype::TXT, ANY, 0, &[])),
        Rcode::NxRrset
    );
    assert_eq!(
        rcode(Msg::new().rr(1, "www", rtype::A, CLASS_NONE, 0, &[])),
        Rcode::YxRrset
    );
    assert_eq!(
        rcode(Msg::new().rr(1, "txt", rtype::TXT, CLASS_IN, 0, &txt("two"))),
        Rcode::NxRrset
    );
    // Held: the update goes through.
    let ok = Msg::new()
        .rr(1, "txt", rtype::TXT, CLASS_IN, 0, &txt("one"))
        .rr(1, "www", rtype::ANY, ANY, 0, &[])
        .rr(2, "txt", rtype::TXT, CLASS_IN, 300, &txt("two"));
    assert!(run(&file, &none, &update(ok)).unwrap().is_some());
}

#[test]
fn updates_that_would_break_the_zone_are_refused() {
    let file = zone();
    let none = ZoneEdits::default();
    let why = |m: Msg| {
        let r = run(&file, &none, &update(m)).unwrap_err();
        assert_eq!(r.rcode, Rcode::Refused, "{}", r.why);
        r.why
    };
    assert!(why(Msg::new().rr(2, "", rtype::SOA, ANY, 0, &[])).contains("SOA"));
    assert!(why(Msg::new().rr(2, "", rtype::NS, ANY, 0, &[])).contains("every NS"));
    let ns1 = b"\x03ns1\xC0\x0C";
    let ns2 = b"\x03ns2\xC0\x0C";
    let both = Msg::new().rr(2, "", rtype::NS, CLASS_NONE, 0, ns1).rr(
        2,
        "",
        rtype::NS,
        CLASS_NONE,
        0,
        ns2,
    );
    assert!(why(both).contains("last NS"));
    assert!(why(Msg::new().rr(2, "www", rtype::CNAME, CLASS_IN, 60, ns1)).contains("other data"));
    assert!(
        why(Msg::new().rr(2, "alias", rtype::TXT, CLASS_IN, 60, &txt("t"))).contains("is a CNAME")
    );
    assert!(
        why(Msg::new().rr(2, "x.sub", rtype::TXT, CLASS_IN, 60, &txt("t"))).contains("delegation")
    );
    // An in-zone NS target without an address: the zone checks catch it.
    let glue = b"\x07nowhere\xC0\x0C";
    assert!(why(Msg::new().rr(2, "", rtype::NS, CLASS_IN, 60, glue)).contains("missing glue"));
    // One NS of two may go; the apex keeps SOA and NS when its name is deleted.
    let one = Msg::new().rr(2, "", rtype::NS, CLASS_NONE, 0, ns2);
    assert!(run(&file, &none, &update(one)).unwrap().is_some());
    let all = update(Msg::new().rr(2, "", rtype::ANY, ANY, 0, &[]));
    assert_eq!(run(&file, &none, &all), Ok(None));
    // A managed name's addresses are its pool's.
    let managed = |n: &Name| *n == name("app.example.com.");
    let add = update(Msg::new().rr(2, "app", rtype::A, CLASS_IN, 60, &[192, 0, 2, 9]));
    let served = served(&file, &none).unwrap();
    let r = apply(&file, &served, &none, &add, &managed).unwrap_err();
    assert!(r.why.contains("managed name"), "{}", r.why);
    let txt_there = update(Msg::new().rr(2, "app", rtype::TXT, CLASS_IN, 60, &txt("ok")));
    assert!(
        apply(&file, &served, &none, &txt_there, &managed)
            .unwrap()
            .is_some()
    );
}

#[test]
fn the_journal_keeps_the_newest_changes() {
    let file = zone();
    let mut edits = ZoneEdits::default();
    for i in 0..JOURNAL_MAX + 5 {
        let u = update(Msg::new().rr(2, "count", rtype::TXT, ANY, 0, &[]).rr(
            2,
            "count",
            rtype::TXT,
            CLASS_IN,
            60,
            &txt(&i.to_string()),
        ));
        edits = run(&file, &edits, &u).unwrap().unwrap().edits;
    }
    assert_eq!(edits.journal.len(), JOURNAL_MAX);
    assert_eq!(edits.serial, 7 + JOURNAL_MAX as u32 + 5);
    let last = edits.journal.last().unwrap();
    assert_eq!(last.to, edits.serial);
    assert_eq!(edits.journal[0].from, 12);
    // Chained: each entry starts where the one before ended.
    assert!(edits.journal.windows(2).all(|w| w[0].to == w[1].from));
}

#[test]
fn grants_limit_keys_to_their_names_and_types() {
    let origin = name("example.com.");
    let acme = Grant {
        key: name("acme-key."),
        names: vec![
            NamePattern::parse("_acme-challenge", &origin).unwrap(),
            NamePattern::parse("_acme-challenge.**", &origin).unwrap(),
        ],
        types: vec![rtype::TXT],
    };
    let all = Grant {
        key: name("ops."),
        names: vec![NamePattern::parse("**", &origin).unwrap()],
        types: Vec::new(),
    };
    let grants = [acme, all];
    let key = name("acme-key.");
    let ok = update(Msg::new().rr(
        2,
        "_acme-challenge.www",
        rtype::TXT,
        CLASS_IN,
        60,
        &txt("t"),
    ));
    assert_eq!(permitted(&grants, &key, &ok), Ok(()));
    let apex = update(Msg::new().rr(2, "_acme-challenge", rtype::TXT, ANY, 0, &[]));
    assert_eq!(permitted(&grants, &key, &apex), Ok(()));
    let a = update(Msg::new().rr(
        2,
        "_acme-challenge",
        rtype::A,
        CLASS_IN,
        60,
        &[192, 0, 2, 1],
    ));
    assert_eq!(
        permitted(&grants, &key, &a),
        Err("key acme-key. may not change A at _acme-challenge.example.com.".into())
    );
    let elsewhere = update(Msg::new().rr(2, "www", rtype::TXT, CLASS_IN, 60, &txt("t")));
    assert!(permitted(&grants, &key, &elsewhere).is_err());
    let whole = update(Msg::new().rr(2, "_acme-challenge", rtype::ANY, ANY, 0, &[]));
    assert!(
        permitted(&grants, &key, &whole).is_err(),
        "ANY needs every type"
    );
    assert_eq!(permitted(&grants, &name("ops."), &whole), Ok(()));
    assert!(permitted(&grants, &name("other."), &ok).is_err());
    // `*` is one label exactly; absolute patterns must be inside the zone.
    let one = NamePattern::parse("*.www", &origin).unwrap();
    assert!(one.matches(&name("a.www.example.com.")));
    assert!(!one.matches(&name("a.b.www.example.com.")));
    assert!(!one.matches(&name("www.example.com.")));
    assert!(NamePattern::parse("www.example.org.", &origin).is_err());
    assert!(NamePattern::parse("@", &origin).unwrap().matches(&origin));
}

#[test]
fn a_discard_serves_the_file_again_one_serial_later() {
    let file = zone();
    let u = update(Msg::new().rr(2, "txt", rtype::TXT, ANY, 0, &[]).rr(
        2,
        "new",
        rtype::TXT,
        CLASS_IN,
        60,
        &txt("n"),
    ));
    let layer = run(&file, &ZoneEdits::default(), &u)
        .unwrap()
        .unwrap()
        .edits;
    let served_now = served(&file, &layer).unwrap();
    let gone = discard(&file, &served_now, &layer).unwrap().unwrap();
    assert!(gone.edits.rrsets.is_empty());
    assert_eq!(gone.edits.serial, layer.serial + 1);
    let last = gone.edits.journal.last().unwrap();
    assert_eq!((last.from, last.to), (layer.serial, layer.serial + 1));
    let back = served(&file, &gone.edits).unwrap();
    assert!(back.get(&name("txt.example.com."), rtype::TXT).is_some());
    assert!(back.get(&name("new.example.com."), rtype::TXT).is_none());
    // Nothing left: nothing to discard.
    assert_eq!(discard(&file, &back, &gone.edits), Ok(None));
    // A layer the file already holds (folded in) goes without a new serial.
    let folded = served_now.clone();
    let quiet = discard(&folded, &served_now, &layer).unwrap().unwrap();
    assert!(quiet.edits.rrsets.is_empty());
    assert_eq!(quiet.edits.serial, layer.serial);
}
