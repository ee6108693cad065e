//! Length-prefixed postcard frames over a byte stream.
//!
//! A frame is a 4-byte big-endian length `n` followed by `n` bytes holding exactly one
//! postcard-encoded value. Every reader has a cap: a length above it is refused as soon as the
//! prefix is read, before any buffer is sized for it, and the buffer then grows only with bytes
//! that actually arrive. Raw payload bytes (chunk data) may follow a frame on the same stream:
//! the frame says how many, and [`FrameWriter::write_raw`] / [`FrameReader::read_raw`] move them
//! without a postcard copy.
//!
//! The types are generic over tokio's `AsyncRead`/`AsyncWrite` so that unit tests and property
//! tests run on in-memory buffers; in the node they wrap quinn's streams (the default type
//! parameters).

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ErrorCode;

/// The default frame cap: 1 MiB + 64 KiB, room for the largest control message with margin.
/// Chunk payloads do not count: they travel raw after their header frame.
pub const MAX_FRAME: usize = 1024 * 1024 + 64 * 1024;

/// Bytes in a frame's length prefix.
pub const LEN_PREFIX: usize = 4;

/// A frame buffer larger than this is freed after use rather than kept for the next frame, so
/// an idle stream does not pin a megabyte.
const KEEP_BUFFER: usize = 64 * 1024;

/// Step by which a frame buffer grows while its bytes arrive.
const READ_STEP: usize = 64 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix (or an encoded value) above the stream's cap. Nothing was allocated for
    /// it.
    #[error("frame of {len} bytes is over this stream's cap of {max} bytes")]
    TooLarge {
        /// The length announced (or encoded).
        len: u64,
        /// The cap.
        max: usize,
    },
    /// The frame's bytes are not a valid encoding of the expected type.
    #[error("malformed frame: {0}")]
    Decode(#[source] postcard::Error),
    /// The frame holds a valid value followed by bytes that belong to nothing.
    #[error("malformed frame: {extra} bytes after its value")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// Our own value could not be encoded (a bug on this side, not the peer's).
    #[error("cannot encode frame: {0}")]
    Encode(#[source] postcard::Error),
    /// The stream ended in the middle of a frame or of raw payload bytes.
    #[error("stream ended after {got} of {expected} bytes")]
    Truncated {
        /// Bytes the frame (prefix, body or raw payload) needed.
        expected: u64,
        /// Bytes that came before the end.
        got: u64,
    },
    /// Reading or writing the stream failed (reset by the peer, connection lost, ...). quinn's
    /// own error is the `io::Error`'s inner error.
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The code to reset or stop the stream with, when the peer is at fault; `None` for I/O
    /// failures and our own encoding bugs.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            FrameError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
            FrameError::Decode(_)
            | FrameError::TrailingBytes { .. }
            | FrameError::Truncated { .. } => Some(ErrorCode::ProtocolViolation),
            FrameError::Encode(_) | FrameError::Io(_) => None,
        }
    }
}

/// Reads frames (and raw payload bytes) from a stream.
#[derive(Debug)]
pub struct FrameReader<R = quinn::RecvStream> {
    inner: R,
    max_frame: usize,
    buf: Vec<u8>,
    /// Frame bytes read so far, length prefixes included (not raw payload).
    frame_bytes: u64,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `inner`, refusing frames over `max_frame` bytes.
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self {
            inner,
            max_frame,
            buf: Vec::new(),
            frame_bytes: 0,
        }
    }

    /// Frame bytes so far, length prefixes included (raw payload bytes are not counted).
    pub fn frame_bytes(&self) -> u64 {
        self.frame_bytes
    }

    /// The cap on a frame's length.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the cap, for the frames that follow.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// The next frame's value; `None` if the stream ended cleanly before a new frame. After an
    /// error the stream is out of step: stop it (the error's [`FrameError::error_code`] says
    /// with what) rather than read on.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if !self.recv_frame().await? {
            return Ok(None);
        }
        let decoded = postcard::take_from_bytes::<T>(&self.buf);
        let result = match decoded {
            Ok((value, [])) => Ok(Some(value)),
            Ok((_, rest)) => Err(FrameError::TrailingBytes { extra: rest.len() }),
            Err(e) => Err(FrameError::Decode(e)),
        };
        self.release_buffer();
        result
    }

    /// Fills `buf` with the next `buf.len()` raw bytes of the stream (a payload announced by
    /// the frame before). The caller sizes `buf` from a length it has checked.
    pub async fn read_raw(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        let got = read_full(&mut self.inner, buf).await?;
        if got < buf.len() {
            return Err(FrameError::Truncated {
                expected: buf.len() as u64,
                got: got as u64,
            });
        }
        Ok(())
    }

    /// The stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The stream, for raw access. Reading from it between frames is fine; inside a frame it
    /// desynchronises the reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The stream, unwrapped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads one frame's body into `self.buf`. `false` at a clean end of stream.
    async fn recv_frame(&mut self) -> Result<bool, FrameError> {
        let mut prefix = [0u8; LEN_PREFIX];
        let got = read_full(&mut self.inner, &mut prefix).await?;
        if got == 0 {
            return Ok(false);
        }
        if got < LEN_PREFIX {
            return Err(FrameError::Truncated {
                expected: LEN_PREFIX as u64,
                got: got as u64,
            });
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max_frame,
            });
        }
        // Grow with the bytes that arrive, not with what the prefix claims: a peer that
        // announces a full frame and stalls holds at most one step of our memory.
        self.buf.clear();
        while self.buf.len() < len {
            let start = self.buf.len();
            let step = (len - start).min(READ_STEP);
            self.buf.resize(start + step, 0);
            let n = self.inner.read(&mut self.buf[start..]).await?;
            self.buf.truncate(start + n);
            if n == 0 {
                return Err(FrameError::Truncated {
                    expected: (LEN_PREFIX + len) as u64,
                    got: (LEN_PREFIX + start) as u64,
                });
            }
        }
        self.frame_bytes += (LEN_PREFIX + len) as u64;
        Ok(true)
    }

    fn release_buffer(&mut self) {
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
    }
}

impl FrameReader<quinn::RecvStream> {
    /// Up to `max` raw payload bytes as they arrived, without copying them; `None` at the end
    /// of the stream. The reader never reads ahead of the frame it decodes, so raw bytes after
    /// a frame are all still in the stream.
    pub async fn read_raw_chunk(&mut self, max: usize) -> Result<Option<Bytes>, FrameError> {
        let chunk = self
            .inner
            .read_chunk(max, true)
            .await
            .map_err(|e| FrameError::Io(e.into()))?;
        Ok(chunk.map(|chunk| chunk.bytes))
    }

    /// Tells the peer to stop sending on this stream, with `code`. A no-op if the stream is
    /// already finished or stopped.
    pub fn stop(&mut self, code: ErrorCode) {
        // Err only means the stream is already closed: there is no one left to tell.
        let _ = self.inner.stop(code.into());
    }
}

/// Writes frames (and raw payload bytes) to a stream.
#[derive(Debug)]
pub struct FrameWriter<W = quinn::SendStream> {
    inner: W,
    max_frame: usize,
    buf: Vec<u8>,
    /// Frame bytes written so far, length prefixes included (not raw payload).
    frame_bytes: u64,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Wraps `inner`, refusing to send frames over `max_frame` bytes (the peer would refuse
    /// them).
    pub fn new(inner: W, max_frame: usize) -> Self {
        Self {
            inner,
            max_frame,
            buf: Vec::new(),
            frame_bytes: 0,
        }
    }

    /// Frame bytes so far, length prefixes included (raw payload bytes are not counted).
    pub fn frame_bytes(&self) -> u64 {
        self.frame_bytes
    }

    /// The cap on a frame's length.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the cap, for the frames that follow.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Sends `value` as one frame. Nothing is written if it does not fit the cap.
    pub async fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FrameError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&[0u8; LEN_PREFIX]);
        let mut buf = postcard::to_extend(value, buf).map_err(FrameError::Encode)?;
        let len = buf.len() - LEN_PREFIX;
        let prefix = match u32::try_from(len) {
            Ok(prefix) if len <= self.max_frame => prefix,
            _ => {
                return Err(FrameError::TooLarge {
                    len: len as u64,
                    max: self.max_frame,
                });
            }
        };
        buf[..LEN_PREFIX].copy_from_slice(&prefix.to_be_bytes());
        let written = self.inner.write_all(&buf).await;
        if written.is_ok() {
            self.frame_bytes += buf.len() as u64;
        }
        if buf.capacity() <= KEEP_BUFFER {
            self.buf = buf;
        }
        written.map_err(FrameError::Io)
    }

    /// Writes raw payload bytes (announced by the frame before).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.inner.write_all(bytes).await.map_err(FrameError::Io)
    }

    /// Ends the stream cleanly: the peer's reader sees `None` after the last frame.
    pub async fn finish(&mut self) -> Result<(), FrameError> {
        self.inner.shutdown().await.map_err(FrameError::Io)
    }

    /// The stream.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The stream, for raw access between frames.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The stream, unwrapped.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl FrameWriter<quinn::SendStream> {
    /// Writes raw payload bytes without copying them (quinn keeps the `Bytes`).
    pub async fn write_raw_bytes(&mut self, bytes: Bytes) -> Result<(), FrameError> {
        self.inner
            .write_chunk(bytes)
            .await
            .map_err(|e| FrameError::Io(e.into()))
    }

    /// Abandons the stream with `code`: unsent data is dropped and the peer's reads fail. A
    /// no-op if the stream is already finished or reset.
    pub fn reset(&mut self, code: ErrorCode) {
        // Err only means the stream is already closed: nothing left to abandon.
        let _ = self.inner.reset(code.into());
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
async fn read_full<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Message {
        id: u64,
        name: String,
        port: Option<u16>,
        data: Vec<u8>,
    }

    fn message(n: u64) -> Message {
        Message {
            id: n,
            name: format!("m{n}"),
            port: Some(7),
            data: vec![n as u8; n as usize],
        }
    }

    fn run<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    async fn encode_all(values: &[Message]) -> Vec<u8> {
        let mut writer = FrameWriter::new(Vec::new(), MAX_FRAME);
        for value in values {
            writer.send(value).await.unwrap();
        }
        writer.into_inner()
    }

    #[test]
    fn frames_round_trip_then_none_at_the_end() {
        run(async {
            let values: Vec<Message> = (0..5).map(message).collect();
            let bytes = encode_all(&values).await;
            let mut reader = FrameReader::new(bytes.as_slice(), MAX_FRAME);
            for value in &values {
                assert_eq!(
                    reader.recv::<Message>().await.unwrap().as_ref(),
                    Some(value)
                );
            }
            assert!(reader.recv::<Message>().await.unwrap().is_none());
        });
    }

    #[test]
    fn prefix_is_u32_big_endian() {
        run(async {
            let mut writer = FrameWriter::new(Vec::new(), MAX_FRAME);
            writer.send(&300u16).await.unwrap();
            // postcard's varint for 300 is ac 02.
            assert_eq!(writer.into_inner(), [0, 0, 0, 2, 0xac, 0x02]);
        });
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading_the_body() {
        run(async {
            // Claims 4 GiB - 1 and sends nothing more: refused from the prefix alone.
            let bytes = [0xff, 0xff, 0xff, 0xff];
            let mut reader = FrameReader::new(&bytes[..], MAX_FRAME);
            let err = reader.recv::<Message>().await.unwrap_err();
            assert!(
                matches!(
                    err,
                    FrameError::TooLarge {
                        len: 0xffff_ffff,
                        max: MAX_FRAME
                    }
                ),
                "{err}"
            );
            assert_eq!(reader.buf.capacity(), 0, "nothing allocated for the claim");
            assert_eq!(err.error_code(), Some(ErrorCode::FrameTooLarge));
        });
    }

    #[test]
    fn cap_is_per_stream_and_inclusive() {
        run(async {
            let mut writer = FrameWriter::new(Vec::new(), 8);
            writer.send(&[1u8; 7].to_vec()).await.unwrap(); // 1 length byte + 7 = 8
            let err = writer.send(&[1u8; 8].to_vec()).await.unwrap_err();
            assert!(
                matches!(err, FrameError::TooLarge { len: 9, max: 8 }),
                "{err}"
            );
            let bytes = writer.into_inner();
            assert_eq!(
                bytes.len(),
                LEN_PREFIX + 8,
                "the refused frame wrote nothing"
            );
            let mut reader = FrameReader::new(bytes.as_slice(), 7);
            assert!(matches!(
                reader.recv::<Vec<u8>>().await,
                Err(FrameError::TooLarge { len: 8, max: 7 })
            ));
        });
    }

    #[test]
    fn truncation_is_typed() {
        run(async {
            let bytes = encode_all(&[message(9)]).await;
            let mut reader = FrameReader::new(&bytes[..2], MAX_FRAME);
            assert!(matches!(
                reader.recv::<Message>().await,
                Err(FrameError::Truncated {
                    expected: 4,
                    got: 2
                })
            ));
            let cut = bytes.len() - 3;
            let mut reader = FrameReader::new(&bytes[..cut], MAX_FRAME);
            let err = reader.recv::<Message>().await.unwrap_err();
            assert!(
                matches!(err, FrameError::Truncated { expected, got } if expected == bytes.len() as u64 && got == cut as u64),
                "{err}"
            );
        });
    }

    #[test]
    fn garbage_and_trailing_bytes_are_decode_errors() {
        run(async {
            // A valid prefix around bytes that are not a Message (bad UTF-8 in `name`).
            let bytes = [0, 0, 0, 4, 1, 2, 0xff, 0xfe];
            let mut reader = FrameReader::new(&bytes[..], MAX_FRAME);
            let err = reader.recv::<Message>().await.unwrap_err();
            assert!(matches!(err, FrameError::Decode(_)), "{err}");
            assert_eq!(err.error_code(), Some(ErrorCode::ProtocolViolation));

            let bytes = [0, 0, 0, 3, 5, 6, 7];
            let mut reader = FrameReader::new(&bytes[..], MAX_FRAME);
            assert!(matches!(
                reader.recv::<u8>().await,
                Err(FrameError::TrailingBytes { extra: 2 })
            ));
        });
    }

    #[test]
    fn raw_bytes_follow_a_header_frame() {
        run(async {
            let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            let mut writer = FrameWriter::new(Vec::new(), MAX_FRAME);
            writer.send(&(payload.len() as u64)).await.unwrap();
            writer.write_raw(&payload).await.unwrap();
            writer.send(&"after").await.unwrap();
            let bytes = writer.into_inner();

            let mut reader = FrameReader::new(bytes.as_slice(), MAX_FRAME);
            let len = reader.recv::<u64>().await.unwrap().unwrap() as usize;
            let mut got = vec![0u8; len];
            reader.read_raw(&mut got).await.unwrap();
            assert_eq!(got, payload);
            assert_eq!(
                reader.recv::<String>().await.unwrap().as_deref(),
                Some("after")
            );

            let mut reader = FrameReader::new(&bytes[..100], MAX_FRAME);
            reader.recv::<u64>().await.unwrap();
            let mut got = vec![0u8; len];
            assert!(matches!(
                reader.read_raw(&mut got).await,
                Err(FrameError::Truncated {
                    expected: 100_000,
                    ..
                })
            ));
        });
    }

    #[test]
    fn a_large_frame_buffer_is_not_kept() {
        run(async {
            let big = message(200_000);
            let bytes = encode_all(&[big.clone(), message(1)]).await;
            let mut reader = FrameReader::new(bytes.as_slice(), MAX_FRAME);
            assert_eq!(reader.recv::<Message>().await.unwrap(), Some(big));
            assert_eq!(reader.buf.capacity(), 0);
            assert_eq!(reader.recv::<Message>().await.unwrap(), Some(message(1)));
            assert!(reader.buf.capacity() > 0, "small buffers are reused");
        });
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            any::<u64>(),
            ".{0,40}",
            any::<Option<u16>>(),
            proptest::collection::vec(any::<u8>(), 0..2000),
        )
            .prop_map(|(id, name, port, data)| Message {
                id,
                name,
                port,
                data,
            })
    }

    proptest! {
        #[test]
        fn any_messages_round_trip(values in proptest::collection::vec(arb_message(), 0..8)) {
            let read = run(async {
                let bytes = encode_all(&values).await;
                let mut reader = FrameReader::new(bytes.as_slice(), MAX_FRAME);
                let mut read = Vec::new();
                while let Some(value) = reader.recv::<Message>().await.unwrap() {
                    read.push(value);
                }
                read
            });
            prop_assert_eq!(read, values);
        }

        #[test]
        fn any_prefix_of_a_stream_reads_cleanly_or_errors(
            values in proptest::collection::vec(arb_message(), 1..4),
            cut in any::<proptest::sample::Index>(),
        ) {
            run(async {
                let bytes = encode_all(&values).await;
                let cut = cut.index(bytes.len());
                let mut reader = FrameReader::new(&bytes[..cut], MAX_FRAME);
                let mut whole = 0;
                loop {
                    match reader.recv::<Message>().await {
                        Ok(Some(value)) => {
                            assert_eq!(value, values[whole]);
                            whole += 1;
                        }
                        Ok(None) => break,
                        Err(FrameError::Truncated { .. }) => break,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                assert!(whole < values.len() || cut == bytes.len());
            });
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            run(async {
                let mut reader = FrameReader::new(bytes.as_slice(), 256);
                for _ in 0..bytes.len() + 1 {
                    match reader.recv::<Message>().await {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            });
        }
    }
}
