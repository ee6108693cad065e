//! The two sides of one receipt chain, sans-I/O: what the downloader proposes from what it
//! received, what the uploader checks before it countersigns, and the re-sync of a pair when the
//! two meet again. Time comes in as an argument; nothing here touches a socket or a disk.
//!
//! The caller's duties, both "durable before sent": store and flush a receipt (see
//! [`crate::store::Store::flush`]) before it sends its own signature on it, so a crash never
//! loses a receipt the other side holds; and record a proposal
//! ([`crate::store::Store::record_proposal`]) and flush before sending it, so that after a crash
//! the downloader never signs a second body with a seq it already used (two such bodies, both
//! countersigned, would be a conflict proof against it).

use crate::error::Refusal;
use crate::id::{Identity, NetworkId, PeerId};
use crate::receipt::{ConflictProof, Order, Pair, Proposal, Receipt, ReceiptBody, VerifiedReceipt};

/// What re-syncing a pair with the other side's latest receipt found.
#[derive(Debug, Clone, PartialEq, Eq)]
// Returned once per exchange and consumed at once, never kept in bulk: boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum Resync {
    /// Both hold the same statement (or neither holds any).
    Agree,
    /// This side's receipt is newer: send it to the other side.
    OursNewer,
    /// The other side's receipt is newer and valid; it is now this side's latest.
    TheirsNewer(VerifiedReceipt),
    /// The other side's receipt contradicts ours: store and gossip the proof.
    Conflict(Box<ConflictProof>),
}

/// What both sides of a pair share: the network, the pair, and the latest receipt both signed.
#[derive(Debug, Clone)]
struct Agreed {
    network: NetworkId,
    pair: Pair,
    latest: Option<Receipt>,
}

impl Agreed {
    fn bytes(&self) -> u64 {
        self.latest.map_or(0, |r| r.bytes)
    }

    fn seq(&self) -> u64 {
        self.latest.map_or(0, |r| r.seq)
    }

    /// Checks a fully signed receipt of this pair and adopts it if newer.
    fn adopt(&mut self, theirs: &Receipt) -> Result<Resync, Refusal> {
        if theirs.pair() != self.pair {
            return Err(Refusal::WrongPair {
                got_uploader: theirs.uploader,
                got_downloader: theirs.downloader,
            });
        }
        let verified = theirs.verify(&self.network)?;
        let Some(ours) = self.latest else {
            self.latest = Some(*theirs);
            return Ok(Resync::TheirsNewer(verified));
        };
        Ok(match ours.body().order(&theirs.body()) {
            Order::Same => Resync::Agree,
            Order::Older => Resync::OursNewer,
            Order::Newer => {
                self.latest = Some(*theirs);
                Resync::TheirsNewer(verified)
            }
            Order::Conflict => match ConflictProof::new(ours, *theirs) {
                Ok(proof) => Resync::Conflict(Box::new(proof)),
                Err(_) => Resync::Agree,
            },
        })
    }

    fn resync(&mut self, theirs: Option<&Receipt>) -> Result<Resync, Refusal> {
        match (theirs, self.latest) {
            (Some(theirs), _) => self.adopt(theirs),
            (None, Some(_)) => Ok(Resync::OursNewer),
            (None, None) => Ok(Resync::Agree),
        }
    }
}

/// The downloader's side of a pair: counts what it received and verified, and proposes.
#[derive(Debug, Clone)]
pub struct DownloaderPair {
    agreed: Agreed,
    received_bytes: u64,
    owed_credits: u64,
    last_proposed: Option<ReceiptBody>,
}

impl DownloaderPair {
    /// A pair in which `downloader` (this node) receives from `uploader`, resuming from the
    /// latest receipt both signed, if any.
    pub fn new(
        network: NetworkId,
        downloader: PeerId,
        uploader: PeerId,
        latest: Option<Receipt>,
    ) -> Self {
        let bytes = latest.map_or(0, |r| r.bytes);
        let credits = latest.map_or(0, |r| r.credits);
        Self {
            agreed: Agreed {
                network,
                pair: Pair {
                    uploader,
                    downloader,
                },
                latest,
            },
            received_bytes: bytes,
            owed_credits: credits,
            last_proposed: None,
        }
    }

    /// Resumes after a restart from the last proposal this side made (from
    /// [`crate::store::Store::last_proposal`]), so its seq is never used for another body.
    pub fn with_last_proposal(mut self, last: Option<ReceiptBody>) -> Self {
        self.last_proposed = last.filter(|body| body.pair() == self.agreed.pair);
        if let Some(body) = self.last_proposed {
            self.received_bytes = self.received_bytes.max(body.bytes);
            self.owed_credits = self.owed_credits.max(body.credits);
        }
        self
    }

    /// The last body this side proposed, if any.
    pub fn last_proposal(&self) -> Option<&ReceiptBody> {
        self.last_proposed.as_ref()
    }

    /// Cumulative bytes received from the uploader, all time.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Counts `bytes` of verified payload received, for which `credits` are owed (equal to
    /// `bytes` at par).
    /// A refused count changes nothing (both sums are checked before either is kept), as
    /// [`UploaderPair::record_sent`] does.
    pub fn record_received(&mut self, bytes: u64, credits: u64) -> Result<(), Refusal> {
        let received_bytes = self
            .received_bytes
            .checked_add(bytes)
            .ok_or(Refusal::Overflow)?;
        let owed_credits = self
            .owed_credits
            .checked_add(credits)
            .ok_or(Refusal::Overflow)?;
        self.received_bytes = received_bytes;
        self.owed_credits = owed_credits;
        Ok(())
    }

    /// Bytes received but not yet covered by a receipt both signed.
    pub fn unacknowledged(&self) -> u64 {
        self.received_bytes - self.agreed.bytes()
    }

    /// The latest receipt both signed.
    pub fn latest(&self) -> Option<&Receipt> {
        self.agreed.latest.as_ref()
    }

    /// The next proposal, or `None` when everything received is already agreed. Never signs two
    /// bodies with one seq: an unanswered proposal with the same counters is sent again as it
    /// was; new counters get a new seq. Record the body durably before sending it. `None` too
    /// when the chain has used every seq (the agreed receipt is at `u64::MAX`): no later receipt
    /// can exist.
    pub fn propose(&mut self, me: &Identity, now_ms: u64) -> Option<Proposal> {
        let counters = (self.received_bytes, self.owed_credits);
        let agreed = self.agreed.latest.map(|r| (r.bytes, r.credits));
        if agreed == Some(counters) || (agreed.is_none() && counters == (0, 0)) {
            return None;
        }
        if let Some(last) = self.last_proposed
            && (last.bytes, last.credits) == counters
            && last.seq > self.agreed.seq()
        {
            return Some(last.propose(me, &self.agreed.network));
        }
        let seq = self
            .agreed
            .seq()
            .max(self.last_proposed.map_or(0, |p| p.seq))
            .checked_add(1)?;
        let body = ReceiptBody {
            uploader: self.agreed.pair.uploader,
            downloader: self.agreed.pair.downloader,
            seq,
            bytes: self.received_bytes,
            credits: self.owed_credits,
            time_ms: now_ms,
        };
        self.last_proposed = Some(body);
        Some(body.propose(me, &self.agreed.network))
    }

    /// Takes the uploader's countersigned receipt. Store and flush the returned receipt when it
    /// is [`Resync::TheirsNewer`].
    pub fn accept_countersigned(&mut self, receipt: &Receipt) -> Result<Resync, Refusal> {
        if receipt.bytes > self.received_bytes {
            // We never sign more than we received, so this cannot be ours.
            return Err(Refusal::NotOurProposal);
        }
        self.agreed.adopt(receipt)
    }

    /// Re-syncs with the uploader's latest receipt on reconnect: the higher valid one wins.
    pub fn resync(&mut self, theirs: Option<&Receipt>) -> Result<Resync, Refusal> {
        let outcome = self.agreed.resync(theirs)?;
        self.received_bytes = self.received_bytes.max(self.agreed.bytes());
        self.owed_credits = self
            .owed_credits
            .max(self.agreed.latest.map_or(0, |r| r.credits));
        Ok(outcome)
    }
}

/// The uploader's side of a pair: counts what it sent, checks proposals, countersigns.
#[derive(Debug, Clone)]
pub struct UploaderPair {
    agreed: Agreed,
    sent_bytes: u64,
    /// Bytes this side may have sent before it lost count (a restart resumes from the latest
    /// receipt, not from what was sent): a proposal may claim up to this many more than
    /// `sent_bytes`, with no credits due for them (their price is not known). Used up as
    /// receipts cover them; see [`UploaderPair::with_uncounted`].
    uncounted: u64,
    /// Cumulative (bytes, credits) points where the price changed; credits due for any byte
    /// count are interpolated between them. At par this stays two points.
    schedule: Vec<(u64, u64)>,
}

impl UploaderPair {
    /// A pair in which `uploader` (this node) sends to `downloader`, resuming from the latest
    /// receipt both signed, if any.
    pub fn new(
        network: NetworkId,
        uploader: PeerId,
        downloader: PeerId,
        latest: Option<Receipt>,
    ) -> Self {
        let start = latest.map_or((0, 0), |r| (r.bytes, r.credits));
        Self {
            agreed: Agreed {
                network,
                pair: Pair {
                    uploader,
                    downloader,
                },
                latest,
            },
            sent_bytes: start.0,
            uncounted: 0,
            schedule: vec![start],
        }
    }

    /// Lets the downloader claim up to `bytes` more than this side counts as sent: what it may
    /// have sent, unacknowledged, before it lost count. A node resuming a pair from its store
    /// (after a restart or a crash) passes the largest credit window it grants, which bounds
    /// those bytes. Without it the downloader, which counted them, stays ahead by as many bytes
    /// for good: every proposal it makes is refused as claiming more than was sent, and the
    /// pair stalls once the credit window fills.
    pub fn with_uncounted(mut self, bytes: u64) -> Self {
        self.uncounted = bytes;
        self
    }

    /// The latest receipt both signed.
    pub fn latest(&self) -> Option<&Receipt> {
        self.agreed.latest.as_ref()
    }

    /// Bytes sent but not yet acknowledged by a receipt both signed.
    pub fn unacknowledged(&self) -> u64 {
        self.sent_bytes.saturating_sub(self.agreed.bytes())
    }

    /// Cumulative bytes sent to the downloader, all time.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Whether `next` more bytes fit in the downloader's credit `window`: sending stops while
    /// the unacknowledged bytes would exceed it, so a peer that never signs takes at most one
    /// window.
    pub fn may_send(&self, next: u64, window: u64) -> bool {
        self.unacknowledged().saturating_add(next) <= window
    }

    /// Counts `bytes` sent, for which `credits` are due (equal to `bytes` at par).
    pub fn record_sent(&mut self, bytes: u64, credits: u64) -> Result<(), Refusal> {
        let &(last_bytes, last_credits) = self.schedule.last().ok_or(Refusal::Overflow)?;
        let point = (
            last_bytes.checked_add(bytes).ok_or(Refusal::Overflow)?,
            last_credits.checked_add(credits).ok_or(Refusal::Overflow)?,
        );
        // Extend the last segment when the price is unchanged (cross-multiplied, exact).
        if let [.., (b0, c0), (b1, c1)] = self.schedule[..] {
            let same_price = u128::from(c1 - c0) * u128::from(bytes)
                == u128::from(credits) * u128::from(b1 - b0);
            if same_price {
                if let Some(last) = self.schedule.last_mut() {
                    *last = point;
                }
                self.sent_bytes = point.0;
                return Ok(());
            }
        }
        self.schedule.push(point);
        self.sent_bytes = point.0;
        Ok(())
    }

    /// Credits due for the first `bytes` of all bytes sent, rounding down.
    pub fn credits_due(&self, bytes: u64) -> u64 {
        let segment = self
            .schedule
            .windows(2)
            .find(|w| bytes <= w[1].0)
            .map(|w| (w[0], w[1]));
        match segment {
            Some(((b0, c0), (b1, c1))) if b1 > b0 && bytes >= b0 => {
                let part = u128::from(bytes - b0) * u128::from(c1 - c0) / u128::from(b1 - b0);
                c0 + u64::try_from(part).unwrap_or(u64::MAX)
            }
            _ => self.schedule.first().map_or(0, |&(_, c)| c),
        }
    }

    /// Checks a proposal before countersigning: D's signature, the pair, no more bytes than
    /// were sent, the credits due for them, and strictly after the latest agreed receipt. A
    /// refused proposal is never a conflict: nothing was countersigned.
    pub fn check(&self, proposal: &Proposal) -> Result<(), Refusal> {
        let body = &proposal.body;
        if body.pair() != self.agreed.pair {
            return Err(Refusal::WrongPair {
                got_uploader: body.uploader,
                got_downloader: body.downloader,
            });
        }
        proposal.verify(&self.agreed.network)?;
        if body.bytes > self.sent_bytes.saturating_add(self.uncounted) {
            return Err(Refusal::MoreThanSent {
                claimed: body.bytes,
                sent: self.sent_bytes,
            });
        }
        if let Some(latest) = &self.agreed.latest
            && latest.body().order(body) != Order::Newer
        {
            return Err(Refusal::Stale {
                seq: body.seq,
                bytes: body.bytes,
                credits: body.credits,
                latest_seq: latest.seq,
                latest_bytes: latest.bytes,
                latest_credits: latest.credits,
            });
        }
        // Bytes past those counted were sent before the count was lost: nothing known is due.
        let due = self.credits_due(body.bytes.min(self.sent_bytes));
        if body.credits < due {
            return Err(Refusal::TooFewCredits {
                offered: body.credits,
                due,
                bytes: body.bytes,
            });
        }
        Ok(())
    }

    /// Checks and countersigns. The result is this pair's new latest receipt: store and flush it
    /// before sending it back.
    pub fn countersign(
        &mut self,
        me: &Identity,
        proposal: &Proposal,
    ) -> Result<VerifiedReceipt, Refusal> {
        self.check(proposal)?;
        let receipt = proposal.countersign(me, &self.agreed.network);
        let verified = receipt.verify(&self.agreed.network)?;
        self.agreed.latest = Some(receipt);
        if receipt.bytes > self.sent_bytes {
            // Bytes sent before the count was lost: the downloader's count is the best there is.
            self.uncounted = self
                .uncounted
                .saturating_sub(receipt.bytes - self.sent_bytes);
            self.sent_bytes = receipt.bytes;
            self.schedule = vec![(receipt.bytes, receipt.credits)];
            return Ok(verified);
        }
        // Points before the agreed byte count can no longer be asked about.
        while self.schedule.len() > 2 && self.schedule[1].0 <= receipt.bytes {
            self.schedule.remove(0);
        }
        Ok(verified)
    }

    /// Re-syncs with the downloader's latest receipt on reconnect: the higher valid one wins.
    pub fn resync(&mut self, theirs: Option<&Receipt>) -> Result<Resync, Refusal> {
        let outcome = self.agreed.resync(theirs)?;
        if let Some(latest) = self.agreed.latest
            && latest.bytes > self.sent_bytes
        {
            // This side lost count (a restore from backup): the signed receipt is the truth.
            self.sent_bytes = latest.bytes;
            self.schedule = vec![(latest.bytes, latest.credits)];
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
