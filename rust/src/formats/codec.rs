//! Page codecs of kdump-compressed dumps. Each decompressed page must be exactly one page:
//! a shorter or longer result means a corrupt dump, never a partial page.

/// Page-descriptor flags (and header `status` bits) naming the codec of a page.
pub const DUMP_DH_COMPRESSED_ZLIB: u32 = 0x1;
pub const DUMP_DH_COMPRESSED_LZO: u32 = 0x2;
pub const DUMP_DH_COMPRESSED_SNAPPY: u32 = 0x4;
pub const DUMP_DH_COMPRESSED_ZSTD: u32 = 0x20;

/// The codec names of the header's `status` bits.
pub const NAMES: [(u32, &str); 4] = [
    (DUMP_DH_COMPRESSED_ZLIB, "zlib"),
    (DUMP_DH_COMPRESSED_LZO, "lzo"),
    (DUMP_DH_COMPRESSED_SNAPPY, "snappy"),
    (DUMP_DH_COMPRESSED_ZSTD, "zstd"),
];

pub const COMPRESSION_MASK: u32 = DUMP_DH_COMPRESSED_ZLIB
    | DUMP_DH_COMPRESSED_LZO
    | DUMP_DH_COMPRESSED_SNAPPY
    | DUMP_DH_COMPRESSED_ZSTD;

use std::cell::RefCell;

thread_local! {
    /// One inflater and one zstd context per thread, reset for each page: creating them
    /// allocates and clears tens of KiB, as much work as decoding a page.
    static INFLATER: RefCell<flate2::Decompress> = RefCell::new(flate2::Decompress::new(true));
    static ZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        RefCell::new(zstd::bulk::Decompressor::new().ok());
}

fn inflate(src: &[u8], page: &mut [u8]) -> Result<usize, String> {
    INFLATER.with(|cell| {
        let mut inflater = cell.try_borrow_mut().map_err(|_| "zlib: busy".to_owned())?;
        inflater.reset(true);
        match inflater.decompress(src, page, flate2::FlushDecompress::Finish) {
            // At most the page's length: the page is the only output buffer.
            Ok(flate2::Status::StreamEnd) => usize::try_from(inflater.total_out())
                .map_err(|_| "zlib output larger than memory".to_owned()),
            Ok(_) => Err("zlib data does not end within one page".into()),
            Err(e) => Err(format!("zlib: {e}")),
        }
    })
}

fn unzstd(src: &[u8], page: &mut [u8]) -> Result<usize, String> {
    ZSTD.with(|cell| {
        let mut context = cell.try_borrow_mut().map_err(|_| "zstd: busy".to_owned())?;
        match context.as_mut() {
            Some(context) => context.decompress_to_buffer(src, page),
            None => zstd::bulk::decompress_to_buffer(src, page),
        }
        .map_err(|e| format!("zstd: {e}"))
    })
}

/// Decompresses one page stored with descriptor flags `flags` into `page` (one page long).
pub fn decompress(flags: u32, src: &[u8], page: &mut [u8]) -> Result<(), String> {
    let want = page.len();
    let got = match flags & COMPRESSION_MASK {
        DUMP_DH_COMPRESSED_ZLIB => inflate(src, page)?,
        DUMP_DH_COMPRESSED_LZO => {
            lzo1x::decompress(src, page).map_err(|e| format!("lzo: {e:?}"))?;
            want
        }
        DUMP_DH_COMPRESSED_SNAPPY => {
            let len = snap::raw::decompress_len(src).map_err(|e| format!("snappy: {e}"))?;
            if len != want {
                return Err(format!("snappy page of {len} bytes"));
            }
            snap::raw::Decoder::new()
                .decompress(src, page)
                .map_err(|e| format!("snappy: {e}"))?
        }
        DUMP_DH_COMPRESSED_ZSTD => unzstd(src, page)?,
        other => return Err(format!("unsupported compression flags {other:#x}")),
    };
    if got != want {
        return Err(format!(
            "decompressed to {got} bytes, not one page of {want}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn page() -> Vec<u8> {
        (0..4096u32).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn every_codec_round_trips_one_page() {
        let original = page();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&original).unwrap();
        let cases = [
            (DUMP_DH_COMPRESSED_ZLIB, zlib.finish().unwrap()),
            (
                DUMP_DH_COMPRESSED_LZO,
                lzo1x::compress(&original, lzo1x::CompressLevel::default()),
            ),
            (
                DUMP_DH_COMPRESSED_SNAPPY,
                snap::raw::Encoder::new().compress_vec(&original).unwrap(),
            ),
            (
                DUMP_DH_COMPRESSED_ZSTD,
                zstd::bulk::compress(&original, 3).unwrap(),
            ),
        ];
        for (flag, compressed) in cases {
            let mut out = vec![0u8; 4096];
            decompress(flag, &compressed, &mut out).unwrap();
            assert_eq!(out, original, "flag {flag:#x}");
            let mut short = vec![0u8; 2048];
            assert!(
                decompress(flag, &compressed, &mut short).is_err(),
                "flag {flag:#x}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = vec![0u8; 4096];
        for flag in [
            DUMP_DH_COMPRESSED_ZLIB,
            DUMP_DH_COMPRESSED_LZO,
            DUMP_DH_COMPRESSED_SNAPPY,
            DUMP_DH_COMPRESSED_ZSTD,
        ] {
            assert!(decompress(flag, &[0xff; 64], &mut out).is_err());
            assert!(decompress(flag, &[], &mut out).is_err());
        }
    }

    #[test]
    fn a_reused_decoder_forgets_a_bad_page() {
        let original = page();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&original).unwrap();
        let good = [
            (DUMP_DH_COMPRESSED_ZLIB, zlib.finish().unwrap()),
            (
                DUMP_DH_COMPRESSED_ZSTD,
                zstd::bulk::compress(&original, 3).unwrap(),
            ),
        ];
        for (flag, compressed) in good {
            let mut out = vec![0u8; 4096];
            // Cut mid-stream: the decoder stops with state left over.
            let cut = &compressed[..compressed.len() / 2];
            assert!(decompress(flag, cut, &mut out).is_err(), "flag {flag:#x}");
            decompress(flag, &compressed, &mut out).unwrap();
            assert_eq!(out, original, "flag {flag:#x}");
        }
    }
}
