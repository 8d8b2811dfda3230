//! Reference statistics as `.npz` (a zip of `.npy` arrays) with `mu` `[d]` and `sigma` `[d, d]`:
//! the format pytorch-fid writes with `--save-stats` and reads for published statistics.
//!
//! Reading accepts what numpy writes: stored or deflated entries (`savez`,
//! `savez_compressed`), `.npy` versions 1–3, little- or big-endian f4/f8, C or Fortran order.
//! Sizes are checked against the entry's length before anything is allocated. Writing produces
//! `.npy` 1.0 little-endian f8, C order, stored: what `numpy.load` reads.

use std::io::{Cursor, Read, Write};

use super::fid::Gaussian;

/// Largest array accepted (bytes): a 2048 × 2048 f8 covariance is 32 MiB.
const MAX_ARRAY_BYTES: u64 = 1 << 31;

/// An n-dimensional f64 array in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// Reads `name` (without `.npy`) from the `.npz` bytes.
pub fn read_array(npz: &[u8], name: &str) -> Result<Array, String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(npz))
        .map_err(|e| format!("not a readable .npz (zip) file: {e}"))?;
    let mut entry = zip
        .by_name(&format!("{name}.npy"))
        .map_err(|_| format!("no array `{name}` in the .npz file"))?;
    if entry.size() > MAX_ARRAY_BYTES {
        return Err(format!(
            "array `{name}` is {} bytes; the limit is {MAX_ARRAY_BYTES}",
            entry.size()
        ));
    }
    // Grown as the bytes arrive: the size a zip header claims is not reserved up front.
    let mut bytes = Vec::new();
    entry
        .by_ref()
        .take(MAX_ARRAY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("array `{name}`: {e}"))?;
    parse_npy(&bytes).map_err(|e| format!("array `{name}`: {e}"))
}

/// Parses one `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy array (bad magic)".into());
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = bytes
        .get(start..start.saturating_add(header_len))
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let field = |key: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or(format!("the .npy header has no '{key}'"))?;
        let rest = &header[at + key.len() + 2..];
        Ok(rest.trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("unreadable 'descr'")?;
    let (big_endian, width) = match descr {
        "<f8" | "=f8" => (false, 8),
        "<f4" | "=f4" => (false, 4),
        ">f8" => (true, 8),
        ">f4" => (true, 4),
        other => return Err(format!("dtype {other:?} is not f4 or f8")),
    };
    let fortran = field("fortran_order")?.starts_with("True");
    let shape_text = field("shape")?;
    let shape_text = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("unreadable 'shape'")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension {s:?} in 'shape'"))
        })
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("the shape overflows")?;
    let data = &bytes[start + header_len..];
    if count.checked_mul(width) != Some(data.len()) {
        return Err(format!(
            "shape {shape:?} needs {count} values of {width} bytes, the data holds {} bytes",
            data.len()
        ));
    }
    let mut values: Vec<f64> = data
        .chunks_exact(width)
        .map(|c| match (width, big_endian) {
            (8, false) => f64::from_le_bytes(c.try_into().unwrap_or_default()),
            (8, true) => f64::from_be_bytes(c.try_into().unwrap_or_default()),
            (_, false) => f32::from_le_bytes(c.try_into().unwrap_or_default()) as f64,
            (_, true) => f32::from_be_bytes(c.try_into().unwrap_or_default()) as f64,
        })
        .collect();
    if fortran && shape.len() >= 2 {
        values = fortran_to_c(&values, &shape);
    }
    Ok(Array { shape, values })
}

/// Reorders column-major (first index fastest) values into row-major.
fn fortran_to_c(values: &[f64], shape: &[usize]) -> Vec<f64> {
    let n = values.len();
    let mut out = vec![0.0; n];
    let mut index = vec![0usize; shape.len()];
    for &v in values {
        // `index` walks the array in Fortran order; write at its C-order offset.
        let c = index
            .iter()
            .zip(shape)
            .fold(0usize, |acc, (&i, &d)| acc * d + i);
        out[c] = v;
        for (i, &d) in index.iter_mut().zip(shape) {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// Reads FID reference statistics (`mu` `[d]`, `sigma` `[d, d]`).
pub fn read_stats(npz: &[u8]) -> Result<Gaussian, String> {
    let mu = read_array(npz, "mu")?;
    let sigma = read_array(npz, "sigma")?;
    let d = match mu.shape.as_slice() {
        [d] => *d,
        s => return Err(format!("`mu` has shape {s:?}, not [d]")),
    };
    if sigma.shape != [d, d] {
        return Err(format!(
            "`sigma` has shape {:?}, not [{d}, {d}]",
            sigma.shape
        ));
    }
    Ok(Gaussian {
        mu: mu.values,
        sigma: sigma.values,
        count: 0,
    })
}

/// `.npy` 1.0 bytes of an f8 C-order array.
fn npy_bytes(shape: &[usize], values: &[f64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that magic + version + length + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// `.npz` bytes holding `mu` and `sigma` of `stats`.
pub fn write_stats(stats: &Gaussian) -> Result<Vec<u8>, String> {
    let d = stats.mu.len();
    if stats.sigma.len() != d * d {
        return Err(format!(
            "sigma has {} values, not {d} × {d}",
            stats.sigma.len()
        ));
    }
    write_arrays(&[("mu", &[d], &stats.mu), ("sigma", &[d, d], &stats.sigma)])
}

/// `.npz` bytes holding each `(name, shape, values)` as `name.npy` (f8, C order, stored).
pub fn write_arrays(arrays: &[(&str, &[usize], &[f64])]) -> Result<Vec<u8>, String> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for &(name, shape, values) in arrays {
        if shape.iter().product::<usize>() != values.len() {
            return Err(format!(
                "array `{name}` has {} values, not {shape:?}",
                values.len()
            ));
        }
        zip.start_file(format!("{name}.npy"), options)
            .map_err(|e| e.to_string())?;
        zip.write_all(&npy_bytes(shape, values))
            .map_err(|e| e.to_string())?;
    }
    Ok(zip.finish().map_err(|e| e.to_string())?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MU: [f64; 3] = [0.5, -1.25, 3.0];
    const SIGMA: [f64; 9] = [2.0, 0.5, 0.0, 0.5, 1.0, -0.25, 0.0, -0.25, 4.0];

    fn asset(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/npz/");
        std::fs::read(format!("{path}{name}")).unwrap()
    }

    #[test]
    fn reads_what_numpy_wrote() {
        let st = read_stats(&asset("stats-numpy.npz")).unwrap();
        assert_eq!(st.mu, MU);
        assert_eq!(st.sigma, SIGMA);
        // f4, deflated, Fortran order (values exact in f4).
        let npz = asset("stats-numpy-compressed.npz");
        let st = read_stats(&npz).unwrap();
        assert_eq!(st.mu, MU);
        assert_eq!(st.sigma, SIGMA);
        let extra = read_array(&npz, "extra").unwrap();
        assert_eq!(extra.shape, vec![2, 3]);
        assert_eq!(extra.values, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn round_trip_and_bad_files() {
        let st = Gaussian {
            mu: MU.to_vec(),
            sigma: SIGMA.to_vec(),
            count: 7,
        };
        let bytes = write_stats(&st).unwrap();
        let back = read_stats(&bytes).unwrap();
        assert_eq!((back.mu, back.sigma), (st.mu.clone(), st.sigma.clone()));
        // The .npy header is 64-byte aligned, as numpy writes it.
        let npy = npy_bytes(&[3], &MU);
        assert_eq!((npy.len() - 3 * 8) % 64, 0);
        assert!(read_stats(b"PK not a zip").is_err());
        assert!(read_stats(&bytes[..bytes.len() / 2]).is_err());
        let e = read_array(&bytes, "nope").unwrap_err();
        assert!(e.contains("no array `nope`"), "{e}");
        for (bad, needle) in [
            (b"\x93NUMPX\x01\x00\x00\x00".to_vec(), "magic"),
            (b"\x93NUMPY\x09\x00\x00\x00".to_vec(), "version 9"),
            (b"\x93NUMPY\x01\x00\xff\x00{".to_vec(), "truncated"),
        ] {
            let e = parse_npy(&bad).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        let mut short = npy_bytes(&[3], &MU);
        short.pop();
        assert!(parse_npy(&short).unwrap_err().contains("needs 3 values"));
        let huge = npy_bytes(&[usize::MAX, 2], &[]);
        assert!(parse_npy(&huge).unwrap_err().contains("overflows"));
        let mut not_square = st.clone();
        not_square.sigma.pop();
        assert!(write_stats(&not_square).is_err());
    }
}
