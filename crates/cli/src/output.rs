//! Reading text input, writing embeddings and files atomically, and the notices every
//! command prints the same way.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use lcm_workflows::store::BankNotice;

/// Lines of UTF-8 text from `file` or standard input, read one at a time so that memory stays
/// bounded by the longest line; invalid UTF-8 is reported with its line.
pub struct TextLines {
    reader: Box<dyn BufRead>,
    name: String,
    line: usize,
}

impl TextLines {
    pub fn open(file: Option<&Path>) -> Result<Self> {
        let (reader, name): (Box<dyn BufRead>, String) = match file {
            Some(path) => {
                let handle = std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                (
                    Box::new(std::io::BufReader::new(handle)),
                    path.display().to_string(),
                )
            }
            None => (
                Box::new(std::io::BufReader::new(std::io::stdin())),
                "<stdin>".to_string(),
            ),
        };
        Ok(Self {
            reader,
            name,
            line: 0,
        })
    }
}

impl Iterator for TextLines {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        let mut bytes = Vec::new();
        match self.reader.read_until(b'\n', &mut bytes) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e).with_context(|| format!("cannot read {}", self.name))),
        }
        self.line += 1;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Some(String::from_utf8(bytes).map_err(|error| {
            anyhow::anyhow!(
                "{}: line {}: invalid UTF-8 (byte offset {} of the line); convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
                self.name,
                self.line,
                error.utf8_error().valid_up_to()
            )
        }))
    }
}

/// Reads UTF-8 text from `file` or standard input; invalid UTF-8 is reported with its line.
pub fn read_text(file: Option<&Path>) -> Result<String> {
    let mut bytes = Vec::new();
    let name = match file {
        Some(path) => {
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .with_context(|| format!("cannot read {}", path.display()))?;
            path.display().to_string()
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            "<stdin>".to_string()
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(error) => {
            let valid = error.utf8_error().valid_up_to();
            let line = error.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            bail!(
                "{name}: line {line}: invalid UTF-8 (byte offset {valid}); convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
            )
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename
/// ([`lcm_util::fs::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(lcm_util::fs::write_atomic(path, bytes)?)
}

/// Tells the user why the first command on a store takes longer: its sentence bank is
/// being built (once).
pub fn bank_notice(notice: BankNotice<'_>) {
    match notice {
        BankNotice::Building { bank, store } => eprintln!(
            "building the sentence bank {} from {} (once)…",
            bank.display(),
            store.display()
        ),
        BankNotice::Built(report) => eprintln!(
            "{} distinct sentences ({} duplicates skipped)",
            report.unique, report.duplicates
        ),
    }
}

/// NumPy `.npy` (format 1.0) bytes of a row-major little-endian f32 `[rows, cols]` matrix.
pub fn npy_bytes(values: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + values.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// safetensors bytes holding `embeddings` `[rows, cols]` and the given metadata.
pub fn safetensors_bytes(
    values: &[f32],
    rows: usize,
    cols: usize,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows, cols], &data)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    safetensors::serialize([("embeddings", view)], Some(metadata))
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_describes_the_matrix() {
        let bytes = npy_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("ascii");
        assert!(header.contains("'shape': (2, 3)"));
        assert!(header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + header_len + 24);
        assert_eq!(
            &bytes[10 + header_len..14 + header_len],
            &1f32.to_le_bytes()
        );
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, b"fine\nalso fine\nbad \xff byte\n").expect("write");
        let error = read_text(Some(&path)).expect_err("invalid");
        let message = error.to_string();
        assert!(
            message.contains("line 3") && message.contains("bad.txt"),
            "{message}"
        );
    }
}
