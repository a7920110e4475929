//! A rollout plan body as `POST /v1/pools/{pool}/rollouts` reads it (JSON -> RawPlan -> checked
//! plan): never a panic, whatever the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = serde_json::from_slice::<weir::config::RawPlan>(data) {
        let _ = weir::config::plan(&raw);
    }
});
