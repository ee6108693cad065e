//! The handshake: a peer's Hello frame, read and checked as `transport::hello` does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_fuzz::{assert_frame_round_trip, network, read_frames, seeds};
use tally_node::transport::{Hello, MAX_AGENT_LEN, MAX_HELLO_FRAME};

fuzz_target!(init: seeds::install(seeds::hello), |data: &[u8]| {
    let (hellos, _) = read_frames::<Hello>(data, MAX_HELLO_FRAME);
    for hello in &hellos {
        if hello.check(&network()).is_ok() {
            assert!(hello.agent.len() <= MAX_AGENT_LEN);
        }
        assert_frame_round_trip(hello, MAX_HELLO_FRAME);
    }
});
