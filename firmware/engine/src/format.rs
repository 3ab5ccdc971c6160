//! The model file (`.smb`) as types: header, section table, sections. Spec with a table:
//! `docs/FORMAT.md`.
//!
//! The reader is zero-copy over `&[u8]` (XIP flash on the device): [`Model::parse`] checks magic,
//! version, length, CRC-32, the configuration limits and every section's offset, length and
//! alignment once, with checked arithmetic, so that everything after it can only read inside the
//! buffer. The writer (feature `std`, `write_model`) uses the same constants and the same size
//! functions ([`section_bytes`]), so writer and reader cannot drift.
//!
//! Layout: header (80 bytes) · section table (16 bytes per section, in the canonical order of
//! [`canonical_section`]) · sections, each starting on a 4-byte boundary. All integers are
//! little-endian.

use crate::checksum::crc32;
use core::fmt;

/// First four bytes of every model file.
pub const MAGIC: [u8; 4] = *b"SMND";
/// Format version written by this crate; readers accept exactly this version (see FORMAT.md).
pub const VERSION: u32 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_BYTES: usize = 80;
/// Size of one section table entry in bytes.
pub const SECTION_ENTRY_BYTES: usize = 16;
/// Offset of the CRC-32 field; the CRC covers every byte after it (`CRC_START..file_bytes`).
pub const CRC_OFFSET: usize = 12;
/// First byte covered by the CRC.
pub const CRC_START: usize = 16;
/// Every section starts at a multiple of this.
pub const ALIGN: usize = 4;
/// Upper bound on `dim`, `hidden_dim` and `seq_len`: keeps every `i32` accumulator exact.
pub const MAX_DIM: usize = 4096;
/// Upper bound on `dim / n_heads`: keeps the query·key sums (12-bit × 12-bit) exact in `i32`.
pub const MAX_HEAD_SIZE: usize = 256;
/// Upper bound on the vocabulary (merges store ids as `u16`).
pub const MAX_VOCAB: usize = 65_535;
/// Upper bound on layers.
pub const MAX_LAYERS: usize = 64;
/// Marker for "no unknown token" (byte-level BPE).
pub const NO_TOKEN: u32 = u32::MAX;
/// Bytes of one weight row multiplier (`mant u32`, `shift i32`).
pub const MULTIPLIER_BYTES: usize = 8;
/// Bytes of one BPE merge entry (`left u16`, `right u16`, `merged u16`, `rank u16`).
pub const MERGE_BYTES: usize = 8;

/// Feed-forward block shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnKind {
    /// `w2 · silu(w1 · x)`.
    Plain = 0,
    /// `w2 · (silu(w1 · x) ⊙ w3 · x)`.
    Swiglu = 1,
}

/// Tokenizer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// One token per character; unknown characters map to `unk_id`.
    Char = 0,
    /// Byte-level BPE with ranked merges (GPT-2 pre-tokenisation).
    Bpe = 1,
}

/// Weight quantisation scheme of the layer matrices (embedding/output are always int8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    /// Scheme 1: int8 weights, one multiplier per row.
    Int8 = 1,
    /// Scheme 2: int4 weights, a `u8` multiplier per group of `group_size` columns and one
    /// multiplier per row.
    Int4 = 2,
}

/// The model configuration from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub vocab_size: usize,
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Longest context the RoPE tables cover (the KV cache may be shorter).
    pub seq_len: usize,
    pub ffn: FfnKind,
    pub tied_embeddings: bool,
    pub tokenizer: TokenizerKind,
    pub quant: Quant,
    /// Columns per int4 group (0 for int8).
    pub group_size: usize,
    /// `<|endoftext|>`.
    pub eot_id: u32,
    /// `<unk>` ([`NO_TOKEN`] when absent).
    pub unk_id: u32,
}

impl Config {
    /// Elements per attention head.
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads.max(1)
    }
    /// Rows of the key and value projections.
    pub fn kv_dim(&self) -> usize {
        self.head_size() * self.n_kv_heads
    }
    /// Number of sections in the canonical order.
    pub fn n_sections(&self) -> usize {
        SECTIONS_BEFORE_LAYERS + SECTIONS_PER_LAYER * self.n_layers + SECTIONS_AFTER_LAYERS
    }

    /// Checks the shape rules the forward pass relies on.
    pub fn validate(&self) -> Result<(), FormatError> {
        let dims = [
            self.dim,
            self.hidden_dim,
            self.seq_len,
            self.n_heads,
            self.n_kv_heads,
        ];
        if self.vocab_size == 0 || self.vocab_size > MAX_VOCAB {
            return Err(FormatError::BadConfig("vocab_size must be in 1..=65535"));
        }
        if dims.iter().any(|&d| d == 0 || d > MAX_DIM) {
            return Err(FormatError::BadConfig(
                "dim, hidden_dim, seq_len and head counts must be in 1..=4096",
            ));
        }
        if self.n_layers == 0 || self.n_layers > MAX_LAYERS {
            return Err(FormatError::BadConfig("n_layers must be in 1..=64"));
        }
        if self.head_size() > MAX_HEAD_SIZE {
            return Err(FormatError::BadConfig("head_size must be at most 256"));
        }
        if !self.dim.is_multiple_of(self.n_heads) || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(FormatError::BadConfig(
                "dim must divide by n_heads, n_heads by n_kv_heads",
            ));
        }
        match self.quant {
            Quant::Int8 if self.group_size != 0 => {
                return Err(FormatError::BadConfig("int8 has no group size"))
            }
            Quant::Int4 if self.group_size == 0 || self.group_size > 256 => {
                return Err(FormatError::BadConfig("int4 group size must be in 1..=256"))
            }
            _ => {}
        }
        if self.eot_id as usize >= self.vocab_size {
            return Err(FormatError::BadConfig("eot_id out of range"));
        }
        if self.unk_id != NO_TOKEN && self.unk_id as usize >= self.vocab_size {
            return Err(FormatError::BadConfig("unk_id out of range"));
        }
        if self.tokenizer == TokenizerKind::Char && self.unk_id == NO_TOKEN {
            return Err(FormatError::BadConfig("a char tokenizer needs an unk_id"));
        }
        Ok(())
    }
}

/// What can be wrong with a model file. Every variant is a clean refusal; parsing never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// Fewer bytes than the header (or than the header says).
    Truncated {
        needed: usize,
        got: usize,
    },
    BadMagic,
    UnsupportedVersion(u32),
    /// The header's `file_bytes` differs from the buffer length.
    LengthMismatch {
        header: usize,
        actual: usize,
    },
    ChecksumMismatch {
        stored: u32,
        computed: u32,
    },
    BadConfig(&'static str),
    /// Section `index` has the wrong tag/layer for the canonical order.
    UnexpectedSection {
        index: usize,
    },
    /// Section `index` lies (partly) outside the file or overlaps the table.
    SectionOutOfBounds {
        index: usize,
    },
    /// Section `index` does not start on a 4-byte boundary.
    SectionMisaligned {
        index: usize,
    },
    /// Section `index` has the wrong length for the configuration.
    SectionSize {
        index: usize,
        expected: usize,
        found: usize,
    },
    /// Vocabulary offsets are not monotonic or run past the byte blob.
    BadVocab,
    /// A merge refers to an id outside the vocabulary, or merges are not sorted.
    BadMerges,
    /// The byte→token table refers to an id outside the vocabulary.
    BadByteTokens,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FormatError::Truncated { needed, got } => {
                write!(f, "truncated: needs {needed} bytes, has {got}")
            }
            FormatError::BadMagic => write!(f, "not a starmind model file (bad magic)"),
            FormatError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported format version {v} (this build reads version {VERSION})"
                )
            }
            FormatError::LengthMismatch { header, actual } => {
                write!(
                    f,
                    "length mismatch: header says {header} bytes, file has {actual}"
                )
            }
            FormatError::ChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
                )
            }
            FormatError::BadConfig(why) => write!(f, "bad configuration: {why}"),
            FormatError::UnexpectedSection { index } => {
                write!(f, "section {index} is not the expected one")
            }
            FormatError::SectionOutOfBounds { index } => {
                write!(f, "section {index} is out of bounds")
            }
            FormatError::SectionMisaligned { index } => {
                write!(f, "section {index} is not 4-byte aligned")
            }
            FormatError::SectionSize {
                index,
                expected,
                found,
            } => {
                write!(f, "section {index} has {found} bytes, expected {expected}")
            }
            FormatError::BadVocab => write!(f, "bad vocabulary table"),
            FormatError::BadMerges => write!(f, "bad BPE merge table"),
            FormatError::BadByteTokens => write!(f, "bad byte-token table"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FormatError {}

/// Section tags (the `tag` field of a table entry).
pub mod tag {
    pub const VOCAB_OFFSETS: u32 = 1;
    pub const VOCAB_BYTES: u32 = 2;
    pub const MERGES: u32 = 3;
    pub const BYTE_TOKENS: u32 = 4;
    pub const ROPE: u32 = 5;
    pub const TOKEN_EMBEDDING: u32 = 6;
    pub const ATTENTION_NORM: u32 = 7;
    pub const WQ: u32 = 8;
    pub const WK: u32 = 9;
    pub const WV: u32 = 10;
    pub const WO: u32 = 11;
    pub const FFN_NORM: u32 = 12;
    pub const W1: u32 = 13;
    pub const W2: u32 = 14;
    pub const W3: u32 = 15;
    pub const FINAL_NORM: u32 = 16;
    pub const OUTPUT: u32 = 17;
}

const SECTIONS_BEFORE_LAYERS: usize = 6;
/// Sections per layer (see [`PER_LAYER`]).
pub const SECTIONS_PER_LAYER: usize = 9;
const SECTIONS_AFTER_LAYERS: usize = 2;
const BEFORE: [u32; SECTIONS_BEFORE_LAYERS] = [
    tag::VOCAB_OFFSETS,
    tag::VOCAB_BYTES,
    tag::MERGES,
    tag::BYTE_TOKENS,
    tag::ROPE,
    tag::TOKEN_EMBEDDING,
];
/// The sections of one layer, in file order.
pub const PER_LAYER: [u32; SECTIONS_PER_LAYER] = [
    tag::ATTENTION_NORM,
    tag::WQ,
    tag::WK,
    tag::WV,
    tag::WO,
    tag::FFN_NORM,
    tag::W1,
    tag::W2,
    tag::W3,
];
const AFTER: [u32; SECTIONS_AFTER_LAYERS] = [tag::FINAL_NORM, tag::OUTPUT];
/// Layer field of the sections that belong to no layer.
pub const NO_LAYER: u32 = u32::MAX;

/// `(tag, layer)` of section `index` in the canonical order: vocabulary, merges, byte tokens,
/// RoPE, embedding; per layer attention norm, wq, wk, wv, wo, ffn norm, w1, w2, w3; final norm,
/// output. Sections that a configuration does not use are present with length 0.
pub fn canonical_section(config: &Config, index: usize) -> Option<(u32, u32)> {
    if let Some(&t) = BEFORE.get(index) {
        return Some((t, NO_LAYER));
    }
    let i = index - SECTIONS_BEFORE_LAYERS;
    let layer = i / SECTIONS_PER_LAYER;
    if layer < config.n_layers {
        return Some((PER_LAYER[i % SECTIONS_PER_LAYER], layer as u32));
    }
    AFTER
        .get(i - config.n_layers * SECTIONS_PER_LAYER)
        .map(|&t| (t, NO_LAYER))
}

/// Bytes of a weight matrix section: row multipliers, then (int4) group multipliers padded to 4,
/// then the weights padded to 4.
pub fn matrix_bytes(rows: usize, cols: usize, quant: Quant, group_size: usize) -> Option<usize> {
    let scales = rows.checked_mul(MULTIPLIER_BYTES)?;
    match quant {
        Quant::Int8 => Some(scales + pad4(rows.checked_mul(cols)?)?),
        Quant::Int4 => {
            let groups = rows.checked_mul(cols.div_ceil(group_size.max(1)))?;
            let weights = rows.checked_mul(cols.div_ceil(2))?;
            scales
                .checked_add(pad4(groups)?)?
                .checked_add(pad4(weights)?)
        }
    }
}

fn pad4(n: usize) -> Option<usize> {
    Some(n.checked_add(ALIGN - 1)? & !(ALIGN - 1))
}

/// The exact byte length section `(tag, layer)` must have, or `None` when its length is free
/// (vocabulary bytes, merges) — those are validated by content.
pub fn section_bytes(config: &Config, section_tag: u32) -> Option<usize> {
    let c = config;
    let norm = c.dim * 4;
    let layer_matrix = |rows, cols| matrix_bytes(rows, cols, c.quant, c.group_size);
    match section_tag {
        tag::VOCAB_OFFSETS => (c.vocab_size + 1).checked_mul(4),
        tag::BYTE_TOKENS => Some(if c.tokenizer == TokenizerKind::Bpe {
            256 * 2
        } else {
            0
        }),
        tag::ROPE => c.seq_len.checked_mul(c.head_size() / 2)?.checked_mul(8),
        tag::TOKEN_EMBEDDING => matrix_bytes(c.vocab_size, c.dim, Quant::Int8, 0),
        tag::ATTENTION_NORM | tag::FFN_NORM | tag::FINAL_NORM => Some(norm),
        tag::WQ | tag::WO => layer_matrix(c.dim, c.dim),
        tag::WK | tag::WV => layer_matrix(c.kv_dim(), c.dim),
        tag::W1 => layer_matrix(c.hidden_dim, c.dim),
        tag::W2 => layer_matrix(c.dim, c.hidden_dim),
        tag::W3 => match c.ffn {
            FfnKind::Swiglu => layer_matrix(c.hidden_dim, c.dim),
            FfnKind::Plain => Some(0),
        },
        tag::OUTPUT => {
            if c.tied_embeddings {
                Some(0)
            } else {
                matrix_bytes(c.vocab_size, c.dim, Quant::Int8, 0)
            }
        }
        _ => None,
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]),
        None => 0,
    }
}

/// A weight matrix inside the file.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub rows: usize,
    pub cols: usize,
    pub quant: Quant,
    pub group_size: usize,
    /// 8 bytes per row: [`crate::kernels::Multiplier`].
    pub row_scales: &'a [u8],
    /// int4 only: one `u8` per group per row.
    pub group_scales: &'a [u8],
    /// int8: `cols` bytes per row; int4: `ceil(cols/2)` bytes per row.
    pub weights: &'a [u8],
}

impl<'a> Matrix<'a> {
    fn from_section(
        bytes: &'a [u8],
        rows: usize,
        cols: usize,
        quant: Quant,
        group_size: usize,
    ) -> Matrix<'a> {
        let scales_len = rows * MULTIPLIER_BYTES;
        let (row_scales, rest) = bytes.split_at(scales_len.min(bytes.len()));
        let (group_scales, weights) = match quant {
            Quant::Int8 => (&rest[..0], rest),
            Quant::Int4 => {
                let groups_len = (rows * cols.div_ceil(group_size.max(1))).next_multiple_of(ALIGN);
                let (g, w) = rest.split_at(groups_len.min(rest.len()));
                (g, w)
            }
        };
        Matrix {
            rows,
            cols,
            quant,
            group_size,
            row_scales,
            group_scales,
            weights,
        }
    }
}

/// One transformer layer's tensors.
#[derive(Debug, Clone, Copy)]
pub struct LayerWeights<'a> {
    /// `dim` × i32 Q16.16 gains.
    pub attention_norm: &'a [u8],
    pub wq: Matrix<'a>,
    pub wk: Matrix<'a>,
    pub wv: Matrix<'a>,
    pub wo: Matrix<'a>,
    pub ffn_norm: &'a [u8],
    pub w1: Matrix<'a>,
    pub w2: Matrix<'a>,
    /// Empty (0 rows) for the plain FFN.
    pub w3: Matrix<'a>,
}

/// A parsed, validated model file. Cheap to copy: it holds the config and slices into the file.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    config: Config,
    /// The whole file.
    bytes: &'a [u8],
    /// The section table.
    table: &'a [u8],
}

impl<'a> Model<'a> {
    /// Parses and validates a model file: magic, version, length, CRC-32, configuration, every
    /// section's position, size and alignment, vocabulary offsets, merges and byte tokens.
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>, FormatError> {
        if bytes.len() < HEADER_BYTES {
            return Err(FormatError::Truncated {
                needed: HEADER_BYTES,
                got: bytes.len(),
            });
        }
        if bytes.get(0..4) != Some(&MAGIC[..]) {
            return Err(FormatError::BadMagic);
        }
        let version = le_u32(bytes, 4);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let file_bytes = le_u32(bytes, 8) as usize;
        if file_bytes > bytes.len() {
            return Err(FormatError::Truncated {
                needed: file_bytes,
                got: bytes.len(),
            });
        }
        if file_bytes != bytes.len() {
            return Err(FormatError::LengthMismatch {
                header: file_bytes,
                actual: bytes.len(),
            });
        }
        let stored = le_u32(bytes, CRC_OFFSET);
        let computed = crc32(bytes.get(CRC_START..).unwrap_or(&[]));
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { stored, computed });
        }
        let config = read_config(bytes)?;
        config.validate()?;
        let n_sections = le_u32(bytes, 72) as usize;
        if n_sections != config.n_sections() {
            return Err(FormatError::BadConfig(
                "section count does not match the configuration",
            ));
        }
        let table_end = n_sections
            .checked_mul(SECTION_ENTRY_BYTES)
            .and_then(|t| t.checked_add(HEADER_BYTES))
            .ok_or(FormatError::BadConfig("section table too large"))?;
        let table = bytes
            .get(HEADER_BYTES..table_end)
            .ok_or(FormatError::Truncated {
                needed: table_end,
                got: bytes.len(),
            })?;
        let model = Model {
            config,
            bytes,
            table,
        };
        for index in 0..n_sections {
            model.check_section(index, table_end)?;
        }
        model.check_vocab()?;
        model.check_merges()?;
        model.check_byte_tokens()?;
        Ok(model)
    }

    fn check_section(&self, index: usize, table_end: usize) -> Result<(), FormatError> {
        let entry = index * SECTION_ENTRY_BYTES;
        let (t, layer) = (le_u32(self.table, entry), le_u32(self.table, entry + 4));
        let (offset, len) = (
            le_u32(self.table, entry + 8) as usize,
            le_u32(self.table, entry + 12) as usize,
        );
        if canonical_section(&self.config, index) != Some((t, layer)) {
            return Err(FormatError::UnexpectedSection { index });
        }
        if offset % ALIGN != 0 {
            return Err(FormatError::SectionMisaligned { index });
        }
        let end = offset
            .checked_add(len)
            .ok_or(FormatError::SectionOutOfBounds { index })?;
        if offset < table_end || end > self.bytes.len() {
            return Err(FormatError::SectionOutOfBounds { index });
        }
        if let Some(expected) = section_bytes(&self.config, t) {
            if expected != len {
                return Err(FormatError::SectionSize {
                    index,
                    expected,
                    found: len,
                });
            }
        }
        if t == tag::MERGES
            && (len % MERGE_BYTES != 0
                || (self.config.tokenizer == TokenizerKind::Char && len != 0))
        {
            return Err(FormatError::BadMerges);
        }
        Ok(())
    }

    /// Bytes of section `index` (empty when out of range; [`Model::parse`] has checked them all).
    fn section(&self, index: usize) -> &'a [u8] {
        let entry = index * SECTION_ENTRY_BYTES;
        let offset = le_u32(self.table, entry + 8) as usize;
        let len = le_u32(self.table, entry + 12) as usize;
        offset
            .checked_add(len)
            .and_then(|end| self.bytes.get(offset..end))
            .unwrap_or(&[])
    }

    fn vocab_offsets(&self) -> &'a [u8] {
        self.section(0)
    }
    fn vocab_bytes(&self) -> &'a [u8] {
        self.section(1)
    }
    /// BPE merges, [`MERGE_BYTES`] each, sorted by `(left, right)`.
    pub(crate) fn merges(&self) -> &'a [u8] {
        self.section(2)
    }
    /// BPE: the token id of each single byte, 256 × `u16`.
    pub(crate) fn byte_tokens(&self) -> &'a [u8] {
        self.section(3)
    }
    /// RoPE table: per position, per pair `(cos, sin)` as `i32` Q30.
    pub(crate) fn rope(&self) -> &'a [u8] {
        self.section(4)
    }

    fn check_vocab(&self) -> Result<(), FormatError> {
        let offsets = self.vocab_offsets();
        let blob_len = self.vocab_bytes().len();
        let mut previous = 0u32;
        for (i, word) in offsets.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            if (i == 0 && v != 0) || v < previous || v as usize > blob_len {
                return Err(FormatError::BadVocab);
            }
            previous = v;
        }
        if previous as usize != blob_len {
            return Err(FormatError::BadVocab);
        }
        Ok(())
    }

    fn check_merges(&self) -> Result<(), FormatError> {
        let vocab = self.config.vocab_size as u32;
        let mut previous: Option<(u16, u16)> = None;
        for m in self.merges().chunks_exact(MERGE_BYTES) {
            let (left, right, merged) = (le_u16(m, 0), le_u16(m, 2), le_u16(m, 4));
            if [left, right, merged].iter().any(|&id| id as u32 >= vocab) {
                return Err(FormatError::BadMerges);
            }
            if previous.is_some_and(|p| p >= (left, right)) {
                return Err(FormatError::BadMerges);
            }
            previous = Some((left, right));
        }
        Ok(())
    }

    fn check_byte_tokens(&self) -> Result<(), FormatError> {
        let vocab = self.config.vocab_size as u32;
        if self
            .byte_tokens()
            .chunks_exact(2)
            .any(|b| u16::from_le_bytes([b[0], b[1]]) as u32 >= vocab)
        {
            return Err(FormatError::BadByteTokens);
        }
        Ok(())
    }

    /// The configuration from the header.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The whole file, as given to [`Model::parse`].
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// `<|endoftext|>`.
    pub fn eot_id(&self) -> u32 {
        self.config.eot_id
    }

    /// The UTF-8 bytes of a token (a piece of a character for byte-level BPE); empty for an id
    /// outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> &'a [u8] {
        if id as usize >= self.config.vocab_size {
            return &[];
        }
        let offsets = self.vocab_offsets();
        let at = id as usize * 4;
        let (start, end) = (
            le_u32(offsets, at) as usize,
            le_u32(offsets, at + 4) as usize,
        );
        self.vocab_bytes().get(start..end).unwrap_or(&[])
    }

    fn matrix(&self, index: usize, rows: usize, cols: usize, quant: Quant) -> Matrix<'a> {
        Matrix::from_section(
            self.section(index),
            rows,
            cols,
            quant,
            self.config.group_size,
        )
    }

    /// The token embedding (int8, `vocab × dim`).
    pub fn token_embedding(&self) -> Matrix<'a> {
        self.matrix(5, self.config.vocab_size, self.config.dim, Quant::Int8)
    }

    /// The classifier: the embedding when tied, else `output.weight` (int8, `vocab × dim`).
    pub fn output(&self) -> Matrix<'a> {
        if self.config.tied_embeddings {
            self.token_embedding()
        } else {
            self.matrix(
                self.config.n_sections() - 1,
                self.config.vocab_size,
                self.config.dim,
                Quant::Int8,
            )
        }
    }

    /// Final RMSNorm gains (`dim` × i32 Q16.16).
    pub fn final_norm(&self) -> &'a [u8] {
        self.section(self.config.n_sections() - 2)
    }

    /// The tensors of layer `l`.
    pub fn layer(&self, l: usize) -> LayerWeights<'a> {
        let c = &self.config;
        let base = SECTIONS_BEFORE_LAYERS + l * SECTIONS_PER_LAYER;
        let (dim, kv, hidden, q) = (c.dim, c.kv_dim(), c.hidden_dim, c.quant);
        let w3_rows = if c.ffn == FfnKind::Swiglu { hidden } else { 0 };
        LayerWeights {
            attention_norm: self.section(base),
            wq: self.matrix(base + 1, dim, dim, q),
            wk: self.matrix(base + 2, kv, dim, q),
            wv: self.matrix(base + 3, kv, dim, q),
            wo: self.matrix(base + 4, dim, dim, q),
            ffn_norm: self.section(base + 5),
            w1: self.matrix(base + 6, hidden, dim, q),
            w2: self.matrix(base + 7, dim, hidden, q),
            w3: self.matrix(base + 8, w3_rows, dim, q),
        }
    }
}

fn read_config(bytes: &[u8]) -> Result<Config, FormatError> {
    let word = |at: usize| le_u32(bytes, at);
    let ffn = match word(44) {
        0 => FfnKind::Plain,
        1 => FfnKind::Swiglu,
        _ => return Err(FormatError::BadConfig("unknown ffn kind")),
    };
    let tied_embeddings = match word(48) {
        0 => false,
        1 => true,
        _ => return Err(FormatError::BadConfig("tied flag must be 0 or 1")),
    };
    let tokenizer = match word(52) {
        0 => TokenizerKind::Char,
        1 => TokenizerKind::Bpe,
        _ => return Err(FormatError::BadConfig("unknown tokenizer kind")),
    };
    let quant = match word(56) {
        1 => Quant::Int8,
        2 => Quant::Int4,
        _ => return Err(FormatError::BadConfig("unknown quantisation scheme")),
    };
    Ok(Config {
        vocab_size: word(16) as usize,
        dim: word(20) as usize,
        hidden_dim: word(24) as usize,
        n_layers: word(28) as usize,
        n_heads: word(32) as usize,
        n_kv_heads: word(36) as usize,
        seq_len: word(40) as usize,
        ffn,
        tied_embeddings,
        tokenizer,
        quant,
        group_size: word(60) as usize,
        eot_id: word(64),
        unk_id: word(68),
    })
}

#[cfg(feature = "std")]
pub use writer::*;

#[cfg(feature = "std")]
mod writer {
    use super::*;
    use std::vec::Vec;

    /// The sections of a model file in canonical order (already quantised; see
    /// [`crate::quantize`]). Lengths must match [`section_bytes`]; [`write_model`] checks.
    pub struct ModelSections {
        pub config: Config,
        /// Byte string of each token, `vocab_size` of them.
        pub token_bytes: Vec<Vec<u8>>,
        /// BPE merges `(left, right, merged)` in rank order (empty for char tokenizers).
        pub merges: Vec<(u32, u32, u32)>,
        /// BPE: the token of each byte value (empty for char tokenizers).
        pub byte_tokens: Vec<u32>,
        /// `seq_len × head_size/2` pairs `(cos, sin)` in Q30.
        pub rope_q30: Vec<(i32, i32)>,
        pub token_embedding: Vec<u8>,
        /// Per layer: attention norm, wq, wk, wv, wo, ffn norm, w1, w2, w3 (section bytes).
        pub layers: Vec<[Vec<u8>; SECTIONS_PER_LAYER]>,
        pub final_norm: Vec<u8>,
        /// Empty when tied.
        pub output: Vec<u8>,
    }

    /// Why a model could not be written.
    #[derive(Debug)]
    pub struct WriteError(pub std::string::String);

    impl fmt::Display for WriteError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for WriteError {}

    /// Lays out header, table and sections, fills in length and CRC, and re-parses the result
    /// with [`Model::parse`] so a file this returns is one the device accepts.
    pub fn write_model(m: &ModelSections) -> Result<Vec<u8>, WriteError> {
        let c = &m.config;
        c.validate().map_err(|e| WriteError(std::format!("{e}")))?;
        if m.token_bytes.len() != c.vocab_size {
            return Err(WriteError(std::format!(
                "{} token strings for vocab {}",
                m.token_bytes.len(),
                c.vocab_size
            )));
        }
        let mut offsets = Vec::with_capacity((c.vocab_size + 1) * 4);
        let mut blob = Vec::new();
        offsets.extend_from_slice(&0u32.to_le_bytes());
        for t in &m.token_bytes {
            blob.extend_from_slice(t);
            offsets.extend_from_slice(&(blob.len() as u32).to_le_bytes());
        }
        let mut merges: Vec<(u16, u16, u16, u16)> = Vec::new();
        for (rank, &(l, r, merged)) in m.merges.iter().enumerate() {
            let id16 =
                |v: u32| u16::try_from(v).map_err(|_| WriteError("merge id exceeds u16".into()));
            let rank =
                u16::try_from(rank).map_err(|_| WriteError("more than 65535 merges".into()))?;
            merges.push((id16(l)?, id16(r)?, id16(merged)?, rank));
        }
        merges.sort();
        let merge_bytes: Vec<u8> = merges
            .iter()
            .flat_map(|&(l, r, m, k)| {
                [
                    l.to_le_bytes(),
                    r.to_le_bytes(),
                    m.to_le_bytes(),
                    k.to_le_bytes(),
                ]
                .concat()
            })
            .collect();
        let byte_tokens: Vec<u8> = m
            .byte_tokens
            .iter()
            .flat_map(|&id| (id as u16).to_le_bytes())
            .collect();
        let rope: Vec<u8> = m
            .rope_q30
            .iter()
            .flat_map(|&(c, s)| [c.to_le_bytes(), s.to_le_bytes()].concat())
            .collect();

        let mut sections: Vec<&[u8]> = std::vec![
            &offsets,
            &blob,
            &merge_bytes,
            &byte_tokens,
            &rope,
            &m.token_embedding
        ];
        if m.layers.len() != c.n_layers {
            return Err(WriteError(
                "layer count does not match the configuration".into(),
            ));
        }
        for layer in &m.layers {
            sections.extend(layer.iter().map(|s| s.as_slice()));
        }
        sections.push(&m.final_norm);
        sections.push(&m.output);

        let n = sections.len();
        let mut out = std::vec![0u8; HEADER_BYTES + n * SECTION_ENTRY_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        let mut header = |at: usize, v: u32| out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        header(4, VERSION);
        header(16, c.vocab_size as u32);
        header(20, c.dim as u32);
        header(24, c.hidden_dim as u32);
        header(28, c.n_layers as u32);
        header(32, c.n_heads as u32);
        header(36, c.n_kv_heads as u32);
        header(40, c.seq_len as u32);
        header(44, c.ffn as u32);
        header(48, c.tied_embeddings as u32);
        header(52, c.tokenizer as u32);
        header(56, c.quant as u32);
        header(60, c.group_size as u32);
        header(64, c.eot_id);
        header(68, c.unk_id);
        header(72, n as u32);
        for (index, data) in sections.iter().enumerate() {
            let (t, layer) =
                canonical_section(c, index).ok_or(WriteError("too many sections".into()))?;
            if let Some(expected) = section_bytes(c, t) {
                if expected != data.len() {
                    return Err(WriteError(std::format!(
                        "section {index} (tag {t}, layer {layer}) has {} bytes, expected {expected}",
                        data.len()
                    )));
                }
            }
            while !out.len().is_multiple_of(ALIGN) {
                out.push(0);
            }
            let entry = HEADER_BYTES + index * SECTION_ENTRY_BYTES;
            let fields = [t, layer, out.len() as u32, data.len() as u32];
            for (k, v) in fields.iter().enumerate() {
                out[entry + 4 * k..entry + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(data);
        }
        while !out.len().is_multiple_of(ALIGN) {
            out.push(0);
        }
        let len = u32::try_from(out.len()).map_err(|_| WriteError("file exceeds 4 GiB".into()))?;
        out[8..12].copy_from_slice(&len.to_le_bytes());
        let crc = crc32(&out[CRC_START..]);
        out[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_le_bytes());
        Model::parse(&out)
            .map_err(|e| WriteError(std::format!("written file does not parse: {e}")))?;
        Ok(out)
    }

    /// Recomputes the CRC of a (possibly edited) file in place — for tests that build malformed
    /// files which must fail later checks than the CRC.
    pub fn fix_crc(bytes: &mut [u8]) {
        if bytes.len() >= CRC_START {
            let crc = crc32(&bytes[CRC_START..]);
            bytes[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_le_bytes());
        }
    }
}
