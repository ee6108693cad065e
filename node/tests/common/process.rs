//! The `tally` binary for tests of real processes (`#[path]`-included by them only: the
//! binary's path is known to integration tests, not to benches).

// Not every process test uses every helper.
#![allow(dead_code)]

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

/// The first line `stdout` gives within `deadline` ("" if none: the process printed nothing or
/// exited). Read on a thread of its own, so a process that hangs cannot hang the test.
pub fn first_line(stdout: std::process::ChildStdout, deadline: std::time::Duration) -> String {
    use std::io::BufRead as _;
    let (send, receive) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = send.send(line);
    });
    receive.recv_timeout(deadline).unwrap_or_default()
}
