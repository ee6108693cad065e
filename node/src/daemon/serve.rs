//! Answering one request from a peer: the uploader's side of a transfer. Chunks go out only
//! within the requester's credit window and the global upload limit; proposals are checked,
//! countersigned and stored before the countersignature leaves.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::pairs::{PairError, Window};
use super::{Shared, now_ms};
use crate::content::ContentId;
use crate::transport::{Connection, ErrorCode, FrameReader, FrameWriter};
use crate::wire::{self, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, RefusalCode, Request, Response};

/// The standing the upload queue gives a buyer while an agreed trade with it is delivered:
/// the highest.
pub const TRADE_PRIORITY: f64 = 1.0;

/// Penalty for a request that breaks the protocol (undecodable, oversized).
const PENALTY_MALFORMED: u32 = 20;
/// Penalty for a proposal that fails its checks (forged, inflated, stale).
const PENALTY_BAD_PROPOSAL: u32 = 25;
/// How long a penalised peer's answer may take to arrive before the penalty applies.
const ANSWER_DELIVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads one request from `reader`, answers it on `writer`, and finishes the stream.
pub async fn handle(
    shared: &Arc<Shared>,
    conn: &Connection,
    mut writer: FrameWriter,
    mut reader: FrameReader,
) {
    let peer = conn.peer_id();
    reader.set_max_frame(MAX_REQUEST_FRAME);
    writer.set_max_frame(MAX_RESPONSE_FRAME);
    let request = match reader.recv::<Request>().await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(error) => {
            tracing::info!("refused a malformed request: {error}");
            let code = error.error_code().unwrap_or(ErrorCode::ProtocolViolation);
            reader.stop(code);
            writer.reset(code);
            shared.peers.penalize(
                peer,
                PENALTY_MALFORMED,
                &format!("malformed request: {error}"),
            );
            return;
        }
    };
    let mut penalty = None;
    let outcome = match request {
        Request::Chunk { .. } if shared.behaviour.never_upload => {
            let refused = Response::refused(
                RefusalCode::Unavailable,
                "this node does not upload; try another provider",
            );
            writer.send(&refused).await.map_err(anyhow::Error::from)
        }
        Request::Chunk { content, index } => {
            serve_chunk(shared, conn, &mut writer, content, index).await
        }
        Request::Gossip => {
            crate::gossip::session::answer(shared, conn, writer, reader).await;
            return;
        }
        other => {
            let response = answer(shared, conn, other, &mut penalty).await;
            writer.send(&response).await.map_err(anyhow::Error::from)
        }
    };
    let finished = match outcome {
        Ok(()) => writer.finish().await.map_err(anyhow::Error::from),
        Err(error) => Err(error),
    };
    if let Err(error) = finished {
        tracing::debug!("could not answer a request: {error:#}");
    }
    // After the answer has arrived (or a short while), so a peer that is banned for it has
    // first been told why: closing the connection discards stream data not yet delivered.
    if let Some((points, why)) = penalty {
        let _ = tokio::time::timeout(ANSWER_DELIVERY, writer.get_mut().stopped()).await;
        shared.peers.penalize(peer, points, &why);
    }
}

/// The answer to every request but a chunk.
async fn answer(
    shared: &Arc<Shared>,
    conn: &Connection,
    request: Request,
    penalty: &mut Option<(u32, String)>,
) -> Response {
    let peer = conn.peer_id();
    match request {
        Request::Latest(theirs) => {
            match shared.pairs.resync(peer, theirs).await {
                Ok(proofs) => {
                    for proof in proofs {
                        tracing::warn!(
                            "the peer's receipt contradicts ours: conflict proof {} stored, both keys marked dishonest",
                            hex::encode(proof.id())
                        );
                        crate::gossip::session::spread_conflict(shared, proof, None);
                    }
                }
                Err(error) => tracing::warn!("receipt re-sync failed: {error:#}"),
            }
            match shared.pairs.latest_with(peer) {
                Ok(mine) => Response::Latest(mine),
                Err(error) => internal(&error),
            }
        }
        Request::Manifest { content } => {
            match shared.content_blocking(move |c| c.manifest(&content)).await {
                Ok(Some(manifest)) => Response::Manifest {
                    encoded: manifest.encode(),
                },
                Ok(None) => not_found(content),
                Err(error) => internal(&error),
            }
        }
        // A node that does not upload claims to hold nothing, so no one asks it for chunks.
        Request::Have { content } if shared.behaviour.never_upload => not_found(content),
        Request::Have { content } => {
            let have = shared
                .content_blocking(move |c| {
                    let Some(manifest) = c.manifest(&content)? else {
                        return Ok(None);
                    };
                    let chunks = manifest.chunk_count();
                    let mut have = Vec::new();
                    for index in 0..chunks {
                        if c.has_chunk(&content, index)? {
                            have.push(index);
                        }
                    }
                    Ok(Some((chunks, have)))
                })
                .await;
            match have {
                Ok(Some((chunks, have))) => Response::Have {
                    chunks,
                    bitfield: wire::bitfield(chunks, have),
                },
                Ok(None) => not_found(content),
                Err(error) => internal(&error),
            }
        }
        Request::Propose(proposal) => match shared.pairs.countersign(peer, proposal).await {
            Ok(receipt) => {
                tracing::debug!(seq = receipt.seq, bytes = receipt.bytes, "countersigned");
                shared.signed_by(&peer);
                shared
                    .events
                    .receipt(peer, tally_web::events::ReceiptRole::Up, &receipt);
                if let Ok(unacknowledged) = shared.pairs.unacknowledged_to(peer) {
                    let role = tally_market::Party::Seller;
                    shared
                        .market
                        .acknowledged(&peer, role, unacknowledged, now_ms());
                }
                Response::Countersigned(receipt)
            }
            Err(PairError::Refused(why)) => {
                *penalty = Some((PENALTY_BAD_PROPOSAL, format!("refused proposal: {why}")));
                Response::refused(RefusalCode::BadProposal, why.to_string())
            }
            Err(error) => internal(&error),
        },
        Request::Conflict(proof) => match proof.verify(&shared.network) {
            Ok(()) => match crate::gossip::session::learn_conflict(shared, proof, Some(peer)).await
            {
                Ok(_) => Response::Received,
                Err(error) => internal(&error),
            },
            Err(error) => {
                *penalty = Some((
                    crate::gossip::session::PENALTY_BAD_PROOF,
                    format!("pushed a conflict proof that does not verify: {error}"),
                ));
                Response::refused(
                    RefusalCode::Invalid,
                    format!("the conflict proof does not verify: {error}"),
                )
            }
        },
        Request::Orders(messages) => crate::market::answer_orders(shared, peer, messages, penalty),
        Request::Trade(proposal) => {
            crate::market::answer_trade(shared, peer, proposal, penalty).await
        }
        Request::Chunk { .. } | Request::Gossip => {
            Response::refused(RefusalCode::Invalid, "served elsewhere")
        }
    }
}

/// Gives back what a granted turn took for `len` bytes that were not sent: the upload limit's
/// tokens and the upload budget.
fn refund_turn(shared: &Shared, len: u32) {
    shared.upload_limit.refund(u64::from(len));
    shared.uploads.refund(now_ms(), u64::from(len));
}

/// Sends chunk `index` of `content`: a [`Response::Chunk`] header, then the raw bytes.
async fn serve_chunk(
    shared: &Arc<Shared>,
    conn: &Connection,
    writer: &mut FrameWriter,
    content: ContentId,
    index: u32,
) -> anyhow::Result<()> {
    let peer = conn.peer_id();
    let len = shared
        .content_blocking(move |c| {
            if !c.has_chunk(&content, index)? {
                return Ok(None);
            }
            Ok(c.manifest(&content)?.and_then(|m| m.chunk_len(index)))
        })
        .await;
    let len = match len {
        Ok(Some(len)) => len,
        Ok(None) => return Ok(writer.send(&not_found(content)).await?),
        Err(error) => return Ok(writer.send(&internal(&error)).await?),
    };
    let standing = shared.standing.with(|s| s.of(&peer).score);
    let window = shared.credit_window(standing);
    let stranger = match shared.is_stranger(peer, standing) {
        Ok(stranger) => stranger,
        Err(error) => return Ok(writer.send(&internal(&error)).await?),
    };
    let full = |shut: Window| match shut {
        Window::StrangersFull {
            outstanding,
            capacity,
        } => {
            tracing::debug!(
                outstanding,
                capacity,
                "not sending: the allowance strangers share is spent"
            );
            Response::refused(
                RefusalCode::CreditWindowFull {
                    unacknowledged: outstanding,
                    window: capacity,
                },
                format!(
                    "you have no standing here and have signed no receipt for this node: strangers share {capacity} bytes of credit, and {outstanding} are out unsigned; sign for what you received, or ask again later (unsigned bytes are written off after {} s)",
                    shared.settings.stranger_write_off.as_secs()
                ),
            )
        }
        Window::Full { .. } | Window::Open => {
            let unacknowledged = match shut {
                Window::Full { unacknowledged } => unacknowledged,
                _ => 0,
            };
            tracing::info!(
                unacknowledged,
                window,
                "not sending more: the peer's unacknowledged bytes fill its credit window; waiting for its receipt"
            );
            Response::refused(
                RefusalCode::CreditWindowFull {
                    unacknowledged,
                    window,
                },
                format!(
                    "{unacknowledged} bytes sent to you are not covered by a receipt and your credit window is {window}: propose a receipt first"
                ),
            )
        }
    };
    // A request that cannot fit does not wait for a turn.
    match shared.check_upload(peer, u64::from(len), window, stranger) {
        Ok(Window::Open) => {}
        Ok(shut) => return Ok(writer.send(&full(shut)).await?),
        Err(error) => return Ok(writer.send(&internal(&error)).await?),
    }
    // A spent budget refuses at once rather than holding the request for hours.
    if let Err(resets_at_ms) = shared.uploads.budget_allows(now_ms(), u64::from(len)) {
        let message = format!(
            "this node's upload budget is spent until {resets_at_ms} (Unix ms); try another provider"
        );
        return Ok(writer
            .send(&Response::refused(RefusalCode::Unavailable, message))
            .await?);
    }
    // Its turn, in order of standing, within the upload limit and budget; a buyer this node
    // agreed to sell to is served at the top (the trade's priority).
    let priority = if shared.market.delivering_to(&peer, now_ms()) {
        TRADE_PRIORITY
    } else {
        standing
    };
    let turn = tokio::select! {
        () = shared.cancel.cancelled() => Err("the node is stopping".to_owned()),
        _ = conn.closed() => return Ok(()),
        turn = shared.uploads.turn(peer, priority, u64::from(len)) => turn,
    };
    // A connection that closed while it waited gets nothing counted against its window.
    if conn.close_reason().is_some() {
        if turn.is_ok() {
            refund_turn(shared, len);
        }
        return Ok(());
    }
    let _turn = match turn {
        Ok(turn) => turn,
        Err(why) => {
            return Ok(writer
                .send(&Response::refused(RefusalCode::Unavailable, why))
                .await?);
        }
    };
    // A stranger may have signed while its request waited: then it no longer draws on the
    // allowance. (A store error keeps it a stranger, the safe side.)
    let stranger = stranger && shared.is_stranger(peer, standing).unwrap_or(true);
    // Counted before sending, atomically with the check, so requests that waited together
    // cannot overshoot the window.
    // Under an agreed trade the credits due follow its price.
    let sent = shared
        .market
        .seller_send(&peer, u64::from(len), window, now_ms(), |credits| {
            shared.reserve_upload(peer, u64::from(len), credits, window, stranger)
        });
    match sent {
        Ok(Window::Open) => {}
        Ok(shut) => {
            // The turn took tokens and budget for bytes that are not sent: give them back,
            // or refused requests (strangers past the allowance) would eat the upload limit.
            refund_turn(shared, len);
            return Ok(writer.send(&full(shut)).await?);
        }
        Err(error) => {
            refund_turn(shared, len);
            return Ok(writer.send(&internal(&error)).await?);
        }
    }
    // A first send to a pair with no receipt is marked durably before the bytes leave.
    if let Err(error) = shared.pairs.mark_sending(peer).await {
        refund_turn(shared, len);
        return Ok(writer.send(&internal(&error)).await?);
    }
    let bytes = match shared
        .content_blocking(move |c| c.read_chunk(&content, index))
        .await
    {
        Ok(mut bytes) => {
            if shared.behaviour.corrupt_uploads
                && let Some(first) = bytes.first_mut()
            {
                *first ^= 0xff;
            }
            bytes
        }
        Err(error) => return Ok(writer.send(&internal(&error)).await?),
    };
    writer.send(&Response::Chunk { len }).await?;
    writer.write_raw_bytes(bytes::Bytes::from(bytes)).await?;
    shared.count_up(u64::from(len));
    if let Some((sent, _)) = shared.peers.counters(&peer) {
        sent.fetch_add(u64::from(len), Ordering::Relaxed);
    }
    Ok(())
}

fn not_found(content: ContentId) -> Response {
    Response::refused(
        RefusalCode::NotFound,
        format!("this node does not hold {content}"),
    )
}

fn internal(error: &dyn std::fmt::Display) -> Response {
    tracing::warn!("could not answer a request: {error}");
    Response::refused(
        RefusalCode::Unavailable,
        "the node could not answer; try another provider or later",
    )
}
