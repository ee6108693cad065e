use super::*;
use crate::error::VerifyError;

fn net() -> NetworkId {
    NetworkId::from_name("tally")
}

struct Two {
    up_id: Identity,
    down_id: Identity,
    up: UploaderPair,
    down: DownloaderPair,
}

fn two() -> Two {
    let up_id = Identity::from_secret_bytes([1; 32]);
    let down_id = Identity::from_secret_bytes([2; 32]);
    let up = UploaderPair::new(net(), up_id.peer_id(), down_id.peer_id(), None);
    let down = DownloaderPair::new(net(), down_id.peer_id(), up_id.peer_id(), None);
    Two {
        up_id,
        down_id,
        up,
        down,
    }
}

impl Two {
    fn transfer(&mut self, bytes: u64) {
        self.up.record_sent(bytes, bytes).unwrap();
        self.down.record_received(bytes, bytes).unwrap();
    }

    fn round(&mut self, now_ms: u64) -> Receipt {
        let proposal = self.down.propose(&self.down_id, now_ms).unwrap();
        let receipt = *self
            .up
            .countersign(&self.up_id, &proposal)
            .unwrap()
            .receipt();
        let outcome = self.down.accept_countersigned(&receipt).unwrap();
        assert!(matches!(outcome, Resync::TheirsNewer(_)), "{outcome:?}");
        receipt
    }
}

#[test]
fn a_transfer_ends_with_the_same_receipt_on_both_sides() {
    let mut t = two();
    t.transfer(1000);
    let first = t.round(10);
    assert_eq!(
        (first.seq, first.bytes, first.credits, first.time_ms),
        (1, 1000, 1000, 10)
    );
    t.transfer(500);
    let second = t.round(20);
    assert_eq!((second.seq, second.bytes), (2, 1500));
    assert_eq!(t.up.latest(), Some(&second));
    assert_eq!(t.down.latest(), Some(&second));
    assert_eq!(t.up.unacknowledged(), 0);
    assert_eq!(t.down.unacknowledged(), 0);
    second.verify(&net()).unwrap();
}

#[test]
fn nothing_to_propose_without_new_bytes() {
    let mut t = two();
    assert!(t.down.propose(&t.down_id, 1).is_none());
    t.transfer(10);
    t.round(1);
    assert!(t.down.propose(&t.down_id, 2).is_none());
}

#[test]
fn an_unanswered_proposal_is_resent_unchanged() {
    let mut t = two();
    t.transfer(10);
    let first = t.down.propose(&t.down_id, 1).unwrap();
    let again = t.down.propose(&t.down_id, 99).unwrap();
    assert_eq!(first, again, "same counters must not get a new seq or time");
}

#[test]
fn new_bytes_while_a_proposal_is_pending_get_a_new_seq_and_the_old_one_goes_stale() {
    let mut t = two();
    t.transfer(10);
    let first = t.down.propose(&t.down_id, 1).unwrap();
    t.transfer(10);
    let second = t.down.propose(&t.down_id, 2).unwrap();
    assert_eq!((first.body.seq, second.body.seq), (1, 2));
    let receipt = t.up.countersign(&t.up_id, &second).unwrap();
    assert_eq!(receipt.bytes, 20);
    let refused = t.up.countersign(&t.up_id, &first).unwrap_err();
    assert!(
        matches!(
            refused,
            Refusal::Stale {
                seq: 1,
                latest_seq: 2,
                ..
            }
        ),
        "{refused}"
    );
    // A replay of the accepted proposal is stale too: it is not after the latest.
    assert!(matches!(
        t.up.check(&second).unwrap_err(),
        Refusal::Stale { .. }
    ));
}

#[test]
fn uploader_refuses_to_acknowledge_more_than_it_sent() {
    let mut t = two();
    t.up.record_sent(100, 100).unwrap();
    t.down.record_received(150, 150).unwrap();
    let proposal = t.down.propose(&t.down_id, 1).unwrap();
    assert_eq!(
        t.up.countersign(&t.up_id, &proposal).unwrap_err(),
        Refusal::MoreThanSent {
            claimed: 150,
            sent: 100
        }
    );
    assert!(t.up.latest().is_none());
}

#[test]
fn uploader_refuses_too_few_credits_and_follows_price_changes() {
    let mut t = two();
    t.up.record_sent(1000, 1000).unwrap(); // at par
    t.up.record_sent(1000, 3000).unwrap(); // then at three credits a byte
    assert_eq!(t.up.credits_due(500), 500);
    assert_eq!(t.up.credits_due(1000), 1000);
    assert_eq!(t.up.credits_due(1500), 2500);
    assert_eq!(t.up.credits_due(2000), 4000);
    t.down.record_received(1500, 1500).unwrap();
    let cheap = t.down.propose(&t.down_id, 1).unwrap();
    assert_eq!(
        t.up.check(&cheap).unwrap_err(),
        Refusal::TooFewCredits {
            offered: 1500,
            due: 2500,
            bytes: 1500
        }
    );
    let mut fair = DownloaderPair::new(net(), t.down_id.peer_id(), t.up_id.peer_id(), None);
    fair.record_received(1000, 1000).unwrap();
    fair.record_received(500, 1500).unwrap();
    let proposal = fair.propose(&t.down_id, 1).unwrap();
    let receipt = t.up.countersign(&t.up_id, &proposal).unwrap();
    assert_eq!((receipt.bytes, receipt.credits), (1500, 2500));
    assert_eq!(t.up.credits_due(2000), 4000, "pruning keeps later prices");
}

#[test]
fn uploader_refuses_a_proposal_for_another_pair_or_network() {
    let mut t = two();
    t.transfer(10);
    let stranger = Identity::from_secret_bytes([3; 32]);
    let mut other = DownloaderPair::new(net(), stranger.peer_id(), t.up_id.peer_id(), None);
    other.record_received(10, 10).unwrap();
    let proposal = other.propose(&stranger, 1).unwrap();
    assert!(matches!(
        t.up.check(&proposal).unwrap_err(),
        Refusal::WrongPair { .. }
    ));
    let mut elsewhere = DownloaderPair::new(
        NetworkId::from_name("elsewhere"),
        t.down_id.peer_id(),
        t.up_id.peer_id(),
        None,
    );
    elsewhere.record_received(10, 10).unwrap();
    let proposal = elsewhere.propose(&t.down_id, 1).unwrap();
    assert_eq!(
        t.up.check(&proposal).unwrap_err(),
        Refusal::Invalid(VerifyError::BadSignature { role: "downloader" })
    );
}

#[test]
fn the_credit_window_bounds_what_a_silent_downloader_takes() {
    let mut t = two();
    let window = 4096;
    let chunk = 1024;
    let mut sent = 0;
    while t.up.may_send(chunk, window) {
        t.transfer(chunk);
        sent += chunk;
    }
    assert_eq!(
        sent, window,
        "a peer that never signs gets exactly one window"
    );
    t.round(1);
    assert!(t.up.may_send(chunk, window));
}

#[test]
fn downloader_rejects_a_receipt_for_bytes_it_never_received() {
    let mut t = two();
    t.up.record_sent(100, 100).unwrap();
    t.down.record_received(50, 50).unwrap();
    let forged = ReceiptBody {
        uploader: t.up_id.peer_id(),
        downloader: t.down_id.peer_id(),
        seq: 1,
        bytes: 100,
        credits: 100,
        time_ms: 1,
    }
    .propose(&t.down_id, &net())
    .countersign(&t.up_id, &net());
    assert_eq!(
        t.down.accept_countersigned(&forged).unwrap_err(),
        Refusal::NotOurProposal
    );
}

#[test]
fn counters_refuse_to_overflow() {
    let mut t = two();
    t.down.record_received(u64::MAX, 0).unwrap();
    assert_eq!(t.down.record_received(1, 0), Err(Refusal::Overflow));
    t.up.record_sent(u64::MAX, u64::MAX).unwrap();
    assert_eq!(t.up.record_sent(1, 1), Err(Refusal::Overflow));
}

// Found by the `receipts` fuzz target: a count refused for its credits had already added its
// bytes, so the downloader's counters left the uploader's behind.
#[test]
fn a_refused_count_changes_nothing() {
    let mut t = two();
    t.down.record_received(1, u64::MAX).unwrap();
    assert_eq!(t.down.record_received(5, 1), Err(Refusal::Overflow));
    assert_eq!(t.down.received_bytes(), 1);
    assert_eq!(t.down.unacknowledged(), 1);
    t.up.record_sent(1, u64::MAX).unwrap();
    assert_eq!(t.up.record_sent(5, 1), Err(Refusal::Overflow));
    assert_eq!(t.up.sent_bytes(), 1);
}

// Found by the `receipts` fuzz target: after adopting a receipt at seq u64::MAX, the next
// proposal's seq overflowed (a panic with overflow checks, seq 0 without).
#[test]
fn no_proposal_after_the_last_seq() {
    let mut t = two();
    let last = ReceiptBody {
        uploader: t.up_id.peer_id(),
        downloader: t.down_id.peer_id(),
        seq: u64::MAX,
        bytes: 10,
        credits: 10,
        time_ms: 1,
    }
    .propose(&t.down_id, &net())
    .countersign(&t.up_id, &net());
    assert!(matches!(
        t.down.resync(Some(&last)),
        Ok(Resync::TheirsNewer(_))
    ));
    t.down.record_received(5, 5).unwrap();
    assert_eq!(t.down.propose(&t.down_id, 2), None);
}

#[test]
fn resync_on_reconnect_adopts_the_higher_valid_receipt() {
    let mut t = two();
    t.transfer(100);
    let old = t.round(1);
    t.transfer(100);
    let new = t.round(2);
    // The downloader restarts from a backup that holds only the old receipt.
    let mut restored =
        DownloaderPair::new(net(), t.down_id.peer_id(), t.up_id.peer_id(), Some(old));
    assert!(
        matches!(restored.resync(Some(&new)).unwrap(), Resync::TheirsNewer(r) if *r.receipt() == new)
    );
    assert_eq!(restored.latest(), Some(&new));
    assert_eq!(restored.unacknowledged(), 0);
    // And the uploader, told of the old one, keeps its own and says so.
    assert_eq!(t.up.resync(Some(&old)).unwrap(), Resync::OursNewer);
    assert_eq!(t.up.resync(Some(&new)).unwrap(), Resync::Agree);
    assert_eq!(t.up.resync(None).unwrap(), Resync::OursNewer);
    // An uploader that lost everything learns its count from the signed receipt.
    let mut amnesiac = UploaderPair::new(net(), t.up_id.peer_id(), t.down_id.peer_id(), None);
    assert!(matches!(
        amnesiac.resync(Some(&new)).unwrap(),
        Resync::TheirsNewer(_)
    ));
    assert_eq!(amnesiac.unacknowledged(), 0);
    assert!(amnesiac.may_send(10, 10));
}

#[test]
fn resync_refuses_an_invalid_receipt_and_keeps_its_own() {
    let mut t = two();
    t.transfer(100);
    let good = t.round(1);
    let mut forged = good;
    forged.seq = 9;
    forged.bytes = 1 << 40;
    assert!(matches!(
        t.down.resync(Some(&forged)).unwrap_err(),
        Refusal::Invalid(VerifyError::BadSignature { .. })
    ));
    assert_eq!(t.down.latest(), Some(&good));
}

#[test]
fn resync_turns_a_contradiction_into_a_conflict_proof() {
    let mut t = two();
    t.transfer(100);
    let ours = t.round(1);
    // Both keys sign a second statement with the same seq: a double spend.
    let theirs = ReceiptBody {
        bytes: 50,
        credits: 50,
        ..ours.body()
    }
    .propose(&t.down_id, &net())
    .countersign(&t.up_id, &net());
    let Resync::Conflict(proof) = t.down.resync(Some(&theirs)).unwrap() else {
        panic!("expected a conflict");
    };
    proof.verify(&net()).unwrap();
    assert_eq!(t.down.latest(), Some(&ours));
}

#[test]
fn a_restarted_downloader_never_reuses_a_proposed_seq() {
    let mut t = two();
    t.transfer(10);
    let before_crash = t.down.propose(&t.down_id, 1).unwrap();
    // Restart from the store: no agreed receipt yet, but the proposal was recorded.
    let restarted = || {
        DownloaderPair::new(net(), t.down_id.peer_id(), t.up_id.peer_id(), None)
            .with_last_proposal(Some(before_crash.body))
    };
    let mut same = restarted();
    assert_eq!(same.propose(&t.down_id, 50).unwrap(), before_crash);
    let mut more = restarted();
    more.record_received(5, 5).unwrap();
    let next = more.propose(&t.down_id, 60).unwrap();
    assert_eq!((next.body.seq, next.body.bytes), (2, 15));
    // Even a malicious uploader that countersigns both gets no conflict out of it.
    let a = before_crash.countersign(&t.up_id, &net());
    let b = next.countersign(&t.up_id, &net());
    assert!(crate::receipt::ConflictProof::new(a, b).is_err());
}

#[test]
fn a_restarted_uploader_countersigns_the_bytes_it_sent_before_it_lost_count() {
    let mut t = two();
    t.transfer(1000);
    t.round(10);
    // 600 bytes arrive unacknowledged; then the uploader restarts from its store and has lost
    // count of them, and sends 300 more.
    t.transfer(600);
    let latest = t.up.latest().copied();
    let window = 4096;
    t.up = UploaderPair::new(net(), t.up_id.peer_id(), t.down_id.peer_id(), latest)
        .with_uncounted(window);
    t.transfer(300);
    // The downloader claims all 1900: more than the 1300 the uploader counts, within what it
    // may have sent before the restart. It is countersigned (without the allowance, it was
    // refused as more than sent, and so was every later proposal: the pair stalled).
    let receipt = t.round(20);
    assert_eq!(
        (receipt.seq, receipt.bytes, receipt.credits),
        (2, 1900, 1900)
    );
    assert_eq!(t.up.unacknowledged(), 0);
    t.transfer(100);
    assert_eq!(t.round(30).bytes, 2000);
    // The allowance is used up as claims cover it, and no claim goes past it.
    t.down.record_received(window, window).unwrap();
    let proposal = t.down.propose(&t.down_id, 40).unwrap();
    assert!(matches!(
        t.up.countersign(&t.up_id, &proposal),
        Err(Refusal::MoreThanSent { .. })
    ));
}

#[test]
fn a_restarted_uploader_still_asks_the_credits_due_for_what_it_counts() {
    let mut t = two();
    t.transfer(1000);
    t.round(10);
    t.down.record_received(600, 0).unwrap();
    let latest = t.up.latest().copied();
    t.up = UploaderPair::new(net(), t.up_id.peer_id(), t.down_id.peer_id(), latest)
        .with_uncounted(4096);
    t.up.record_sent(300, 300).unwrap();
    // 300 credits are due for the bytes the uploader counts; the proposal offers 100 in all.
    t.down.record_received(300, 100).unwrap();
    let proposal = t.down.propose(&t.down_id, 20).unwrap();
    assert!(matches!(
        t.up.countersign(&t.up_id, &proposal),
        Err(Refusal::TooFewCredits { .. })
    ));
}
