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
/// Format version written by this crate (see FORMAT.md). Version 3 stores the token embedding
/// and the classifier in row quads ([`WeightLayout::RowQuads`]) too; version 2 only the int8
/// layer matrices; version 1 every matrix row-major.
pub const VERSION: u32 = 3;
/// The oldest version the reader accepts: it reads versions `OLDEST_VERSION..=VERSION` (files
/// already in users' hands keep working, through the row-major kernel).
pub const OLDEST_VERSION: u32 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_BYTES: usize = 80;
/// Size of one section table entry in bytes.
pub const SECTION_ENTRY_BYTES: usize = 16;
/// Offset of the CRC-32 field; the CRC covers every byte after it (`CRC_START..file_bytes`).
pub const CRC_OFFSET: usize = header::CRC;
/// First byte covered by the CRC.
pub const CRC_START: usize = header::CRC + 4;

/// Byte offsets of the header fields (docs/FORMAT.md): every field is a little-endian `u32`
/// but the 4-byte magic. The reader (`read_config`) and the writer use these.
pub mod header {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const FILE_BYTES: usize = 8;
    pub const CRC: usize = 12;
    pub const VOCAB_SIZE: usize = 16;
    pub const DIM: usize = 20;
    pub const HIDDEN_DIM: usize = 24;
    pub const N_LAYERS: usize = 28;
    pub const N_HEADS: usize = 32;
    pub const N_KV_HEADS: usize = 36;
    pub const SEQ_LEN: usize = 40;
    pub const FFN: usize = 44;
    pub const TIED_EMBEDDINGS: usize = 48;
    pub const TOKENIZER: usize = 52;
    pub const QUANT: usize = 56;
    pub const GROUP_SIZE: usize = 60;
    pub const EOT_ID: usize = 64;
    pub const UNK_ID: usize = 68;
    pub const N_SECTIONS: usize = 72;
    /// Explicit head size, 0 for `dim / n_heads` (every file before it existed).
    pub const HEAD_SIZE: usize = 76;
}

/// Byte offsets of the fields of a section table entry (each a little-endian `u32`).
mod entry {
    pub const TAG: usize = 0;
    pub const LAYER: usize = 4;
    pub const OFFSET: usize = 8;
    pub const LEN: usize = 12;
}
/// Every section starts at a multiple of this.
pub const ALIGN: usize = 4;
/// Upper bound on `dim`, `hidden_dim` and `seq_len`: keeps every `i32` accumulator exact.
pub const MAX_DIM: usize = 4096;
/// Upper bound on the head size: keeps the query·key sums (12-bit × 12-bit) exact in `i32`.
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
    /// No encoder on the device: the model runs on token ids (e.g. a llama2.c import without
    /// its tokenizer). Token byte strings are for display only and may be empty; a non-empty
    /// text prompt is refused ([`crate::EngineError::NoTokenizer`]).
    None = 2,
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

/// How a matrix's weight bytes are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// Row after row (`cols` bytes each for int8): int4 matrices, the embedding and the
    /// classifier before version 3, and every matrix of a version-1 file.
    RowMajor,
    /// int8 layer matrices from version 2 on, the embedding and the classifier from version 3
    /// on: groups of 4 rows, one 32-bit word per column holding the 4 rows' weights
    /// offset-binary (`q ^ 0x80`), then the last `rows % 4` rows row-major
    /// ([`crate::kernels::quad_rows`], read by [`crate::kernels::matvec_i8_x4`]).
    RowQuads,
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
    /// Elements per attention head when it is not `dim / n_heads` (header word 0 = `None`): the
    /// attention is then `n_heads · head_size` wide ([`Config::q_dim`]) and `wo` projects it
    /// back to `dim`.
    pub head_size: Option<usize>,
}

impl Config {
    /// Elements per attention head: the explicit `head_size`, else `dim / n_heads`.
    pub fn head_size(&self) -> usize {
        // The divider, not a ~200-cycle software division (this runs per token and layer).
        self.head_size.unwrap_or(
            crate::kernels::div_rem_u32(self.dim as u32, self.n_heads.max(1) as u32).0 as usize,
        )
    }
    /// Width of the queries and of the attention output: `n_heads · head_size` (`dim` unless
    /// the head size is explicit).
    pub fn q_dim(&self) -> usize {
        self.head_size() * self.n_heads
    }
    /// Rows of the key and value projections.
    pub fn kv_dim(&self) -> usize {
        self.head_size() * self.n_kv_heads
    }
    /// Number of sections in the canonical order.
    pub fn n_sections(&self) -> usize {
        SECTIONS_BEFORE_LAYERS + SECTIONS_PER_LAYER * self.n_layers + SECTIONS_AFTER_LAYERS
    }

    /// Checks every rule of the configuration: [`Config::validate_shape`], then quantisation and
    /// the special token ids.
    pub fn validate(&self) -> Result<(), FormatError> {
        self.validate_shape()?;
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

    /// Checks the shape rules the forward pass relies on (the host's model configs are checked
    /// by this very function): every size positive and within the `MAX_*` bounds, `dim` a
    /// multiple of `n_heads` unless the head size is explicit, `n_heads` of `n_kv_heads`.
    pub fn validate_shape(&self) -> Result<(), FormatError> {
        let dims = [
            self.dim,
            self.hidden_dim,
            self.seq_len,
            self.n_heads,
            self.n_kv_heads,
        ];
        if self.vocab_size == 0 || self.vocab_size > MAX_VOCAB {
            return Err(FormatError::BadConfig(
                "vocab_size must be positive and at most 65535",
            ));
        }
        if dims.iter().any(|&d| d == 0 || d > MAX_DIM) {
            return Err(FormatError::BadConfig(
                "dim, hidden_dim, seq_len, n_heads and n_kv_heads must be positive and at most 4096",
            ));
        }
        if self.n_layers == 0 || self.n_layers > MAX_LAYERS {
            return Err(FormatError::BadConfig(
                "n_layers must be positive and at most 64",
            ));
        }
        match self.head_size {
            None if !self.dim.is_multiple_of(self.n_heads) => {
                return Err(FormatError::BadConfig("dim is not a multiple of n_heads"))
            }
            Some(0) => return Err(FormatError::BadConfig("head_size must be positive")),
            Some(hs) if hs > MAX_HEAD_SIZE || hs * self.n_heads > MAX_DIM => {
                return Err(FormatError::BadConfig(
                    "head_size must be at most 256 and n_heads·head_size at most 4096",
                ))
            }
            _ => {}
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(FormatError::BadConfig(
                "n_heads is not a multiple of n_kv_heads",
            ));
        }
        if self.head_size() > MAX_HEAD_SIZE {
            return Err(FormatError::BadConfig(
                "head_size (dim / n_heads) must be at most 256",
            ));
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
    /// A weight row multiplier's shift is outside 0..=62 (docs/FORMAT.md): the host's and the
    /// device's fixed-point rescaling would disagree.
    BadMultiplier {
        /// The section holding it.
        index: usize,
        shift: i32,
    },
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
                    "unsupported format version {v} (this build reads versions {OLDEST_VERSION} to {VERSION})"
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
            FormatError::BadMultiplier { index, shift } => write!(
                f,
                "section {index}: a row multiplier has shift {shift}, outside 0..=62"
            ),
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

/// Indices in the section table. The sections before the layers sit at fixed indices; layer
/// `l`'s sections follow from [`index::layer`] and the last two from [`index::final_norm`] and
/// [`index::output`].
pub mod index {
    use super::{Config, SECTIONS_PER_LAYER};

    pub const VOCAB_OFFSETS: usize = 0;
    pub const VOCAB_BYTES: usize = 1;
    pub const MERGES: usize = 2;
    pub const BYTE_TOKENS: usize = 3;
    pub const ROPE: usize = 4;
    pub const TOKEN_EMBEDDING: usize = 5;
    /// Sections before the first layer's.
    pub const BEFORE_LAYERS: usize = 6;

    /// Index of layer `l`'s section at `position` (a [`in_layer`] constant).
    pub const fn layer(l: usize, position: usize) -> usize {
        BEFORE_LAYERS + l * SECTIONS_PER_LAYER + position
    }
    /// The final RMSNorm's gains.
    pub fn final_norm(c: &Config) -> usize {
        layer(c.n_layers, 0)
    }
    /// The classifier (empty when tied).
    pub fn output(c: &Config) -> usize {
        layer(c.n_layers, 1)
    }
}

/// Positions of a layer's sections within the layer, in file order.
pub mod in_layer {
    pub const ATTENTION_NORM: usize = 0;
    pub const WQ: usize = 1;
    pub const WK: usize = 2;
    pub const WV: usize = 3;
    pub const WO: usize = 4;
    pub const FFN_NORM: usize = 5;
    pub const W1: usize = 6;
    pub const W2: usize = 7;
    pub const W3: usize = 8;
}

const SECTIONS_BEFORE_LAYERS: usize = index::BEFORE_LAYERS;
/// Sections per layer (see [`PER_LAYER`]).
pub const SECTIONS_PER_LAYER: usize = 9;
const SECTIONS_AFTER_LAYERS: usize = 2;
/// The tags of the sections before the layers, by [`index`].
const BEFORE: [u32; SECTIONS_BEFORE_LAYERS] = {
    let mut tags = [0; SECTIONS_BEFORE_LAYERS];
    tags[index::VOCAB_OFFSETS] = tag::VOCAB_OFFSETS;
    tags[index::VOCAB_BYTES] = tag::VOCAB_BYTES;
    tags[index::MERGES] = tag::MERGES;
    tags[index::BYTE_TOKENS] = tag::BYTE_TOKENS;
    tags[index::ROPE] = tag::ROPE;
    tags[index::TOKEN_EMBEDDING] = tag::TOKEN_EMBEDDING;
    tags
};
/// The tags of one layer's sections, by [`in_layer`] position.
pub const PER_LAYER: [u32; SECTIONS_PER_LAYER] = {
    let mut tags = [0; SECTIONS_PER_LAYER];
    tags[in_layer::ATTENTION_NORM] = tag::ATTENTION_NORM;
    tags[in_layer::WQ] = tag::WQ;
    tags[in_layer::WK] = tag::WK;
    tags[in_layer::WV] = tag::WV;
    tags[in_layer::WO] = tag::WO;
    tags[in_layer::FFN_NORM] = tag::FFN_NORM;
    tags[in_layer::W1] = tag::W1;
    tags[in_layer::W2] = tag::W2;
    tags[in_layer::W3] = tag::W3;
    tags
};
/// The tags of the sections after the layers: final norm, output.
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

/// `n` rounded up to a multiple of [`ALIGN`] (`None` on overflow): where the next section, or
/// the next part of a matrix section, starts.
pub fn pad4(n: usize) -> Option<usize> {
    n.checked_next_multiple_of(ALIGN)
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
        tag::WQ => layer_matrix(c.q_dim(), c.dim),
        tag::WO => layer_matrix(c.dim, c.q_dim()),
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

/// One BPE merge entry: the pair `(left, right)` becomes `merged`; lower `rank` merges first.
/// The table is sorted by `(left, right)` for binary search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    pub left: u16,
    pub right: u16,
    pub merged: u16,
    pub rank: u16,
}

impl Merge {
    /// Reads one [`MERGE_BYTES`]-byte entry (missing bytes read as 0).
    pub fn from_le_bytes(bytes: &[u8]) -> Merge {
        Merge {
            left: le_u16(bytes, 0),
            right: le_u16(bytes, 2),
            merged: le_u16(bytes, 4),
            rank: le_u16(bytes, 6),
        }
    }

    /// The entry as the file stores it.
    pub fn to_le_bytes(self) -> [u8; MERGE_BYTES] {
        let mut out = [0; MERGE_BYTES];
        for (at, v) in [self.left, self.right, self.merged, self.rank]
            .into_iter()
            .enumerate()
        {
            out[2 * at..2 * at + 2].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// A weight matrix inside the file.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub rows: usize,
    pub cols: usize,
    pub quant: Quant,
    pub group_size: usize,
    /// The order of the weight bytes.
    pub layout: WeightLayout,
    /// 8 bytes per row: [`crate::kernels::Multiplier`].
    pub row_scales: &'a [u8],
    /// int4 only: one `u8` per group per row.
    pub group_scales: &'a [u8],
    /// int8: `cols` bytes per row (in row quads for [`WeightLayout::RowQuads`]); int4:
    /// `ceil(cols/2)` bytes per row.
    pub weights: &'a [u8],
}

impl<'a> Matrix<'a> {
    fn from_section(
        bytes: &'a [u8],
        rows: usize,
        cols: usize,
        quant: Quant,
        group_size: usize,
        layout: WeightLayout,
    ) -> Matrix<'a> {
        let scales_len = rows * MULTIPLIER_BYTES;
        let (row_scales, rest) = bytes.split_at(scales_len.min(bytes.len()));
        let (group_scales, weights) = match quant {
            Quant::Int8 => (&rest[..0], rest),
            Quant::Int4 => {
                let groups = rows * cols.div_ceil(group_size.max(1));
                let groups_len = pad4(groups).unwrap_or(usize::MAX);
                let (g, w) = rest.split_at(groups_len.min(rest.len()));
                (g, w)
            }
        };
        Matrix {
            rows,
            cols,
            quant,
            group_size,
            layout,
            row_scales,
            group_scales,
            weights,
        }
    }

    /// The int8 weight `q[r][c]` in either layout (0 outside the matrix): the embedding's row
    /// of a token, one weight at a time.
    #[inline]
    pub fn weight_i8(&self, r: usize, c: usize) -> i8 {
        if r >= self.rows || c >= self.cols {
            return 0;
        }
        match self.layout {
            WeightLayout::RowQuads => {
                crate::kernels::quad_weight(self.weights, self.rows, self.cols, r, c) as i8
            }
            WeightLayout::RowMajor => self.weights.get(r * self.cols + c).map_or(0, |&b| b as i8),
        }
    }

    /// The smallest run of rows [`Matrix::rows`] cuts out, as (weight bytes, rows): a row quad
    /// in row quads, else one row.
    pub fn row_unit(&self) -> (usize, usize) {
        let row_bytes = self.row_bytes();
        match self.layout {
            WeightLayout::RowQuads => (4 * row_bytes, 4),
            WeightLayout::RowMajor => (row_bytes, 1),
        }
    }

    /// Weight bytes of one row.
    #[inline]
    fn row_bytes(&self) -> usize {
        match self.quant {
            Quant::Int8 => self.cols,
            Quant::Int4 => self.cols.div_ceil(2),
        }
    }

    /// Rows `first..first + n` as a matrix of their own (clamped to the rows there are): the
    /// streamed classifier multiplies one chunk of the vocabulary at a time. In row quads only
    /// whole quads can be cut out (`first` and `n` multiples of 4, or `n` reaching the last
    /// row); any other cut is empty. Inlined: the weight stream cuts every block with it, in
    /// the forward pass's hot code (which runs from SRAM; called from there it would be fetched
    /// from flash).
    #[inline(always)]
    pub fn rows(&self, first: usize, n: usize) -> Matrix<'a> {
        let first = first.min(self.rows);
        let mut n = n.min(self.rows - first);
        if self.layout == WeightLayout::RowQuads
            && (!first.is_multiple_of(4) || !(n.is_multiple_of(4) || first + n == self.rows))
        {
            n = 0;
        }
        let row_groups = match self.quant {
            Quant::Int8 => 0,
            Quant::Int4 => self.cols.div_ceil(self.group_size.max(1)),
        };
        let part = |bytes: &'a [u8], per_row: usize| -> &'a [u8] {
            let start = (first * per_row).min(bytes.len());
            let end = ((first + n) * per_row).min(bytes.len());
            &bytes[start..end]
        };
        Matrix {
            rows: n,
            row_scales: part(self.row_scales, MULTIPLIER_BYTES),
            group_scales: part(self.group_scales, row_groups),
            weights: part(self.weights, self.row_bytes()),
            ..*self
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
    /// The file's format version (`OLDEST_VERSION..=VERSION`).
    version: u32,
    /// The whole file.
    bytes: &'a [u8],
    /// The section table.
    table: &'a [u8],
    /// A copy of the file's bytes from `copy_start` on in faster memory ([`Model::with_copy`]);
    /// empty when there is none.
    copy: &'a [u8],
    copy_start: usize,
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
        if bytes.get(header::MAGIC..header::MAGIC + 4) != Some(&MAGIC[..]) {
            return Err(FormatError::BadMagic);
        }
        let version = le_u32(bytes, header::VERSION);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let file_bytes = le_u32(bytes, header::FILE_BYTES) as usize;
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
        let n_sections = le_u32(bytes, header::N_SECTIONS) as usize;
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
            version,
            bytes,
            table,
            copy: &[],
            copy_start: 0,
        };
        for index in 0..n_sections {
            model.check_section(index, table_end)?;
        }
        model.check_vocab()?;
        model.check_merges()?;
        model.check_byte_tokens()?;
        model.check_multipliers()?;
        Ok(model)
    }

    fn check_section(&self, index: usize, table_end: usize) -> Result<(), FormatError> {
        let at = index * SECTION_ENTRY_BYTES;
        let (t, layer) = (
            le_u32(self.table, at + entry::TAG),
            le_u32(self.table, at + entry::LAYER),
        );
        let (offset, len) = (
            le_u32(self.table, at + entry::OFFSET) as usize,
            le_u32(self.table, at + entry::LEN) as usize,
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
            && (len % MERGE_BYTES != 0 || (self.config.tokenizer != TokenizerKind::Bpe && len != 0))
        {
            return Err(FormatError::BadMerges);
        }
        Ok(())
    }

    /// Bytes of section `index` (empty when out of range; [`Model::parse`] has checked them all),
    /// from the copy when it holds the whole section.
    fn section(&self, index: usize) -> &'a [u8] {
        let (offset, len) = self.section_span(index);
        let Some(end) = offset.checked_add(len) else {
            return &[];
        };
        if offset >= self.copy_start && end - self.copy_start <= self.copy.len() {
            return &self.copy[offset - self.copy_start..end - self.copy_start];
        }
        self.bytes.get(offset..end).unwrap_or(&[])
    }

    /// Section `index`'s offset in the file and length (as the table says).
    fn section_span(&self, index: usize) -> (usize, usize) {
        let at = index * SECTION_ENTRY_BYTES;
        (
            le_u32(self.table, at + entry::OFFSET) as usize,
            le_u32(self.table, at + entry::LEN) as usize,
        )
    }

    /// The model with a copy of the file's bytes `start..start + copy.len()` (in the firmware,
    /// the weights it copied to SRAM at boot): every section wholly inside it is read from the
    /// copy from now on, the others from the file. A copy that is not those bytes of the file
    /// is not used (the model comes back as it was).
    pub fn with_copy(self, start: usize, copy: &'a [u8]) -> Model<'a> {
        let same = start
            .checked_add(copy.len())
            .and_then(|end| self.bytes.get(start..end))
            == Some(copy);
        if !same {
            return self;
        }
        Model {
            copy,
            copy_start: start,
            ..self
        }
    }

    /// Bytes of the file read from a copy ([`Model::with_copy`]); 0 without one.
    pub fn copied_bytes(&self) -> usize {
        self.copy.len()
    }

    /// The file range worth copying into `room` bytes of faster memory: the span from one
    /// section's start that holds the most bytes of whole sections read for every token (all but
    /// the tokenizer's), each of which is read once a token; empty when no such section fits.
    /// Quadratic in the section count, which is small (a boot-time choice).
    pub fn copy_range(&self, room: usize) -> core::ops::Range<usize> {
        // Every section from the RoPE table on is read for every token.
        let per_token = index::ROPE..self.config.n_sections();
        let (mut best, mut best_bytes) = (0..0, 0);
        for first in per_token.clone() {
            let (start, _) = self.section_span(first);
            let (mut covered, mut end) = (0, start);
            for i in per_token.clone() {
                let (offset, len) = self.section_span(i);
                let inside = offset >= start && offset + len - start <= room;
                if inside && len > 0 {
                    covered += len;
                    end = end.max(offset + len);
                }
            }
            if covered > best_bytes {
                (best, best_bytes) = (start..end, covered);
            }
        }
        best
    }

    fn vocab_offsets(&self) -> &'a [u8] {
        self.section(index::VOCAB_OFFSETS)
    }
    fn vocab_bytes(&self) -> &'a [u8] {
        self.section(index::VOCAB_BYTES)
    }
    /// BPE merges, one [`Merge`] per [`MERGE_BYTES`], sorted by `(left, right)`.
    pub(crate) fn merges(&self) -> &'a [u8] {
        self.section(index::MERGES)
    }
    /// BPE: the token id of each single byte, 256 × `u16`.
    pub(crate) fn byte_tokens(&self) -> &'a [u8] {
        self.section(index::BYTE_TOKENS)
    }
    /// RoPE table: per position, per pair `(cos, sin)` as `i32` Q30.
    pub(crate) fn rope(&self) -> &'a [u8] {
        self.section(index::ROPE)
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
        for bytes in self.merges().chunks_exact(MERGE_BYTES) {
            let m = Merge::from_le_bytes(bytes);
            if [m.left, m.right, m.merged]
                .iter()
                .any(|&id| id as u32 >= vocab)
            {
                return Err(FormatError::BadMerges);
            }
            if previous.is_some_and(|p| p >= (m.left, m.right)) {
                return Err(FormatError::BadMerges);
            }
            previous = Some((m.left, m.right));
        }
        Ok(())
    }

    /// Every row multiplier of every weight matrix has a shift in 0..=62.
    fn check_multipliers(&self) -> Result<(), FormatError> {
        let c = &self.config;
        let mut matrices = [(index::TOKEN_EMBEDDING, self.token_embedding())]
            .into_iter()
            .chain((!c.tied_embeddings).then(|| (index::output(c), self.output())))
            .chain((0..c.n_layers).flat_map(|l| {
                let w = self.layer(l);
                let at = |position| index::layer(l, position);
                [
                    (at(in_layer::WQ), w.wq),
                    (at(in_layer::WK), w.wk),
                    (at(in_layer::WV), w.wv),
                    (at(in_layer::WO), w.wo),
                    (at(in_layer::W1), w.w1),
                    (at(in_layer::W2), w.w2),
                    (at(in_layer::W3), w.w3),
                ]
            }));
        matrices.try_for_each(|(index, m)| {
            for scale in m.row_scales.chunks_exact(MULTIPLIER_BYTES) {
                let shift = i32::from_le_bytes([scale[4], scale[5], scale[6], scale[7]]);
                if !(0..=62).contains(&shift) {
                    return Err(FormatError::BadMultiplier { index, shift });
                }
            }
            Ok(())
        })
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

    /// The file's format version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The embedding or the classifier (int8, `vocab × dim`): in row quads from version 3 on.
    fn vocab_matrix(&self, index: usize) -> Matrix<'a> {
        let layout = if self.version >= 3 {
            WeightLayout::RowQuads
        } else {
            WeightLayout::RowMajor
        };
        Matrix::from_section(
            self.section(index),
            self.config.vocab_size,
            self.config.dim,
            Quant::Int8,
            self.config.group_size,
            layout,
        )
    }

    /// A layer matrix: int8 ones are in row quads from version 2 on.
    fn layer_matrix(&self, index: usize, rows: usize, cols: usize) -> Matrix<'a> {
        let quant = self.config.quant;
        let layout = if quant == Quant::Int8 && self.version >= 2 {
            WeightLayout::RowQuads
        } else {
            WeightLayout::RowMajor
        };
        Matrix::from_section(
            self.section(index),
            rows,
            cols,
            quant,
            self.config.group_size,
            layout,
        )
    }

    /// The token embedding (int8, `vocab × dim`; read a row with [`Matrix::weight_i8`]).
    pub fn token_embedding(&self) -> Matrix<'a> {
        self.vocab_matrix(index::TOKEN_EMBEDDING)
    }

    /// The classifier: the embedding when tied, else `output.weight` (int8, `vocab × dim`).
    pub fn output(&self) -> Matrix<'a> {
        if self.config.tied_embeddings {
            self.token_embedding()
        } else {
            self.vocab_matrix(index::output(&self.config))
        }
    }

    /// Final RMSNorm gains (`dim` × i32 Q16.16).
    pub fn final_norm(&self) -> &'a [u8] {
        self.section(index::final_norm(&self.config))
    }

    /// The tensors of layer `l`.
    pub fn layer(&self, l: usize) -> LayerWeights<'a> {
        let c = &self.config;
        let at = |position| index::layer(l, position);
        let (dim, q_dim, kv, hidden) = (c.dim, c.q_dim(), c.kv_dim(), c.hidden_dim);
        let w3_rows = if c.ffn == FfnKind::Swiglu { hidden } else { 0 };
        LayerWeights {
            attention_norm: self.section(at(in_layer::ATTENTION_NORM)),
            wq: self.layer_matrix(at(in_layer::WQ), q_dim, dim),
            wk: self.layer_matrix(at(in_layer::WK), kv, dim),
            wv: self.layer_matrix(at(in_layer::WV), kv, dim),
            wo: self.layer_matrix(at(in_layer::WO), dim, q_dim),
            ffn_norm: self.section(at(in_layer::FFN_NORM)),
            w1: self.layer_matrix(at(in_layer::W1), hidden, dim),
            w2: self.layer_matrix(at(in_layer::W2), dim, hidden),
            w3: self.layer_matrix(at(in_layer::W3), w3_rows, dim),
        }
    }
}

fn read_config(bytes: &[u8]) -> Result<Config, FormatError> {
    let word = |at: usize| le_u32(bytes, at);
    let ffn = match word(header::FFN) {
        0 => FfnKind::Plain,
        1 => FfnKind::Swiglu,
        _ => return Err(FormatError::BadConfig("unknown ffn kind")),
    };
    let tied_embeddings = match word(header::TIED_EMBEDDINGS) {
        0 => false,
        1 => true,
        _ => return Err(FormatError::BadConfig("tied flag must be 0 or 1")),
    };
    let tokenizer = match word(header::TOKENIZER) {
        0 => TokenizerKind::Char,
        1 => TokenizerKind::Bpe,
        2 => TokenizerKind::None,
        _ => return Err(FormatError::BadConfig("unknown tokenizer kind")),
    };
    let quant = match word(header::QUANT) {
        1 => Quant::Int8,
        2 => Quant::Int4,
        _ => return Err(FormatError::BadConfig("unknown quantisation scheme")),
    };
    Ok(Config {
        vocab_size: word(header::VOCAB_SIZE) as usize,
        dim: word(header::DIM) as usize,
        hidden_dim: word(header::HIDDEN_DIM) as usize,
        n_layers: word(header::N_LAYERS) as usize,
        n_heads: word(header::N_HEADS) as usize,
        n_kv_heads: word(header::N_KV_HEADS) as usize,
        seq_len: word(header::SEQ_LEN) as usize,
        ffn,
        tied_embeddings,
        tokenizer,
        quant,
        group_size: word(header::GROUP_SIZE) as usize,
        eot_id: word(header::EOT_ID),
        unk_id: word(header::UNK_ID),
        head_size: match word(header::HEAD_SIZE) {
            0 => None,
            n => Some(n as usize),
        },
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
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum WriteError {
        /// The configuration breaks a format rule.
        Config(FormatError),
        /// `token_bytes` does not hold one string per vocabulary entry.
        TokenCount { tokens: usize, vocab_size: usize },
        /// A merge refers to an id above `u16::MAX`.
        MergeIdTooLarge(u32),
        /// More merges than `u16` ranks.
        TooManyMerges(usize),
        /// `layers` does not hold one entry per layer.
        LayerCount { layers: usize, n_layers: usize },
        /// A section has the wrong length for the configuration.
        SectionSize {
            index: usize,
            tag: u32,
            layer: u32,
            expected: usize,
            found: usize,
        },
        /// The file would not fit the 32-bit offsets.
        TooLarge,
        /// The written file fails [`Model::parse`] (a writer bug).
        Reparse(FormatError),
    }

    impl fmt::Display for WriteError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                WriteError::Config(_) => write!(f, "the configuration breaks the format"),
                WriteError::TokenCount { tokens, vocab_size } => {
                    write!(f, "{tokens} token strings for vocab {vocab_size}")
                }
                WriteError::MergeIdTooLarge(id) => write!(f, "merge id {id} exceeds u16"),
                WriteError::TooManyMerges(n) => write!(f, "{n} merges, more than 65535"),
                WriteError::LayerCount { layers, n_layers } => write!(
                    f,
                    "{layers} layers of sections for a configuration of {n_layers}"
                ),
                WriteError::SectionSize {
                    index,
                    tag,
                    layer,
                    expected,
                    found,
                } => write!(
                    f,
                    "section {index} (tag {tag}, layer {layer}) has {found} bytes, expected {expected}"
                ),
                WriteError::TooLarge => write!(f, "file exceeds 4 GiB"),
                WriteError::Reparse(_) => write!(f, "the written file does not parse"),
            }
        }
    }

    impl std::error::Error for WriteError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                WriteError::Config(e) | WriteError::Reparse(e) => Some(e),
                _ => None,
            }
        }
    }

    /// Zero bytes up to the next multiple of [`ALIGN`] (see [`pad4`]).
    pub fn pad_to_align(out: &mut Vec<u8>) {
        out.resize(pad4(out.len()).unwrap_or(out.len()), 0);
    }

    /// A file of an older version rewritten as the current one, with the same numbers: the
    /// sections keep their offsets and lengths, the weights of each matrix the older version
    /// stored row-major but the current one in row quads (version 1: the int8 layer matrices;
    /// versions 1 and 2: the embedding and the classifier) are rearranged
    /// ([`crate::kernels::quad_rows`]; the same byte count), then the version and the CRC are
    /// rewritten and the result re-parsed. A current file comes back unchanged.
    pub fn upgrade(bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
        let model = Model::parse(bytes)?;
        let mut out = bytes.to_vec();
        if model.version() == VERSION {
            return Ok(out);
        }
        let mut plain_matrices = Vec::new();
        if model.config().quant == Quant::Int8 && model.version() < 2 {
            for l in 0..model.config().n_layers {
                let w = model.layer(l);
                plain_matrices.extend([w.wq, w.wk, w.wv, w.wo, w.w1, w.w2, w.w3]);
            }
        }
        plain_matrices.push(model.token_embedding());
        if !model.config().tied_embeddings {
            plain_matrices.push(model.output());
        }
        for m in plain_matrices {
            let n = m.rows * m.cols;
            let start = m.weights.as_ptr() as usize - bytes.as_ptr() as usize;
            let plain = m.weights.get(..n).ok_or(FormatError::Truncated {
                needed: start + n,
                got: bytes.len(),
            })?;
            crate::kernels::quad_rows(plain, m.rows, m.cols, &mut out[start..start + n]);
        }
        out[header::VERSION..header::VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        let crc = crc32(&out[CRC_START..]);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        Model::parse(&out)?;
        Ok(out)
    }

    /// Lays out header, table and sections, fills in length and CRC, and re-parses the result
    /// with [`Model::parse`] so a file this returns is one the device accepts.
    pub fn write_model(m: &ModelSections) -> Result<Vec<u8>, WriteError> {
        let c = &m.config;
        c.validate().map_err(WriteError::Config)?;
        if m.token_bytes.len() != c.vocab_size {
            return Err(WriteError::TokenCount {
                tokens: m.token_bytes.len(),
                vocab_size: c.vocab_size,
            });
        }
        if m.layers.len() != c.n_layers {
            return Err(WriteError::LayerCount {
                layers: m.layers.len(),
                n_layers: c.n_layers,
            });
        }
        let mut offsets = Vec::with_capacity((c.vocab_size + 1) * 4);
        let mut blob = Vec::new();
        offsets.extend_from_slice(&0u32.to_le_bytes());
        for t in &m.token_bytes {
            blob.extend_from_slice(t);
            offsets.extend_from_slice(&(blob.len() as u32).to_le_bytes());
        }
        let id16 = |v: u32| u16::try_from(v).map_err(|_| WriteError::MergeIdTooLarge(v));
        let mut merges = Vec::with_capacity(m.merges.len());
        for (rank, &(left, right, merged)) in m.merges.iter().enumerate() {
            let rank =
                u16::try_from(rank).map_err(|_| WriteError::TooManyMerges(m.merges.len()))?;
            merges.push(Merge {
                left: id16(left)?,
                right: id16(right)?,
                merged: id16(merged)?,
                rank,
            });
        }
        merges.sort_by_key(|m| (m.left, m.right, m.merged, m.rank));
        let merge_bytes: Vec<u8> = merges.iter().flat_map(|m| m.to_le_bytes()).collect();
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

        let mut before: [&[u8]; SECTIONS_BEFORE_LAYERS] = [&[]; SECTIONS_BEFORE_LAYERS];
        before[index::VOCAB_OFFSETS] = &offsets;
        before[index::VOCAB_BYTES] = &blob;
        before[index::MERGES] = &merge_bytes;
        before[index::BYTE_TOKENS] = &byte_tokens;
        before[index::ROPE] = &rope;
        before[index::TOKEN_EMBEDDING] = &m.token_embedding;
        let mut sections: Vec<&[u8]> = before.to_vec();
        for layer in &m.layers {
            sections.extend(layer.iter().map(|s| s.as_slice()));
        }
        sections.push(&m.final_norm);
        sections.push(&m.output);
        debug_assert_eq!(sections.len(), c.n_sections());

        let n = sections.len();
        let mut out = std::vec![0u8; HEADER_BYTES + n * SECTION_ENTRY_BYTES];
        out[header::MAGIC..header::MAGIC + 4].copy_from_slice(&MAGIC);
        let put =
            |out: &mut [u8], at: usize, v: u32| out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let fields = [
            (header::VERSION, VERSION),
            (header::VOCAB_SIZE, c.vocab_size as u32),
            (header::DIM, c.dim as u32),
            (header::HIDDEN_DIM, c.hidden_dim as u32),
            (header::N_LAYERS, c.n_layers as u32),
            (header::N_HEADS, c.n_heads as u32),
            (header::N_KV_HEADS, c.n_kv_heads as u32),
            (header::SEQ_LEN, c.seq_len as u32),
            (header::FFN, c.ffn as u32),
            (header::TIED_EMBEDDINGS, c.tied_embeddings as u32),
            (header::TOKENIZER, c.tokenizer as u32),
            (header::QUANT, c.quant as u32),
            (header::GROUP_SIZE, c.group_size as u32),
            (header::EOT_ID, c.eot_id),
            (header::UNK_ID, c.unk_id),
            (header::N_SECTIONS, n as u32),
            (header::HEAD_SIZE, c.head_size.unwrap_or(0) as u32),
        ];
        for (at, v) in fields {
            put(&mut out, at, v);
        }
        for (index, data) in sections.iter().enumerate() {
            let (t, layer) = canonical_section(c, index).unwrap_or((0, NO_LAYER));
            if let Some(expected) = section_bytes(c, t) {
                if expected != data.len() {
                    return Err(WriteError::SectionSize {
                        index,
                        tag: t,
                        layer,
                        expected,
                        found: data.len(),
                    });
                }
            }
            pad_to_align(&mut out);
            let at = HEADER_BYTES + index * SECTION_ENTRY_BYTES;
            let offset = u32::try_from(out.len()).map_err(|_| WriteError::TooLarge)?;
            put(&mut out, at + entry::TAG, t);
            put(&mut out, at + entry::LAYER, layer);
            put(&mut out, at + entry::OFFSET, offset);
            put(&mut out, at + entry::LEN, data.len() as u32);
            out.extend_from_slice(data);
        }
        pad_to_align(&mut out);
        let len = u32::try_from(out.len()).map_err(|_| WriteError::TooLarge)?;
        put(&mut out, header::FILE_BYTES, len);
        fix_crc(&mut out);
        Model::parse(&out).map_err(WriteError::Reparse)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_quads_are_cut_only_at_whole_quads() {
        let scales = [0u8; 8 * 10];
        let weights = [0u8; 10 * 3];
        let m = Matrix::from_section(&[], 10, 3, Quant::Int8, 0, WeightLayout::RowQuads);
        let m = Matrix {
            row_scales: &scales,
            weights: &weights,
            ..m
        };
        let cut = m.rows(4, 4);
        assert_eq!(
            (cut.rows, cut.weights.len(), cut.row_scales.len()),
            (4, 12, 32)
        );
        assert_eq!(m.rows(8, 5).rows, 2); // to the last row: the row-major tail comes along
        assert_eq!(m.rows(2, 4).rows, 0);
        assert_eq!(m.rows(4, 3).rows, 0);
        let plain = Matrix {
            layout: WeightLayout::RowMajor,
            ..m
        };
        assert_eq!(plain.rows(2, 3).rows, 3);
    }

    /// `weight_i8` reads the same weight from a row-major matrix and from its row quads (the
    /// embedding lookup of version 3), tail rows included, and 0 outside the matrix.
    #[test]
    fn weight_i8_reads_both_layouts_alike() {
        for (rows, cols) in [(1, 1), (4, 2), (10, 3), (13, 8), (16, 64)] {
            let plain: std::vec::Vec<u8> = (0..rows * cols)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
                .collect();
            let mut quads = std::vec![0u8; rows * cols];
            crate::kernels::quad_rows(&plain, rows, cols, &mut quads);
            let a = Matrix {
                weights: &plain,
                ..Matrix::from_section(&[], rows, cols, Quant::Int8, 0, WeightLayout::RowMajor)
            };
            let b = Matrix {
                weights: &quads,
                ..Matrix::from_section(&[], rows, cols, Quant::Int8, 0, WeightLayout::RowQuads)
            };
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        a.weight_i8(r, c),
                        plain[r * cols + c] as i8,
                        "{rows}×{cols}"
                    );
                    assert_eq!(
                        b.weight_i8(r, c),
                        a.weight_i8(r, c),
                        "{rows}×{cols} at {r},{c}"
                    );
                }
            }
            assert_eq!((b.weight_i8(rows, 0), b.weight_i8(0, cols)), (0, 0));
        }
    }
}
