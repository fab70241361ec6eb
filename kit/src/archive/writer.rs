//! A deterministic PAX tar writer.
//!
//! Headers are ustar; whatever does not fit (long names and link targets, nanosecond mtimes,
//! large ids and sizes, xattrs) goes in a PAX extended header before the entry, with records
//! in a fixed order. User and group names are left empty (numeric ownership) and no access or
//! change times are written, so the same tree always gives the same bytes.

use std::io::{self, Read, Write};

pub use super::header::{Header, Kind};

const BLOCK: usize = 512;

/// Writes entries to `W`.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Writes one entry; for regular files `data` must yield exactly `h.size` bytes.
    pub fn append(&mut self, h: &Header, data: Option<&mut dyn Read>) -> io::Result<()> {
        let mut pax = Vec::new();
        let mut block = [0u8; BLOCK];
        // a NUL would end the ustar field early: such a name can only be a PAX record
        if h.name.len() > 100 || h.name.contains(&0) {
            record(&mut pax, b"path", &h.name);
        }
        if h.link.len() > 100 || h.link.contains(&0) {
            record(&mut pax, b"linkpath", &h.link);
        }
        if h.mtime_nsec != 0 || !(0..=0o77777777777).contains(&h.mtime) {
            record(
                &mut pax,
                b"mtime",
                format_time(h.mtime, h.mtime_nsec).as_bytes(),
            );
        }
        if h.uid > 0o7777777 {
            record(&mut pax, b"uid", h.uid.to_string().as_bytes());
        }
        if h.gid > 0o7777777 {
            record(&mut pax, b"gid", h.gid.to_string().as_bytes());
        }
        if h.size > 0o77777777777 {
            record(&mut pax, b"size", h.size.to_string().as_bytes());
        }
        for (k, v) in &h.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let base = h
                .name
                .trim_ascii_end()
                .strip_suffix(b"/")
                .unwrap_or(&h.name)
                .rsplit(|&b| b == b'/')
                .next()
                .unwrap_or(b"");
            let mut name = b"PaxHeaders/".to_vec();
            name.extend_from_slice(base);
            fill(
                &mut block,
                &name,
                b'x',
                0o644,
                0,
                0,
                pax.len() as u64,
                0,
                b"",
                (0, 0),
            );
            checksum(&mut block);
            self.out.write_all(&block)?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let mtime = if (0..=0o77777777777).contains(&h.mtime) {
            h.mtime as u64
        } else {
            0
        };
        fill(
            &mut block,
            &h.name,
            h.kind.flag(),
            h.mode & 0o7777,
            h.uid.min(0o7777777),
            h.gid.min(0o7777777),
            if h.kind.has_data() {
                h.size.min(0o77777777777)
            } else {
                0
            },
            mtime,
            &h.link,
            h.dev,
        );
        if h.uid > 0o7777777 {
            block[108..116].copy_from_slice(b"0000000\0");
        }
        if h.gid > 0o7777777 {
            block[116..124].copy_from_slice(b"0000000\0");
        }
        checksum(&mut block);
        self.out.write_all(&block)?;
        if h.kind.has_data() {
            let data = data.ok_or_else(|| io::Error::other("regular entry without data"))?;
            let copied = io::copy(&mut data.take(h.size), &mut self.out)?;
            if copied != h.size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while it was being archived",
                ));
            }
            self.pad(h.size)?;
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the two zero blocks that end an archive and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// `"<len> <key>=<value>\n"`, where `<len>` counts the whole record including itself.
fn record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn format_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        sec.to_string()
    } else if sec >= 0 {
        format!("{sec}.{nsec:09}")
    } else {
        // sec + nsec/1e9 is negative: write its magnitude
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    }
}

#[allow(clippy::too_many_arguments)]
fn fill(
    b: &mut [u8; BLOCK],
    name: &[u8],
    flag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &[u8],
    dev: (u32, u32),
) {
    b.fill(0);
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    octal(&mut b[100..108], mode as u64);
    octal(&mut b[108..116], uid);
    octal(&mut b[116..124], gid);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = flag;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if matches!(Kind::from_flag(flag), Kind::Char | Kind::Block) {
        octal(&mut b[329..337], u64::from(dev.0.min(0o7777777)));
        octal(&mut b[337..345], u64::from(dev.1.min(0o7777777)));
    }
}

/// Zero-padded octal with a trailing NUL, filling the field.
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn checksum(b: &mut [u8; BLOCK]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_flag_reads_as_a_kind_and_writes_back_the_same() {
        for flag in 0..=u8::MAX {
            let kind = Kind::from_flag(flag);
            let want = if matches!(flag, 0 | b'7') { b'0' } else { flag };
            assert_eq!(kind.flag(), want, "{kind:?}");
            assert_eq!(
                matches!(kind, Kind::Other(_)),
                !b"01234567\0".contains(&flag)
            );
        }
        assert_eq!(Kind::from_flag(b'5'), Kind::Directory);
        assert!(Kind::Regular.has_data() && !Kind::Other(b'A').has_data());
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        record(&mut v, b"path", &[b'a'; 95]);
        let s = String::from_utf8(v).unwrap();
        let (len, _) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), s.len());
        let mut v = Vec::new();
        record(&mut v, b"k", b"v");
        assert_eq!(v, b"6 k=v\n");
    }

    #[test]
    fn negative_times_keep_their_value() {
        assert_eq!(format_time(-2, 500_000_000), "-1.500000000");
        assert_eq!(format_time(5, 7), "5.000000007");
        assert_eq!(format_time(5, 0), "5");
    }

    #[test]
    fn tar_crate_reads_what_we_write() {
        let mut w = TarWriter::new(Vec::new());
        let long = [b'x'; 150].to_vec();
        let h = Header {
            name: long.clone(),
            kind: Kind::Regular,
            mode: 0o4755,
            uid: 5_000_000,
            gid: 7,
            size: 3,
            mtime: 1_700_000_000,
            mtime_nsec: 123,
            link: Vec::new(),
            dev: (0, 0),
            xattrs: vec![(b"user.k".to_vec(), b"\0bin".to_vec())],
        };
        w.append(&h, Some(&mut &b"abc"[..])).unwrap();
        let bytes = w.finish().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), &long[..]);
        assert_eq!(e.header().mode().unwrap(), 0o4755);
        let pax: Vec<_> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| x.unwrap())
            .map(|x| (x.key().unwrap().to_owned(), x.value_bytes().to_vec()))
            .collect();
        assert!(pax.contains(&("uid".into(), b"5000000".to_vec())));
        assert!(pax.contains(&("mtime".into(), b"1700000000.000000123".to_vec())));
        assert!(pax.contains(&("SCHILY.xattr.user.k".into(), b"\0bin".to_vec())));
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
        assert!(entries.next().is_none());
    }
}
