//! A relay that makes containerd's requests acceptable to the HTTP/2 server.
//!
//! containerd 1.6 dials a proxy plugin as `unix:///path/to.sock`, and its grpc-go (1.33)
//! sends that whole string as the `:authority` of every request. h2, under tonic, refuses a
//! request whose authority is not a valid URI authority (`/` is not allowed) with
//! `RST_STREAM PROTOCOL_ERROR`, so no call would ever succeed (containerd/rust-extensions
//! issue 52, hyperium/tonic issues 243 and 742: grpc-java and grpcurl send the path too).
//! The authority means nothing on a unix socket, so the relay reads the client's HTTP/2
//! frames, decodes each header block (HPACK, with the connection's own dynamic table),
//! replaces an authority that is not valid with `localhost` (what grpc-go's own unix
//! resolver sends since 1.34), and encodes the block again for the server. Every other
//! frame, and everything the server sends, passes through unchanged.

use std::io;

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The client connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// SETTINGS_MAX_FRAME_SIZE's initial value: the largest frame the server accepts unless it
/// says otherwise (h2 does not).
const MAX_FRAME: usize = 16_384;
/// The largest header block the relay will reassemble.
const MAX_BLOCK: usize = 1 << 20;

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Whether `a` is something h2 accepts as an authority: `host[:port]` in URI syntax.
pub fn is_valid_authority(a: &[u8]) -> bool {
    !a.is_empty()
        && a.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%@".contains(&c))
}

/// Rewrites one decoded header list: an invalid `:authority` becomes `localhost`.
pub fn fix_headers(headers: &mut [(Vec<u8>, Vec<u8>)]) -> bool {
    let mut changed = false;
    for (name, value) in headers.iter_mut() {
        if name.as_slice() == b":authority" && !is_valid_authority(value) {
            *value = b"localhost".to_vec();
            changed = true;
        }
    }
    changed
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    }))
}

fn frame_bytes(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The header block fragment of a HEADERS frame, without padding and priority fields.
fn fragment(f: &Frame) -> io::Result<&[u8]> {
    let mut p = f.payload.as_slice();
    let mut pad = 0;
    if f.flags & PADDED != 0 {
        let (&n, rest) = p
            .split_first()
            .ok_or_else(|| bad("HEADERS without its pad length"))?;
        pad = usize::from(n);
        p = rest;
    }
    if f.flags & PRIORITY != 0 {
        p = p
            .get(5..)
            .ok_or_else(|| bad("HEADERS without its priority"))?;
    }
    p.get(
        ..p.len()
            .checked_sub(pad)
            .ok_or_else(|| bad("HEADERS padding too long"))?,
    )
    .ok_or_else(|| bad("HEADERS padding too long"))
}

/// Copies the client's side of an HTTP/2 connection from `from` to `to`, re-encoding header
/// blocks with [`fix_headers`] applied. Returns when the client closes its side.
pub async fn relay_client<R, W>(mut from: R, mut to: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(bad("not an HTTP/2 client"));
    }
    to.write_all(&preface).await?;
    let (mut decoder, mut encoder) = (Decoder::new(), Encoder::new());
    let mut out = Vec::new();
    while let Some(f) = read_frame(&mut from).await? {
        out.clear();
        if f.kind != HEADERS {
            frame_bytes(&mut out, f.kind, f.flags, f.stream, &f.payload);
            to.write_all(&out).await?;
            continue;
        }
        let mut block = fragment(&f)?.to_vec();
        let mut end = f.flags & END_HEADERS != 0;
        while !end {
            let c = read_frame(&mut from)
                .await?
                .ok_or_else(|| bad("connection closed inside a header block"))?;
            if c.kind != CONTINUATION || c.stream != f.stream {
                return Err(bad("a header block interrupted by another frame"));
            }
            block.extend_from_slice(&c.payload);
            if block.len() > MAX_BLOCK {
                return Err(bad("header block too large"));
            }
            end = c.flags & END_HEADERS != 0;
        }
        let mut headers = decoder
            .decode(&block)
            .map_err(|e| bad(&format!("undecodable header block: {e:?}")))?;
        fix_headers(&mut headers);
        let encoded = encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
        let mut kind = HEADERS;
        let mut flags = f.flags & END_STREAM;
        loop {
            let chunk = chunks.next().unwrap_or_default();
            let last = chunks.peek().is_none();
            frame_bytes(
                &mut out,
                kind,
                flags | if last { END_HEADERS } else { 0 },
                f.stream,
                chunk,
            );
            if last {
                break;
            }
            (kind, flags) = (CONTINUATION, 0);
        }
        to.write_all(&out).await?;
    }
    to.shutdown().await
}

/// Relays one client connection `conn` to the server's end of `server`: the client's frames
/// through [`relay_client`], the server's as they are. When the client stops sending, the
/// server may still answer; when the server closes, the client is dropped.
pub async fn relay(conn: tokio::net::UnixStream, server: tokio::io::DuplexStream) {
    let (from_client, mut to_client) = conn.into_split();
    let (mut from_server, mut to_server) = tokio::io::split(server);
    let up = async {
        // an error here ends the connection like an EOF: the server sees it close
        let _ = relay_client(from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut up => down.await,
        () = &mut down => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_not_authorities_and_host_names_are() {
        assert!(!is_valid_authority(
            b"unix:///run/graphdriver/snapshotter.sock"
        ));
        assert!(!is_valid_authority(b"/tmp/s.sock"));
        assert!(!is_valid_authority(b""));
        assert!(is_valid_authority(b"localhost"));
        assert!(is_valid_authority(b"example.com:50051"));
        assert!(is_valid_authority(b"[::1]:80"));
    }

    /// Two requests on one connection, the second using the dynamic table entry the first
    /// made: both arrive with `localhost`, decodable by a fresh decoder (the server's).
    #[test]
    fn header_blocks_are_rewritten_across_a_connection() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut client = Encoder::new();
            let req = |path: &'static [u8]| -> Vec<(&'static [u8], &'static [u8])> {
                vec![
                    (b":method", b"POST"),
                    (b":scheme", b"http"),
                    (b":path", path),
                    (b":authority", b"unix:///tmp/s.sock"),
                    (b"content-type", b"application/grpc"),
                ]
            };
            let mut wire = PREFACE.to_vec();
            for (stream, path) in [(1u32, &b"/a"[..]), (3, &b"/b"[..])] {
                let block = client.encode(req(path));
                // the first block split over HEADERS + CONTINUATION, with padding
                let (a, b) = block.split_at(3);
                let mut p = vec![2u8];
                p.extend_from_slice(a);
                p.extend_from_slice(&[0, 0]);
                frame_bytes(&mut wire, HEADERS, PADDED, stream, &p);
                frame_bytes(&mut wire, CONTINUATION, END_HEADERS, stream, b);
                frame_bytes(&mut wire, 0x0, END_STREAM, stream, b"data");
            }
            let mut got = Vec::new();
            relay_client(wire.as_slice(), &mut got)
                .await
                .expect("relay");
            assert_eq!(&got[..24], PREFACE);
            let mut r = &got[24..];
            let mut server = Decoder::new();
            let mut seen = Vec::new();
            while let Some(f) = read_frame(&mut r).await.expect("frame") {
                if f.kind == HEADERS {
                    assert_eq!(f.flags & END_HEADERS, END_HEADERS);
                    let h = server.decode(&f.payload).expect("decodable");
                    let auth = h
                        .iter()
                        .find(|(n, _)| n == b":authority")
                        .expect("authority");
                    assert_eq!(auth.1, b"localhost");
                    seen.push(
                        h.iter()
                            .find(|(n, _)| n == b":path")
                            .expect("path")
                            .1
                            .clone(),
                    );
                } else {
                    assert_eq!(f.payload, b"data");
                }
            }
            assert_eq!(seen, [b"/a".to_vec(), b"/b".to_vec()]);
        });
    }
}
