//! Byte access to files: a read-only memory map where the file allows it, `pread` where it
//! does not (/proc/kcore, /dev/mem, files of size 0). This is the only module with `unsafe`.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use memmap2::{Mmap, MmapOptions};

/// Random access to the bytes of a (possibly virtual) file.
pub trait Medium: Send + Sync {
    /// The size in bytes; for devices and procfs files, the largest offset worth trying.
    fn size(&self) -> u64;

    /// Up to `len` bytes from `offset`: fewer only where the medium ends (or has a hole).
    fn bytes_at(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>>;

    /// Copies bytes at `offset` into `buf` (fewer where the medium ends). For many small
    /// scattered reads (a flattened file's record headers) this beats touching the mapping,
    /// whose page faults and unmapping cost more than a `pread` each.
    fn copy_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = self.bytes_at(offset, buf.len())?;
        let n = bytes.len();
        buf.get_mut(..n).unwrap_or(&mut []).copy_from_slice(&bytes);
        Ok(n)
    }

    /// Exactly `len` bytes from `offset`, or None where the medium ends first.
    fn exact_at(&self, offset: u64, len: usize) -> io::Result<Option<Cow<'_, [u8]>>> {
        let bytes = self.bytes_at(offset, len)?;
        Ok((bytes.len() == len).then_some(bytes))
    }
}

/// A regular file mapped read-only. The mapping survives the descriptor being closed
/// (shared exec files outlive their handles and hold no descriptor).
pub struct MappedFile {
    map: Option<Mmap>,
}

impl MappedFile {
    /// Maps `file`; the mapping holds no descriptor.
    pub fn map_only(file: &File) -> io::Result<MappedFile> {
        MappedFile::map(file, file.metadata()?.len())
    }

    fn map(file: &File, len: u64) -> io::Result<MappedFile> {
        if len == 0 {
            return Ok(MappedFile { map: None });
        }
        // SAFETY: `Mmap` hands out `&[u8]` over the file's pages, which is sound while no one
        // changes those bytes or shortens the file as long as the map lives.
        // - Us: only read-only opens are mapped. kvm_write's handles read through pread
        //   (session/open.rs), and exec files are never written, so no write of ours aliases
        //   a mapped slice.
        // - The length is the caller's fstat, mapped exactly: no page past what it saw.
        // - Other processes: a crash dump is immutable once written (makedumpfile and
        //   kdump-tools finish a file before it is handed on), the contract crash and
        //   libkdumpfile also map under. A file truncated under us would still raise SIGBUS
        //   on access, and a file rewritten in place would show changing bytes: files that
        //   change (procfs, devices) are never mapped, they are read with pread (PreadFile).
        //   Mapping is kept for dumps because the reads copy straight from the page cache.
        let map = unsafe {
            MmapOptions::new()
                .len(usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?)
                .map(file)?
        };
        Ok(MappedFile { map: Some(map) })
    }

    pub fn as_slice(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl Medium for MappedFile {
    fn size(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn bytes_at(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>> {
        let all = self.as_slice();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
        let end = start.saturating_add(len).min(all.len());
        Ok(Cow::Borrowed(all.get(start..end).unwrap_or(&[])))
    }
}

/// A dump file read with `pread` for its first few small reads (the headers, notes and
/// VMCOREINFO an open needs) and mapped at the first read past them. An open and close
/// that touch only headers then cost no mmap, no page faults and no munmap, which together
/// were most of a small dump's open; the reads of kernel memory after it copy straight
/// from the mapping. A mapping that fails (address space) leaves `pread` for everything.
pub struct LazyMappedFile {
    file: File,
    len: u64,
    map: OnceLock<Option<MappedFile>>,
    small_reads: AtomicUsize,
}

/// Reads before the mapping: an ELF or kdump open makes about ten.
const PREAD_READS: usize = 32;
/// The largest read served by `pread` before the mapping.
const PREAD_MAX: usize = 64 << 10;

impl LazyMappedFile {
    /// `file` of `len` bytes (the caller's fstat), not mapped yet.
    pub fn new(file: File, len: u64) -> LazyMappedFile {
        LazyMappedFile {
            file,
            len,
            map: OnceLock::new(),
            small_reads: AtomicUsize::new(0),
        }
    }

    fn mapped(&self) -> Option<&MappedFile> {
        self.map
            .get_or_init(|| MappedFile::map(&self.file, self.len).ok())
            .as_ref()
    }

    /// Bytes at `offset` by `pread`, at most what the file holds there.
    fn pread(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>> {
        let left = usize::try_from(self.len.saturating_sub(offset)).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; len.min(left)];
        let n = pread_full(&self.file, offset, &mut buf)?;
        buf.truncate(n);
        Ok(Cow::Owned(buf))
    }
}

impl Medium for LazyMappedFile {
    fn size(&self) -> u64 {
        self.len
    }

    fn bytes_at(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>> {
        if self.map.get().is_none()
            && len <= PREAD_MAX
            && self.small_reads.fetch_add(1, Ordering::Relaxed) < PREAD_READS
        {
            return self.pread(offset, len);
        }
        match self.mapped() {
            Some(map) => map.bytes_at(offset, len),
            None => self.pread(offset, len),
        }
    }

    fn copy_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        pread_full(&self.file, offset, buf)
    }
}

fn pread_full(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        match file.read_at(rest, offset.saturating_add(done as u64)) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A file read with `pread`: procfs files and devices, which cannot be mapped.
pub struct PreadFile {
    file: File,
    size: u64,
}

impl PreadFile {
    pub fn new(file: File, size: u64) -> PreadFile {
        PreadFile { file, size }
    }
}

impl Medium for PreadFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn bytes_at(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>> {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let Some(rest) = buf.get_mut(done..) else {
                break;
            };
            match self.file.read_at(rest, offset.saturating_add(done as u64)) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        buf.truncate(done);
        Ok(Cow::Owned(buf))
    }
}

/// Bytes in memory as a medium: what the fuzz targets and unit tests open.
pub struct InMemory(pub Vec<u8>);

impl Medium for InMemory {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn bytes_at(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let end = start.saturating_add(len).min(self.0.len());
        Ok(Cow::Borrowed(self.0.get(start..end).unwrap_or(&[])))
    }
}

/// Reads a whole file that cannot be mapped (procfs), refusing more than `limit` bytes.
pub fn read_bounded(file: &File, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    }
    Ok(out)
}
