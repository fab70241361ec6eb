//! A tar reader for layer archives: ustar, GNU and PAX headers.
//!
//! Written here rather than borrowed because layer archives carry binary xattr values in PAX
//! records, and a record is delimited by its length prefix, not by newlines: a capability
//! blob with a `0x0a` byte must read back exactly. The reader also knows every field an OCI
//! layer uses (PAX `path`, `linkpath`, `size`, `uid`, `gid`, `mtime` with nanoseconds,
//! `SCHILY.xattr.*`; GNU long names; base-256 numbers) and refuses what it cannot apply
//! faithfully (GNU sparse entries) with a reason.

use std::io::{self, Read};

use super::header::{Header, Kind};

/// Why an archive could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The archive ends inside a header or a member's data.
    Truncated,
    /// A header or extended header is not valid.
    Malformed(String),
    /// Reading the input failed.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Truncated => f.write_str("archive is truncated"),
            ReadError::Malformed(m) => f.write_str(m),
            ReadError::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

const BLOCK: usize = 512;
/// Members larger than this are refused (1 PiB: no layer holds such a file; it keeps sizes
/// far from overflow).
const MAX_MEMBER: u64 = 1 << 50;
/// Extended headers larger than this are refused (a name or xattr set is never this big).
const MAX_EXTENDED: u64 = 64 << 20;

/// Reads members one by one; the data of the current member is read with
/// [`TarReader::read_data`] (what is not read is skipped by the next [`TarReader::next_entry`]).
#[derive(Debug)]
pub struct TarReader<R: Read> {
    r: R,
    /// Data bytes of the current member not yet read.
    left: u64,
    /// Padding after the current member's data.
    pad: u64,
}

impl<R: Read> TarReader<R> {
    /// A reader over `r` (buffer it: headers are read 512 bytes at a time).
    pub fn new(r: R) -> Self {
        TarReader { r, left: 0, pad: 0 }
    }

    /// The next member, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Header>, ReadError> {
        self.skip_rest()?;
        let mut pax: Vec<Record> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let mut h = [0u8; BLOCK];
            if !self.read_block(&mut h)? {
                if pax.is_empty() && long_name.is_none() && long_link.is_none() {
                    return Ok(None);
                }
                return Err(ReadError::Truncated);
            }
            if h.iter().all(|&b| b == 0) {
                // End of archive: a zero block, then a second one or the end of input. A
                // member after a single zero block is an error, as in Go's archive/tar
                // (moby, containerd): silently dropping it would apply half an image.
                if !pax.is_empty() || long_name.is_some() || long_link.is_some() {
                    return Err(ReadError::Malformed(
                        "an extended header is followed by the end of the archive".into(),
                    ));
                }
                if self.read_block(&mut h)? && h.iter().any(|&b| b != 0) {
                    return Err(ReadError::Malformed(
                        "a member follows a single zero block (a damaged or concatenated archive)"
                            .into(),
                    ));
                }
                return Ok(None);
            }
            verify_checksum(&h)?;
            let size = number(&h[124..136]).ok_or_else(|| bad("size"))?;
            if size > MAX_MEMBER {
                return Err(ReadError::Malformed(format!("member of {size} bytes")));
            }
            let flag = h[156];
            match flag {
                b'x' | b'g' | b'L' | b'K' => {
                    if size > MAX_EXTENDED {
                        return Err(ReadError::Malformed(format!(
                            "extended header of {size} bytes"
                        )));
                    }
                    let data = self.read_exact_data(size)?;
                    match flag {
                        b'x' => pax = parse_pax(&data)?,
                        b'g' => {} // global headers carry nothing a layer needs
                        b'L' => long_name = Some(trim_nul(&data).to_vec()),
                        _ => long_link = Some(trim_nul(&data).to_vec()),
                    }
                    continue;
                }
                b'S' => return Err(ReadError::Malformed(
                    "GNU sparse members (tar --sparse) are not supported; archive without --sparse"
                        .into(),
                )),
                _ => {}
            }
            let mut e = Header {
                name: header_name(&h),
                kind: Kind::from_flag(flag),
                mode: number(&h[100..108]).ok_or_else(|| bad("mode"))? as u32 & 0o7777,
                uid: number(&h[108..116]).ok_or_else(|| bad("uid"))?,
                gid: number(&h[116..124]).ok_or_else(|| bad("gid"))?,
                size,
                mtime: number(&h[136..148])
                    .and_then(|t| i64::try_from(t).ok())
                    .ok_or_else(|| bad("mtime"))?,
                mtime_nsec: 0,
                link: trim_nul(&h[157..257]).to_vec(),
                dev: (0, 0),
                xattrs: Vec::new(),
            };
            let kind = e.kind;
            if matches!(kind, Kind::Char | Kind::Block) {
                // a device read as 0:0 would be an overlay whiteout: refuse, never guess
                let dev = |f: &[u8], what: &str| {
                    number(f)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| bad(what))
                };
                e.dev = (
                    dev(&h[329..337], "device major")?,
                    dev(&h[337..345], "device minor")?,
                );
            }
            if let Some(n) = long_name {
                e.name = n;
            }
            if let Some(l) = long_link {
                e.link = l;
            }
            for (k, v) in pax {
                let text = || std::str::from_utf8(&v).ok();
                match k.as_slice() {
                    b"path" => e.name = v,
                    b"linkpath" => e.link = v,
                    b"size" => {
                        e.size = text()
                            .and_then(|t| t.parse().ok())
                            .filter(|s| *s <= MAX_MEMBER)
                            .ok_or_else(|| bad("PAX size"))?
                    }
                    b"uid" => e.uid = text().and_then(|t| t.parse().ok()).ok_or_else(|| bad("PAX uid"))?,
                    b"gid" => e.gid = text().and_then(|t| t.parse().ok()).ok_or_else(|| bad("PAX gid"))?,
                    b"mtime" => {
                        let (s, n) = text().and_then(parse_time).ok_or_else(|| bad("PAX mtime"))?;
                        e.mtime = s;
                        e.mtime_nsec = n;
                    }
                    k if k.starts_with(b"GNU.sparse.") => {
                        return Err(ReadError::Malformed(
                            "GNU sparse members (tar --sparse) are not supported; archive without --sparse".into(),
                        ))
                    }
                    k => {
                        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                            e.xattrs.push((name.to_vec(), v));
                        }
                    }
                }
            }
            // Links, devices, directories and fifos carry no data whatever their size field
            // says (as in Go's archive/tar: skipping it would swallow the members after);
            // other unknown members' data is skipped.
            if !matches!(kind, Kind::Regular | Kind::Other(_)) {
                e.size = 0;
            }
            self.left = e.size;
            self.pad = (BLOCK as u64 - e.size % BLOCK as u64) % BLOCK as u64;
            if !kind.has_data() {
                // Only a regular file's data is read; another member's is skipped, so
                // `read_data` never returns more than `size` (found by fuzz target tar_reader).
                self.pad += self.left;
                self.left = 0;
                e.size = 0;
            }
            return Ok(Some(e));
        }
    }

    /// Reads data of the current member; `Ok(0)` at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = loop {
            match self.r.read(&mut buf[..want]) {
                Ok(0) => return Err(ReadError::Truncated),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            }
        };
        self.left -= n as u64;
        Ok(n)
    }

    fn read_exact_data(&mut self, size: u64) -> Result<Vec<u8>, ReadError> {
        self.left = size;
        self.pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        let mut data = vec![0u8; size as usize];
        let mut got = 0;
        while got < data.len() {
            got += self.read_data(&mut data[got..])?;
        }
        self.skip_rest()?;
        Ok(data)
    }

    fn skip_rest(&mut self) -> Result<(), ReadError> {
        let mut n = self.left.saturating_add(self.pad);
        self.left = 0;
        self.pad = 0;
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = buf.len().min(n as usize);
            match self.r.read(&mut buf[..k]) {
                Ok(0) => return Err(ReadError::Truncated),
                Ok(r) => n -= r as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        Ok(())
    }

    /// Fills `b`; `false` at a clean end of input, `Truncated` inside a block.
    fn read_block(&mut self, b: &mut [u8; BLOCK]) -> Result<bool, ReadError> {
        let mut got = 0;
        while got < BLOCK {
            match self.r.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(ReadError::Truncated),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        Ok(true)
    }
}

fn bad(field: &str) -> ReadError {
    ReadError::Malformed(format!("unreadable {field} in header"))
}

fn trim_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// The name, with the ustar prefix when the header is POSIX ustar (GNU headers use that
/// area for other fields).
fn header_name(h: &[u8; BLOCK]) -> Vec<u8> {
    let name = trim_nul(&h[..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = trim_nul(&h[345..500]);
        if !prefix.is_empty() {
            let mut p = prefix.to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            return p;
        }
    }
    name.to_vec()
}

/// An octal field (NUL- or space-terminated, leading spaces allowed) or a GNU base-256 one.
fn number(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        if f[0] & 0x40 != 0 {
            return None; // negative base-256
        }
        let mut v: u64 = u64::from(f[0] & 0x3f);
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s = f
        .iter()
        .skip_while(|&&b| b == b' ' || b == 0)
        .take_while(|&&b| b != 0 && b != b' ');
    let mut v: u64 = 0;
    for &b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    // an all-blank field is zero (some writers leave devmajor/devminor empty)
    Some(v)
}

fn verify_checksum(h: &[u8; BLOCK]) -> Result<(), ReadError> {
    let want = number(&h[148..156]).ok_or_else(|| bad("checksum"))?;
    let unsigned: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum();
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                i64::from(b' ')
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    if want == unsigned || want as i64 == signed {
        Ok(())
    } else {
        Err(ReadError::Malformed(
            "header checksum does not match (not a tar archive, or corrupt)".into(),
        ))
    }
}

/// A PAX record: key and value.
type Record = (Vec<u8>, Vec<u8>);

/// Parses PAX records `"<len> <key>=<value>\n"`, each delimited by its length, so values may
/// hold any byte.
fn parse_pax(mut data: &[u8]) -> Result<Vec<Record>, ReadError> {
    let mut out = Vec::new();
    let malformed = || ReadError::Malformed("malformed PAX record".into());
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break; // NUL padding
        }
        let sp = data.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(malformed());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').ok_or_else(malformed)?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// Parses a PAX time, `[-]sec[.frac]`, into seconds and nanoseconds.
pub(crate) fn parse_time(t: &str) -> Option<(i64, u32)> {
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (sec, frac) = t.split_once('.').unwrap_or((t, ""));
    // digits only: a second sign ("--5") is malformed, not a double negation
    if sec.is_empty() || !sec.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sec: i64 = sec.parse().ok()?;
    let nsec = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    Some(match (neg, nsec) {
        (false, n) => (sec, n),
        (true, 0) => (sec.checked_neg()?, 0),
        (true, n) => (sec.checked_neg()?.checked_sub(1)?, 1_000_000_000 - n),
    })
}

#[cfg(test)]
mod tests {
    use super::super::writer::{Header, TarWriter};
    use super::*;

    fn header(name: &[u8]) -> Header {
        Header {
            name: name.to_vec(),
            kind: Kind::Regular,
            mode: 0o4755,
            uid: 5_000_000,
            gid: 7,
            size: 3,
            mtime: 1_700_000_000,
            mtime_nsec: 123,
            link: Vec::new(),
            dev: (0, 0),
            xattrs: vec![(
                b"security.capability".to_vec(),
                b"\x01\x00\x00\x02\n\x00\x0a=\n".to_vec(),
            )],
        }
    }

    #[test]
    fn reads_back_what_the_writer_wrote_including_newlines_in_values() {
        let mut w = TarWriter::new(Vec::new());
        let long = [b'x'; 150];
        let mut odd = b"dir/with\nnewline".to_vec();
        odd.extend_from_slice(&[b'y'; 120]);
        w.append(&header(&long), Some(&mut &b"abc"[..])).unwrap();
        w.append(&header(&odd), Some(&mut &b"def"[..])).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TarReader::new(&bytes[..]);
        for (name, data) in [(&long[..], b"abc"), (&odd[..], b"def")] {
            let e = r.next_entry().unwrap().unwrap();
            assert_eq!(e.name, name);
            assert_eq!(
                (e.mode, e.uid, e.gid, e.mtime, e.mtime_nsec),
                (0o4755, 5_000_000, 7, 1_700_000_000, 123)
            );
            assert_eq!(e.xattrs, header(b"").xattrs);
            let mut buf = [0u8; 8];
            let n = r.read_data(&mut buf).unwrap();
            assert_eq!(&buf[..n], data);
        }
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn reads_the_tar_crates_gnu_long_names_and_base256() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_uid(0o7777777 + 5); // base-256 in a GNU header
        h.set_entry_type(tar::EntryType::Regular);
        let long = "d/".repeat(80) + "file";
        b.append_data(&mut h, &long, &b"data"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut r = TarReader::new(&bytes[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.name, long.as_bytes());
        assert_eq!(e.uid, 0o7777777 + 5);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn data_of_a_member_that_is_not_a_file_is_skipped_not_read() {
        // Found by the fuzz target tar_reader: a member of an unknown type (here 'A') with
        // data read as size 0 but handed its data out; the member after it must still read.
        let mut b = tar::Builder::new(Vec::new());
        for (kind, name, data) in [
            (tar::EntryType::new(b'A'), "odd", &b"eleven bytes"[..]),
            (tar::EntryType::Regular, "next", &b"ok"[..]),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(kind);
            b.append_data(&mut h, name, data).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let mut r = TarReader::new(&bytes[..]);
        let odd = r.next_entry().unwrap().unwrap();
        assert_eq!((odd.kind, odd.size), (Kind::Other(b'A'), 0));
        let mut buf = [0u8; 32];
        assert_eq!(r.read_data(&mut buf).unwrap(), 0);
        let next = r.next_entry().unwrap().unwrap();
        assert_eq!((next.name.as_slice(), next.size), (&b"next"[..], 2));
        assert_eq!(r.read_data(&mut buf).unwrap(), 2);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn truncation_and_corruption_are_told_apart() {
        let mut w = TarWriter::new(Vec::new());
        w.append(&header(b"f"), Some(&mut &b"abc"[..])).unwrap();
        let bytes = w.finish().unwrap();
        // inside the data
        let mut r = TarReader::new(&bytes[..1536 + 1]); // PAX header, its data, the header
        r.next_entry().unwrap().unwrap();
        let mut buf = [0u8; 8];
        let _ = r.read_data(&mut buf[..1]);
        assert!(matches!(r.read_data(&mut buf), Err(ReadError::Truncated)));
        // inside a header
        let mut r = TarReader::new(&bytes[..100]);
        assert!(matches!(r.next_entry(), Err(ReadError::Truncated)));
        // a bad checksum
        let mut bad = bytes.clone();
        bad[1024] ^= 1; // the member's header (after the PAX header and its data)
        let mut r = TarReader::new(&bad[..]);
        assert!(matches!(r.next_entry(), Err(ReadError::Malformed(_))));
    }

    #[test]
    fn pax_records_need_their_exact_length() {
        assert_eq!(
            parse_pax(b"6 k=v\n").unwrap(),
            vec![(b"k".to_vec(), b"v".to_vec())]
        );
        assert!(parse_pax(b"7 k=v\n").is_err());
        assert!(parse_pax(b"x k=v\n").is_err());
        assert_eq!(
            parse_pax(b"7 k=\n\n\n").unwrap(),
            vec![(b"k".to_vec(), b"\n\n".to_vec())]
        );
    }

    #[test]
    fn parses_pax_times() {
        assert_eq!(
            parse_time("1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_time("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_time("12"), Some((12, 0)));
        assert_eq!(parse_time("1.0123456789"), Some((1, 12_345_678)));
        assert_eq!(parse_time("x"), None);
        assert_eq!(parse_time("1.x"), None);
    }

    #[test]
    fn pax_times_with_two_signs_or_out_of_range_are_refused() {
        assert_eq!(parse_time("--9223372036854775808"), None);
        assert_eq!(parse_time("--5.5"), None);
        assert_eq!(parse_time("-+5"), None);
        assert_eq!(parse_time("+5"), None);
        assert_eq!(parse_time("-"), None);
        assert_eq!(parse_time(".5"), None);
        assert_eq!(parse_time("-9223372036854775808.5"), None);
        assert_eq!(
            parse_time("-9223372036854775807.5"),
            Some((i64::MIN, 500_000_000))
        );
        assert_eq!(parse_time("9223372036854775808"), None);
    }

    /// A header block with a valid checksum: `f` fills its fields.
    fn raw_header(name: &str, kind: u8, size: u64, f: impl FnOnce(&mut [u8; BLOCK])) -> Vec<u8> {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        f(&mut h);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h.to_vec()
    }

    fn names(bytes: &[u8]) -> Result<Vec<String>, ReadError> {
        let mut r = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(String::from_utf8_lossy(&e.name).into_owned());
        }
        Ok(out)
    }

    #[test]
    fn a_member_after_a_single_zero_block_is_an_error() {
        let mut t = raw_header("a", b'0', 0, |_| {});
        t.extend_from_slice(&[0u8; BLOCK]);
        t.extend(raw_header("b", b'0', 0, |_| {}));
        t.extend_from_slice(&[0u8; 2 * BLOCK]);
        assert!(matches!(names(&t), Err(ReadError::Malformed(_))));
        // one zero block then the end of input, or two zero blocks: the end
        let mut one = raw_header("a", b'0', 0, |_| {});
        one.extend_from_slice(&[0u8; BLOCK]);
        assert_eq!(names(&one).unwrap(), vec!["a"]);
        one.extend_from_slice(&[0u8; BLOCK]);
        one.extend_from_slice(b"trailing garbage after the end is not read");
        assert_eq!(names(&one).unwrap(), vec!["a"]);
    }

    #[test]
    fn size_fields_of_data_less_members_are_not_skipped_as_data() {
        for kind in [b'1', b'2', b'3', b'4', b'5', b'6'] {
            let mut t = raw_header("x", kind, 512, |h| {
                h[157] = b't';
                h[329..336].copy_from_slice(b"0000001");
                h[337..344].copy_from_slice(b"0000002");
            });
            t.extend(raw_header("after", b'0', 0, |_| {}));
            t.extend_from_slice(&[0u8; 2 * BLOCK]);
            assert_eq!(
                names(&t).unwrap(),
                vec!["x", "after"],
                "kind {}",
                kind as char
            );
        }
    }

    #[test]
    fn unreadable_or_huge_device_numbers_are_refused() {
        let t = raw_header("c", b'3', 0, |h| {
            h[329..337].copy_from_slice(b"zzzzzzz\0");
        });
        assert!(matches!(names(&t), Err(ReadError::Malformed(_))));
        let t = raw_header("c", b'3', 0, |h| {
            h[337] = 0x80; // base-256: 2^32
            h[340] = 1;
        });
        assert!(matches!(names(&t), Err(ReadError::Malformed(_))));
        let mut t = raw_header("c", b'4', 0, |h| {
            h[329..336].copy_from_slice(b"0000010");
            h[337..344].copy_from_slice(b"0000003");
        });
        t.extend_from_slice(&[0u8; 2 * BLOCK]);
        let e = TarReader::new(&t[..]).next_entry().unwrap().unwrap();
        assert_eq!(e.dev, (8, 3));
    }

    #[test]
    fn base256_mtimes_past_i64_are_refused() {
        let t = raw_header("f", b'0', 0, |h| {
            h[136] = 0x80;
            h[140] = 0x80; // 2^63 in the low 8 bytes
        });
        assert!(matches!(names(&t), Err(ReadError::Malformed(_))));
    }
}
