//! What an image file says about itself, read by us straight from its
//! bytes: the format (from the magic bytes), the size and transparency (from
//! the header) and where the image ends (from its structure). The limits and
//! the truncation check rely on these rather than on the decoders: image-webp
//! 0.2.4 reads a lossless side of 16384 pixels as 0, and zune-jpeg decodes a
//! JPEG cut short into grey pixels without a word.
//!
//! Nothing here decodes a pixel or allocates: each function is a walk over
//! the bytes, linear in the file at worst.

use std::fmt;

/// The formats accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    WebP,
}

impl Format {
    /// The format the magic bytes name, if one of ours.
    pub fn of(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(PNG_MAGIC) {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
            Some(Self::WebP)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::WebP => "WebP",
        }
    }

    /// The image crate's name for it, to decode with.
    pub fn image_format(self) -> image::ImageFormat {
        match self {
            Self::Png => image::ImageFormat::Png,
            Self::Jpeg => image::ImageFormat::Jpeg,
            Self::WebP => image::ImageFormat::WebP,
        }
    }
}

/// What a file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// The image has transparency (an alpha channel, or PNG's `tRNS`).
    pub has_alpha: bool,
}

/// Why a file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// Not a PNG, JPEG or WebP file.
    UnknownFormat,
    /// The bytes break the format's rules (the sentence says how).
    Malformed(String),
    /// The file stops before its image does (the sentence says where).
    Truncated(String),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFormat => f.write_str("unknown format: use PNG, JPEG or WebP"),
            Self::Malformed(why) => f.write_str(why),
            Self::Truncated(why) => write!(f, "the file looks truncated: {why}"),
        }
    }
}

impl std::error::Error for FileError {}

fn malformed(why: impl Into<String>) -> FileError {
    FileError::Malformed(why.into())
}

fn truncated(why: impl Into<String>) -> FileError {
    FileError::Truncated(why.into())
}

/// Reads the format, size and transparency from the header alone.
pub fn header(bytes: &[u8]) -> Result<Info, FileError> {
    match Format::of(bytes) {
        Some(Format::Png) => png_header(bytes),
        Some(Format::Jpeg) => jpeg_walk(bytes, true).map(|walk| walk.info),
        Some(Format::WebP) => webp_header(bytes),
        None => Err(FileError::UnknownFormat),
    }
}

/// The length of the image in `bytes`: where its structure ends (PNG's
/// IEND chunk, JPEG's end marker after the last scan, the size in WebP's
/// RIFF header). Bytes after it are not the image's; a file that ends
/// before it is truncated.
pub fn image_len(bytes: &[u8]) -> Result<usize, FileError> {
    match Format::of(bytes) {
        Some(Format::Png) => png_len(bytes),
        Some(Format::Jpeg) => jpeg_walk(bytes, false).map(|walk| walk.end),
        Some(Format::WebP) => webp_len(bytes),
        None => Err(FileError::UnknownFormat),
    }
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u16::from_be_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?) as u32)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn le16(b: &[u8], at: usize) -> Option<u32> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?) as u32)
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(3)?)?;
    Some(s[0] as u32 | (s[1] as u32) << 8 | (s[2] as u32) << 16)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// A side of 0 pixels is no image (JPEG's "height in a DNL marker" included:
/// no decoder we use reads it).
fn nonzero(format: Format, width: u32, height: u32) -> Result<(), FileError> {
    if width == 0 || height == 0 {
        return Err(malformed(format!(
            "its {} header declares a {width}x{height} image; a side of 0 pixels is not an image",
            format.name()
        )));
    }
    Ok(())
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
/// PNG's largest side and chunk length: 2^31 - 1.
const PNG_MAX: u32 = (1 << 31) - 1;

fn png_header(b: &[u8]) -> Result<Info, FileError> {
    // The IHDR chunk comes first: length 13, then width, height, bit depth
    // and colour type.
    let Some(ihdr) = b.get(8..33) else {
        return Err(truncated("the PNG ends inside its header"));
    };
    if be32(ihdr, 0) != Some(13) || &ihdr[4..8] != b"IHDR" {
        return Err(malformed("the PNG does not start with its IHDR chunk"));
    }
    let (width, height) = (be32(ihdr, 8).unwrap_or(0), be32(ihdr, 12).unwrap_or(0));
    nonzero(Format::Png, width, height)?;
    if width > PNG_MAX || height > PNG_MAX {
        return Err(malformed(format!(
            "its PNG header declares a {width}x{height} image; PNG sides are at most {PNG_MAX} pixels"
        )));
    }
    let colour = ihdr[17];
    if !matches!(colour, 0 | 2 | 3 | 4 | 6) {
        return Err(malformed(format!(
            "PNG colour type {colour} does not exist"
        )));
    }
    // Transparency is an alpha channel, or a tRNS chunk before the pixel
    // data (the decoder expands it into alpha). A broken chunk ends the
    // search: the structure check reports it.
    let mut has_alpha = matches!(colour, 4 | 6);
    let mut at = 33;
    while let Ok((kind, end)) = png_chunk(b, at) {
        match kind {
            b"IDAT" | b"IEND" => break,
            b"tRNS" => has_alpha = true,
            _ => {}
        }
        at = end;
    }
    Ok(Info {
        format: Format::Png,
        width,
        height,
        has_alpha,
    })
}

/// The PNG chunk at `at`: its type, and where it ends (after its CRC).
fn png_chunk(b: &[u8], at: usize) -> Result<(&[u8; 4], usize), FileError> {
    let (Some(len), Some(kind)) = (be32(b, at), b.get(at + 4..at + 8)) else {
        return Err(truncated("the PNG ends before its IEND chunk"));
    };
    let kind: &[u8; 4] = kind
        .try_into()
        .map_err(|_| truncated("the PNG ends before its IEND chunk"))?;
    if !kind.iter().all(u8::is_ascii_alphabetic) {
        return Err(malformed(format!(
            "the PNG has no chunk where one belongs (byte {at})"
        )));
    }
    let name = String::from_utf8_lossy(kind);
    if len > PNG_MAX {
        return Err(malformed(format!(
            "its PNG chunk {name} claims {len} bytes; PNG chunks hold at most {PNG_MAX}"
        )));
    }
    // Length, type, data and CRC.
    let whole = 12 + len as usize;
    match at.checked_add(whole) {
        Some(end) if end <= b.len() => Ok((kind, end)),
        _ => Err(truncated(format!(
            "the PNG ends inside its {name} chunk ({} of {whole} bytes)",
            b.len() - at
        ))),
    }
}

fn png_len(b: &[u8]) -> Result<usize, FileError> {
    png_header(b)?;
    let mut at = PNG_MAGIC.len();
    loop {
        let (kind, end) = png_chunk(b, at)?;
        if kind == b"IEND" {
            return Ok(end);
        }
        at = end;
    }
}

/// A JPEG's frame header and where its image ends.
struct JpegWalk {
    info: Info,
    end: usize,
}

const JPEG_TRUNCATED: &str = "the JPEG ends before its end marker (FFD9)";

/// Frame headers: every SOFn marker from C0 to CF but DHT (C4), JPG (C8)
/// and DAC (CC).
fn is_frame(code: u8) -> bool {
    matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC)
}

/// Walks a JPEG's segments from SOI: to the frame header (`header_only`),
/// or through every scan's entropy-coded data to the end marker.
fn jpeg_walk(b: &[u8], header_only: bool) -> Result<JpegWalk, FileError> {
    let mut at = 2;
    let mut info = None;
    loop {
        // A marker: FF, any number of fill bytes FF, then its code.
        match b.get(at) {
            Some(0xFF) => {}
            Some(_) => {
                return Err(malformed(format!(
                    "the JPEG has no marker where one belongs (byte {at})"
                )));
            }
            None => return Err(truncated(JPEG_TRUNCATED)),
        }
        while b.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = b.get(at + 1) else {
            return Err(truncated(JPEG_TRUNCATED));
        };
        at += 2;
        match code {
            0xD9 => {
                let info = info.ok_or_else(|| malformed("the JPEG has no frame header"))?;
                return Ok(JpegWalk { info, end: at });
            }
            // Markers without a segment.
            0x01 | 0xD0..=0xD7 => continue,
            0x00 | 0xD8 => {
                return Err(malformed(format!(
                    "the JPEG has a stray marker FF{code:02X} (byte {})",
                    at - 2
                )));
            }
            _ => {}
        }
        let Some(len) = be16(b, at) else {
            return Err(truncated(JPEG_TRUNCATED));
        };
        if len < 2 {
            return Err(malformed(format!(
                "the JPEG segment FF{code:02X} has a length of {len}"
            )));
        }
        let end = at + len as usize;
        if end > b.len() {
            return Err(truncated(JPEG_TRUNCATED));
        }
        if is_frame(code) && info.is_none() {
            // Precision, then height and width (the segment is in the file).
            let (Some(height), Some(width)) = (be16(b, at + 3), be16(b, at + 5)) else {
                return Err(truncated(JPEG_TRUNCATED));
            };
            if len < 8 {
                return Err(malformed("the JPEG's frame header is too short"));
            }
            nonzero(Format::Jpeg, width, height)?;
            let found = Info {
                format: Format::Jpeg,
                width,
                height,
                has_alpha: false,
            };
            if header_only {
                return Ok(JpegWalk {
                    info: found,
                    end: at,
                });
            }
            info = Some(found);
        }
        at = end;
        if code == 0xDA {
            if info.is_none() {
                return Err(malformed("the JPEG's scan comes before its frame header"));
            }
            at = scan_end(b, at)?;
        }
    }
}

/// Where a scan's entropy-coded data ends: at the first marker that is
/// not a stuffed zero (FF00) or a restart marker (FFD0-FFD7).
fn scan_end(b: &[u8], mut at: usize) -> Result<usize, FileError> {
    loop {
        let Some(ff) = b[at..].iter().position(|&x| x == 0xFF) else {
            return Err(truncated(JPEG_TRUNCATED));
        };
        at += ff;
        match b.get(at + 1) {
            Some(0x00 | 0xD0..=0xD7) => at += 2,
            // A fill byte before the marker.
            Some(0xFF) => at += 1,
            Some(_) => return Ok(at),
            None => return Err(truncated(JPEG_TRUNCATED)),
        }
    }
}

fn webp_header(b: &[u8]) -> Result<Info, FileError> {
    // RIFF, its size, WEBP, then the first chunk: FourCC, size, data.
    let (Some(kind), Some(data)) = (b.get(12..16), b.get(20..)) else {
        return Err(truncated("the WebP ends inside its header"));
    };
    let short = || truncated("the WebP ends inside its header");
    let (width, height, has_alpha) = match kind {
        b"VP8 " => {
            // Lossy: a frame tag (key frame: bit 0 clear), the start code,
            // then 14-bit sides (the top 2 bits scale, which decoders ignore).
            let tag = le24(data, 0).ok_or_else(short)?;
            if tag & 1 != 0 {
                return Err(malformed("the lossy WebP does not start with a key frame"));
            }
            if data.get(3..6).ok_or_else(short)? != [0x9D, 0x01, 0x2A] {
                return Err(malformed("the lossy WebP has no VP8 start code"));
            }
            let width = le16(data, 6).ok_or_else(short)? & 0x3FFF;
            let height = le16(data, 8).ok_or_else(short)? & 0x3FFF;
            (width, height, false)
        }
        b"VP8L" => {
            // Lossless: the signature 2F, then 14 bits each of width - 1 and
            // height - 1, the alpha bit and a 3-bit version (0).
            if *data.first().ok_or_else(short)? != 0x2F {
                return Err(malformed("the lossless WebP has no VP8L signature"));
            }
            let bits = le32(data, 1).ok_or_else(short)?;
            if bits >> 29 != 0 {
                return Err(malformed(format!(
                    "the lossless WebP has version {}; only 0 exists",
                    bits >> 29
                )));
            }
            let width = (bits & 0x3FFF) + 1;
            let height = ((bits >> 14) & 0x3FFF) + 1;
            (width, height, (bits >> 28) & 1 == 1)
        }
        b"VP8X" => {
            // Extended: flags (alpha: bit 4), 3 reserved bytes, then 24 bits
            // each of canvas width - 1 and height - 1.
            let flags = *data.first().ok_or_else(short)?;
            let width = le24(data, 4).ok_or_else(short)? + 1;
            let height = le24(data, 7).ok_or_else(short)? + 1;
            (width, height, flags & 0x10 != 0)
        }
        other => {
            return Err(malformed(format!(
                "the WebP's first chunk is `{}`, not VP8, VP8L or VP8X",
                other.escape_ascii()
            )));
        }
    };
    nonzero(Format::WebP, width, height)?;
    Ok(Info {
        format: Format::WebP,
        width,
        height,
        has_alpha,
    })
}

fn webp_len(b: &[u8]) -> Result<usize, FileError> {
    webp_header(b)?;
    // The RIFF size counts the bytes after itself: WEBP and every chunk.
    let size = le32(b, 4).unwrap_or(0);
    let end = 8 + size as u64;
    if size < 12 {
        return Err(malformed(format!(
            "the WebP's RIFF header says {end} bytes, too few for an image"
        )));
    }
    if end > b.len() as u64 {
        return Err(truncated(format!(
            "its RIFF header says {end} bytes, the file has {}",
            b.len()
        )));
    }
    Ok(end as usize)
}

/// Files built byte by byte, for the tests here and in [`crate::upload`].
#[cfg(test)]
pub(crate) mod fixtures {
    use super::PNG_MAGIC;

    /// The attack's file: a lossless WebP declaring 16384x16384, which
    /// image-webp 0.2.4 reads as 0x0 pixels.
    pub const ATTACK_WEBP: &[u8] = b"\x52\x49\x46\x46\x18\x00\x00\x00\x57\x45\x42\x50\x56\x50\x38\x4c\x0c\x00\x00\x00\x2f\xff\xff\xff\x1f\x28\x60\x15\x4a\xd1\xff\x00";

    /// A PNG chunk (the CRC is not checked here: zeros).
    pub fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(kind);
        out.extend(data);
        out.extend([0; 4]);
    }

    /// A PNG's structure: IHDR for `w`x`h` of `colour`, the `extra` chunks,
    /// one IDAT and IEND.
    pub fn png(w: u32, h: u32, colour: u8, extra: &[&[u8; 4]]) -> Vec<u8> {
        let mut out = PNG_MAGIC.to_vec();
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, colour, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        for kind in extra {
            chunk(&mut out, kind, &[0, 0]);
        }
        chunk(&mut out, b"IDAT", &[1, 2, 3]);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    /// A RIFF WebP holding one chunk `kind` with `data`.
    pub fn webp(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = b"RIFF".to_vec();
        out.extend((4 + 8 + data.len() as u32).to_le_bytes());
        out.extend(b"WEBP");
        out.extend(kind);
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out
    }

    pub fn vp8(w: u16, h: u16) -> Vec<u8> {
        let mut data = vec![0x50, 0x01, 0x00, 0x9D, 0x01, 0x2A];
        data.extend(w.to_le_bytes());
        data.extend(h.to_le_bytes());
        data.extend([0; 4]);
        webp(b"VP8 ", &data)
    }

    pub fn vp8l(w: u32, h: u32, alpha: bool) -> Vec<u8> {
        let bits = (w - 1) | (h - 1) << 14 | (alpha as u32) << 28;
        let mut data = vec![0x2F];
        data.extend(bits.to_le_bytes());
        data.extend([0; 3]);
        webp(b"VP8L", &data)
    }

    pub fn vp8x(w: u32, h: u32, flags: u8) -> Vec<u8> {
        let mut data = vec![flags, 0, 0, 0];
        data.extend(&(w - 1).to_le_bytes()[..3]);
        data.extend(&(h - 1).to_le_bytes()[..3]);
        webp(b"VP8X", &data)
    }

    /// A JPEG's structure: SOI, `segments` (marker code, data), EOI.
    pub fn jpeg(segments: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        for (code, data) in segments {
            out.extend([0xFF, *code]);
            if *code == 0xD9 || (0xD0..=0xD7).contains(code) {
                continue;
            }
            if *code == 0 {
                // Entropy-coded data, sent as it is.
                out.truncate(out.len() - 2);
                out.extend(*data);
                continue;
            }
            out.extend((data.len() as u16 + 2).to_be_bytes());
            out.extend(*data);
        }
        out.extend([0xFF, 0xD9]);
        out
    }

    pub fn sof(w: u16, h: u16) -> Vec<u8> {
        let mut data = vec![8];
        data.extend(h.to_be_bytes());
        data.extend(w.to_be_bytes());
        data.extend([1, 1, 0x11, 0]);
        data
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn size(bytes: &[u8]) -> (u32, u32) {
        let info = header(bytes).unwrap();
        (info.width, info.height)
    }

    fn is_malformed(r: Result<Info, FileError>) -> bool {
        matches!(r, Err(FileError::Malformed(_)))
    }

    #[test]
    fn png_headers_are_read_up_to_the_largest_side_png_allows() {
        let max = (1 << 31) - 1;
        assert_eq!(size(&png(max, 1, 0, &[])), (max, 1));
        assert_eq!(size(&png(1, max, 0, &[])), (1, max));
        assert_eq!(size(&png(1 << 30, 1 << 30, 2, &[])), (1 << 30, 1 << 30));
        assert_eq!(size(&png(16384, 16384, 2, &[])), (16384, 16384));
        for (w, h) in [(1 << 31, 1), (1, u32::MAX), (0, 5), (5, 0), (0, 0)] {
            let err = header(&png(w, h, 0, &[])).unwrap_err();
            assert!(matches!(err, FileError::Malformed(_)), "{w}x{h}: {err}");
            assert!(err.to_string().contains(&format!("{w}x{h}")), "{err}");
        }
        assert!(is_malformed(header(&png(1, 1, 5, &[]))));
        let mut no_ihdr = png(1, 1, 0, &[]);
        no_ihdr[12..16].copy_from_slice(b"IDAT");
        assert!(is_malformed(header(&no_ihdr)));
        assert!(matches!(
            header(&png(1, 1, 0, &[])[..30]),
            Err(FileError::Truncated(_))
        ));
    }

    #[test]
    fn png_transparency_is_an_alpha_channel_or_trns_before_the_pixels() {
        let alpha = |bytes: Vec<u8>| header(&bytes).unwrap().has_alpha;
        assert!(alpha(png(2, 2, 6, &[])));
        assert!(alpha(png(2, 2, 4, &[])));
        assert!(!alpha(png(2, 2, 2, &[])));
        assert!(!alpha(png(2, 2, 0, &[b"gAMA"])));
        assert!(alpha(png(2, 2, 3, &[b"PLTE", b"tRNS"])));
        assert!(alpha(png(2, 2, 2, &[b"tRNS"])));
        // After the pixels it is not a tRNS chunk decoders apply.
        let mut late = png(2, 2, 2, &[]);
        let iend = late.split_off(late.len() - 12);
        chunk(&mut late, b"tRNS", &[0, 0]);
        late.extend(iend);
        assert!(!alpha(late));
    }

    #[test]
    fn webp_headers_are_read_at_each_chunks_limits() {
        // The attack's file: VP8L at 16384x16384.
        let attack = ATTACK_WEBP;
        let info = header(attack).unwrap();
        assert_eq!(
            (info.format, info.width, info.height),
            (Format::WebP, 16384, 16384)
        );
        assert!(info.has_alpha);
        assert_eq!(image_len(attack), Ok(32));
        // Lossless: 14 bits + 1 a side, and the alpha bit.
        assert_eq!(size(&vp8l(1, 1, false)), (1, 1));
        assert_eq!(size(&vp8l(16384, 1, false)), (16384, 1));
        assert_eq!(size(&vp8l(1, 16384, false)), (1, 16384));
        assert_eq!(size(&vp8l(5000, 5000, false)), (5000, 5000));
        assert!(!header(&vp8l(4, 4, false)).unwrap().has_alpha);
        let mut version = vp8l(4, 4, false);
        version[24] |= 0x20;
        assert!(is_malformed(header(&version)));
        version[20] = 0x2E;
        assert!(is_malformed(header(&version)));
        // Lossy: 14-bit sides (the scale bits are not the size), never 0.
        assert_eq!(size(&vp8(0x3FFF, 0x3FFF)), (16383, 16383));
        assert_eq!(size(&vp8(0xFFFF, 0xC001)), (16383, 1));
        assert!(!header(&vp8(8, 8)).unwrap().has_alpha);
        for (w, h) in [(0, 8), (8, 0), (0xC000, 8)] {
            assert!(is_malformed(header(&vp8(w, h))), "{w}x{h}");
        }
        let mut inter = vp8(8, 8);
        inter[20] |= 1;
        assert!(is_malformed(header(&inter)));
        // Extended: 24 bits + 1 a side, and the alpha flag.
        assert_eq!(size(&vp8x(1 << 24, 1 << 24, 0)), (1 << 24, 1 << 24));
        assert_eq!(size(&vp8x(1, 1, 0)), (1, 1));
        assert_eq!(size(&vp8x(16384, 3, 0)), (16384, 3));
        assert!(header(&vp8x(4, 4, 0x10)).unwrap().has_alpha);
        assert!(!header(&vp8x(4, 4, 0x2C)).unwrap().has_alpha);
        // Anything else, or too short to say.
        assert!(is_malformed(header(&webp(b"ALPH", &[0; 10]))));
        assert!(matches!(
            header(&vp8x(4, 4, 0)[..25]),
            Err(FileError::Truncated(_))
        ));
    }

    #[test]
    fn jpeg_headers_are_read_from_the_frame_header_whatever_comes_first() {
        let scan: &[u8] = &[1, 1, 0, 0, 63, 0];
        assert_eq!(size(&jpeg(&[(0xC0, &sof(65535, 65535))])), (65535, 65535));
        assert_eq!(size(&jpeg(&[(0xC0, &sof(16384, 1))])), (16384, 1));
        // DHT, JPG and DAC are in the SOFn range but are not frame headers.
        let tables = jpeg(&[
            (0xE0, b"JFIF\0"),
            (0xC4, &sof(9, 9)),
            (0xC8, &sof(9, 9)),
            (0xCC, &sof(9, 9)),
            (0xC2, &sof(640, 480)),
            (0xDA, scan),
        ]);
        assert_eq!(size(&tables), (640, 480));
        for code in [
            0xC1, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF,
        ] {
            assert_eq!(size(&jpeg(&[(code, &sof(3, 2))])), (3, 2), "{code:X}");
        }
        // Fill bytes before a marker.
        let mut filled = jpeg(&[(0xC0, &sof(7, 5))]);
        filled.splice(2..2, [0xFF, 0xFF]);
        assert_eq!(size(&filled), (7, 5));
        for (w, h) in [(0, 5), (5, 0)] {
            let err = header(&jpeg(&[(0xC0, &sof(w, h))])).unwrap_err();
            assert!(err.to_string().contains(&format!("{w}x{h}")), "{err}");
        }
        assert!(is_malformed(header(&jpeg(&[(0xDA, scan)]))));
        assert!(is_malformed(header(&jpeg(&[(0xE0, b"x")]))));
        assert!(is_malformed(header(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 1])));
        assert!(matches!(
            header(&jpeg(&[(0xE0, &[0; 100]), (0xC0, &sof(8, 8))])[..60]),
            Err(FileError::Truncated(_))
        ));
    }

    #[test]
    fn a_jpeg_ends_at_its_end_marker_after_every_scan() {
        let scan: &[u8] = &[1, 1, 0, 0, 63, 0];
        // Stuffed FF00, restart markers and fill bytes are scan data.
        let data: &[u8] = &[
            0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD7, 0x78, 0xFF,
        ];
        let progressive = jpeg(&[
            (0xC2, &sof(16, 16)),
            (0xC4, &[0; 20]),
            (0xDA, scan),
            (0, data),
            (0xC4, &[0; 20]),
            (0xDA, scan),
            (0, data),
            (0xDA, scan),
            (0, &[0x9A]),
        ]);
        assert_eq!(image_len(&progressive), Ok(progressive.len()));
        let mut junk = progressive.clone();
        junk.extend([0xFF, 0xD9, 1, 2, 3]);
        assert_eq!(image_len(&junk), Ok(progressive.len()));
        for cut in [progressive.len() - 1, progressive.len() - 2, 40, 60, 80] {
            assert!(
                matches!(image_len(&progressive[..cut]), Err(FileError::Truncated(_))),
                "cut at {cut}"
            );
        }
        // The header alone reads without the scans.
        assert_eq!(size(&progressive[..40]), (16, 16));
    }

    #[test]
    fn a_png_ends_after_its_iend_chunk() {
        let whole = png(4, 4, 2, &[b"tEXt"]);
        assert_eq!(image_len(&whole), Ok(whole.len()));
        let mut junk = whole.clone();
        junk.extend(vec![7; 1000]);
        assert_eq!(image_len(&junk), Ok(whole.len()));
        for cut in [whole.len() - 1, whole.len() - 12, 40, 34] {
            let err = image_len(&whole[..cut]).unwrap_err();
            assert!(matches!(err, FileError::Truncated(_)), "{cut}: {err}");
        }
        // A chunk length beyond PNG's 2^31 - 1, or past the file.
        let mut huge = whole.clone();
        huge[33..37].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(image_len(&huge), Err(FileError::Malformed(_))));
        huge[33..37].copy_from_slice(&PNG_MAX.to_be_bytes());
        assert!(matches!(image_len(&huge), Err(FileError::Truncated(_))));
    }

    #[test]
    fn a_webp_ends_where_its_riff_header_says() {
        let whole = vp8l(4, 4, false);
        assert_eq!(image_len(&whole), Ok(whole.len()));
        let mut junk = whole.clone();
        junk.extend([0; 50]);
        assert_eq!(image_len(&junk), Ok(whole.len()));
        let n = whole.len();
        let err = image_len(&whole[..n - 1]).unwrap_err();
        assert!(matches!(err, FileError::Truncated(_)), "{err}");
        let says = format!("says {n} bytes, the file has {}", n - 1);
        assert!(err.to_string().contains(&says), "{err}");
        let mut tiny = whole;
        tiny[4..8].copy_from_slice(&4u32.to_le_bytes());
        assert!(matches!(image_len(&tiny), Err(FileError::Malformed(_))));
    }

    #[test]
    fn real_files_read_as_their_encoder_wrote_them() {
        use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
        let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(37, 21, |x, y| {
            image::Rgb([x as u8 * 7, y as u8 * 11, (x * y) as u8])
        }));
        let rgba =
            DynamicImage::ImageRgba8(RgbaImage::from_pixel(9, 13, image::Rgba([1, 2, 3, 4])));
        for (image, format, alpha) in [
            (&rgb, ImageFormat::Png, false),
            (&rgba, ImageFormat::Png, true),
            (&rgb, ImageFormat::Jpeg, false),
            (&rgb, ImageFormat::WebP, false),
            (&rgba, ImageFormat::WebP, true),
        ] {
            let mut bytes = Vec::new();
            image
                .write_to(&mut std::io::Cursor::new(&mut bytes), format)
                .unwrap();
            let info = header(&bytes).unwrap();
            assert_eq!(info.format.image_format(), format);
            assert_eq!((info.width, info.height), (image.width(), image.height()));
            assert_eq!(info.has_alpha, alpha, "{format:?}");
            assert_eq!(image_len(&bytes), Ok(bytes.len()), "{format:?}");
            let half = &bytes[..bytes.len() / 2];
            assert!(
                matches!(image_len(half), Err(FileError::Truncated(_))),
                "{format:?}"
            );
        }
        assert_eq!(header(b"GIF89a......"), Err(FileError::UnknownFormat));
        assert_eq!(image_len(b""), Err(FileError::UnknownFormat));
    }
}
