//! SPDY/3.1 framing: the frames, their wire encoding and the zlib-compressed name/value header
//! blocks (one compression context per direction for the whole session).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::dictionary::HEADER_DICTIONARY;

/// The protocol version every control frame carries.
pub(crate) const VERSION: u16 = 3;
/// `FLAG_FIN` on DATA, SYN_STREAM, SYN_REPLY and HEADERS: the sender's half is closed.
pub(crate) const FLAG_FIN: u8 = 0x01;
/// The largest frame payload this implementation accepts (the protocol allows 16 MiB; Go's
/// clients send at most their copy buffer, 32 KiB).
pub(crate) const MAX_PAYLOAD: usize = 1 << 20;
/// The largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// SETTINGS id of the initial per-stream window size.
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes.
pub(crate) mod rst {
    /// REFUSED_STREAM.
    pub(crate) const REFUSED_STREAM: u32 = 3;
    /// CANCEL.
    pub(crate) const CANCEL: u32 = 5;
}

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// A name/value header block: lowercase names; several values of one name are joined by NUL.
pub(crate) type Headers = Vec<(String, String)>;

/// Why a frame could not be read or written. Any of these ends the session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The connection failed or ended in the middle of a frame.
    #[error("spdy: connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not SPDY/3.
    #[error("spdy: protocol error: {0}")]
    Protocol(String),
    /// A header block did not (de)compress.
    #[error("spdy: header compression: {0}")]
    Compression(String),
}

/// One setting of a SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE / PERSISTED.
    pub(crate) flags: u8,
    /// The setting's id (24 bits).
    pub(crate) id: u32,
    /// Its value.
    pub(crate) value: u32,
}

/// A SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream (odd: opened by the client).
        stream_id: u32,
        /// The stream it is associated to (0: none).
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// Credential slot (unused).
        slot: u8,
        /// FIN and/or UNIDIRECTIONAL.
        flags: u8,
        /// The stream's headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why (see [`rst`]).
        status: u32,
    },
    /// Session settings.
    Settings {
        /// CLEAR_SETTINGS.
        flags: u8,
        /// The settings.
        entries: Vec<Setting>,
    },
    /// A liveness check, echoed by the receiver when the sender opened it.
    Ping {
        /// Odd ids: the client's; even: the server's.
        id: u32,
    },
    /// The sender will accept no new streams.
    GoAway {
        /// The last stream the sender processed.
        last_good_stream_id: u32,
        /// 0 OK, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Lets the receiver send `delta` more bytes (stream 0: the whole session).
    WindowUpdate {
        /// The stream, or 0.
        stream_id: u32,
        /// The increment.
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame type this implementation ignores (NOOP, CREDENTIAL, ...).
    Unknown {
        /// Its type.
        frame_type: u16,
    },
}

impl Frame {
    /// Whether the frame carries a header block (and must pass through the compression
    /// context in order).
    fn header_block(&self) -> Option<&Headers> {
        match self {
            Frame::SynStream { headers, .. }
            | Frame::SynReply { headers, .. }
            | Frame::Headers { headers, .. } => Some(headers),
            _ => None,
        }
    }
}

/// The compression context of the frames this side sends.
pub(crate) struct HeaderCompressor {
    compress: Compress,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor").finish_non_exhaustive()
    }
}

impl HeaderCompressor {
    /// A fresh context primed with the SPDY/3 dictionary.
    pub(crate) fn new() -> Self {
        let mut compress = Compress::new(Compression::best(), true);
        compress
            .set_dictionary(HEADER_DICTIONARY)
            .expect("a fresh compressor accepts a dictionary");
        HeaderCompressor { compress }
    }

    /// Compresses one header block (a sync flush: the peer can decompress it at once).
    pub(crate) fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let raw = encode_header_block(headers);
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 32 {
                out.reserve(256);
            }
            let before = self.compress.total_in();
            self.compress
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            consumed += (self.compress.total_in() - before) as usize;
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompression context of the frames the peer sends.
pub(crate) struct HeaderDecompressor {
    decompress: Decompress,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor").finish_non_exhaustive()
    }
}

impl HeaderDecompressor {
    /// A fresh context; the dictionary is supplied when the stream asks for it.
    pub(crate) fn new() -> Self {
        HeaderDecompressor {
            decompress: Decompress::new(true),
        }
    }

    /// Decompresses and parses one header block.
    pub(crate) fn decompress(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let error = |e: &dyn std::fmt::Display| FrameError::Compression(e.to_string());
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut pos = 0usize;
        loop {
            let before_in = self.decompress.total_in();
            let before_out = out.len();
            let result =
                self.decompress
                    .decompress_vec(&block[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.decompress.total_in() - before_in) as usize;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(status) => {
                    if pos >= block.len() && out.len() < out.capacity() {
                        break;
                    }
                    if out.len() == out.capacity() {
                        if out.len() >= MAX_HEADER_BLOCK {
                            return Err(FrameError::Compression("header block too large".into()));
                        }
                        out.reserve(out.capacity().max(256));
                    } else if status == Status::BufError && out.len() == before_out {
                        return Err(FrameError::Compression("truncated header block".into()));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.decompress
                        .set_dictionary(HEADER_DICTIONARY)
                        .map_err(|e| error(&e))?;
                }
                Err(e) => return Err(error(&e)),
            }
        }
        parse_header_block(&out)
    }
}

/// The uncompressed name/value block: a count, then length-prefixed names and values.
fn encode_header_block(headers: &Headers) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.put_u32(headers.len() as u32);
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        raw.put_u32(name.len() as u32);
        raw.put_slice(name.as_bytes());
        raw.put_u32(value.len() as u32);
        raw.put_slice(value.as_bytes());
    }
    raw
}

fn parse_header_block(mut raw: &[u8]) -> Result<Headers, FrameError> {
    let short = || FrameError::Protocol("truncated header block".into());
    if raw.remaining() < 4 {
        return Err(short());
    }
    let count = raw.get_u32() as usize;
    if count > raw.len() / 8 + 1 {
        return Err(FrameError::Protocol("too many headers".into()));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let mut string = || -> Result<String, FrameError> {
            if raw.remaining() < 4 {
                return Err(short());
            }
            let len = raw.get_u32() as usize;
            if raw.remaining() < len {
                return Err(short());
            }
            let s = String::from_utf8_lossy(&raw[..len]).into_owned();
            raw.advance(len);
            Ok(s)
        };
        let name = string()?;
        let value = string()?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// The first value of header `name` (names are compared case-insensitively).
pub(crate) fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

/// Encodes `frame` onto `out`, compressing its header block with `compressor`.
pub(crate) fn encode(
    frame: &Frame,
    compressor: &mut HeaderCompressor,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let block = match frame.header_block() {
        Some(headers) => compressor.compress(headers)?,
        None => Vec::new(),
    };
    let control = |out: &mut BytesMut, frame_type: u16, flags: u8, len: usize| {
        out.put_u16(0x8000 | VERSION);
        out.put_u16(frame_type);
        out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00FF_FFFF));
    };
    match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            slot,
            flags,
            ..
        } => {
            control(out, TYPE_SYN_STREAM, *flags, 10 + block.len());
            out.put_u32(stream_id & 0x7FFF_FFFF);
            out.put_u32(associated_to & 0x7FFF_FFFF);
            out.put_u8(priority << 5);
            out.put_u8(*slot);
            out.put_slice(&block);
        }
        Frame::SynReply {
            stream_id, flags, ..
        } => {
            control(out, TYPE_SYN_REPLY, *flags, 4 + block.len());
            out.put_u32(stream_id & 0x7FFF_FFFF);
            out.put_slice(&block);
        }
        Frame::Headers {
            stream_id, flags, ..
        } => {
            control(out, TYPE_HEADERS, *flags, 4 + block.len());
            out.put_u32(stream_id & 0x7FFF_FFFF);
            out.put_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control(out, TYPE_RST_STREAM, 0, 8);
            out.put_u32(stream_id & 0x7FFF_FFFF);
            out.put_u32(*status);
        }
        Frame::Settings { flags, entries } => {
            control(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len());
            out.put_u32(entries.len() as u32);
            for setting in entries {
                out.put_u32((u32::from(setting.flags) << 24) | (setting.id & 0x00FF_FFFF));
                out.put_u32(setting.value);
            }
        }
        Frame::Ping { id } => {
            control(out, TYPE_PING, 0, 4);
            out.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            control(out, TYPE_GOAWAY, 0, 8);
            out.put_u32(last_good_stream_id & 0x7FFF_FFFF);
            out.put_u32(*status);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control(out, TYPE_WINDOW_UPDATE, 0, 8);
            out.put_u32(stream_id & 0x7FFF_FFFF);
            out.put_u32(delta & 0x7FFF_FFFF);
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            out.put_u32(stream_id & 0x7FFF_FFFF);
            out.put_u32((u32::from(*flags) << 24) | (data.len() as u32 & 0x00FF_FFFF));
            out.put_slice(data);
        }
        Frame::Unknown { frame_type } => {
            return Err(FrameError::Protocol(format!(
                "cannot send a frame of unknown type {frame_type}"
            )))
        }
    }
    Ok(())
}

/// Reads one frame; `Ok(None)` when the connection ended cleanly between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    decompressor: &mut HeaderDecompressor,
) -> Result<Option<Frame>, FrameError> {
    let mut head = [0u8; 8];
    let mut filled = 0;
    while filled < head.len() {
        let n = reader.read(&mut head[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        filled += n;
    }
    let flags = head[4];
    let len = (u32::from_be_bytes([0, head[5], head[6], head[7]])) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::Protocol(format!("frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    decode(head, flags, Bytes::from(payload), decompressor).map(Some)
}

fn decode(
    head: [u8; 8],
    flags: u8,
    mut payload: Bytes,
    decompressor: &mut HeaderDecompressor,
) -> Result<Frame, FrameError> {
    let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if first & 0x8000_0000 == 0 {
        return Ok(Frame::Data {
            stream_id: first & 0x7FFF_FFFF,
            flags,
            data: payload,
        });
    }
    let version = ((first >> 16) & 0x7FFF) as u16;
    let frame_type = (first & 0xFFFF) as u16;
    if version != VERSION {
        return Err(FrameError::Protocol(format!(
            "unsupported version {version}"
        )));
    }
    let need = |payload: &Bytes, n: usize| {
        if payload.len() < n {
            Err(FrameError::Protocol(format!(
                "control frame {frame_type} too short"
            )))
        } else {
            Ok(())
        }
    };
    Ok(match frame_type {
        TYPE_SYN_STREAM => {
            need(&payload, 10)?;
            let stream_id = payload.get_u32() & 0x7FFF_FFFF;
            let associated_to = payload.get_u32() & 0x7FFF_FFFF;
            let priority = payload.get_u8() >> 5;
            let slot = payload.get_u8();
            let headers = decompressor.decompress(&payload)?;
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                headers,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            need(&payload, 4)?;
            let stream_id = payload.get_u32() & 0x7FFF_FFFF;
            let headers = decompressor.decompress(&payload)?;
            if frame_type == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        TYPE_RST_STREAM => {
            need(&payload, 8)?;
            Frame::RstStream {
                stream_id: payload.get_u32() & 0x7FFF_FFFF,
                status: payload.get_u32(),
            }
        }
        TYPE_SETTINGS => {
            need(&payload, 4)?;
            let count = payload.get_u32() as usize;
            need(&payload, count.saturating_mul(8))?;
            let entries = (0..count)
                .map(|_| {
                    let id = payload.get_u32();
                    Setting {
                        flags: (id >> 24) as u8,
                        id: id & 0x00FF_FFFF,
                        value: payload.get_u32(),
                    }
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            need(&payload, 4)?;
            Frame::Ping {
                id: payload.get_u32(),
            }
        }
        TYPE_GOAWAY => {
            need(&payload, 4)?;
            let last_good_stream_id = payload.get_u32() & 0x7FFF_FFFF;
            let status = if payload.len() >= 4 {
                payload.get_u32()
            } else {
                0
            };
            Frame::GoAway {
                last_good_stream_id,
                status,
            }
        }
        TYPE_WINDOW_UPDATE => {
            need(&payload, 8)?;
            Frame::WindowUpdate {
                stream_id: payload.get_u32() & 0x7FFF_FFFF,
                delta: payload.get_u32() & 0x7FFF_FFFF,
            }
        }
        other => Frame::Unknown { frame_type: other },
    })
}
