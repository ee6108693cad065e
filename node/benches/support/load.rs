//! The machine's load, printed beside each bench figure: the machine may be shared.

/// The 1, 5 and 15 minute load averages ("" where /proc/loadavg is not there).
pub fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
