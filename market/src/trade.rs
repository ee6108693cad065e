//! From a match to a trade: the [`TradeTerms`] both sides sign (the buyer proposes, the seller
//! countersigns, as with receipts), the double-signed [`Agreement`], and the [`Trade`] state
//! machine one side keeps while the bytes flow and are paid for.
//!
//! A fill in the book binds no one: it becomes a trade only when both have signed its terms. The
//! trade then runs `Proposed → Agreed → Delivering → Settled`, or ends `Cancelled` (before any
//! byte moved), `Expired` (nothing delivered by the deadline, or never countersigned), or
//! `Defaulted` (the counterparty fell silent past the silence timeout). Time comes in as an
//! argument; nothing here reads a clock.
//!
//! What the buyer may owe is bounded by a credit window passed in: what it owes,
//! `credits_for(delivered) − settled`, never exceeds it, and [`Trade::deliverable`] says how many
//! more bytes may go before the buyer must settle.

use serde::{Deserialize, Serialize};
use tally_ledger::{Identity, NetworkId, PeerId, Signature};

use crate::book::Fill;
use crate::order::{GIB, OrderError, OrderId, check_signature, credits_for, signed_bytes};

/// Domain separator of trade terms' signed bytes.
pub const TRADE_DOMAIN: &[u8; 14] = b"tally/trade/v1";

/// What both sides of a trade sign: the seller uploads `bytes` to the buyer at `price_per_gib`
/// by `expires_ms`, against the named offer and bid. The network is in the signed bytes, not a
/// field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TradeTerms {
    /// The offer matched.
    pub offer_id: OrderId,
    /// The bid matched.
    pub bid_id: OrderId,
    /// Who uploads.
    pub seller: PeerId,
    /// Who downloads and pays.
    pub buyer: PeerId,
    /// Bytes to deliver; at least 1.
    pub bytes: u64,
    /// Credits per GiB.
    pub price_per_gib: u64,
    /// When delivery must be done, Unix ms; undelivered bytes lapse then.
    pub expires_ms: u64,
}

impl TradeTerms {
    /// The terms of a book's fill, to be delivered by `expires_ms`.
    pub fn from_fill(fill: &Fill, expires_ms: u64) -> Self {
        Self {
            offer_id: fill.offer_id,
            bid_id: fill.bid_id,
            seller: fill.seller,
            buyer: fill.buyer,
            bytes: fill.bytes,
            price_per_gib: fill.price_per_gib,
            expires_ms,
        }
    }

    /// `tally/trade/v1 ‖ network ‖ postcard(terms)`.
    pub fn signed_bytes(&self, network: &NetworkId) -> Vec<u8> {
        signed_bytes(TRADE_DOMAIN, network, self)
    }

    /// The checks that need no signature: some bytes, two distinct parties.
    pub fn check_shape(&self) -> Result<(), OrderError> {
        if self.bytes == 0 {
            return Err(OrderError::Malformed("the trade is for zero bytes"));
        }
        if self.seller == self.buyer {
            return Err(OrderError::Malformed("seller and buyer are the same key"));
        }
        Ok(())
    }

    /// The credits the whole trade is worth, rounded down.
    pub fn value(&self) -> u64 {
        credits_for(self.bytes, self.price_per_gib)
    }

    /// The buyer's half: these terms with the buyer's signature, to send to the seller.
    pub fn propose(self, buyer: &Identity, network: &NetworkId) -> TradeProposal {
        let sig_buyer = buyer.sign(&self.signed_bytes(network));
        TradeProposal {
            terms: self,
            sig_buyer,
        }
    }
}

/// Terms signed by the buyer only: not yet a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TradeProposal {
    /// What is proposed.
    pub terms: TradeTerms,
    /// The buyer's signature over the terms' signed bytes.
    pub sig_buyer: Signature,
}

impl TradeProposal {
    /// Checks the shape and the buyer's signature.
    pub fn verify(&self, network: &NetworkId) -> Result<(), OrderError> {
        self.terms.check_shape()?;
        let signed = self.terms.signed_bytes(network);
        check_signature("buyer", &self.terms.buyer, &signed, &self.sig_buyer)
    }

    /// The seller's countersignature, making the proposal an agreement. Checks nothing: the
    /// seller verifies the proposal and compares it with its offer first.
    pub fn countersign(self, seller: &Identity, network: &NetworkId) -> Agreement {
        let sig_seller = seller.sign(&self.terms.signed_bytes(network));
        Agreement {
            terms: self.terms,
            sig_buyer: self.sig_buyer,
            sig_seller,
        }
    }
}

/// Trade terms signed by both sides. Valid only with both signatures; see
/// [`Agreement::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Agreement {
    /// What was agreed.
    pub terms: TradeTerms,
    /// The buyer's signature.
    pub sig_buyer: Signature,
    /// The seller's signature over the same bytes.
    pub sig_seller: Signature,
}

impl Agreement {
    /// Checks the shape and both signatures on `network`. The deadline is the [`Trade`]'s
    /// business: an agreement past it is still a true record of what was agreed.
    pub fn verify(&self, network: &NetworkId) -> Result<VerifiedAgreement, OrderError> {
        self.terms.check_shape()?;
        let signed = self.terms.signed_bytes(network);
        check_signature("buyer", &self.terms.buyer, &signed, &self.sig_buyer)?;
        check_signature("seller", &self.terms.seller, &signed, &self.sig_seller)?;
        Ok(VerifiedAgreement(*self))
    }
}

/// An agreement whose two signatures have been checked. Only [`Agreement::verify`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifiedAgreement(Agreement);

impl VerifiedAgreement {
    /// The agreement.
    pub fn agreement(&self) -> &Agreement {
        &self.0
    }
}

/// One side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// The uploader.
    Seller,
    /// The downloader, who pays.
    Buyer,
}

/// Where a trade stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TradeState {
    /// The buyer signed; the seller has not countersigned.
    Proposed,
    /// Both signed; no byte delivered yet.
    Agreed,
    /// Some bytes delivered.
    Delivering,
    /// Done: every byte delivered and paid, or the deadline passed with what was delivered paid.
    Settled,
    /// Withdrawn before any byte moved.
    Cancelled,
    /// Never countersigned in time, or nothing delivered by the deadline.
    Expired,
    /// This party fell silent past the silence timeout: the seller with bytes undelivered and
    /// nothing owed, the buyer with credits owed.
    Defaulted(Party),
}

impl TradeState {
    /// Whether the trade has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Settled | Self::Cancelled | Self::Expired | Self::Defaulted(_)
        )
    }
}

/// Why a trade refused a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TradeError {
    /// The step is not possible in this state.
    #[error("cannot {action} a trade that is {state:?}")]
    WrongState {
        /// The state it is in.
        state: TradeState,
        /// What was tried.
        action: &'static str,
    },
    /// The agreement is for other terms.
    #[error("the agreement's terms are not this trade's")]
    TermsMismatch,
    /// More bytes than the terms leave.
    #[error("{bytes} bytes would exceed the {remaining} left to deliver")]
    OverDelivery {
        /// Bytes tried.
        bytes: u64,
        /// Bytes the terms leave.
        remaining: u64,
    },
    /// More bytes than the credit window allows before the buyer settles.
    #[error("{bytes} bytes would exceed the credit window; {allowed} may go before settlement")]
    OverCreditWindow {
        /// Bytes tried.
        bytes: u64,
        /// Bytes the window allows now.
        allowed: u64,
    },
    /// The delivery deadline has passed: undelivered bytes have lapsed.
    #[error("the trade's deadline {expires_ms} has passed (now {now_ms})")]
    PastDeadline {
        /// The deadline, Unix ms.
        expires_ms: u64,
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// More credits than are owed.
    #[error("{credits} credits settled but only {owed} are owed")]
    Overpaid {
        /// Credits tried.
        credits: u64,
        /// Credits owed.
        owed: u64,
    },
}

/// One side's view of a trade: its terms, what was delivered and paid, and its state. Pure: each
/// step takes the time, and [`Trade::tick`] applies the deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    terms: TradeTerms,
    state: TradeState,
    delivered_bytes: u64,
    settled_credits: u64,
    last_progress_ms: u64,
    silence_ms: u64,
}

impl Trade {
    /// A trade proposed at `now_ms`. Either party defaults when silent for `silence_ms` while
    /// it is their turn; a proposal not countersigned within it expires.
    pub fn propose(terms: TradeTerms, now_ms: u64, silence_ms: u64) -> Self {
        Self {
            terms,
            state: TradeState::Proposed,
            delivered_bytes: 0,
            settled_credits: 0,
            last_progress_ms: now_ms,
            silence_ms,
        }
    }

    /// The terms.
    pub fn terms(&self) -> &TradeTerms {
        &self.terms
    }

    /// The state as of the last step (call [`Trade::tick`] to apply deadlines).
    pub fn state(&self) -> TradeState {
        self.state
    }

    /// Bytes delivered so far.
    pub fn delivered_bytes(&self) -> u64 {
        self.delivered_bytes
    }

    /// Credits settled so far.
    pub fn settled_credits(&self) -> u64 {
        self.settled_credits
    }

    /// Credits the buyer owes now: `credits_for(delivered) - settled`, never below 0.
    pub fn owed(&self) -> u64 {
        credits_for(self.delivered_bytes, self.terms.price_per_gib)
            .saturating_sub(self.settled_credits)
    }

    /// Bytes the terms still leave to deliver.
    pub fn remaining_bytes(&self) -> u64 {
        self.terms.bytes.saturating_sub(self.delivered_bytes)
    }

    /// How many more bytes may be delivered before the buyer must settle, so that what it owes
    /// stays within `credit_window`: the most `b` with `credits_for(delivered + b) - settled ≤
    /// credit_window`, capped by the bytes left. 0 unless the trade is agreed or delivering.
    pub fn deliverable(&self, credit_window: u64) -> u64 {
        if !matches!(self.state, TradeState::Agreed | TradeState::Delivering) {
            return 0;
        }
        let remaining = self.remaining_bytes();
        let price = u128::from(self.terms.price_per_gib);
        if price == 0 {
            return remaining;
        }
        // floor(x · p / G) ≤ cap  ⟺  x · p < (cap + 1) · G  ⟺  x ≤ ((cap + 1) · G − 1) / p.
        let cap = u128::from(self.settled_credits) + u128::from(credit_window);
        let max_total = ((cap + 1) * u128::from(GIB) - 1) / price;
        let more = max_total.saturating_sub(u128::from(self.delivered_bytes));
        u64::try_from(more).unwrap_or(u64::MAX).min(remaining)
    }

    /// The seller countersigned: `agreement` must be for exactly these terms.
    pub fn agree(&mut self, agreement: &VerifiedAgreement, now_ms: u64) -> Result<(), TradeError> {
        self.tick(now_ms);
        if self.state != TradeState::Proposed {
            return Err(self.wrong("agree"));
        }
        if agreement.agreement().terms != self.terms {
            return Err(TradeError::TermsMismatch);
        }
        self.state = TradeState::Agreed;
        self.last_progress_ms = now_ms;
        Ok(())
    }

    /// `bytes` more were delivered at `now_ms`. Refused past the deadline, beyond the terms, or
    /// beyond what `credit_window` allows before the buyer settles ([`Trade::deliverable`]).
    pub fn deliver(
        &mut self,
        bytes: u64,
        credit_window: u64,
        now_ms: u64,
    ) -> Result<(), TradeError> {
        self.tick(now_ms);
        if !matches!(self.state, TradeState::Agreed | TradeState::Delivering) {
            return Err(self.wrong("deliver on"));
        }
        if now_ms >= self.terms.expires_ms {
            return Err(TradeError::PastDeadline {
                expires_ms: self.terms.expires_ms,
                now_ms,
            });
        }
        let remaining = self.remaining_bytes();
        if bytes > remaining {
            return Err(TradeError::OverDelivery { bytes, remaining });
        }
        let allowed = self.deliverable(credit_window);
        if bytes > allowed {
            return Err(TradeError::OverCreditWindow { bytes, allowed });
        }
        if bytes == 0 {
            return Ok(());
        }
        self.delivered_bytes += bytes;
        self.state = TradeState::Delivering;
        self.last_progress_ms = now_ms;
        self.settle_if_done();
        Ok(())
    }

    /// The buyer paid `credits` at `now_ms` (through receipts). Refused beyond what is owed: a
    /// trade is paid for what was delivered, never ahead.
    pub fn settle(&mut self, credits: u64, now_ms: u64) -> Result<(), TradeError> {
        self.tick(now_ms);
        if self.state != TradeState::Delivering {
            return Err(self.wrong("settle"));
        }
        let owed = self.owed();
        if credits > owed {
            return Err(TradeError::Overpaid { credits, owed });
        }
        if credits == 0 {
            return Ok(());
        }
        self.settled_credits += credits;
        self.last_progress_ms = now_ms;
        self.settle_if_done();
        Ok(())
    }

    /// Withdraws the trade: only before any byte moved.
    pub fn cancel(&mut self, now_ms: u64) -> Result<(), TradeError> {
        self.tick(now_ms);
        if !matches!(self.state, TradeState::Proposed | TradeState::Agreed) {
            return Err(self.wrong("cancel"));
        }
        self.state = TradeState::Cancelled;
        Ok(())
    }

    /// Applies the deadlines at `now_ms` and returns the state:
    /// - proposed, and not countersigned by `expires_ms` or within the silence timeout: expired;
    /// - agreed with nothing delivered: expired at `expires_ms`, the seller in default if silent
    ///   before that;
    /// - delivering and silent past the timeout: the buyer in default if it owes credits, else
    ///   the seller; past `expires_ms` with nothing owed: settled (the rest lapses).
    pub fn tick(&mut self, now_ms: u64) -> TradeState {
        let silent = now_ms >= self.last_progress_ms.saturating_add(self.silence_ms);
        let past_deadline = now_ms >= self.terms.expires_ms;
        self.state = match self.state {
            TradeState::Proposed if past_deadline || silent => TradeState::Expired,
            TradeState::Agreed if past_deadline => TradeState::Expired,
            TradeState::Agreed if silent => TradeState::Defaulted(Party::Seller),
            TradeState::Delivering if silent && self.owed() > 0 => {
                TradeState::Defaulted(Party::Buyer)
            }
            TradeState::Delivering if past_deadline && self.owed() == 0 => TradeState::Settled,
            TradeState::Delivering if silent => TradeState::Defaulted(Party::Seller),
            state => state,
        };
        self.state
    }

    fn settle_if_done(&mut self) {
        if self.delivered_bytes == self.terms.bytes && self.owed() == 0 {
            self.state = TradeState::Settled;
        }
    }

    fn wrong(&self, action: &'static str) -> TradeError {
        TradeError::WrongState {
            state: self.state,
            action,
        }
    }
}

#[cfg(test)]
mod tests;
