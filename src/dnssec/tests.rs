//! Keys, key files, signatures, NSEC bitmaps and name order against RFC examples.

use super::*;
use crate::model::rtype;

use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

/// The root zone's KSK-2017 (algorithm 8): key tag 20326 and its published DS.
#[test]
fn key_tag_and_ds_match_the_root_trust_anchor() {
    let key = BASE64
        .decode(
            b"AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU=",
        )
        .unwrap();
    let mut rdata = vec![1, 1, 3, 8];
    rdata.extend_from_slice(&key);
    assert_eq!(key_tag(&rdata), 20326);
    assert_eq!(
        ds_text(&ds_rdata(&Name::root(), &rdata)),
        "20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"
    );
}

/// RFC 4034 4.3: `alfa.example.com. NSEC host.example.com. A MX RRSIG NSEC TYPE1234`.
#[test]
fn nsec_bitmap_matches_the_rfc_example() {
    let rdata = nsec(name("host.example.com.").wire(), &[1234, 46, 15, 1, 47, 15]);
    let mut want = name("host.example.com.").wire().to_vec();
    want.extend_from_slice(&[0x00, 0x06, 0x40, 0x01, 0x00, 0x00, 0x00, 0x03, 0x04, 0x1b]);
    want.extend_from_slice(&[0; 26]);
    want.push(0x20);
    assert_eq!(rdata, want);
}

/// RFC 4034 6.1's example, in order.
#[test]
fn canonical_order_matches_the_rfc_example() {
    let ordered = [
        name("example."),
        name("a.example."),
        name("yljkjljk.a.example."),
        name("Z.a.example."),
        name("zABC.a.EXAMPLE."),
        name("z.example."),
        Name::from_lower_wire(b"\x01\x01\x01z\x07example\x00"),
        name("*.z.example."),
        Name::from_lower_wire(b"\x01\xc8\x01z\x07example\x00"),
    ];
    for pair in ordered.windows(2) {
        assert_eq!(
            canonical_cmp(pair[0].wire(), pair[1].wire()),
            std::cmp::Ordering::Less,
            "{} < {}",
            pair[0],
            pair[1]
        );
        assert_eq!(
            canonical_cmp(pair[1].wire(), pair[0].wire()),
            std::cmp::Ordering::Greater
        );
    }
    assert_eq!(
        canonical_cmp(ordered[3].wire(), ordered[3].wire()),
        std::cmp::Ordering::Equal
    );
}

#[test]
fn labels_leave_out_the_root_and_a_wildcard() {
    assert_eq!(labels(name("www.example.com.").wire()), 3);
    assert_eq!(labels(name("*.example.com.").wire()), 2);
    assert_eq!(labels(Name::root().wire()), 0);
}

/// The signed data as RFC 4034 3.1.8.1 defines it, built independently of `sign`.
fn signed_data(rrsig: &[u8], owner: &[u8], rtype: u16, ttl: u32, rdatas: &[&[u8]]) -> Vec<u8> {
    let signer_end = 18 + name_len(&rrsig[18..]);
    let mut data = rrsig[..signer_end].to_vec();
    for rd in rdatas {
        data.extend_from_slice(owner);
        data.extend_from_slice(&rtype.to_be_bytes());
        data.extend_from_slice(&[0, 1]);
        data.extend_from_slice(&ttl.to_be_bytes());
        data.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        data.extend_from_slice(rd);
    }
    data
}

fn name_len(wire: &[u8]) -> usize {
    let mut at = 0;
    while wire[at] != 0 {
        at += 1 + wire[at] as usize;
    }
    at + 1
}

#[test]
fn signatures_verify_over_the_canonical_rrset_for_both_algorithms() {
    let zone = name("example.com.");
    let owner = name("www.example.com.");
    let window = Window::starting(1_800_000_000, 3600, 14 * 86400);
    for (alg, verify) in [
        (
            Algorithm::EcdsaP256Sha256,
            &ECDSA_P256_SHA256_FIXED as &dyn ring::signature::VerificationAlgorithm,
        ),
        (Algorithm::Ed25519, &ED25519),
    ] {
        let key = SigningKey::generate(alg, FLAGS_ZSK).unwrap();
        let (b, a): (&[u8], &[u8]) = (&[192, 0, 2, 2], &[192, 0, 2, 1]);
        // Out of order and with a duplicate: signed sorted, once each.
        let rrsig = sign(&key, &zone, owner.wire(), rtype::A, 300, [b, a, b], window).unwrap();
        assert_eq!(&rrsig[..2], &rtype::A.to_be_bytes());
        assert_eq!(rrsig[2], alg.number());
        assert_eq!(rrsig[3], 3);
        assert_eq!(&rrsig[8..12], &window.expiration.to_be_bytes());
        assert_eq!(&rrsig[12..16], &window.inception.to_be_bytes());
        assert_eq!(&rrsig[16..18], &key.tag.to_be_bytes());
        let sig_at = 18 + zone.wire().len();
        assert_eq!(&rrsig[18..sig_at], zone.wire());
        let public = match alg {
            Algorithm::EcdsaP256Sha256 => [&[4u8][..], &key.dnskey()[4..]].concat(),
            Algorithm::Ed25519 => key.dnskey()[4..].to_vec(),
        };
        let data = signed_data(&rrsig, owner.wire(), rtype::A, 300, &[a, b]);
        UnparsedPublicKey::new(verify, &public)
            .verify(&data, &rrsig[sig_at..])
            .unwrap_or_else(|_| panic!("{alg:?} signature does not verify"));
        let unsorted = signed_data(&rrsig, owner.wire(), rtype::A, 300, &[b, a]);
        assert!(
            UnparsedPublicKey::new(verify, &public)
                .verify(&unsorted, &rrsig[sig_at..])
                .is_err()
        );
    }
}

#[test]
fn keys_round_trip_through_bind_files_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let zone = name("example.com.");
    let ksk = SigningKey::generate(Algorithm::EcdsaP256Sha256, FLAGS_KSK).unwrap();
    let zsk = SigningKey::generate(Algorithm::Ed25519, FLAGS_ZSK).unwrap();
    for key in [&ksk, &zsk] {
        write_key(dir.path(), &zone, key, 3600, "20261203000000", false).unwrap();
    }
    // Another zone's key in the same directory is not this zone's.
    let other = SigningKey::generate(Algorithm::Ed25519, FLAGS_KSK).unwrap();
    write_key(
        dir.path(),
        &name("example.org."),
        &other,
        3600,
        "20261203000000",
        false,
    )
    .unwrap();
    let keys = read_keys(dir.path(), &zone).unwrap();
    let mut tags: Vec<(u16, u16)> = keys.iter().map(|k| (k.key.tag, k.key.flags)).collect();
    tags.sort();
    let mut want = vec![(ksk.tag, FLAGS_KSK), (zsk.tag, FLAGS_ZSK)];
    want.sort();
    assert_eq!(tags, want);
    for KeyFile { key, timing, .. } in &keys {
        assert_eq!(timing.activate, parse_time("20261203000000"));
        assert!(timing.active(1_900_000_000) && !timing.active(1_000_000_000));
        let same = if key.tag == ksk.tag { &ksk } else { &zsk };
        assert_eq!(key.dnskey(), same.dnskey());
    }
    assert!(
        ds_lines(&zone, keys.iter().map(|k| &*k.key))
            .starts_with(&format!("example.com. IN DS {} 13 2 ", ksk.tag))
    );

    // A private key others may read is refused, naming the file and the fix.
    let private = dir.path().join(format!("{}.private", ksk.file_stem(&zone)));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
    let problems = read_keys(dir.path(), &zone).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(".private") && problems[0].contains("chmod 600"));
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A private key that is not the public key's.
    let text = std::fs::read_to_string(&private).unwrap();
    let wrong = SigningKey::generate(Algorithm::EcdsaP256Sha256, FLAGS_KSK).unwrap();
    let swapped = text.replace(
        text.lines().find(|l| l.starts_with("PrivateKey:")).unwrap(),
        &format!("PrivateKey: {}", BASE64.encode(&wrong.private)),
    );
    std::fs::write(&private, swapped).unwrap();
    let problems = read_keys(dir.path(), &zone).unwrap_err();
    assert!(problems[0].contains("does not match"), "{problems:?}");
}

#[test]
fn successor_is_the_zero_label_below() {
    let s = successor(name("a.example.").wire()).unwrap();
    assert_eq!(&s[..], b"\x01\x00\x01a\x07example\x00");
    assert_eq!(
        canonical_cmp(name("a.example.").wire(), &s),
        std::cmp::Ordering::Less
    );
    assert_eq!(
        canonical_cmp(&s, name("b.example.").wire()),
        std::cmp::Ordering::Less
    );
}

#[test]
fn times_round_trip_and_a_standby_key_never_signs() {
    assert_eq!(parse_time("20261203163301"), Some(1_796_315_581));
    assert_eq!(format_time(1_796_315_581), "20261203163301");
    assert_eq!(parse_time("2026120316330"), None);
    let dir = tempfile::tempdir().unwrap();
    let zone = name("example.com.");
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256, FLAGS_ZSK).unwrap();
    write_key(dir.path(), &zone, &key, 3600, "20261203000000", true).unwrap();
    let keys = read_keys(dir.path(), &zone).unwrap();
    let timing = keys[0].timing;
    assert!(timing.standby && timing.published(1_900_000_000));
    assert!(!timing.active(1_900_000_000));
}

#[test]
fn sibling_successor_comes_after_the_whole_subtree() {
    let c = name("c.example.");
    let s = sibling_successor(c.wire()).unwrap();
    assert_eq!(&s[..], b"\x02c\x00\x07example\x00");
    for below in ["x.c.example.", "zzz.y.c.example."] {
        assert_eq!(
            canonical_cmp(name(below).wire(), &s),
            std::cmp::Ordering::Less
        );
    }
    assert_eq!(
        canonical_cmp(&s, name("ca.example.").wire()),
        std::cmp::Ordering::Less
    );
    let long = Name::parse(&format!("{}.example.", "a".repeat(63))).unwrap();
    assert!(sibling_successor(long.wire()).is_none());
}

/// A second rollover retires the key the first one activated (its file still says standby):
/// that key signs until the second's activation, then the new one does.
#[test]
fn a_rollover_retires_the_key_a_previous_rollover_activated() {
    let file = |tag_flags: u16, standby: bool| KeyFile {
        key: std::sync::Arc::new(SigningKey::generate(Algorithm::Ed25519, tag_flags).unwrap()),
        stem: PathBuf::new(),
        timing: Timing {
            publish: Some(100),
            activate: (!standby).then_some(100),
            standby,
            inactive: None,
            delete: None,
        },
    };
    let keys = ZoneKeys {
        keys: vec![
            file(FLAGS_KSK, false),
            file(FLAGS_ZSK, true),
            file(FLAGS_ZSK, true),
        ],
        policy: Policy {
            validity: 100,
            refresh: 50,
            inception_skew: 1,
            propagation_delay: 1,
        },
    };
    let (k2, k3) = (keys.keys[1].key.tag, keys.keys[2].key.tag);
    // The first rollover (to k2) is long done; the second (k2 -> k3) starts at 1000.
    let second = crate::model::KeyRollover {
        key: k3,
        retiring: vec![k2],
        started: 1000,
        activate_at: 1010,
        retire_at: 1030,
    };
    let rolled = keys.with_rollover(&second);
    let timing = |tag: u16| {
        rolled
            .keys
            .iter()
            .find(|k| k.key.tag == tag)
            .unwrap()
            .timing
    };
    assert!(timing(k2).active(1005) && !timing(k3).active(1005));
    assert!(timing(k3).published(1005));
    assert!(!timing(k2).active(1010) && timing(k3).active(1010));
    assert!(timing(k2).published(1029) && !timing(k2).published(1030));
}
