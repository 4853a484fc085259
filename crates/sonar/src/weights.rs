//! Reading SONAR checkpoints into fairseq2-named tensors.
//!
//! Three layouts are accepted (see `scripts/sonar/FIXTURES.md` §4):
//! - fairseq2 `.pt`: a torch zip pickle `{"model": state_dict}` with fairseq2 names, as the
//!   released `sonar_text_encoder.pt` / `sonar_text_decoder.pt`;
//! - legacy fairseq1 `.pt`: `{"state_dict": …}` with fairseq1 names (decoders only; sonar-space
//!   itself cannot load a legacy encoder). The names are mapped as sonar's converter does, the
//!   embedding rows 0-3 are permuted from fairseq1's dictionary order to SONAR's, and
//!   `version` / `embed_positions._float_tensor` are dropped;
//! - `.safetensors` with fairseq2 names.
//!
//! A decoder's `final_proj.weight` is always the (permuted) embedding: it is tied.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::error::{Result, SonarError};
use crate::model::{SonarDecoderConfig, SonarEncoderConfig};

/// Where a checkpoint's tensors came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// fairseq2 names (`.pt` with a `"model"` entry, or `.safetensors`).
    Fairseq2,
    /// fairseq1 names under `"state_dict"`, converted on load.
    LegacyFairseq1,
}

const ENCODER_EMBED: &str = "encoder_frontend.embed.weight";
const DECODER_EMBED: &str = "decoder_frontend.embed.weight";
const FINAL_PROJ: &str = "final_proj.weight";

/// Loads a checkpoint into a `fairseq2 name → f32 tensor` map on `device`.
pub fn load_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, CheckpointLayout)> {
    if !path.is_file() {
        return Err(SonarError::file(
            path,
            "checkpoint not found; download sonar_text_encoder.pt / sonar_text_decoder.pt \
             (dl.fbaipublicfiles.com/SONAR/) or point the path at an existing file",
        ));
    }
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let (mut tensors, layout) = if is_safetensors {
        (read_safetensors(path)?, CheckpointLayout::Fairseq2)
    } else {
        read_torch(path)?
    };

    for t in tensors.values_mut() {
        *t = t.to_dtype(DType::F32)?.to_device(device)?;
    }
    if tensors.contains_key(DECODER_EMBED) && !tensors.contains_key(FINAL_PROJ) {
        let embed = tensors[DECODER_EMBED].clone();
        tensors.insert(FINAL_PROJ.to_string(), embed);
    }
    if !tensors.contains_key(ENCODER_EMBED) && !tensors.contains_key(DECODER_EMBED) {
        return Err(SonarError::file(
            path,
            format!(
                "neither `{ENCODER_EMBED}` nor `{DECODER_EMBED}` is in the checkpoint: it is \
                 not a SONAR text encoder or decoder"
            ),
        ));
    }
    Ok((tensors, layout))
}

/// Bytes per positioned read of a tensor's data.
const READ_CHUNK: usize = 16 << 20;

/// Largest safetensors header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// Reads a safetensors file straight into the tensors' own buffers: one positioned read per
/// tensor (the tensors in parallel), each f32 buffer advised onto huge pages before it is
/// filled. That is one copy from the page cache, like copying out of a memory map, without
/// the map's page faults on the file or the file counting in the resident set; and no whole
/// file held in memory as candle's `safetensors::load` does. Other dtypes go through candle's
/// conversion and are cast to f32 by the caller.
#[cfg(unix)]
fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    use std::os::unix::fs::FileExt;

    let bad = |why: String| {
        SonarError::file(
            path,
            format!(
                "cannot read as safetensors ({why}); the file is truncated or not a safetensors \
                 file: re-download or re-export it"
            ),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let file_len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0)
        .map_err(|e| bad(format!("header size: {e}")))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || 8 + n > file_len {
        return Err(bad(format!("header of {n} bytes in a file of {file_len}")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|e| bad(format!("header: {e}")))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let data_start = 8 + n;

    struct Entry {
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        offset: u64,
        bytes: usize,
    }
    let mut entries = Vec::with_capacity(header.len());
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let field = |key: &str| {
            info.get(key)
                .ok_or_else(|| bad(format!("tensor `{name}` has no `{key}`")))
        };
        let dtype = match field("dtype")?.as_str() {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            Some("F64") => DType::F64,
            other => return Err(bad(format!("tensor `{name}` has dtype {other:?}"))),
        };
        let numbers = |key: &str| -> Result<Vec<u64>> {
            field(key)?
                .as_array()
                .and_then(|a| a.iter().map(serde_json::Value::as_u64).collect())
                .ok_or_else(|| {
                    bad(format!(
                        "tensor `{name}`: `{key}` is not a list of integers"
                    ))
                })
        };
        let shape: Vec<usize> = numbers("shape")?.into_iter().map(|d| d as usize).collect();
        let (begin, end) = match numbers("data_offsets")?[..] {
            [b, e] if b <= e => (b, e),
            _ => return Err(bad(format!("tensor `{name}`: bad data_offsets"))),
        };
        let bytes = shape.iter().product::<usize>() * dtype.size_in_bytes();
        if end - begin != bytes as u64 || data_start + end > file_len {
            return Err(bad(format!(
                "tensor `{name}`: {bytes} bytes for shape {shape:?} at {begin}..{end} of a \
                 data section of {}",
                file_len - data_start
            )));
        }
        entries.push(Entry {
            name,
            dtype,
            shape,
            offset: data_start + begin,
            bytes,
        });
    }
    // Largest first, so that the two halves of a parallel read end together.
    entries.sort_by_key(|e| std::cmp::Reverse(e.bytes));
    entries
        .into_par_iter()
        .map(|e| {
            // In chunks, in parallel: one large tensor (the 1 GB embedding) would otherwise
            // keep one thread busy while the other runs out of work.
            let read = |buf: &mut [u8]| {
                buf.par_chunks_mut(READ_CHUNK)
                    .enumerate()
                    .try_for_each(|(i, chunk)| {
                        file.read_exact_at(chunk, e.offset + (i * READ_CHUNK) as u64)
                    })
                    .map_err(|err| bad(format!("tensor `{}`: {err}", e.name)))
            };
            let tensor = if e.dtype == DType::F32 && cfg!(target_endian = "little") {
                let mut values = vec![0f32; e.bytes / 4];
                lcm_util::memory::advise_huge_pages(&mut values);
                // SAFETY: the byte view covers exactly the f32 buffer, which it borrows
                // mutably; every byte pattern is a valid f32, and safetensors stores
                // little-endian values, which this target reads natively.
                let bytes = unsafe {
                    std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), e.bytes)
                };
                read(bytes)?;
                Tensor::from_vec(values, e.shape, &Device::Cpu)?
            } else {
                let mut bytes = vec![0u8; e.bytes];
                read(&mut bytes)?;
                Tensor::from_raw_buffer(&bytes, e.dtype, &e.shape, &Device::Cpu)?
            };
            Ok((e.name, tensor))
        })
        .collect()
}

/// Elsewhere: candle's reader (the whole file in memory, then a copy per tensor).
#[cfg(not(unix))]
fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        SonarError::file(
            path,
            format!(
                "cannot read as safetensors ({e}); the file is truncated or not a safetensors \
                 file: re-download or re-export it"
            ),
        )
    })
}

/// Reads a torch zip pickle: `{"model": sd}` (fairseq2) or `{"state_dict": sd}` (fairseq1).
fn read_torch(path: &Path) -> Result<(HashMap<String, Tensor>, CheckpointLayout)> {
    let unreadable = |e: candle_core::Error| {
        SonarError::file(
            path,
            format!(
                "cannot read as a torch checkpoint ({e}); the file is truncated or corrupt: \
                 re-download it"
            ),
        )
    };
    // Opening the zip once up front separates "not a readable archive" from "no such key".
    candle_core::pickle::read_pth_tensor_info(path, false, Some("__sonar_probe__"))
        .map(|_| ())
        .or_else(|e| match e {
            candle_core::Error::Msg(ref m) if m.contains("not found") => Ok(()),
            e => Err(unreadable(e)),
        })?;

    let read = |key: &str| -> Result<Option<HashMap<String, Tensor>>> {
        match candle_core::pickle::read_all_with_key(path, Some(key)) {
            Ok(v) => Ok(Some(v.into_iter().collect())),
            Err(candle_core::Error::Msg(m)) if m.contains("not found") => Ok(None),
            Err(e) => Err(unreadable(e)),
        }
    };
    if let Some(model) = read("model")?
        && (model.contains_key(ENCODER_EMBED) || model.contains_key(DECODER_EMBED))
    {
        return Ok((model, CheckpointLayout::Fairseq2));
    }
    match read("state_dict")? {
        Some(sd) => Ok((convert_legacy(sd, path)?, CheckpointLayout::LegacyFairseq1)),
        None => Err(SonarError::file(
            path,
            "no \"model\" entry with fairseq2 SONAR keys and no legacy \"state_dict\": not a \
             SONAR text checkpoint",
        )),
    }
}

/// fairseq1 → fairseq2 names (sonar `checkpoint.py` key map) and the embedding permutation.
fn convert_legacy(sd: HashMap<String, Tensor>, path: &Path) -> Result<HashMap<String, Tensor>> {
    let embed = sd.get("embed_tokens.weight").ok_or_else(|| {
        SonarError::file(
            path,
            "legacy checkpoint without `embed_tokens.weight`: not a SONAR text decoder",
        )
    })?;
    // Decoders only: sonar-space 0.5.0 cannot load a legacy encoder, so none exists to match.
    let prefix = "decoder";
    let mut out = HashMap::new();
    for (key, t) in &sd {
        if key == "version" || key.ends_with("_float_tensor") {
            continue;
        }
        let name = if key == "embed_tokens.weight" || key == "output_projection.weight" {
            continue;
        } else if let Some(rest) = key.strip_prefix("layers.") {
            let (idx, sub) = rest
                .split_once('.')
                .ok_or_else(|| SonarError::file(path, format!("unexpected legacy key `{key}`")))?;
            let sub = map_legacy_layer_key(sub)
                .ok_or_else(|| SonarError::file(path, format!("unknown legacy key `{key}`")))?;
            format!("{prefix}.layers.{idx}.{sub}")
        } else if let Some(rest) = key.strip_prefix("layer_norm.") {
            format!("{prefix}.layer_norm.{rest}")
        } else {
            return Err(SonarError::file(
                path,
                format!("unknown legacy key `{key}`"),
            ));
        };
        out.insert(name, t.clone());
    }
    // fairseq1 rows 0-3 are (<s>, <pad>, </s>, <unk>); SONAR's are (<pad>, <unk>, <s>, </s>).
    let rows = embed.dim(0)?;
    if rows < 4 {
        return Err(SonarError::file(path, "embedding has fewer than 4 rows"));
    }
    let mut order: Vec<u32> = vec![1, 3, 0, 2];
    order.extend(4..rows as u32);
    let order = Tensor::from_vec(order, rows, embed.device())?;
    let embed = embed.index_select(&order, 0)?;
    out.insert(DECODER_EMBED.to_string(), embed.clone());
    out.insert(FINAL_PROJ.to_string(), embed);
    Ok(out)
}

/// Maps the part after `layers.N.` of a fairseq1 key to fairseq2.
fn map_legacy_layer_key(sub: &str) -> Option<String> {
    let (module, param) = sub.rsplit_once('.')?;
    let module = match module {
        "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj" => module.to_string(),
        "self_attn.out_proj" => "self_attn.output_proj".into(),
        "self_attn_layer_norm" => module.into(),
        "encoder_attn.q_proj" => "encoder_decoder_attn.q_proj".into(),
        "encoder_attn.k_proj" => "encoder_decoder_attn.k_proj".into(),
        "encoder_attn.v_proj" => "encoder_decoder_attn.v_proj".into(),
        "encoder_attn.out_proj" => "encoder_decoder_attn.output_proj".into(),
        "encoder_attn_layer_norm" => "encoder_decoder_attn_layer_norm".into(),
        "fc1" | "ffn.inner_proj" => "ffn.inner_proj".into(),
        "fc2" | "ffn.output_proj" => "ffn.output_proj".into(),
        "final_layer_norm" | "ffn_layer_norm" => "ffn_layer_norm".into(),
        _ => return None,
    };
    Some(format!("{module}.{param}"))
}

/// The `(name, shape)` of every tensor an encoder with `cfg` reads.
pub fn encoder_tensor_shapes(cfg: &SonarEncoderConfig) -> Vec<(String, Vec<usize>)> {
    let (d, f) = (cfg.model_dim, cfg.ffn_inner_dim);
    let mut out = vec![(ENCODER_EMBED.to_string(), vec![cfg.vocab_size, d])];
    for i in 0..cfg.num_layers {
        let p = format!("encoder.layers.{i}");
        out.extend(layer_norm_shapes(&format!("{p}.self_attn_layer_norm"), d));
        out.extend(attention_shapes(&format!("{p}.self_attn"), d));
        out.extend(layer_norm_shapes(&format!("{p}.ffn_layer_norm"), d));
        out.extend(ffn_shapes(&format!("{p}.ffn"), d, f));
    }
    out.extend(layer_norm_shapes("layer_norm", d));
    out
}

/// The `(name, shape)` of every tensor a decoder with `cfg` reads (`final_proj.weight` is
/// tied to the embedding and not read separately).
pub fn decoder_tensor_shapes(cfg: &SonarDecoderConfig) -> Vec<(String, Vec<usize>)> {
    let (d, f) = (cfg.model_dim, cfg.ffn_inner_dim);
    let mut out = vec![(DECODER_EMBED.to_string(), vec![cfg.vocab_size, d])];
    for i in 0..cfg.num_layers {
        let p = format!("decoder.layers.{i}");
        out.extend(layer_norm_shapes(&format!("{p}.self_attn_layer_norm"), d));
        out.extend(attention_shapes(&format!("{p}.self_attn"), d));
        out.extend(layer_norm_shapes(
            &format!("{p}.encoder_decoder_attn_layer_norm"),
            d,
        ));
        out.extend(attention_shapes(&format!("{p}.encoder_decoder_attn"), d));
        out.extend(layer_norm_shapes(&format!("{p}.ffn_layer_norm"), d));
        out.extend(ffn_shapes(&format!("{p}.ffn"), d, f));
    }
    out.extend(layer_norm_shapes("decoder.layer_norm", d));
    out
}

fn layer_norm_shapes(p: &str, d: usize) -> Vec<(String, Vec<usize>)> {
    vec![
        (format!("{p}.weight"), vec![d]),
        (format!("{p}.bias"), vec![d]),
    ]
}

fn attention_shapes(p: &str, d: usize) -> Vec<(String, Vec<usize>)> {
    ["q_proj", "k_proj", "v_proj", "output_proj"]
        .iter()
        .flat_map(|m| {
            [
                (format!("{p}.{m}.weight"), vec![d, d]),
                (format!("{p}.{m}.bias"), vec![d]),
            ]
        })
        .collect()
}

fn ffn_shapes(p: &str, d: usize, f: usize) -> Vec<(String, Vec<usize>)> {
    vec![
        (format!("{p}.inner_proj.weight"), vec![f, d]),
        (format!("{p}.inner_proj.bias"), vec![f]),
        (format!("{p}.output_proj.weight"), vec![d, f]),
        (format!("{p}.output_proj.bias"), vec![d]),
    ]
}

/// Checks that every expected tensor is present with its shape; errors name the file and key.
fn validate(
    tensors: &HashMap<String, Tensor>,
    expected: &[(String, Vec<usize>)],
    source: &Path,
    what: &str,
) -> Result<()> {
    for (name, shape) in expected {
        match tensors.get(name) {
            None => {
                return Err(SonarError::file(
                    source,
                    format!(
                        "missing tensor `{name}` for the {what}: the checkpoint is incomplete \
                         or of another model; re-download or re-export it"
                    ),
                ));
            }
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(SonarError::file(
                    source,
                    format!(
                        "tensor `{name}` has shape {:?}, the {what} config expects {shape:?}: \
                         check the config (layers, dims, heads) against the checkpoint",
                        t.dims()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Number of `{prefix}.layers.N.` blocks (max N + 1).
fn count_layers(tensors: &HashMap<String, Tensor>, prefix: &str) -> usize {
    let needle = format!("{prefix}.layers.");
    tensors
        .keys()
        .filter_map(|k| {
            k.strip_prefix(&needle)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .collect::<BTreeSet<_>>()
        .last()
        .map_or(0, |n| n + 1)
}

fn dims2(tensors: &HashMap<String, Tensor>, name: &str, source: &Path) -> Result<(usize, usize)> {
    let t = tensors.get(name).ok_or_else(|| {
        SonarError::file(
            source,
            format!("missing tensor `{name}`; the checkpoint is incomplete or of another model"),
        )
    })?;
    t.dims2().map_err(|_| {
        SonarError::file(
            source,
            format!("tensor `{name}` has shape {:?}, expected 2 dims", t.dims()),
        )
    })
}

/// Heads cannot be read from a checkpoint: `num_heads` or `model_dim / 64` (SONAR's head dim).
fn heads(model_dim: usize, num_heads: Option<usize>) -> usize {
    num_heads.unwrap_or((model_dim / 64).max(1))
}

/// Encoder config from the tensor shapes (`num_heads`: see `heads`).
pub fn infer_encoder_config(
    tensors: &HashMap<String, Tensor>,
    num_heads: Option<usize>,
    source: &Path,
) -> Result<SonarEncoderConfig> {
    let (vocab_size, model_dim) = dims2(tensors, ENCODER_EMBED, source)?;
    let (ffn_inner_dim, _) = dims2(tensors, "encoder.layers.0.ffn.inner_proj.weight", source)?;
    Ok(SonarEncoderConfig {
        vocab_size,
        model_dim,
        num_layers: count_layers(tensors, "encoder"),
        num_heads: heads(model_dim, num_heads),
        ffn_inner_dim,
        max_seq_len: 514,
        pad_idx: 1,
    })
}

/// Decoder config from the tensor shapes (`num_heads`: see `heads`).
pub fn infer_decoder_config(
    tensors: &HashMap<String, Tensor>,
    num_heads: Option<usize>,
    source: &Path,
) -> Result<SonarDecoderConfig> {
    let (vocab_size, model_dim) = dims2(tensors, DECODER_EMBED, source)?;
    let (ffn_inner_dim, _) = dims2(tensors, "decoder.layers.0.ffn.inner_proj.weight", source)?;
    Ok(SonarDecoderConfig {
        vocab_size,
        model_dim,
        num_layers: count_layers(tensors, "decoder"),
        num_heads: heads(model_dim, num_heads),
        ffn_inner_dim,
        max_seq_len: 512,
        pad_idx: 1,
    })
}

/// Validates `tensors` against `cfg` and wraps them in a `VarBuilder` for
/// [`crate::model::SonarEncoder::new`]. `source` only names the file in errors.
pub fn encoder_var_builder(
    tensors: HashMap<String, Tensor>,
    cfg: &SonarEncoderConfig,
    source: &Path,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    validate(&tensors, &encoder_tensor_shapes(cfg), source, "encoder")?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}

/// Validates `tensors` against `cfg` and wraps them in a `VarBuilder` for
/// [`crate::model::SonarDecoder::new`].
pub fn decoder_var_builder(
    tensors: HashMap<String, Tensor>,
    cfg: &SonarDecoderConfig,
    source: &Path,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    validate(&tensors, &decoder_tensor_shapes(cfg), source, "decoder")?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}

/// Loads an encoder checkpoint with its config inferred from the shapes.
pub fn load_encoder(
    path: &Path,
    num_heads: Option<usize>,
    device: &Device,
) -> Result<crate::model::SonarEncoder> {
    let (tensors, _) = load_checkpoint(path, device)?;
    let cfg = infer_encoder_config(&tensors, num_heads, path)?;
    let vb = encoder_var_builder(tensors, &cfg, path, device)?;
    crate::model::SonarEncoder::new(&cfg, vb)
}

/// Loads a decoder checkpoint with its config inferred from the shapes.
pub fn load_decoder(
    path: &Path,
    num_heads: Option<usize>,
    device: &Device,
) -> Result<crate::model::SonarDecoder> {
    let (tensors, _) = load_checkpoint(path, device)?;
    let cfg = infer_decoder_config(&tensors, num_heads, path)?;
    let vb = decoder_var_builder(tensors, &cfg, path, device)?;
    crate::model::SonarDecoder::new(&cfg, vb)
}
