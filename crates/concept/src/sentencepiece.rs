//! A pure-Rust reader and encoder for SentencePiece models (`.model` files), shared by the
//! XLM-R tokenizer of the BERT-family encoder ([`crate::bert`]) and SONAR's tokenizer
//! (`lcm-sonar`), which each add their own id layout on top of SentencePiece's ids.
//!
//! Reference behaviour (sentencepiece 0.2.0; see `scripts/sonar/FIXTURES.md` §3):
//! - **Normalisation** (`normalizer.cc`): at each position the longest match in the
//!   precompiled charsmap (a darts-clone double array) is replaced by its target, user-defined
//!   symbols pass through untouched; with `remove_extra_whitespaces` leading spaces are
//!   dropped, runs of spaces collapse to one and trailing ones are removed; `add_dummy_prefix`
//!   prepends one space; `escape_whitespaces` writes spaces as `▁` (U+2581).
//! - **BPE** (`bpe_model.cc`): characters (user-defined symbols as frozen units) are merged
//!   greedily, always the adjacent pair whose concatenation is a piece with the highest score,
//!   the leftmost pair on ties; merges into UNUSED pieces are split back afterwards.
//! - **Unigram** (`unigram_model.cc`, `EncodeOptimized`): Viterbi over piece scores, a
//!   character no piece covers costs `min(normal scores) - 10`; user-defined pieces score
//!   `len · max_score - 0.1`.
//! - Either way, each run of consecutive unknown pieces becomes **one** `<unk>`
//!   (`sentencepiece_processor.cc`).
//!
//! Not supported (rejected at load with an error, so that nothing is silently wrong):
//! byte fallback, `treat_whitespace_as_suffix`, WORD/CHAR models, denormalisation rules.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The word-boundary marker SentencePiece writes for a space.
pub const SPACE_SYMBOL: &str = "\u{2581}";
/// `kUnkPenalty` of SentencePiece's unigram model.
const UNK_PENALTY: f32 = 10.0;
/// Unk surface when the model does not set `trainer_spec.unk_surface`.
const DEFAULT_UNK_SURFACE: &str = " \u{2047} ";

// ---------------------------------------------------------------------------------------------
// Protobuf
//
// A ModelProto needs four wire types and a dozen fields, so a 60-line reader replaces `prost`
// (plus a build-time `protoc` or checked-in generated code) for a format that has not changed
// since 2018; unknown fields are skipped, as protobuf requires.

enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct ProtoReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ProtoReader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "truncated: a field of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next `(field number, value)`, or `None` at the end of the message.
    fn next_field(&mut self) -> std::result::Result<Option<(u64, Wire<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| "length does not fit in memory".to_string())?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Wire::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            other => return Err(format!("unsupported wire type {other} for field {field}")),
        };
        if field == 0 {
            return Err("field number 0 (not a protobuf message)".into());
        }
        Ok(Some((field, value)))
    }
}

fn proto_string(bytes: &[u8], what: &str) -> std::result::Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}

fn proto_bool(value: &Wire<'_>) -> bool {
    matches!(value, Wire::Varint(v) if *v != 0)
}

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Byte,
    Unused,
}

impl PieceType {
    fn from_proto(value: u64) -> std::result::Result<Self, String> {
        Ok(match value {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            other => return Err(format!("unknown piece type {other}")),
        })
    }

    /// Pieces that segmentation may produce (SentencePiece's `pieces_` map); the others are
    /// reserved and only reachable by an exact id lookup.
    pub fn is_segmentable(self) -> bool {
        matches!(self, Self::Normal | Self::UserDefined | Self::Unused)
    }
}

#[derive(Clone, Debug)]
struct Piece {
    text: String,
    score: f32,
    kind: PieceType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelType {
    Unigram,
    Bpe,
}

/// What the tokenizer needs from a ModelProto.
struct ParsedModel {
    pieces: Vec<Piece>,
    model_type: ModelType,
    byte_fallback: bool,
    treat_whitespace_as_suffix: bool,
    unk_surface: Option<String>,
    charsmap: Vec<u8>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    has_denormalizer: bool,
    has_trainer_spec: bool,
    has_normalizer_spec: bool,
}

fn parse_model(bytes: &[u8]) -> std::result::Result<ParsedModel, String> {
    let mut model = ParsedModel {
        pieces: Vec::new(),
        // proto2 defaults of sentencepiece_model.proto.
        model_type: ModelType::Unigram,
        byte_fallback: false,
        treat_whitespace_as_suffix: false,
        unk_surface: None,
        charsmap: Vec::new(),
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
        escape_whitespaces: true,
        has_denormalizer: false,
        has_trainer_spec: false,
        has_normalizer_spec: false,
    };
    let mut top = ProtoReader::new(bytes);
    while let Some((field, value)) = top.next_field()? {
        match (field, value) {
            (1, Wire::Bytes(b)) => model.pieces.push(parse_piece(b, model.pieces.len())?),
            (2, Wire::Bytes(b)) => {
                model.has_trainer_spec = true;
                parse_trainer_spec(b, &mut model)?;
            }
            (3, Wire::Bytes(b)) => {
                model.has_normalizer_spec = true;
                parse_normalizer_spec(b, &mut model)?;
            }
            (5, Wire::Bytes(b)) => {
                let mut r = ProtoReader::new(b);
                while let Some((f, v)) = r.next_field()? {
                    if let (2, Wire::Bytes(map)) = (f, v) {
                        model.has_denormalizer |= !map.is_empty();
                    }
                }
            }
            (1..=3, _) => return Err(format!("field {field} of ModelProto has the wrong type")),
            _ => {}
        }
    }
    Ok(model)
}

fn parse_piece(bytes: &[u8], index: usize) -> std::result::Result<Piece, String> {
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut r = ProtoReader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Wire::Bytes(b)) => piece.text = proto_string(b, &format!("piece {index}"))?,
            (2, Wire::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Wire::Varint(v)) => piece.kind = PieceType::from_proto(v)?,
            (1..=3, _) => return Err(format!("piece {index}: field {field} has the wrong type")),
            _ => {}
        }
    }
    if piece.text.is_empty() {
        return Err(format!("piece {index} is empty"));
    }
    Ok(piece)
}

fn parse_trainer_spec(bytes: &[u8], model: &mut ParsedModel) -> std::result::Result<(), String> {
    let mut r = ProtoReader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (3, Wire::Varint(v)) => {
                model.model_type = match v {
                    1 => ModelType::Unigram,
                    2 => ModelType::Bpe,
                    3 => return Err("WORD models are not supported".into()),
                    4 => return Err("CHAR models are not supported".into()),
                    other => return Err(format!("unknown model_type {other}")),
                }
            }
            (24, v) => model.treat_whitespace_as_suffix = proto_bool(&v),
            (35, v) => model.byte_fallback = proto_bool(&v),
            (44, Wire::Bytes(b)) => model.unk_surface = Some(proto_string(b, "unk_surface")?),
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer_spec(bytes: &[u8], model: &mut ParsedModel) -> std::result::Result<(), String> {
    let mut r = ProtoReader::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (2, Wire::Bytes(b)) => model.charsmap = b.to_vec(),
            (3, v) => model.add_dummy_prefix = proto_bool(&v),
            (4, v) => model.remove_extra_whitespaces = proto_bool(&v),
            (5, v) => model.escape_whitespaces = proto_bool(&v),
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Normalisation

/// SentencePiece's precompiled charsmap: a darts-clone double array over UTF-8 bytes whose
/// values are offsets of NUL-terminated replacements in a string blob.
///
/// `tokenizers::normalizers::Precompiled` reads the same blob, but it applies the map per
/// grapheme cluster and keeps the *shortest* match (Hugging Face's approximation), whereas
/// SentencePiece takes the *longest* match at each byte position; only a direct walk of the
/// double array reproduces SentencePiece, so the 20-line walk lives here.
struct CharsMap {
    units: Vec<u32>,
    blob: String,
}

impl CharsMap {
    fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let err = || "precompiled_charsmap is truncated".to_string();
        let header = bytes.get(..4).ok_or_else(err)?;
        let trie_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let trie = bytes.get(4..4 + trie_len).ok_or_else(err)?;
        if !trie_len.is_multiple_of(4) || trie_len == 0 {
            return Err(format!("precompiled_charsmap: bad trie size {trie_len}"));
        }
        let units = trie
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let blob = String::from_utf8(bytes[4 + trie_len..].to_vec())
            .map_err(|_| "precompiled_charsmap: replacement table is not UTF-8".to_string())?;
        Ok(Self { units, blob })
    }

    /// Longest key that prefixes `input`: `(key length in bytes, replacement)`.
    fn longest_match(&self, input: &[u8]) -> Option<(usize, &str)> {
        // darts-clone unit layout: bit 8 = has leaf, bits 0-7 (+31) = label, bits 10.. = offset
        // (shifted by 8 more when bit 9 is set); a leaf unit's low 31 bits are its value.
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let label = |u: u32| u & ((1 << 31) | 0xff);
        let mut node = offset(*self.units.first()?);
        let mut best = None;
        for (i, &byte) in input.iter().enumerate() {
            node ^= usize::from(byte);
            let unit = match self.units.get(node) {
                Some(&u) if label(u) == u32::from(byte) => u,
                _ => break,
            };
            node ^= offset(unit);
            if (unit >> 8) & 1 == 1 {
                let value = (self.units.get(node)? & 0x7fff_ffff) as usize;
                best = Some((i + 1, value));
            }
        }
        let (len, value) = best?;
        let rest = self.blob.get(value..)?;
        let end = rest.find('\0').unwrap_or(rest.len());
        Some((len, &rest[..end]))
    }
}

struct Normalizer {
    charsmap: Option<CharsMap>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    /// User-defined symbols, longest first: they bypass normalisation.
    user_defined: Vec<String>,
}

impl Normalizer {
    /// The normalised form of the next unit of `input` and how many bytes it consumes
    /// (`Normalizer::NormalizePrefix`).
    fn normalize_prefix<'s>(&'s self, input: &'s str) -> (&'s str, usize) {
        if let Some(sym) = self
            .user_defined
            .iter()
            .find(|s| input.starts_with(s.as_str()))
        {
            return (&input[..sym.len()], sym.len());
        }
        if let Some(map) = &self.charsmap
            && let Some((len, replacement)) = map.longest_match(input.as_bytes())
            && input.is_char_boundary(len)
        {
            return (replacement, len);
        }
        let len = input.chars().next().map_or(0, char::len_utf8);
        (&input[..len], len)
    }

    fn normalize(&self, text: &str) -> String {
        let space = if self.escape_whitespaces {
            SPACE_SYMBOL
        } else {
            " "
        };
        let mut input = text;
        if self.remove_extra_whitespaces {
            loop {
                let (unit, consumed) = self.normalize_prefix(input);
                if unit != " " || consumed == 0 {
                    break;
                }
                input = &input[consumed..];
            }
        }
        let mut out = String::with_capacity(text.len() * 3 / 2 + 4);
        if input.is_empty() {
            return out;
        }
        if self.add_dummy_prefix {
            out.push_str(space);
        }
        let mut prev_is_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut unit, consumed) = self.normalize_prefix(input);
            if consumed == 0 {
                break;
            }
            while prev_is_space && let Some(rest) = unit.strip_prefix(' ') {
                unit = rest;
            }
            if !unit.is_empty() {
                for c in unit.chars() {
                    if c == ' ' && self.escape_whitespaces {
                        out.push_str(SPACE_SYMBOL);
                    } else {
                        out.push(c);
                    }
                }
                prev_is_space = unit.ends_with(' ');
            }
            input = &input[consumed..];
            if !self.remove_extra_whitespaces {
                prev_is_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Segmentation

/// A candidate BPE merge; the heap pops the highest score, then the leftmost pair
/// (SentencePiece's `SymbolPairComparator`).
struct MergeCandidate {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for MergeCandidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for MergeCandidate {}
impl PartialOrd for MergeCandidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MergeCandidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // `partial_cmp` (not `total_cmp`) so that -0.0 and 0.0 tie, as with C++'s `<`.
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// One BPE symbol: bytes `start..start + len` of the normalised text (`len == 0` once merged
/// into its left neighbour).
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
    frozen: bool,
}

/// A SentencePiece model: normaliser, pieces and the BPE or unigram segmentation, with
/// SentencePiece's own ids (`SentencePieceProcessor::EncodeAsIds`).
pub struct SentencePiece {
    pieces: Vec<Piece>,
    model_type: ModelType,
    normalizer: Normalizer,
    /// Segmentable piece ids sorted by their bytes: exact lookups and a trie walk by binary
    /// search, without a second copy of 256k strings.
    sorted: Vec<u32>,
    /// Control/unknown pieces by text (SentencePiece's `reserved_id_map_`).
    reserved: HashMap<String, u32>,
    unk_id: u32,
    /// Unigram: lowest and highest score of the NORMAL pieces.
    min_score: f32,
    max_score: f32,
    unk_surface: String,
}

impl SentencePiece {
    /// Parses the bytes of a `.model` file (a `ModelProto`). The error says what is wrong;
    /// callers add the file's path.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.is_empty() {
            return Err("the file is empty".into());
        }
        let model = parse_model(bytes)?;
        if model.pieces.is_empty() {
            return Err("no pieces".into());
        }
        // Pieces come first in the file, so a file cut right after a piece still parses;
        // every trained model has both specs, and the defaults would silently be wrong.
        if !model.has_trainer_spec || !model.has_normalizer_spec {
            return Err("trainer_spec or normalizer_spec is missing (truncated file?)".into());
        }
        if model.byte_fallback || model.pieces.iter().any(|p| p.kind == PieceType::Byte) {
            return Err("byte fallback is not supported".into());
        }
        if model.treat_whitespace_as_suffix {
            return Err("treat_whitespace_as_suffix is not supported".into());
        }
        if model.has_denormalizer {
            return Err("denormalisation rules are not supported".into());
        }

        let mut reserved = HashMap::new();
        // Only to reject duplicates, as `ModelInterface::InitializePieces` does; lookups go
        // through `sorted`.
        let mut segmentable = HashMap::new();
        let mut unk_id = None;
        for (id, piece) in model.pieces.iter().enumerate() {
            let map = if piece.kind.is_segmentable() {
                &mut segmentable
            } else {
                &mut reserved
            };
            if map.insert(piece.text.clone(), id as u32).is_some() {
                return Err(format!("piece {:?} is defined twice", piece.text));
            }
            if piece.kind == PieceType::Unknown {
                if unk_id.is_some() {
                    return Err("more than one unknown piece".into());
                }
                unk_id = Some(id as u32);
            }
        }
        let unk_id = unk_id.ok_or("no unknown piece")?;
        drop(segmentable);

        let mut sorted: Vec<u32> = (0..model.pieces.len() as u32)
            .filter(|&id| model.pieces[id as usize].kind.is_segmentable())
            .collect();
        sorted.sort_by(|&a, &b| {
            model.pieces[a as usize]
                .text
                .as_bytes()
                .cmp(model.pieces[b as usize].text.as_bytes())
        });

        // `FLT_MAX` / `FLT_MIN` starting values, as in `unigram::Model`.
        let mut min_score = f32::MAX;
        let mut max_score = f32::MIN_POSITIVE;
        for p in model.pieces.iter().filter(|p| p.kind == PieceType::Normal) {
            min_score = min_score.min(p.score);
            max_score = max_score.max(p.score);
        }

        let mut user_defined: Vec<String> = model
            .pieces
            .iter()
            .filter(|p| p.kind == PieceType::UserDefined)
            .map(|p| p.text.clone())
            .collect();
        user_defined.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let charsmap = if model.charsmap.is_empty() {
            None
        } else {
            Some(CharsMap::parse(&model.charsmap)?)
        };

        Ok(Self {
            normalizer: Normalizer {
                charsmap,
                add_dummy_prefix: model.add_dummy_prefix,
                remove_extra_whitespaces: model.remove_extra_whitespaces,
                escape_whitespaces: model.escape_whitespaces,
                user_defined,
            },
            model_type: model.model_type,
            sorted,
            reserved,
            unk_id,
            min_score,
            max_score,
            unk_surface: model
                .unk_surface
                .unwrap_or_else(|| DEFAULT_UNK_SURFACE.to_string()),
            pieces: model.pieces,
        })
    }

    /// Number of pieces (SentencePiece ids `0..num_pieces`).
    pub fn num_pieces(&self) -> usize {
        self.pieces.len()
    }

    /// Text and type of piece `id`.
    pub fn piece(&self, id: u32) -> Option<(&str, PieceType)> {
        self.pieces
            .get(id as usize)
            .map(|p| (p.text.as_str(), p.kind))
    }

    /// Id of the unknown piece.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// How `<unk>` is rendered when decoding (` ⁇ ` unless the model says otherwise).
    pub fn unk_surface(&self) -> &str {
        &self.unk_surface
    }

    /// Whether decoding drops the `▁` that starts the text (SentencePiece does when the
    /// normaliser adds a dummy prefix or removes extra whitespace).
    pub fn strips_leading_space(&self) -> bool {
        self.normalizer.add_dummy_prefix || self.normalizer.remove_extra_whitespaces
    }

    /// The normalised text SentencePiece segments (spaces as `▁`).
    pub fn normalize(&self, text: &str) -> String {
        self.normalizer.normalize(text)
    }

    /// SentencePiece ids of `text` (`SentencePieceProcessor::EncodeAsIds`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalizer.normalize(text);
        let raw = match self.model_type {
            ModelType::Bpe => self.segment_bpe(&normalized),
            ModelType::Unigram => self.segment_unigram(&normalized),
        };
        let mut ids = Vec::with_capacity(raw.len());
        let mut prev_unk = false;
        for id in raw {
            let is_unk = id == self.unk_id;
            // A run of unknown pieces is one <unk> (`SentencePieceProcessor::Encode`).
            if !(is_unk && prev_unk) {
                ids.push(id);
            }
            prev_unk = is_unk;
        }
        ids
    }

    fn piece_bytes(&self, id: u32) -> &[u8] {
        self.pieces[id as usize].text.as_bytes()
    }

    /// Id of a segmentable piece whose text is exactly `text`.
    fn lookup(&self, text: &[u8]) -> Option<u32> {
        self.sorted
            .binary_search_by(|&id| self.piece_bytes(id).cmp(text))
            .ok()
            .map(|i| self.sorted[i])
    }

    /// `ModelInterface::PieceToId`: reserved pieces first, then segmentable ones, else unk.
    pub fn piece_to_id(&self, text: &str) -> u32 {
        self.reserved
            .get(text)
            .copied()
            .or_else(|| self.lookup(text.as_bytes()))
            .unwrap_or(self.unk_id)
    }

    /// Calls `f(end, id)` for every segmentable piece that starts `text` (ends ascending),
    /// narrowing a range of `sorted` one byte at a time like a trie walk.
    fn for_each_prefix(&self, text: &[u8], mut f: impl FnMut(usize, u32)) {
        let (mut lo, mut hi) = (0, self.sorted.len());
        for (depth, &byte) in text.iter().enumerate() {
            let range = &self.sorted[lo..hi];
            // Within the range every piece starts with text[..depth]; the one equal to it (if
            // any) sorts first, then the rest ordered by their byte at `depth`.
            let below = |id: &u32, inclusive: bool| {
                let p = self.piece_bytes(*id);
                p.len() <= depth
                    || if inclusive {
                        p[depth] <= byte
                    } else {
                        p[depth] < byte
                    }
            };
            let new_lo = lo + range.partition_point(|id| below(id, false));
            let new_hi = lo + range.partition_point(|id| below(id, true));
            if new_lo == new_hi {
                return;
            }
            (lo, hi) = (new_lo, new_hi);
            let first = self.sorted[lo];
            if self.piece_bytes(first).len() == depth + 1 {
                f(depth + 1, first);
            }
        }
    }

    /// `bpe::Model::Encode`.
    fn segment_bpe(&self, normalized: &str) -> Vec<u32> {
        let bytes = normalized.as_bytes();
        let mut symbols: Vec<Symbol> = Vec::with_capacity(normalized.len());
        let mut pos = 0;
        while pos < normalized.len() {
            let rest = &normalized[pos..];
            let (len, frozen) = match self
                .normalizer
                .user_defined
                .iter()
                .find(|s| rest.starts_with(s.as_str()))
            {
                Some(sym) => (sym.len(), true),
                None => (rest.chars().next().map_or(1, char::len_utf8), false),
            };
            let index = symbols.len();
            symbols.push(Symbol {
                start: pos,
                len,
                prev: index.checked_sub(1),
                next: (pos + len < normalized.len()).then_some(index + 1),
                frozen,
            });
            pos += len;
        }

        let mut agenda = BinaryHeap::new();
        // Merges into UNUSED pieces, undone at the end: merged text → (left, right).
        let mut unmerge: HashMap<String, (String, String)> = HashMap::new();
        let push_pair = |symbols: &[Symbol],
                         agenda: &mut BinaryHeap<MergeCandidate>,
                         unmerge: &mut HashMap<String, (String, String)>,
                         left: Option<usize>,
                         right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else {
                return;
            };
            let (sl, sr) = (symbols[l], symbols[r]);
            if sl.frozen || sr.frozen {
                return;
            }
            let text = &bytes[sl.start..sl.start + sl.len + sr.len];
            let Some(id) = self.lookup(text) else {
                return;
            };
            let piece = &self.pieces[id as usize];
            agenda.push(MergeCandidate {
                score: piece.score,
                left: l,
                right: r,
                size: text.len(),
            });
            if piece.kind == PieceType::Unused {
                unmerge.insert(
                    piece.text.clone(),
                    (
                        normalized[sl.start..sl.start + sl.len].to_string(),
                        normalized[sr.start..sr.start + sr.len].to_string(),
                    ),
                );
            }
        };
        for i in 1..symbols.len() {
            push_pair(&symbols, &mut agenda, &mut unmerge, Some(i - 1), Some(i));
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (symbols[top.left], symbols[top.right]);
            // Stale: one side changed since the pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != top.size {
                continue;
            }
            symbols[top.left].len += r.len;
            symbols[top.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(top.left);
            }
            symbols[top.right].len = 0;
            let left = symbols[top.left];
            push_pair(
                &symbols,
                &mut agenda,
                &mut unmerge,
                left.prev,
                Some(top.left),
            );
            push_pair(
                &symbols,
                &mut agenda,
                &mut unmerge,
                Some(top.left),
                left.next,
            );
        }

        let mut out = Vec::with_capacity(symbols.len());
        let mut index = if symbols.is_empty() { None } else { Some(0) };
        while let Some(i) = index {
            let s = symbols[i];
            self.resegment(&normalized[s.start..s.start + s.len], &unmerge, &mut out);
            index = s.next;
        }
        out
    }

    fn resegment(
        &self,
        text: &str,
        unmerge: &HashMap<String, (String, String)>,
        out: &mut Vec<u32>,
    ) {
        let id = self.piece_to_id(text);
        if self.pieces[id as usize].kind == PieceType::Unused
            && let Some((left, right)) = unmerge.get(text)
        {
            self.resegment(left, unmerge, out);
            self.resegment(right, unmerge, out);
            return;
        }
        out.push(id);
    }

    /// `unigram::Model::EncodeOptimized`: best path ending at each byte position.
    fn segment_unigram(&self, normalized: &str) -> Vec<u32> {
        #[derive(Clone, Copy)]
        struct Best {
            id: u32,
            score: f32,
            start: Option<usize>,
        }
        let bytes = normalized.as_bytes();
        let n = bytes.len();
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best = vec![
            Best {
                id: self.unk_id,
                score: 0.0,
                start: None,
            };
            n + 1
        ];
        let mut start = 0;
        while start < n {
            let here = best[start].score;
            let char_len = normalized[start..].chars().next().map_or(1, char::len_utf8);
            let mut has_single_char_piece = false;
            self.for_each_prefix(&bytes[start..], |len, id| {
                let piece = &self.pieces[id as usize];
                let score = match piece.kind {
                    PieceType::Unused => return,
                    // SentencePiece computes this in double (`length * max_score_ - 0.1`),
                    // and so every candidate sum below; only the stored best is a float.
                    PieceType::UserDefined => f64::from(len as f32 * self.max_score) - 0.1,
                    _ => f64::from(piece.score),
                };
                let candidate = score + f64::from(here);
                let target = &mut best[start + len];
                if target.start.is_none() || candidate > f64::from(target.score) {
                    *target = Best {
                        id,
                        score: candidate as f32,
                        start: Some(start),
                    };
                }
                has_single_char_piece |= len == char_len;
            });
            if !has_single_char_piece {
                let candidate = unk_score + here;
                let target = &mut best[start + char_len];
                if target.start.is_none() || candidate > target.score {
                    *target = Best {
                        id: self.unk_id,
                        score: candidate,
                        start: Some(start),
                    };
                }
            }
            start += char_len;
        }
        let mut out = Vec::new();
        let mut end = n;
        while end > 0 {
            let Some(s) = best[end].start else { break };
            out.push(best[end].id);
            end = s;
        }
        out.reverse();
        out
    }
}

impl std::fmt::Debug for SentencePiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentencePiece")
            .field("model_type", &self.model_type)
            .field("pieces", &self.pieces.len())
            .finish()
    }
}
