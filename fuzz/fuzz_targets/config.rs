//! Config files: `config.toml` text parsed by `FileConfig::parse` and checked by
//! `Config::layered` as `tally` loads it; `set_network` (what `tally init --network` does to an
//! existing file) must keep a valid file valid, with the new network; rate limits parsed by
//! `rate::parse_limit`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_fuzz::seeds;
use tally_node::config::{Config, FileConfig, Overrides, set_network};

fn no_env(_: &str) -> Option<String> {
    None
}

fuzz_target!(init: seeds::install(seeds::config), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = tally_node::rate::parse_limit(text);
    let Ok(file) = FileConfig::parse(text) else {
        return;
    };
    let _ = Config::layered(&file, "config.toml", &no_env, &Overrides::default());
    if let Ok(edited) = set_network(text, "fuzz-net") {
        match FileConfig::parse(&edited) {
            Ok(again) => assert_eq!(again.network.as_deref(), Some("fuzz-net")),
            Err(error) => panic!("set_network broke a valid file: {error}\n{edited}"),
        }
    }
});
