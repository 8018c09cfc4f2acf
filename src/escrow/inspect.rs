//! What a proof file is: its real type (by magic bytes, never by the declared
//! content type or name), its SHA-256, and for photos the EXIF GPS position and
//! capture time. Also the geofence check.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Jpeg,
    Png,
    Pdf,
}

impl FileType {
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
            Some(Self::Png)
        } else if bytes.starts_with(b"%PDF-") {
            Some(Self::Pdf)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Pdf => "application/pdf",
        }
    }

    pub fn is_image(self) -> bool {
        matches!(self, Self::Jpeg | Self::Png)
    }
}

/// Where and when a photo says it was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhotoMeta {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub captured_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Inspected {
    pub file_type: FileType,
    pub sha256: String,
    pub size: usize,
    pub meta: PhotoMeta,
}

/// Checks and describes an uploaded file.
pub fn inspect(bytes: &[u8], max_bytes: usize) -> Result<Inspected> {
    if bytes.is_empty() {
        return Err(Error::bad_field("file", "the file is empty"));
    }
    if bytes.len() > max_bytes {
        return Err(Error::bad_field(
            "file",
            format!("the file is larger than {max_bytes} bytes"),
        ));
    }
    let file_type = FileType::sniff(bytes)
        .ok_or_else(|| Error::bad_field("file", "a proof must be a JPEG, PNG or PDF file"))?;
    let meta = if file_type.is_image() {
        photo_meta(bytes)
    } else {
        PhotoMeta::default()
    };
    Ok(Inspected {
        file_type,
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len(),
        meta,
    })
}

/// EXIF GPS and capture time; a photo without (readable) EXIF has none.
fn photo_meta(bytes: &[u8]) -> PhotoMeta {
    let Ok(exif) = exif::Reader::new().read_from_container(&mut std::io::Cursor::new(bytes)) else {
        return PhotoMeta::default();
    };
    let coordinate = |tag, ref_tag, negative: u8| -> Option<f64> {
        let field = exif.get_field(tag, exif::In::PRIMARY)?;
        let exif::Value::Rational(parts) = &field.value else {
            return None;
        };
        if parts.len() < 3 || parts.iter().any(|r| r.denom == 0) {
            return None;
        }
        let value = parts[0].to_f64() + parts[1].to_f64() / 60.0 + parts[2].to_f64() / 3600.0;
        let sign = match exif.get_field(ref_tag, exif::In::PRIMARY).map(|f| &f.value) {
            Some(exif::Value::Ascii(v)) if v.first().and_then(|s| s.first()) == Some(&negative) => {
                -1.0
            }
            _ => 1.0,
        };
        Some(sign * value)
    };
    let latitude = coordinate(exif::Tag::GPSLatitude, exif::Tag::GPSLatitudeRef, b'S')
        .filter(|v| (-90.0..=90.0).contains(v));
    let longitude = coordinate(exif::Tag::GPSLongitude, exif::Tag::GPSLongitudeRef, b'W')
        .filter(|v| (-180.0..=180.0).contains(v));
    let ascii = |tag| -> Option<String> {
        match &exif.get_field(tag, exif::In::PRIMARY)?.value {
            exif::Value::Ascii(v) => v.first().map(|s| String::from_utf8_lossy(s).into_owned()),
            _ => None,
        }
    };
    let captured_at = ascii(exif::Tag::DateTimeOriginal)
        .or_else(|| ascii(exif::Tag::DateTime))
        .and_then(|raw| {
            let local = NaiveDateTime::parse_from_str(raw.trim(), "%Y:%m:%d %H:%M:%S").ok()?;
            // The offset tag (EXIF 2.31) when present; otherwise the clock is taken as UTC.
            let offset = ascii(exif::Tag::OffsetTimeOriginal)
                .and_then(|o| parse_offset(o.trim()))
                .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"));
            offset
                .from_local_datetime(&local)
                .single()
                .map(|t| t.with_timezone(&Utc))
        });
    PhotoMeta {
        latitude: latitude.and(longitude).and(latitude),
        longitude: latitude.and(longitude),
        captured_at,
    }
}

fn parse_offset(raw: &str) -> Option<FixedOffset> {
    let (sign, rest) = match raw.as_bytes().first()? {
        b'+' => (1, &raw[1..]),
        b'-' => (-1, &raw[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let secs = h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60;
    FixedOffset::east_opt(sign * secs)
}

/// Great-circle distance in metres (haversine on a 6,371,008.8 m sphere).
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const R: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * R * a.sqrt().asin()
}

/// Builds a JPEG with EXIF GPS and capture time from the bundled sample picture:
/// the demo's photo proof and the tests' photos come from here.
pub fn sample_photo(latitude: f64, longitude: f64, captured_at: DateTime<Utc>) -> Vec<u8> {
    use exif::{Field, In, Rational, Tag, Value, experimental::Writer};
    const SAMPLE: &[u8] = include_bytes!("../../assets/sample-photo.jpg");
    fn dms(v: f64) -> Value {
        let v = v.abs();
        let deg = v.trunc();
        let min = ((v - deg) * 60.0).trunc();
        let sec_milli = ((v - deg - min / 60.0) * 3_600_000.0).round();
        Value::Rational(vec![
            Rational::from((deg as u32, 1)),
            Rational::from((min as u32, 1)),
            Rational::from((sec_milli as u32, 1000)),
        ])
    }
    let ascii = |s: &str| Value::Ascii(vec![s.as_bytes().to_vec()]);
    let fields = [
        Field {
            tag: Tag::DateTimeOriginal,
            ifd_num: In::PRIMARY,
            value: ascii(&captured_at.format("%Y:%m:%d %H:%M:%S").to_string()),
        },
        Field {
            tag: Tag::OffsetTimeOriginal,
            ifd_num: In::PRIMARY,
            value: ascii("+00:00"),
        },
        Field {
            tag: Tag::GPSLatitudeRef,
            ifd_num: In::PRIMARY,
            value: ascii(if latitude < 0.0 { "S" } else { "N" }),
        },
        Field {
            tag: Tag::GPSLatitude,
            ifd_num: In::PRIMARY,
            value: dms(latitude),
        },
        Field {
            tag: Tag::GPSLongitudeRef,
            ifd_num: In::PRIMARY,
            value: ascii(if longitude < 0.0 { "W" } else { "E" }),
        },
        Field {
            tag: Tag::GPSLongitude,
            ifd_num: In::PRIMARY,
            value: dms(longitude),
        },
    ];
    let mut writer = Writer::new();
    for field in &fields {
        writer.push_field(field);
    }
    let mut tiff = std::io::Cursor::new(Vec::new());
    if writer.write(&mut tiff, false).is_err() {
        return SAMPLE.to_vec();
    }
    let tiff = tiff.into_inner();
    // SOI, then an APP1 "Exif" segment, then the rest of the sample (minus its SOI).
    let mut out = Vec::with_capacity(SAMPLE.len() + tiff.len() + 10);
    out.extend_from_slice(&SAMPLE[..2]);
    out.extend_from_slice(&[0xFF, 0xE1]);
    let len = u16::try_from(tiff.len() + 8).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&SAMPLE[2..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_magic_bytes() {
        assert_eq!(FileType::sniff(b"%PDF-1.7\n"), Some(FileType::Pdf));
        assert_eq!(
            FileType::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(FileType::Jpeg)
        );
        assert_eq!(FileType::sniff(b"GIF89a"), None);
        assert_eq!(FileType::sniff(b"<html>"), None);
        assert!(inspect(b"", 10).is_err());
        assert!(inspect(b"%PDF-1.7 too long", 5).is_err());
    }

    #[test]
    fn reads_gps_and_time_back_from_a_sample_photo() {
        let at = Utc.with_ymd_and_hms(2026, 11, 20, 9, 30, 15).unwrap();
        let photo = sample_photo(48.858_37, -2.294_481, at);
        let inspected = inspect(&photo, 1 << 20).unwrap();
        assert_eq!(inspected.file_type, FileType::Jpeg);
        let meta = inspected.meta;
        assert!(
            (meta.latitude.unwrap() - 48.858_37).abs() < 1e-5,
            "{meta:?}"
        );
        assert!(
            (meta.longitude.unwrap() + 2.294_481).abs() < 1e-5,
            "{meta:?}"
        );
        assert_eq!(meta.captured_at, Some(at));
        let south = inspect(&sample_photo(-33.86, 151.2, at), 1 << 20).unwrap();
        assert!(south.meta.latitude.unwrap() < 0.0);
    }

    #[test]
    fn distances_are_plausible() {
        // Eiffel Tower to the Arc de Triomphe: about 2.2 km.
        let d = distance_m(48.858_37, 2.294_481, 48.873_79, 2.295_028);
        assert!((1_600.0..1_800.0).contains(&d), "{d}");
        assert!(distance_m(10.0, 10.0, 10.0, 10.0) < 1e-6);
    }
}
