//! The whole query path (`dns::respond`) over UDP and TCP against a small signed zone (DNSSEC:
//! queries with DO reach the signing paths, compact denial and the per-thread cache included)
//! with a pool, a routed name (nested subnets, so fuzzed ECS options walk the tries), a CNAME, a
//! wildcard and a delegation: never a panic; every reply keeps the id, has QR set
//! and fits its transport's limit.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use libfuzzer_sys::fuzz_target;
use weir::dns::{Context, QueryLog, cookie, respond, rrl, track};
use weir::metrics::Transport;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nwww A 192.0.2.2\nalias CNAME www\n*.w TXT \"wild\"\nsub NS ns.sub\nns.sub A 192.0.2.3\nmx MX 1 www\n";
const CONFIG: &str = "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n[[pool]]\nname = \"app.example.com.\"\nanswers = 2\nsticky = \"client-subnet\"\n[[pool.group]]\nname = \"g\"\nendpoints = [{ address = \"192.0.2.10\" }, { address = \"2001:db8::1\" }, { address = \"192.0.2.11\" }]\n[[route]]\nname = \"geo.example.com.\"\n[[route.rule]]\npool = \"eu\"\nsubnets = [\"198.51.100.0/24\", \"2001:db8::/32\"]\n[[route.rule]]\npool = \"us\"\nsubnets = [\"198.51.100.128/25\", \"2001:db8:8000::/33\"]\n[[route.rule]]\npool = \"us\"\n[[route.pool]]\nname = \"eu\"\nsticky = \"client-subnet\"\n[[route.pool.group]]\nname = \"g\"\nendpoints = [{ address = \"192.0.2.20\" }]\n[[route.pool]]\nname = \"us\"\n[[route.pool.group]]\nname = \"g\"\nendpoints = [{ address = \"2001:db8::2\" }]\n";

fn context() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let config = weir::config::parse(CONFIG, Path::new("w.toml")).expect("config");
        let origin = weir::model::Name::parse("example.com").expect("origin");
        let mut zone = weir::zones::from_text(ZONE, Path::new("z"), &origin).expect("zone");
        // Ed25519: the fastest to sign, for the fuzzer's rate.
        let key = weir::dnssec::SigningKey::generate(
            weir::dnssec::Algorithm::Ed25519,
            weir::dnssec::FLAGS_KSK,
        )
        .expect("key");
        zone.dnssec = Some(Arc::new(weir::dnssec::ZoneKeys {
            keys: vec![weir::dnssec::KeyFile {
                key: Arc::new(key),
                stem: "Kexample.com.+015+00000".into(),
                timing: weir::dnssec::Timing::default(),
            }],
            policy: weir::dnssec::Policy {
                validity: 14 * 86400,
                refresh: 7 * 86400,
                inception_skew: 3600,
                propagation_delay: 3600,
            },
        }));
        let zones = vec![zone];
        let index = weir::snapshot::index(&zones, &config.pools, &config.routing, &config.keyring);
        let view = weir::model::View {
            pools: config.pools.clone().into(),
            ..Default::default()
        };
        let metrics = Arc::new(weir::metrics::Metrics::new());
        let snapshot = weir::snapshot::build(&index, Arc::new(view), &metrics, 1);
        Context {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            metrics,
            config: config.dns,
            query_log: QueryLog::off(),
            recorder: track::Recorder::off(),
            rrl: rrl::Limiter::off(),
            cookies: cookie::Cookies::random(),
            updates: weir::dns::updates::Updates::off(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, packet)) = data.split_first() else {
        return;
    };
    let tcp = mode & 1 == 1;
    let transport = if tcp { Transport::Tcp } else { Transport::Udp };
    let client = if mode & 2 == 0 {
        "192.0.2.99".parse().expect("v4")
    } else {
        "2001:db8::99".parse().expect("v6")
    };
    let mut out = Vec::with_capacity(65536);
    if respond(context(), packet, transport, client, &mut out) {
        assert!(out.len() >= 12, "a reply has a header");
        assert_eq!(out[..2], packet[..2], "id preserved");
        assert_ne!(out[2] & 0x80, 0, "QR set");
        assert!(tcp || out.len() <= 4096, "UDP reply of {} bytes", out.len());
    }
});
