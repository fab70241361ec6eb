//! The tar reader on arbitrary bytes: every member and all its data is read; an error ends
//! the archive. Never a panic, never more data than a member declares, and the reader stops.
#![no_main]

use graphdriver_kit::archive::TarReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = TarReader::new(data);
    let mut buf = [0u8; 4096];
    // Each member takes at least one 512-byte header, so there are at most this many.
    for _ in 0..=data.len() / 512 {
        let entry = match r.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) | Err(_) => return,
        };
        let mut read = 0u64;
        loop {
            match r.read_data(&mut buf) {
                Ok(0) => break,
                Ok(n) => read += n as u64,
                Err(_) => return,
            }
        }
        assert!(
            read <= entry.size,
            "read {read} bytes of a {}-byte member",
            entry.size
        );
        assert!(read <= data.len() as u64);
    }
    // One more call after that many members must report the end or an error.
    assert!(
        !matches!(r.next_entry(), Ok(Some(_))),
        "more members than 512-byte blocks"
    );
});
