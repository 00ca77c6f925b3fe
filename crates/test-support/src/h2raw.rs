//! A raw, blocking HTTP/2 client for attack tests: it writes whatever frames
//! a test asks for, malformed and abusive ones included, and reads frames
//! back without interpreting them.
//!
//! Hand-written on purpose: a client library keeps its peer to the protocol
//! (flow control, stream states, header limits), which is exactly what an
//! attack test must not do. This is `std::net` only, on loopback, with a
//! timeout on every connect, read and write, so a test cannot hang on it.
//!
//! What it does:
//! - [`Conn`]: connect, send the client preface, write [`Frame`]s or raw
//!   bytes, read frames back with a deadline, and tell a connection the peer
//!   closed ([`ReadError::Closed`]) from one that is merely quiet
//!   ([`ReadError::TimedOut`]);
//! - [`Frame`]: one frame as on the wire, with constructors for every type a
//!   test sends and readers for GOAWAY ([`Frame::goaway`]) and RST_STREAM
//!   ([`Frame::rst_code`]);
//! - [`encode_headers`]: HPACK, every field a "literal header field without
//!   indexing — new name" without Huffman coding (valid HPACK, and all a
//!   request needs); [`header_frames`] splits a header block into HEADERS and
//!   CONTINUATION frames;
//! - gRPC: [`grpc_request_headers`] and the length-prefixed message framing
//!   ([`grpc_message`], [`grpc_message_header`]).
//!
//! It does not decode the server's headers (HPACK with Huffman coding and a
//! dynamic table): tests decide by frame types, flags and error codes, and
//! read gRPC statuses through a normal client where they need them.

use std::{
    fmt,
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// The client connection preface (RFC 9113 §3.4); a SETTINGS frame must
/// follow it.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// SETTINGS_MAX_FRAME_SIZE until a peer says otherwise (and what hyper's
/// server keeps): the largest frame payload a client may send.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;

/// Frame header length: 24-bit length, type, flags, 31-bit stream id.
const FRAME_HEADER_LEN: usize = 9;

/// How long a write may block ([`Conn::connect`] sets it; a peer that stops
/// reading makes writes block once the socket buffers are full).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Frame types (RFC 9113 §6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;

    /// The type's name, for messages.
    #[must_use]
    pub fn name(kind: u8) -> &'static str {
        match kind {
            DATA => "DATA",
            HEADERS => "HEADERS",
            PRIORITY => "PRIORITY",
            RST_STREAM => "RST_STREAM",
            SETTINGS => "SETTINGS",
            PUSH_PROMISE => "PUSH_PROMISE",
            PING => "PING",
            GOAWAY => "GOAWAY",
            WINDOW_UPDATE => "WINDOW_UPDATE",
            CONTINUATION => "CONTINUATION",
            _ => "UNKNOWN",
        }
    }
}

/// Frame flags (each meaningful only on some frame types).
pub mod flag {
    /// DATA, HEADERS: the sender's last frame on the stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: an acknowledgement.
    pub const ACK: u8 = 0x1;
    /// HEADERS, CONTINUATION: the header block ends in this frame.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS: a pad length byte and padding.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: priority fields precede the header block.
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes of RST_STREAM and GOAWAY (RFC 9113 §7).
pub mod code {
    /// Graceful shutdown, or a stream ended early without an error.
    pub const NO_ERROR: u32 = 0x0;
    /// A protocol violation.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// An unexpected internal error.
    pub const INTERNAL_ERROR: u32 = 0x2;
    /// The peer violated flow control.
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    /// SETTINGS were not acknowledged in time.
    pub const SETTINGS_TIMEOUT: u32 = 0x4;
    /// A frame arrived on a half-closed stream.
    pub const STREAM_CLOSED: u32 = 0x5;
    /// A frame of invalid size.
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// The stream is no longer needed.
    pub const CANCEL: u32 = 0x8;
    /// The HPACK state cannot be maintained.
    pub const COMPRESSION_ERROR: u32 = 0x9;
    /// A CONNECT tunnel failed.
    pub const CONNECT_ERROR: u32 = 0xa;
    /// The peer is behaving abusively (floods, too many resets).
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
    /// Transport security is not sufficient.
    pub const INADEQUATE_SECURITY: u32 = 0xc;
    /// HTTP/1.1 must be used instead.
    pub const HTTP_1_1_REQUIRED: u32 = 0xd;

    /// The code's name, for messages.
    #[must_use]
    pub fn name(code: u32) -> &'static str {
        match code {
            NO_ERROR => "NO_ERROR",
            PROTOCOL_ERROR => "PROTOCOL_ERROR",
            INTERNAL_ERROR => "INTERNAL_ERROR",
            FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
            SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
            STREAM_CLOSED => "STREAM_CLOSED",
            FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
            REFUSED_STREAM => "REFUSED_STREAM",
            CANCEL => "CANCEL",
            COMPRESSION_ERROR => "COMPRESSION_ERROR",
            CONNECT_ERROR => "CONNECT_ERROR",
            ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
            INADEQUATE_SECURITY => "INADEQUATE_SECURITY",
            HTTP_1_1_REQUIRED => "HTTP_1_1_REQUIRED",
            _ => "UNKNOWN",
        }
    }
}

/// SETTINGS parameters (RFC 9113 §6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// One HTTP/2 frame as on the wire. Nothing is validated: any type, flags,
/// stream id (the reserved bit is dropped) and payload can be sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// Frame type ([`kind`]).
    pub kind: u8,
    /// Flags ([`flag`]).
    pub flags: u8,
    /// Stream identifier (0 = the connection).
    pub stream_id: u32,
    /// Payload, at most 2^24 − 1 bytes.
    pub payload: Vec<u8>,
}

/// What a GOAWAY frame says.
#[derive(Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The last stream the sender may have processed.
    pub last_stream_id: u32,
    /// Why ([`code`]).
    pub error_code: u32,
    /// Opaque diagnostic data (h2 puts e.g. `too_many_internal_resets`).
    pub debug_data: Vec<u8>,
}

impl Frame {
    /// A frame of any type.
    #[must_use]
    pub fn new(kind: u8, flags: u8, stream_id: u32, payload: Vec<u8>) -> Self {
        Self {
            kind,
            flags,
            stream_id,
            payload,
        }
    }

    /// SETTINGS with these `(parameter, value)` pairs ([`setting`]).
    #[must_use]
    pub fn settings(params: &[(u16, u32)]) -> Self {
        let mut payload = Vec::with_capacity(params.len() * 6);
        for (id, value) in params {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        Self::new(kind::SETTINGS, 0, 0, payload)
    }

    /// A SETTINGS acknowledgement.
    #[must_use]
    pub fn settings_ack() -> Self {
        Self::new(kind::SETTINGS, flag::ACK, 0, Vec::new())
    }

    /// HEADERS carrying `block` (an HPACK header block, or a first part of
    /// one when `end_headers` is false and CONTINUATION frames follow).
    #[must_use]
    pub fn headers(stream_id: u32, block: Vec<u8>, end_stream: bool, end_headers: bool) -> Self {
        let mut flags = 0;
        if end_stream {
            flags |= flag::END_STREAM;
        }
        if end_headers {
            flags |= flag::END_HEADERS;
        }
        Self::new(kind::HEADERS, flags, stream_id, block)
    }

    /// CONTINUATION carrying the next part of a header block.
    #[must_use]
    pub fn continuation(stream_id: u32, block: Vec<u8>, end_headers: bool) -> Self {
        let flags = if end_headers { flag::END_HEADERS } else { 0 };
        Self::new(kind::CONTINUATION, flags, stream_id, block)
    }

    /// DATA, optionally the last frame of the stream.
    #[must_use]
    pub fn data(stream_id: u32, payload: Vec<u8>, end_stream: bool) -> Self {
        let flags = if end_stream { flag::END_STREAM } else { 0 };
        Self::new(kind::DATA, flags, stream_id, payload)
    }

    /// WINDOW_UPDATE with any increment: 0 and ones that overflow the
    /// peer's window (over 2^31 − 1 in total) are protocol violations, sent
    /// as asked (the reserved top bit is sent too).
    #[must_use]
    pub fn window_update(stream_id: u32, increment: u32) -> Self {
        Self::new(
            kind::WINDOW_UPDATE,
            0,
            stream_id,
            increment.to_be_bytes().to_vec(),
        )
    }

    /// RST_STREAM with an error code ([`code`]).
    #[must_use]
    pub fn rst_stream(stream_id: u32, error_code: u32) -> Self {
        Self::new(
            kind::RST_STREAM,
            0,
            stream_id,
            error_code.to_be_bytes().to_vec(),
        )
    }

    /// PING (or its acknowledgement) with 8 bytes of opaque data.
    #[must_use]
    pub fn ping(data: [u8; 8], ack: bool) -> Self {
        let flags = if ack { flag::ACK } else { 0 };
        Self::new(kind::PING, flags, 0, data.to_vec())
    }

    /// GOAWAY naming the last stream processed, an error code and debug data.
    #[must_use]
    pub fn goaway_frame(last_stream_id: u32, error_code: u32, debug_data: &[u8]) -> Self {
        let mut payload = Vec::with_capacity(8 + debug_data.len());
        payload.extend_from_slice(&(last_stream_id & 0x7fff_ffff).to_be_bytes());
        payload.extend_from_slice(&error_code.to_be_bytes());
        payload.extend_from_slice(debug_data);
        Self::new(kind::GOAWAY, 0, 0, payload)
    }

    /// The frame as bytes on the wire.
    ///
    /// # Panics
    /// If the payload is longer than a frame can say (2^24 − 1 bytes).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAME_HEADER_LEN + self.payload.len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the frame's bytes to `out`.
    ///
    /// # Panics
    /// If the payload is longer than a frame can say (2^24 − 1 bytes).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let len = u32::try_from(self.payload.len())
            .ok()
            .filter(|len| *len < 1 << 24)
            .expect("a frame payload is at most 2^24 - 1 bytes");
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&(self.stream_id & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Whether `flag` is set.
    #[must_use]
    pub fn has_flag(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }

    /// A DATA or HEADERS frame that ends its stream.
    #[must_use]
    pub fn is_end_stream(&self) -> bool {
        matches!(self.kind, kind::DATA | kind::HEADERS) && self.has_flag(flag::END_STREAM)
    }

    /// A SETTINGS or PING acknowledgement.
    #[must_use]
    pub fn is_ack(&self) -> bool {
        matches!(self.kind, kind::SETTINGS | kind::PING) && self.has_flag(flag::ACK)
    }

    /// What a GOAWAY frame says; `None` for other frames (or a GOAWAY
    /// shorter than its 8 fixed bytes).
    #[must_use]
    pub fn goaway(&self) -> Option<GoAway> {
        if self.kind != kind::GOAWAY {
            return None;
        }
        let last = self.payload.get(0..4)?;
        let error = self.payload.get(4..8)?;
        Some(GoAway {
            last_stream_id: u32::from_be_bytes(last.try_into().ok()?) & 0x7fff_ffff,
            error_code: u32::from_be_bytes(error.try_into().ok()?),
            debug_data: self.payload.get(8..).unwrap_or_default().to_vec(),
        })
    }

    /// The error code of a RST_STREAM frame; `None` for other frames.
    #[must_use]
    pub fn rst_code(&self) -> Option<u32> {
        if self.kind != kind::RST_STREAM {
            return None;
        }
        Some(u32::from_be_bytes(self.payload.get(0..4)?.try_into().ok()?))
    }
}

impl fmt::Debug for GoAway {
    /// The code by name, the debug data as text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GoAway(last stream {}, {}, {:?})",
            self.last_stream_id,
            code::name(self.error_code),
            String::from_utf8_lossy(&self.debug_data)
        )
    }
}

impl fmt::Debug for Frame {
    /// Type and error codes by name, the payload by length (it can be
    /// large), e.g. `RST_STREAM(stream 3, flags 0x0, FLOW_CONTROL_ERROR)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(stream {}, flags {:#x}",
            kind::name(self.kind),
            self.stream_id,
            self.flags
        )?;
        if let Some(goaway) = self.goaway() {
            write!(f, ", {goaway:?}")?;
        } else if let Some(error) = self.rst_code() {
            write!(f, ", {}", code::name(error))?;
        } else {
            write!(f, ", {} bytes", self.payload.len())?;
        }
        write!(f, ")")
    }
}

/// The frame at the start of `bytes`, if it is all there, and its length
/// on the wire.
fn parse_frame(bytes: &[u8]) -> Option<(Frame, usize)> {
    let header = bytes.get(..FRAME_HEADER_LEN)?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let payload = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)?;
    let frame = Frame {
        kind: header[3],
        flags: header[4],
        stream_id: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
        payload: payload.to_vec(),
    };
    Some((frame, FRAME_HEADER_LEN + len))
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1); `first`
/// holds the bits above the prefix of the first byte.
fn hpack_integer(out: &mut Vec<u8>, value: usize, prefix: u32, first: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | u8::try_from(value).expect("below the prefix maximum"));
        return;
    }
    out.push(first | u8::try_from(max).expect("prefix of at most 8 bits"));
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(u8::try_from(rest & 0x7f).expect("7 bits") | 0x80);
        rest >>= 7;
    }
    out.push(u8::try_from(rest).expect("below 0x80"));
}

/// An HPACK string literal without Huffman coding (RFC 7541 §5.2).
fn hpack_string(out: &mut Vec<u8>, bytes: &[u8]) {
    hpack_integer(out, bytes.len(), 7, 0);
    out.extend_from_slice(bytes);
}

/// An HPACK header block for `headers`, in order, each a "literal header
/// field without indexing — new name" (RFC 7541 §6.2.2) without Huffman
/// coding: no dynamic table state, so blocks can be sent in any order, cut
/// anywhere, or dropped. Names go as given (HTTP/2 wants them lowercase,
/// pseudo-headers first; that is left to the caller, to allow breaking it).
#[must_use]
pub fn encode_headers<N: AsRef<[u8]>, V: AsRef<[u8]>>(headers: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_string(&mut out, name.as_ref());
        hpack_string(&mut out, value.as_ref());
    }
    out
}

/// `block` as HEADERS followed by as many CONTINUATION frames as needed,
/// none longer than `max_frame_size`; END_HEADERS on the last one.
///
/// # Panics
/// If `max_frame_size` is 0.
#[must_use]
pub fn header_frames(
    stream_id: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_size: usize,
) -> Vec<Frame> {
    assert!(max_frame_size > 0, "frames must hold at least one byte");
    let chunks: Vec<&[u8]> = if block.is_empty() {
        vec![&[]]
    } else {
        block.chunks(max_frame_size).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            if i == 0 {
                Frame::headers(stream_id, chunk.to_vec(), end_stream, i == last)
            } else {
                Frame::continuation(stream_id, chunk.to_vec(), i == last)
            }
        })
        .collect()
}

/// The headers of a gRPC request to `path` (e.g.
/// `/grpc.health.v1.Health/Check`) at `authority` (`host:port`):
/// `:method POST`, `:scheme http`, `:path`, `:authority`,
/// `content-type: application/grpc`, `te: trailers`. Push more onto it for
/// metadata.
#[must_use]
pub fn grpc_request_headers(authority: &str, path: &str) -> Vec<(String, String)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// A gRPC message frame header announcing `length` bytes, uncompressed:
/// flag 0, then the length as u32 big-endian.
#[must_use]
pub fn grpc_message_header(length: u32) -> [u8; 5] {
    let [a, b, c, d] = length.to_be_bytes();
    [0, a, b, c, d]
}

/// A whole length-prefixed gRPC message (an encoded protobuf, uncompressed).
///
/// # Panics
/// If `message` is 4 GiB or longer.
#[must_use]
pub fn grpc_message(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).expect("a gRPC message is under 4 GiB");
    let mut out = grpc_message_header(length).to_vec();
    out.extend_from_slice(message);
    out
}

/// Why no frame was read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection (end of stream, or a TCP reset, which
    /// a server closing with unread input causes). Frames it sent before
    /// were returned first.
    Closed,
    /// No complete frame arrived in time; the connection is still open.
    TimedOut,
    /// Another socket error.
    Io(io::Error),
}

impl ReadError {
    /// The peer closed the connection.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => write!(f, "connection closed by the peer"),
            Self::TimedOut => write!(f, "no frame in time"),
            Self::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Closed | Self::TimedOut => None,
        }
    }
}

/// Whether a socket error means the peer closed (or reset) the connection.
fn is_close(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// One raw HTTP/2 connection to a server (plain TCP, no TLS).
#[derive(Debug)]
pub struct Conn {
    tcp: TcpStream,
    peer: SocketAddr,
    /// Bytes received; those from `pos` on are not yet returned as frames.
    buf: Vec<u8>,
    pos: usize,
    /// The peer closed its side (seen as end of stream or a reset).
    closed: bool,
}

impl Conn {
    /// Connects to `addr` within `timeout`, with TCP_NODELAY and a 10 s
    /// write timeout ([`Conn::set_write_timeout`]). Nothing is sent yet.
    ///
    /// # Errors
    /// If the connection cannot be made in time.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        Self::from_tcp(TcpStream::connect_timeout(&addr, timeout)?, addr)
    }

    /// Like [`Conn::connect`], from the local address `from` (any port):
    /// on loopback, 127.0.0.2 and up are other clients to a server that
    /// counts connections per client address.
    ///
    /// # Errors
    /// If `from` cannot be bound or the connection cannot be made in time.
    pub fn connect_from(from: IpAddr, addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        socket.connect_timeout(&addr.into(), timeout)?;
        Self::from_tcp(socket.into(), addr)
    }

    fn from_tcp(tcp: TcpStream, addr: SocketAddr) -> io::Result<Self> {
        tcp.set_nodelay(true)?;
        tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Self {
            tcp,
            peer: addr,
            buf: Vec::new(),
            pos: 0,
            closed: false,
        })
    }

    /// Where it is connected to (for `:authority`).
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The socket, e.g. to shut down one direction.
    #[must_use]
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// How long a write may block before it fails with `WouldBlock` or
    /// `TimedOut` (`None`: for ever; avoid).
    ///
    /// # Errors
    /// If the socket refuses the option (a zero duration).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(timeout)
    }

    /// Writes `bytes` as they are (e.g. part of a preface, or garbage).
    ///
    /// # Errors
    /// If the write fails or times out (a closed peer: `BrokenPipe` or
    /// `ConnectionReset`).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tcp.write_all(bytes)
    }

    /// Writes the client connection preface ([`PREFACE`]) alone; a SETTINGS
    /// frame must follow.
    ///
    /// # Errors
    /// As [`Conn::write_raw`].
    pub fn send_preface(&mut self) -> io::Result<()> {
        self.write_raw(PREFACE)
    }

    /// Writes one frame.
    ///
    /// # Errors
    /// As [`Conn::write_raw`].
    pub fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.write_raw(&frame.encode())
    }

    /// Writes frames back to back, in one write where the socket allows.
    ///
    /// # Errors
    /// As [`Conn::write_raw`].
    pub fn send_all(&mut self, frames: &[Frame]) -> io::Result<()> {
        let mut bytes = Vec::new();
        for frame in frames {
            frame.encode_into(&mut bytes);
        }
        self.write_raw(&bytes)
    }

    /// Opens the connection as a well-behaved client does: the preface, an
    /// empty SETTINGS, then waits (at most `timeout`) for the server's
    /// SETTINGS and acknowledges it. Returns the server's SETTINGS; frames
    /// after it stay to be read.
    ///
    /// # Errors
    /// A socket error, or no SETTINGS in time (the connection was closed,
    /// or the server sent something else first: `Io(InvalidData)`).
    pub fn handshake(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        let mut opening = PREFACE.to_vec();
        Frame::settings(&[]).encode_into(&mut opening);
        self.write_raw(&opening).map_err(|e| self.write_error(e))?;
        let frame = self.read_frame(timeout)?;
        if frame.kind != kind::SETTINGS || frame.is_ack() {
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the server began with {frame:?}, not SETTINGS"),
            )));
        }
        self.send(&Frame::settings_ack())
            .map_err(|e| self.write_error(e))?;
        Ok(frame)
    }

    /// A failed write as a read error: a closed peer is [`ReadError::Closed`].
    fn write_error(&mut self, error: io::Error) -> ReadError {
        if is_close(&error) {
            self.closed = true;
            ReadError::Closed
        } else {
            ReadError::Io(error)
        }
    }

    /// The next whole frame already received, if any.
    fn take_frame(&mut self) -> Option<Frame> {
        let (frame, len) = parse_frame(&self.buf[self.pos..])?;
        self.pos += len;
        Some(frame)
    }

    /// Reads from the socket once, waiting at most `wait` (zero: only what
    /// has already arrived). Returns whether anything new was learnt (bytes,
    /// or that the peer closed).
    fn fill(&mut self, wait: Duration) -> Result<bool, ReadError> {
        let mut chunk = [0; 64 * 1024];
        let nonblocking = wait.is_zero();
        self.tcp
            .set_nonblocking(nonblocking)
            .map_err(ReadError::Io)?;
        if !nonblocking {
            self.tcp
                .set_read_timeout(Some(wait))
                .map_err(ReadError::Io)?;
        }
        let result = loop {
            match self.tcp.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        if nonblocking {
            self.tcp.set_nonblocking(false).map_err(ReadError::Io)?;
        }
        match result {
            Ok(0) => {
                self.closed = true;
                Ok(true)
            }
            Ok(n) => {
                // Returned frames are dropped only here, not one by one: a
                // flood of small frames must not cost a copy each.
                self.buf.drain(..self.pos);
                self.pos = 0;
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) if is_close(&e) => {
                self.closed = true;
                Ok(true)
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// The next frame, waiting at most `timeout`, as it came: nothing is
    /// answered (see [`Conn::next_frame`]).
    ///
    /// # Errors
    /// [`ReadError::Closed`] once the peer closed and every frame it sent
    /// before has been returned; [`ReadError::TimedOut`] if no whole frame
    /// came in time.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_frame() {
                return Ok(frame);
            }
            if self.closed {
                return Err(ReadError::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::TimedOut);
            }
            self.fill(left)?;
        }
    }

    /// Every whole frame that has already arrived, without waiting, as they
    /// came (nothing is answered).
    ///
    /// # Errors
    /// [`ReadError::Closed`] when there are none and the peer has closed.
    pub fn read_available(&mut self) -> Result<Vec<Frame>, ReadError> {
        while !self.closed && self.fill(Duration::ZERO)? {}
        let mut frames = Vec::new();
        while let Some(frame) = self.take_frame() {
            frames.push(frame);
        }
        if frames.is_empty() && self.closed {
            return Err(ReadError::Closed);
        }
        Ok(frames)
    }

    /// Like [`Conn::read_frame`], but first answers what a peer must answer:
    /// a SETTINGS with its ACK, a PING with its ACK (a server closes
    /// connections whose keep-alive pings go unanswered). The frame is
    /// returned either way.
    ///
    /// # Errors
    /// As [`Conn::read_frame`]; a failed answer because the peer closed is
    /// not an error (the next read reports it).
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        let frame = self.read_frame(timeout)?;
        let answer = match frame.kind {
            kind::SETTINGS if !frame.is_ack() => Some(Frame::settings_ack()),
            kind::PING if !frame.is_ack() => {
                let data = frame.payload.clone().try_into().unwrap_or([0; 8]);
                Some(Frame::ping(data, true))
            }
            _ => None,
        };
        if let Some(answer) = answer
            && let Err(e) = self.send(&answer)
        {
            match self.write_error(e) {
                ReadError::Closed => {}
                other => return Err(other),
            }
        }
        Ok(frame)
    }

    /// Reads (and answers, as [`Conn::next_frame`]) frames until one
    /// satisfies `want`, for at most `timeout` in all; returns it and the
    /// frames before it.
    ///
    /// # Errors
    /// As [`Conn::read_frame`], with the frames seen before.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&Frame) -> bool,
    ) -> Result<(Frame, Vec<Frame>), (ReadError, Vec<Frame>)> {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left) {
                Ok(frame) if want(&frame) => return Ok((frame, before)),
                Ok(frame) => before.push(frame),
                Err(e) => return Err((e, before)),
            }
        }
    }

    /// Reads frames as they come (answering nothing) until the peer closes
    /// the connection, for at most `timeout`; returns the frames it sent.
    ///
    /// # Errors
    /// [`ReadError::TimedOut`] if it is still open then (or a socket
    /// error), with the frames seen.
    pub fn wait_closed(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<Frame>, (ReadError, Vec<Frame>)> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(frame) => frames.push(frame),
                Err(ReadError::Closed) => return Ok(frames),
                Err(e) => return Err((e, frames)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread};

    use super::*;

    #[test]
    fn control_frames_encode_as_the_rfc_lays_them_out() {
        assert_eq!(Frame::settings_ack().encode(), [0, 0, 0, 4, 1, 0, 0, 0, 0]);
        assert_eq!(
            Frame::settings(&[
                (setting::INITIAL_WINDOW_SIZE, 65_535),
                (setting::ENABLE_PUSH, 0)
            ])
            .encode(),
            [
                0, 0, 12, 4, 0, 0, 0, 0, 0, // length 12, SETTINGS, no flags, stream 0
                0, 4, 0, 0, 0xff, 0xff, // INITIAL_WINDOW_SIZE 65535
                0, 2, 0, 0, 0, 0, // ENABLE_PUSH 0
            ]
        );
        assert_eq!(
            Frame::window_update(1, 0).encode(),
            [0, 0, 4, 8, 0, 0, 0, 0, 1, 0, 0, 0, 0]
        );
        assert_eq!(
            Frame::window_update(3, 0x7fff_ffff).encode(),
            [0, 0, 4, 8, 0, 0, 0, 0, 3, 0x7f, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            Frame::rst_stream(5, code::CANCEL).encode(),
            [0, 0, 4, 3, 0, 0, 0, 0, 5, 0, 0, 0, 8]
        );
        assert_eq!(
            Frame::ping(*b"12345678", true).encode(),
            [
                0, 0, 8, 6, 1, 0, 0, 0, 0, b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8'
            ]
        );
        assert_eq!(
            Frame::goaway_frame(7, code::ENHANCE_YOUR_CALM, b"hi").encode(),
            [
                0, 0, 10, 7, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0xb, b'h', b'i'
            ]
        );
    }

    #[test]
    fn data_and_headers_carry_their_flags_and_stream() {
        assert_eq!(
            Frame::data(0x0102_0304, vec![9, 9], true).encode(),
            [0, 0, 2, 0, 1, 1, 2, 3, 4, 9, 9]
        );
        assert_eq!(
            Frame::data(1, vec![], false).encode(),
            [0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        // END_STREAM | END_HEADERS; the reserved stream id bit is not sent.
        assert_eq!(
            Frame::headers(0x8000_0001, vec![0x82], true, true).encode(),
            [0, 0, 1, 1, 5, 0, 0, 0, 1, 0x82]
        );
        assert_eq!(
            Frame::continuation(1, vec![], false).encode(),
            [0, 0, 0, 9, 0, 0, 0, 0, 1]
        );
        let big = Frame::data(1, vec![0; 70_000], false).encode();
        assert_eq!(big[..3], [0x01, 0x11, 0x70]); // 70,000 as 24 bits
    }

    #[test]
    fn headers_are_literal_without_indexing_new_name_without_huffman() {
        // RFC 7541 C.2.1 is the same field "with incremental indexing"
        // (first byte 0x40); without indexing it starts with 0x00.
        let mut want = vec![0x00, 0x0a];
        want.extend_from_slice(b"custom-key");
        want.push(0x0d);
        want.extend_from_slice(b"custom-header");
        assert_eq!(encode_headers(&[("custom-key", "custom-header")]), want);

        // A length of 127 or more continues past the 7-bit prefix.
        let value = "v".repeat(200);
        let block = encode_headers(&[("x", value.as_str())]);
        assert_eq!(block[..5], [0x00, 0x01, b'x', 0x7f, 73]);
        assert_eq!(block.len(), 5 + 200);
    }

    #[test]
    fn hpack_integers_follow_rfc_7541() {
        let mut out = Vec::new();
        hpack_integer(&mut out, 10, 5, 0); // C.1.1
        hpack_integer(&mut out, 1337, 5, 0); // C.1.2
        hpack_integer(&mut out, 42, 8, 0); // C.1.3
        hpack_integer(&mut out, 127, 7, 0);
        assert_eq!(out, [10, 31, 154, 10, 42, 0x7f, 0]);
    }

    #[test]
    fn a_large_header_block_is_split_into_continuations() {
        let block = vec![1; 40_000];
        let frames = header_frames(3, &block, true, DEFAULT_MAX_FRAME_SIZE);
        let kinds: Vec<(u8, u8, usize)> = frames
            .iter()
            .map(|f| (f.kind, f.flags, f.payload.len()))
            .collect();
        assert_eq!(
            kinds,
            [
                (kind::HEADERS, flag::END_STREAM, 16_384),
                (kind::CONTINUATION, 0, 16_384),
                (kind::CONTINUATION, flag::END_HEADERS, 40_000 - 2 * 16_384),
            ]
        );
        let one = header_frames(1, &[0x82], false, DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(one, [Frame::headers(1, vec![0x82], false, true)]);
    }

    #[test]
    fn grpc_requests_have_the_headers_and_framing_servers_expect() {
        let headers = grpc_request_headers("127.0.0.1:1", "/grpc.health.v1.Health/Check");
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                ":method",
                ":scheme",
                ":path",
                ":authority",
                "content-type",
                "te"
            ]
        );
        assert_eq!(headers[2].1, "/grpc.health.v1.Health/Check");
        assert_eq!(
            grpc_message_header(4 * 1024 * 1024 - 1),
            [0, 0, 0x3f, 0xff, 0xff]
        );
        assert_eq!(grpc_message(&[8, 1]), [0, 0, 0, 0, 2, 8, 1]);
    }

    #[test]
    fn frames_are_parsed_back_across_partial_reads() {
        let frames = [
            Frame::goaway_frame(9, code::ENHANCE_YOUR_CALM, b"too_many_internal_resets"),
            Frame::rst_stream(3, code::FLOW_CONTROL_ERROR),
            Frame::data(1, vec![7; 100], true),
        ];
        let mut wire = Vec::new();
        for frame in &frames {
            frame.encode_into(&mut wire);
        }
        // One byte at a time: every split of a header and a payload.
        let mut parsed = Vec::new();
        let mut start = 0;
        for end in 0..=wire.len() {
            if let Some((frame, len)) = parse_frame(&wire[start..end]) {
                assert_eq!(end, start + len);
                parsed.push(frame);
                start = end;
            }
        }
        assert_eq!(parsed, frames);
        assert_eq!(start, wire.len());
        let goaway = parsed[0].goaway().expect("a GOAWAY");
        assert_eq!(goaway.last_stream_id, 9);
        assert_eq!(goaway.error_code, code::ENHANCE_YOUR_CALM);
        assert_eq!(goaway.debug_data, b"too_many_internal_resets");
        assert_eq!(parsed[1].rst_code(), Some(code::FLOW_CONTROL_ERROR));
        assert_eq!(parsed[0].rst_code(), None);
        assert!(parsed[1].goaway().is_none());
        assert!(parsed[2].is_end_stream());
        assert_eq!(
            format!("{:?}", parsed[1]),
            "RST_STREAM(stream 3, flags 0x0, FLOW_CONTROL_ERROR)"
        );
        assert_eq!(
            format!("{:?}", parsed[0]),
            "GOAWAY(stream 0, flags 0x0, GoAway(last stream 9, ENHANCE_YOUR_CALM, \
             \"too_many_internal_resets\"))"
        );
    }

    /// A plain TCP peer standing in for a server: it reads the preface and
    /// a frame, answers with two frames, then closes.
    #[test]
    fn a_connection_reads_frames_times_out_and_sees_the_peer_close() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let peer = thread::spawn(move || {
            let (mut tcp, _) = listener.accept().expect("accept");
            let mut got = vec![0; PREFACE.len() + FRAME_HEADER_LEN];
            tcp.read_exact(&mut got).expect("preface and SETTINGS");
            let mut out = Frame::settings(&[(setting::MAX_CONCURRENT_STREAMS, 10)]).encode();
            // Sent in two parts with a pause: a frame split across reads.
            Frame::rst_stream(1, code::STREAM_CLOSED).encode_into(&mut out);
            let (first, second) = out.split_at(12);
            tcp.write_all(first).expect("write");
            thread::sleep(Duration::from_millis(100));
            tcp.write_all(second).expect("write");
            let mut ack = [0; FRAME_HEADER_LEN];
            tcp.read_exact(&mut ack).expect("SETTINGS ack");
            thread::sleep(Duration::from_millis(300));
            got.extend_from_slice(&ack);
            got
        });
        let mut conn = Conn::connect(addr, Duration::from_secs(2)).expect("connect");
        let settings = conn.handshake(Duration::from_secs(2)).expect("handshake");
        assert_eq!(settings.payload, [0, 3, 0, 0, 0, 10]);
        let rst = conn.read_frame(Duration::from_secs(2)).expect("RST_STREAM");
        assert_eq!(rst.rst_code(), Some(code::STREAM_CLOSED));
        let started = Instant::now();
        assert!(matches!(
            conn.read_frame(Duration::from_millis(100)),
            Err(ReadError::TimedOut)
        ));
        assert!(started.elapsed() >= Duration::from_millis(100));
        let frames = conn
            .wait_closed(Duration::from_secs(2))
            .expect("the peer closes");
        assert!(frames.is_empty(), "{frames:?}");
        assert!(
            conn.read_frame(Duration::from_secs(1))
                .expect_err("closed")
                .is_closed()
        );
        assert!(conn.read_available().expect_err("closed").is_closed());
        let got = peer.join().expect("peer thread");
        assert_eq!(got[..PREFACE.len()], PREFACE[..]);
        assert_eq!(
            got[PREFACE.len()..],
            [0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]
        );
    }
}
