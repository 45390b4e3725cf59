//! One reference case: the inputs kflow gets and what the izer made of
//! them (tests/data/izer-reference/README.md).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/izer-reference");

/// An int8 or int32 `.npy` array, C order.
pub struct Npy {
    pub shape: Vec<usize>,
    pub values: Vec<i32>,
}

/// Fortran-order `values` of `shape` in C order.
fn c_order(shape: &[usize], values: &[i32]) -> Vec<i32> {
    (0..values.len())
        .map(|mut c| {
            // The C-order index's coordinates, last dimension fastest, as a
            // Fortran-order index (first dimension fastest).
            let mut coords = vec![0; shape.len()];
            for (d, n) in shape.iter().enumerate().rev() {
                coords[d] = c % n;
                c /= n;
            }
            let f = coords.iter().zip(shape).rev().fold(0, |acc, (i, n)| acc * n + i);
            values[f]
        })
        .collect()
}

/// Reads the `.npy` files of the reference (version 1.0, `|i1` or `<i4`;
/// some are in Fortran order).
pub fn read_npy(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    let fortran = header.contains("'fortran_order': True");
    let int32 = header.contains("'<i4'");
    assert!(int32 || header.contains("'|i1'"), "{header}");
    let dims = &header[header.find("'shape': (").unwrap() + 10..];
    let dims = &dims[..dims.find(')').unwrap()];
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().unwrap())
        .collect();
    let data = &bytes[10 + header_len..];
    let values: Vec<i32> = if int32 {
        data.chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        data.iter().map(|b| i32::from(*b as i8)).collect()
    };
    assert_eq!(values.len(), shape.iter().product::<usize>());
    let values = if fortran { c_order(&shape, &values) } else { values };
    Npy { shape, values }
}

pub struct Case {
    pub dir: PathBuf,
    pub izer: Value,
}

impl Case {
    pub fn load(name: &str) -> Case {
        let dir = Path::new(DATA).join(name);
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.join("izer.json.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        Case {
            izer: serde_json::from_str(&text).unwrap(),
            dir,
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn max78000(&self) -> bool {
        self.izer["device"] == "MAX78000"
    }
}

/// Every case folder, in name order.
pub fn all() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(DATA)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("izer.json.gz").exists())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A hex string, or a plain integer (the unload map's addresses are).
pub fn hex(v: &Value) -> u32 {
    match v.as_str() {
        Some(s) => u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap(),
        None => u32::try_from(v.as_u64().unwrap()).unwrap(),
    }
}

/// `[[address, value], …]` as pairs.
pub fn pairs(v: &Value) -> Vec<(u32, u32)> {
    v.as_array()
        .map(|a| a.iter().map(|p| (hex(&p[0]), hex(&p[1]))).collect())
        .unwrap_or_default()
}

/// `[[address, [words…]], …]` as chunks.
pub fn chunks(v: &Value) -> Vec<(u32, Vec<u32>)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|c| (hex(&c[0]), c[1].as_array().unwrap().iter().map(hex).collect()))
                .collect()
        })
        .unwrap_or_default()
}
