//! A byte stream from one thread to another as a bounded channel of chunks.
//!
//! A pipe between threads of one process copies every byte twice more through the kernel and
//! wakes the reader once per 64 KiB; for an export or an import that is CPU bound (a warm
//! page cache, a decompressor) that was about half of the time. Here each chunk is a buffer
//! handed over whole, read chunks go back to the writer to be filled again, and at most
//! `in_flight` chunks wait for the reader, so a fast writer cannot run away with memory.
//!
//! The writer's side ends the stream by being dropped (the reader then reads the end), or by
//! [`ChunkWriter::fail`] (the reader then gets that error, not an end: a stream cut short by
//! an error must never look complete). The reader's side, dropped, makes the writer's next
//! send fail with `BrokenPipe`, as a closed pipe would.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// The size of the chunks [`ChunkWriter::fill_from`] reads.
pub const CHUNK: usize = 1 << 20;

/// Makes a stream with at most `in_flight` chunks waiting for the reader.
pub fn channel(in_flight: usize) -> (ChunkWriter, ChunkReader) {
    let (chunks_tx, chunks) = sync_channel(in_flight);
    let (spent, spent_rx) = sync_channel(in_flight + 1);
    (
        ChunkWriter {
            chunks: chunks_tx,
            spent: spent_rx,
        },
        ChunkReader {
            chunks: Some(chunks),
            spent,
            chunk: Vec::new(),
            pos: 0,
        },
    )
}

/// What [`ChunkWriter::fill_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// Sent a chunk of this many bytes.
    Sent(usize),
    /// The source is at its end; nothing was sent.
    End,
    /// The reader is gone; what was read for this chunk was not sent.
    ReaderGone,
}

/// The writing end; each `write` is one chunk (put a `BufWriter` in front for small writes).
#[derive(Debug)]
pub struct ChunkWriter {
    chunks: SyncSender<io::Result<Vec<u8>>>,
    spent: Receiver<Vec<u8>>,
}

impl ChunkWriter {
    fn buffer(&self) -> Vec<u8> {
        let mut b = self.spent.try_recv().unwrap_or_default();
        b.clear();
        b
    }

    fn send(&self, chunk: Vec<u8>) -> io::Result<()> {
        self.chunks
            .send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    /// Reads up to [`CHUNK`] bytes from `src` straight into a chunk and sends it. A read
    /// error is returned, and not sent (see [`ChunkWriter::fail`]).
    pub fn fill_from(&mut self, src: &mut impl Read) -> io::Result<Filled> {
        let mut chunk = self.buffer();
        chunk.reserve(CHUNK);
        let n = src.take(CHUNK as u64).read_to_end(&mut chunk)?;
        if n == 0 {
            return Ok(Filled::End);
        }
        Ok(match self.send(chunk) {
            Ok(()) => Filled::Sent(n),
            Err(_) => Filled::ReaderGone,
        })
    }

    /// Ends the stream with `error`: the reader gets it after the chunks before it.
    pub fn fail(self, error: io::Error) {
        // a reader that is gone needs no error
        let _ = self.chunks.send(Err(error));
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut chunk = self.buffer();
        chunk.extend_from_slice(buf);
        self.send(chunk)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end.
#[derive(Debug)]
pub struct ChunkReader {
    chunks: Option<Receiver<io::Result<Vec<u8>>>>,
    /// Read chunks go back to the writer to be filled again.
    spent: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.chunk.len() {
            let Some(chunks) = self.chunks.as_ref() else {
                return Ok(0);
            };
            match chunks.recv() {
                Ok(Ok(next)) => {
                    let read = std::mem::replace(&mut self.chunk, next);
                    let _ = self.spent.try_send(read); // enough spares: it is freed instead
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.chunks = None;
                    return Err(e);
                }
                // the writer is gone without an error: the end
                Err(_) => {
                    self.chunks = None;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_whole_then_the_end() {
        let (mut w, mut r) = channel(2);
        let data: Vec<u8> = (0..3 * CHUNK + 12345).map(|i| (i % 251) as u8).collect();
        let src = data.clone();
        let t = std::thread::spawn(move || {
            let mut src = &src[..];
            while let Filled::Sent(_) = w.fill_from(&mut src).unwrap() {}
            w.write_all(b"tail").unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        t.join().unwrap();
        assert_eq!(got.len(), data.len() + 4);
        assert!(got[..data.len()] == data[..] && got.ends_with(b"tail"));
    }

    #[test]
    fn a_failed_stream_is_an_error_not_an_end() {
        let (mut w, mut r) = channel(2);
        w.write_all(b"part").unwrap();
        w.fail(io::Error::new(io::ErrorKind::InvalidData, "corrupt"));
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(got, b"part");
    }

    #[test]
    fn a_filler_learns_that_the_reader_is_gone() {
        let (mut w, r) = channel(1);
        drop(r);
        assert_eq!(
            w.fill_from(&mut &[1u8; 10][..]).unwrap(),
            Filled::ReaderGone
        );
        assert_eq!(w.fill_from(&mut &[][..]).unwrap(), Filled::End);
    }

    #[test]
    fn a_dropped_reader_is_a_broken_pipe_even_for_a_writer_that_waits() {
        let (mut w, r) = channel(1);
        let t = std::thread::spawn(move || loop {
            if let Err(e) = w.write_all(&[0u8; 1024]) {
                return e.kind();
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(50)); // the writer waits, full
        drop(r);
        assert_eq!(t.join().unwrap(), io::ErrorKind::BrokenPipe);
    }
}
