//! TensorBoard event files: the scalars of every `metrics.jsonl` line, written beside it by
//! the training loop so that `tensorboard --logdir RUN` (or a parent of many runs) shows
//! them.
//!
//! # Format
//!
//! An event file (`events.out.tfevents.<unix secs>.<host>.<pid>.<n>`) is a TFRecord
//! stream. Each record is
//!
//! ```text
//! u64 LE length | u32 LE masked CRC32C(length bytes) | data | u32 LE masked CRC32C(data)
//! ```
//!
//! with `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8` (wrapping), and the data a
//! serialised `tensorflow.Event` protobuf, of which this module writes (and reads back)
//! only the fields it needs:
//!
//! ```text
//! Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//!              Summary summary = 5; SessionLog session_log = 7; }
//! Summary    { repeated Value value = 1; }
//! Value      { string tag = 1; float simple_value = 2; }
//! SessionLog { SessionStatus status = 1; }   // START = 1
//! ```
//!
//! The first record of every file carries `file_version = "brain.Event:2"`. The protobuf
//! encoding (varints, fixed64/fixed32, length-delimited messages) and CRC32C are written
//! here: a few dozen lines, instead of a protobuf stack.
//!
//! # Tags
//!
//! [`scalars_of`] turns a metrics line (any trainer's, as JSON) into tags: `step` is the
//! event's step; `valid_X` → `valid/X`; `lr`, `grad_norm` → `optim/…`; `X_per_s` →
//! `throughput/X_per_s`; `concepts`, `tokens` (per batch) → `batch/…`; `seconds`,
//! `elapsed_s` → `time/…`; a nested object `K` (the world model's `collapse`) → `K/…`
//! with array elements as `K/name/i` (zero-padded, so TensorBoard sorts them); every other
//! number → `train/X`. Strings, booleans and nulls (a NaN serialises as null) are skipped.
//!
//! # Runs and resumption
//!
//! Every invocation of the loop writes a new file, flushed after every record so that a
//! killed run leaves readable records. A fresh run removes the event files of an earlier
//! attempt in its directory (as it empties `metrics.jsonl`); a resumed run first cuts the
//! existing files back to the checkpoint's step ([`truncate_events`], an atomic rewrite
//! that also drops a torn last record, as `metrics.jsonl` is cut back), then appends a
//! new file opening with a `SessionLog.START` event at the first new step, TensorFlow's
//! restart marker. TensorBoard merges the files of a directory in name order.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::{Result, TrainError, io_err};

/// What every event file's name starts with (TensorBoard looks for `tfevents`).
pub const EVENT_FILE_PREFIX: &str = "events.out.tfevents.";
/// The `file_version` of the first record of a file.
pub const FILE_VERSION: &str = "brain.Event:2";

const MASK_DELTA: u32 = 0xa282_ead8;
/// Bytes of framing around a record's data: length, its CRC, the data's CRC.
const FRAMING: usize = 8 + 4 + 4;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bytewise from a 256-entry table.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The TFRecord mask of a CRC.
pub fn masked_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// One TFRecord: `data` with its length, and both masked CRCs.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + FRAMING);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(crc32c(&len)).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(crc32c(data)).to_le_bytes());
    out
}

/// A record that is torn or fails its CRC: its byte offset and what is wrong.
type Broken = Option<(usize, String)>;

/// The records of a TFRecord stream, each with its byte offset, up to the first record that
/// is torn or fails its CRC; that one is reported instead.
fn split_records(bytes: &[u8]) -> (Vec<(usize, &[u8])>, Broken) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 12 {
            return (records, Some((at, "truncated record header".into())));
        }
        let (len_bytes, rest) = rest.split_at(8);
        let stored = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if stored != masked_crc(crc32c(len_bytes)) {
            return (records, Some((at, "length CRC mismatch".into())));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(len_bytes);
        let len = u64::from_le_bytes(len8);
        let rest = &rest[4..];
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|&l| l.checked_add(4).is_some_and(|n| n <= rest.len()))
        else {
            return (
                records,
                Some((at, format!("truncated record of {len} bytes"))),
            );
        };
        let (data, tail) = rest.split_at(len);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if stored != masked_crc(crc32c(data)) {
            return (records, Some((at, "data CRC mismatch".into())));
        }
        records.push((at, data));
        at += len + FRAMING;
    }
    (records, None)
}

/// The decoded events of an event file; any torn or corrupt record is an error.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let (records, broken) = split_records(&bytes);
    if let Some((offset, reason)) = broken {
        return Err(event_err(path, offset, reason));
    }
    records
        .into_iter()
        .map(|(offset, data)| Event::decode(data).map_err(|reason| event_err(path, offset, reason)))
        .collect()
}

fn event_err(path: &Path, offset: usize, reason: String) -> TrainError {
    TrainError::EventFile {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

/// The event files of `dir`, in the order TensorBoard reads them (by name).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        let is_events = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|name| name.starts_with(EVENT_FILE_PREFIX) && !name.ends_with(".tmp"));
        if is_events && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Cuts the event files of `dir` back to step `max_step`: a file holding an event of a
/// later step, or a torn or corrupt record, is replaced (atomically) by its valid records of
/// steps up to `max_step`. What a resumed run reproduces from its checkpoint on is then not
/// shown twice. Returns the number of records dropped.
pub fn truncate_events(dir: &Path, max_step: u64) -> Result<usize> {
    let mut dropped = 0;
    for path in event_files(dir)? {
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let (records, broken) = split_records(&bytes);
        let total = records.len() + usize::from(broken.is_some());
        let kept: Vec<&[u8]> = records
            .into_iter()
            .map(|(_, data)| data)
            .filter(|data| Event::decode(data).is_ok_and(|e| e.step <= max_step as i64))
            .collect();
        if kept.len() == total {
            continue;
        }
        dropped += total - kept.len();
        let out: Vec<u8> = kept.into_iter().flat_map(frame).collect();
        lcm_util::fs::write_atomic(&path, &out).map_err(|e| TrainError::Io {
            path: e.path,
            source: e.source,
        })?;
    }
    Ok(dropped)
}

/// Removes the event files of `dir` (a fresh run replacing an earlier attempt).
pub fn remove_events(dir: &Path) -> Result<()> {
    for path in event_files(dir)? {
        fs::remove_file(&path).map_err(io_err(&path))?;
    }
    Ok(())
}

/// The TensorBoard scalars of one metrics line, named as the module documentation says.
pub fn scalars_of(metrics: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Value::Object(map) = metrics else {
        return out;
    };
    for (key, value) in map {
        if key == "step" {
            continue;
        }
        let tag = if let Some(rest) = key.strip_prefix("valid_") {
            format!("valid/{rest}")
        } else if matches!(key.as_str(), "lr" | "grad_norm") {
            format!("optim/{key}")
        } else if key.ends_with("_per_s") {
            format!("throughput/{key}")
        } else if matches!(key.as_str(), "concepts" | "tokens") {
            format!("batch/{key}")
        } else if matches!(key.as_str(), "seconds" | "elapsed_s") {
            format!("time/{key}")
        } else if value.is_object() {
            key.clone()
        } else {
            format!("train/{key}")
        };
        flatten(&tag, value, &mut out);
    }
    out
}

fn flatten(tag: &str, value: &Value, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((tag.to_string(), x));
            }
        }
        Value::Object(map) => {
            for (key, value) in map {
                flatten(&format!("{tag}/{key}"), value, out);
            }
        }
        Value::Array(items) => {
            let width = items.len().saturating_sub(1).to_string().len();
            for (i, value) in items.iter().enumerate() {
                flatten(&format!("{tag}/{i:0width$}"), value, out);
            }
        }
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// The fields of a `tensorflow.Event` this module writes and reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    pub step: i64,
    /// Set on the first record of a file.
    pub file_version: Option<String>,
    /// `Summary.value`: (tag, simple_value).
    pub scalars: Vec<(String, f32)>,
    /// A `SessionLog` with status `START` (a restarted run).
    pub session_start: bool,
}

impl Event {
    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        key(&mut out, 1, 1);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        if self.step != 0 {
            key(&mut out, 2, 0);
            varint(&mut out, self.step as u64);
        }
        if let Some(version) = &self.file_version {
            bytes_field(&mut out, 3, version.as_bytes());
        }
        if !self.scalars.is_empty() {
            let mut summary = Vec::new();
            for (tag, value) in &self.scalars {
                let mut v = Vec::new();
                bytes_field(&mut v, 1, tag.as_bytes());
                key(&mut v, 2, 5);
                v.extend_from_slice(&value.to_le_bytes());
                bytes_field(&mut summary, 1, &v);
            }
            bytes_field(&mut out, 5, &summary);
        }
        if self.session_start {
            let mut log = Vec::new();
            key(&mut log, 1, 0);
            varint(&mut log, 1);
            bytes_field(&mut out, 7, &log);
        }
        out
    }

    /// Decodes an `Event`, skipping the fields this module does not know.
    pub fn decode(data: &[u8]) -> std::result::Result<Event, String> {
        let mut event = Event::default();
        for field in Fields(data) {
            match field? {
                (1, Wire::Fixed64(bits)) => event.wall_time = f64::from_bits(bits),
                (2, Wire::Varint(step)) => event.step = step as i64,
                (3, Wire::Bytes(version)) => {
                    event.file_version = Some(
                        String::from_utf8(version.to_vec())
                            .map_err(|_| "file_version is not UTF-8")?,
                    )
                }
                (5, Wire::Bytes(summary)) => {
                    for value in Fields(summary) {
                        if let (1, Wire::Bytes(value)) = value? {
                            let mut tag = None;
                            let mut simple = None;
                            for f in Fields(value) {
                                match f? {
                                    (1, Wire::Bytes(t)) => {
                                        tag = Some(
                                            String::from_utf8(t.to_vec())
                                                .map_err(|_| "tag is not UTF-8")?,
                                        )
                                    }
                                    (2, Wire::Fixed32(bits)) => simple = Some(f32::from_bits(bits)),
                                    _ => {}
                                }
                            }
                            if let (Some(tag), Some(simple)) = (tag, simple) {
                                event.scalars.push((tag, simple));
                            }
                        }
                    }
                }
                (7, Wire::Bytes(log)) => {
                    for f in Fields(log) {
                        if let (1, Wire::Varint(1)) = f? {
                            event.session_start = true;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(event)
    }
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from((field << 3) | wire));
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The (field number, value) pairs of a protobuf message.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("field of {n} bytes overruns the message"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn field(&mut self) -> std::result::Result<(u64, Wire<'a>), String> {
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(self.take(8)?);
                Wire::Fixed64(u64::from_le_bytes(b))
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                let mut b = [0u8; 4];
                b.copy_from_slice(self.take(4)?);
                Wire::Fixed32(u32::from_le_bytes(b))
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok((key >> 3, wire))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = std::result::Result<(u64, Wire<'a>), String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name for event file names (`localhost` when unknown), reduced to
/// `[A-Za-z0-9._-]`.
fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Appends events to a new event file; every record is written whole and flushed.
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// Creates a new event file in `dir` (never an existing one: the name carries the
    /// time, host, process and a counter) and writes its `file_version` record.
    pub fn create(dir: &Path) -> Result<Self> {
        let wall_time = now();
        let stem = format!(
            "{EVENT_FILE_PREFIX}{:010}.{}.{}",
            wall_time as u64,
            hostname(),
            std::process::id()
        );
        let mut n = 0u32;
        let (file, path) = loop {
            let path = dir.join(format!("{stem}.{n}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(io_err(&path)(e)),
            }
        };
        let mut writer = Self { file, path };
        writer.write(&Event {
            wall_time,
            file_version: Some(FILE_VERSION.into()),
            ..Event::default()
        })?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event as a record and flushes it.
    pub fn write(&mut self, event: &Event) -> Result<()> {
        let record = frame(&event.encode());
        self.file
            .write_all(&record)
            .and_then(|()| self.file.flush())
            .map_err(io_err(&self.path))
    }

    /// A `SessionLog.START` at `step`: readers discard what earlier files logged from
    /// `step` on (TensorFlow's marker of a restarted run).
    pub fn session_start(&mut self, step: u64) -> Result<()> {
        self.write(&Event {
            wall_time: now(),
            step: step as i64,
            session_start: true,
            ..Event::default()
        })
    }

    /// The scalars of one step (nothing is written when there are none).
    pub fn scalars(&mut self, step: u64, scalars: &[(String, f64)]) -> Result<()> {
        if scalars.is_empty() {
            return Ok(());
        }
        self.write(&Event {
            wall_time: now(),
            step: step as i64,
            scalars: scalars
                .iter()
                .map(|(tag, v)| (tag.clone(), *v as f32))
                .collect(),
            ..Event::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_known_vectors() {
        // The check value of CRC-32C and the RFC 3720 (iSCSI) appendix B.4 vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn masked_crc_is_tensorflows_mask() {
        // ((crc >> 15) | (crc << 17)) + 0xa282ead8, wrapping.
        assert_eq!(masked_crc(0), 0xa282_ead8);
        assert_eq!(masked_crc(1), 0x0002_0000u32.wrapping_add(0xa282_ead8));
        assert_eq!(masked_crc(0x8000), 0xa282_ead9);
        // Values of tensorboard's own `masked_crc32c` (2.21.0).
        assert_eq!(masked_crc(crc32c(b"123456789")), 0xc78a_b0e5);
        assert_eq!(masked_crc(crc32c(&3u64.to_le_bytes())), 0x0e49_99b0);
        assert_eq!(masked_crc(crc32c(b"abc")), 0x21f1_576e);
    }

    #[test]
    fn a_record_is_length_crc_data_crc() {
        let record = frame(b"abc");
        assert_eq!(record.len(), 3 + FRAMING);
        assert_eq!(&record[..8], &3u64.to_le_bytes());
        let len_crc = u32::from_le_bytes(record[8..12].try_into().unwrap());
        assert_eq!(len_crc, masked_crc(crc32c(&3u64.to_le_bytes())));
        assert_eq!(&record[12..15], b"abc");
        let data_crc = u32::from_le_bytes(record[15..19].try_into().unwrap());
        assert_eq!(data_crc, masked_crc(crc32c(b"abc")));
        // A bit flipped anywhere is caught, and a torn tail is reported at its offset.
        let two: Vec<u8> = [frame(b"one"), frame(b"two")].concat();
        let (records, broken) = split_records(&two);
        assert_eq!(records.len(), 2);
        assert!(broken.is_none());
        let mut flipped = two.clone();
        flipped[13] ^= 1;
        let (records, broken) = split_records(&flipped);
        assert!(records.is_empty());
        assert_eq!(broken.unwrap(), (0, "data CRC mismatch".to_string()));
        let (records, broken) = split_records(&two[..two.len() - 2]);
        assert_eq!(records.len(), 1);
        assert_eq!(broken.unwrap().0, 3 + FRAMING);
        // An empty record cut inside its data CRC.
        let empty = frame(b"");
        for cut in 0..empty.len() {
            let (records, broken) = split_records(&empty[..cut]);
            assert_eq!(
                (records.len(), broken.is_some()),
                (0, cut > 0),
                "cut at {cut}"
            );
        }
        assert_eq!(split_records(&empty).0.len(), 1);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn event_encoding_is_the_protobuf_wire_format() {
        // Hand-assembled, and equal to what tensorboard's event_pb2 serialises: wall_time 1.5 (field 1, fixed64), step 300 (field 2, varint
        // ac 02), summary (field 5) with one value {tag "a" (field 1), simple_value 2.0
        // (field 2, fixed32)}.
        let event = Event {
            wall_time: 1.5,
            step: 300,
            scalars: vec![("a".into(), 2.0)],
            ..Event::default()
        };
        let mut expected = vec![0x09];
        expected.extend_from_slice(&1.5f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 0xac, 0x02]);
        expected.extend_from_slice(&[0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, b'a', 0x15]);
        expected.extend_from_slice(&2.0f32.to_le_bytes());
        assert_eq!(event.encode(), expected);
        assert_eq!(
            expected,
            hex("09000000000000f83f10ac022a0a0a080a01611500000040")
        );
        assert_eq!(Event::decode(&expected).unwrap(), event);

        let first = Event {
            wall_time: 7.0,
            file_version: Some(FILE_VERSION.into()),
            ..Event::default()
        };
        let bytes = first.encode();
        assert_eq!(&bytes[9..11], &[0x1a, 13]);
        assert_eq!(&bytes[11..], b"brain.Event:2");
        assert_eq!(Event::decode(&bytes).unwrap(), first);

        let start = Event {
            wall_time: 7.0,
            step: 11,
            session_start: true,
            ..Event::default()
        };
        // Bytes as tensorboard's own event_pb2 serialises these events (2.21.0).
        assert_eq!(start.encode(), hex("090000000000001c40100b3a020801"));
        assert_eq!(
            bytes,
            hex("090000000000001c401a0d627261696e2e4576656e743a32")
        );
        assert_eq!(Event::decode(&start.encode()).unwrap(), start);
        assert!(Event::decode(&[0x0a, 0x05, 0x01]).is_err());
    }

    #[test]
    fn metrics_become_named_scalars() {
        let line = serde_json::json!({
            "step": 4, "loss": 1.25, "lr": 0.001, "grad_norm": 3.0, "concepts": 64,
            "concepts_per_s": 900.0, "engine": "fused", "valid_loss": 1.5,
            "valid_probe_rms": 2.0, "elapsed_s": 0.5, "flag": true, "missing": null,
            "collapse": {"per_dim_std": vec![0.5; 11], "effective_rank": 3.5},
        });
        let scalars = scalars_of(&line);
        let tags: Vec<&str> = scalars.iter().map(|(t, _)| t.as_str()).collect();
        for tag in [
            "train/loss",
            "optim/lr",
            "optim/grad_norm",
            "batch/concepts",
            "throughput/concepts_per_s",
            "valid/loss",
            "valid/probe_rms",
            "time/elapsed_s",
            "collapse/effective_rank",
            "collapse/per_dim_std/00",
            "collapse/per_dim_std/10",
        ] {
            assert!(tags.contains(&tag), "{tag} missing from {tags:?}");
        }
        assert_eq!(scalars.len(), 9 + 11);
        assert!(
            !tags
                .iter()
                .any(|t| t.contains("step") || t.contains("engine"))
        );
        assert!(
            !tags
                .iter()
                .any(|t| t.contains("flag") || t.contains("missing"))
        );
        let loss = scalars.iter().find(|(t, _)| t == "train/loss").unwrap().1;
        assert_eq!(loss, 1.25);
    }

    #[test]
    fn writer_appends_new_files_and_resume_cuts_old_ones_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = EventWriter::create(dir.path()).unwrap();
        for step in 1..=5 {
            first
                .scalars(step, &[("train/loss".into(), step as f64)])
                .unwrap();
        }
        // A second writer in the same second gets its own file.
        let mut second = EventWriter::create(dir.path()).unwrap();
        assert_ne!(first.path(), second.path());
        second.session_start(4).unwrap();
        drop((first, second));
        let files = event_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        let events = read_events(&files[0]).unwrap();
        assert_eq!(events.len(), 6);
        assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
        assert_eq!(events[5].scalars, vec![("train/loss".to_string(), 5.0)]);

        // A torn last record (a killed run) and steps past the checkpoint are cut.
        let mut bytes = fs::read(&files[0]).unwrap();
        bytes.extend_from_slice(&frame(b"torn")[..10]);
        fs::write(&files[0], &bytes).unwrap();
        assert!(read_events(&files[0]).is_err());
        // First file: steps 4, 5 and the torn record; second: the START at step 4.
        assert_eq!(truncate_events(dir.path(), 3).unwrap(), 4);
        let steps: Vec<i64> = read_events(&files[0])
            .unwrap()
            .iter()
            .map(|e| e.step)
            .collect();
        assert_eq!(steps, vec![0, 1, 2, 3]);
        // Nothing to cut: files are left as they are.
        assert_eq!(truncate_events(dir.path(), 100).unwrap(), 0);
        remove_events(dir.path()).unwrap();
        assert!(event_files(dir.path()).unwrap().is_empty());
    }
}
