//! The `tally` binary for tests of real processes (`#[path]`-included by them only: the
//! binary's path is known to integration tests, not to benches).

use std::path::Path;
use std::process::Command;

/// `tally --data-dir DATA`, logging at `level`, with nothing from the caller's environment
/// that would change which network or data dir it uses or how much it logs.
pub fn tally(data: &Path, level: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .arg("--data-dir")
        .arg(data)
        .env_remove("RUST_LOG")
        .env_remove("TALLY_NETWORK")
        .env_remove("TALLY_DATA_DIR")
        .env("TALLY_LOG_LEVEL", level);
    command
}
