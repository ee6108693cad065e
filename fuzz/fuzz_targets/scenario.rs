//! Scenario files: TOML text parsed and checked by `Scenario::parse`, as `tally testnet`
//! loads it (errors locate the line and key; nothing may panic).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tally_fuzz::seeds;
use tally_node::testnet::scenario::Scenario;

fuzz_target!(init: seeds::install(seeds::scenario), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scenario) = Scenario::parse(text, Path::new("fuzz.toml"), "fuzz") {
        let _ = scenario.peers();
    } else if let Err(error) = Scenario::parse(text, Path::new("fuzz.toml"), "fuzz") {
        let _ = error.to_string();
    }
});
