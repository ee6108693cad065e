//! Set-reconciliation messages as they arrive inside a gossip `Sync` frame: bytes decoded by
//! `sync::Message::decode` and answered by `sync::respond`. A decoded message re-encodes to a
//! message that decodes to itself, its `encoded_len` is exact, and every reply this node makes
//! passes the checks it applies to a peer's.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_fuzz::seeds;
use tally_ledger::sync::{self, Message, SyncItems};

fn items() -> &'static SyncItems {
    static ITEMS: OnceLock<SyncItems> = OnceLock::new();
    ITEMS.get_or_init(seeds::sync_items)
}

fuzz_target!(init: seeds::install(seeds::sync_message), |data: &[u8]| {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    let encoded = message.encode();
    assert_eq!(encoded.len(), message.encoded_len());
    assert_eq!(Message::decode(&encoded).as_ref(), Ok(&message));
    match sync::respond(items(), &message) {
        Ok(reply) => {
            if let Some(next) = reply.message {
                if let Err(error) = next.validate() {
                    panic!("this node's own reply is invalid: {error}");
                }
                assert_eq!(Message::decode(&next.encode()).as_ref(), Ok(&next));
            }
        }
        Err(error) => panic!("a message that decoded was refused: {error}"),
    }
});
