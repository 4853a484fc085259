//! Robust per-dimension scaler: the space an LCM is trained in.
//!
//! Following the LCM reference's `gaussian_robust` normaliser, each dimension `j` is mapped by
//! `x̂_j = (x_j − center_j) / scale_j` with `center_j = median_j` and
//! `scale_j = IQR_j / 1.349` (the IQR of a standard normal is 1.349, so a Gaussian dimension
//! ends up with unit standard deviation while outliers do not drag the statistics).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors, serialize_to_file, tensor::TensorView};

use crate::error::{ConceptError, Result};

/// IQR of the standard normal distribution: Φ⁻¹(0.75) − Φ⁻¹(0.25).
pub const NORMAL_IQR: f32 = 1.349;
/// Smallest scale kept; a constant dimension would otherwise divide by zero.
pub const MIN_SCALE: f32 = 1e-8;
pub const NORMALIZER_FORMAT: &str = "lcm-robust-normalizer-1";

#[derive(Debug, Clone, PartialEq)]
pub struct RobustNormalizer {
    pub center: Vec<f32>,
    pub scale: Vec<f32>,
    /// Identifier of the embedding space the statistics were fitted in.
    pub encoder_id: String,
    /// Number of vectors the statistics were fitted on.
    pub fitted_on: usize,
}

/// Quantile `q ∈ [0, 1]` of already sorted values with linear interpolation between order
/// statistics (numpy's and torch's default), so fits agree with the reference's tooling.
fn sorted_quantile(sorted: &[f32], q: f64) -> f32 {
    let position = q * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    let weight = (position - lower as f64) as f32;
    sorted[lower] + (sorted[upper] - sorted[lower]) * weight
}

impl RobustNormalizer {
    /// Fits on `rows` vectors of dimension `dim` stored row-major in `data`.
    pub fn fit(data: &[f32], dim: usize, encoder_id: &str) -> Result<Self> {
        if dim == 0 || data.is_empty() || !data.len().is_multiple_of(dim) {
            return Err(ConceptError::Invalid(format!(
                "cannot fit a normaliser on {} values of dimension {dim}: need a non-empty [N, {dim}] sample",
                data.len()
            )));
        }
        if let Some(position) = data.iter().position(|v| !v.is_finite()) {
            return Err(ConceptError::InvalidEmbedding(format!(
                "non-finite value {} in row {} of the normaliser sample",
                data[position],
                position / dim
            )));
        }
        let rows = data.len() / dim;
        let mut center = Vec::with_capacity(dim);
        let mut scale = Vec::with_capacity(dim);
        let mut column = vec![0f32; rows];
        for j in 0..dim {
            for (i, value) in column.iter_mut().enumerate() {
                *value = data[i * dim + j];
            }
            column.sort_unstable_by(f32::total_cmp);
            let q1 = sorted_quantile(&column, 0.25);
            let median = sorted_quantile(&column, 0.5);
            let q3 = sorted_quantile(&column, 0.75);
            center.push(median);
            scale.push(((q3 - q1) / NORMAL_IQR).max(MIN_SCALE));
        }
        Ok(Self {
            center,
            scale,
            encoder_id: encoder_id.to_string(),
            fitted_on: rows,
        })
    }

    pub fn dim(&self) -> usize {
        self.center.len()
    }

    fn check_dim(&self, got: usize, context: &str) -> Result<()> {
        if got != self.dim() {
            return Err(ConceptError::DimensionMismatch {
                expected: self.dim(),
                got,
                context: context.to_string(),
            });
        }
        Ok(())
    }

    /// `(x − center) / scale` on a `[..., D]` tensor.
    pub fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        let (center, scale) = self.tensors(x.device())?;
        self.check_dim(x.dims().last().copied().unwrap_or(0), "normalize")?;
        Ok(x.broadcast_sub(&center)?.broadcast_div(&scale)?)
    }

    /// `x̂ · scale + center` on a `[..., D]` tensor: the inverse of [`Self::normalize`].
    pub fn denormalize(&self, x: &Tensor) -> Result<Tensor> {
        let (center, scale) = self.tensors(x.device())?;
        self.check_dim(x.dims().last().copied().unwrap_or(0), "denormalize")?;
        Ok(x.broadcast_mul(&scale)?.broadcast_add(&center)?)
    }

    /// In-place normalisation of row-major `[N, D]` values.
    pub fn normalize_in_place(&self, data: &mut [f32]) -> Result<()> {
        self.map_in_place(data, "normalize_in_place", |v, c, s| (v - c) / s)
    }

    /// In-place inverse of [`Self::normalize_in_place`].
    pub fn denormalize_in_place(&self, data: &mut [f32]) -> Result<()> {
        self.map_in_place(data, "denormalize_in_place", |v, c, s| v * s + c)
    }

    fn map_in_place(
        &self,
        data: &mut [f32],
        context: &str,
        f: impl Fn(f32, f32, f32) -> f32,
    ) -> Result<()> {
        if !data.len().is_multiple_of(self.dim()) {
            return Err(ConceptError::DimensionMismatch {
                expected: self.dim(),
                got: data.len() % self.dim(),
                context: format!("{context}: length is not a multiple of the dimension"),
            });
        }
        for row in data.chunks_exact_mut(self.dim()) {
            for ((v, &c), &s) in row.iter_mut().zip(&self.center).zip(&self.scale) {
                *v = f(*v, c, s);
            }
        }
        Ok(())
    }

    fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::from_slice(&self.center, self.dim(), device)?,
            Tensor::from_slice(&self.scale, self.dim(), device)?,
        ))
    }

    /// Writes `center` and `scale` as f32 safetensors with the metadata that ties them to an
    /// embedding space. The file is written to a temporary name and renamed, so an interrupted
    /// save never leaves a truncated normaliser behind.
    pub fn save(&self, path: &Path) -> Result<()> {
        let center_bytes: Vec<u8> = self.center.iter().flat_map(|v| v.to_le_bytes()).collect();
        let scale_bytes: Vec<u8> = self.scale.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dim = self.dim();
        let to_error = |e: safetensors::SafeTensorError| ConceptError::Invalid(format!("{e}"));
        let views = [
            (
                "center",
                TensorView::new(Dtype::F32, vec![dim], &center_bytes).map_err(to_error)?,
            ),
            (
                "scale",
                TensorView::new(Dtype::F32, vec![dim], &scale_bytes).map_err(to_error)?,
            ),
        ];
        let metadata = HashMap::from([
            ("format".to_string(), NORMALIZER_FORMAT.to_string()),
            ("method".to_string(), "gaussian_robust".to_string()),
            ("encoder_id".to_string(), self.encoder_id.clone()),
            ("dim".to_string(), dim.to_string()),
            ("fitted_on".to_string(), self.fitted_on.to_string()),
        ]);
        lcm_util::fs::replace_with(path, |temporary| {
            serialize_to_file(views, Some(metadata), temporary).map_err(std::io::Error::other)
        })
        .map_err(|e| ConceptError::Io {
            path: e.path,
            source: e.source,
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| ConceptError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| {
            ConceptError::Invalid(format!(
                "{} is not an lcm normaliser ({reason}); refit it with `lcm fit-normalizer`",
                path.display()
            ))
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some(NORMALIZER_FORMAT) {
            return Err(bad("missing or unknown `format` metadata".into()));
        }
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str| -> Result<Vec<f32>> {
            let view = tensors
                .tensor(name)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if view.dtype() != Dtype::F32 || view.shape().len() != 1 {
                return Err(bad(format!("tensor `{name}` must be a 1-D f32 vector")));
            }
            Ok(view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let center = read("center")?;
        let scale = read("scale")?;
        if center.len() != scale.len() || center.is_empty() {
            return Err(bad("center and scale differ in length".into()));
        }
        if scale.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || center.iter().any(|c| !c.is_finite())
        {
            return Err(bad("non-finite center or non-positive scale".into()));
        }
        Ok(Self {
            center,
            scale,
            encoder_id: metadata.get("encoder_id").cloned().unwrap_or_default(),
            fitted_on: metadata
                .get("fitted_on")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }

    /// Checks that this normaliser belongs to the space of `encoder_id`.
    pub fn check_encoder(&self, encoder_id: &str, path: &Path) -> Result<()> {
        if self.encoder_id != encoder_id {
            return Err(ConceptError::Invalid(format!(
                "normaliser {} was fitted in the space of `{}`, not `{encoder_id}`; refit it with `lcm fit-normalizer` on a store of that encoder",
                path.display(),
                self.encoder_id
            )));
        }
        Ok(())
    }

    /// Convenience for callers holding data in a tensor.
    pub fn fit_tensor(x: &Tensor, encoder_id: &str) -> Result<Self> {
        let (_, dim) = x.dims2()?;
        let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::fit(&data, dim, encoder_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rows: usize, dim: usize) -> Vec<f32> {
        // Deterministic, skewed, per-dimension-shifted values with an outlier row.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut data = Vec::with_capacity(rows * dim);
        for i in 0..rows {
            for j in 0..dim {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let outlier = if i == 0 { 1e3 } else { 0.0 };
                data.push((u * (j + 1) as f64 + j as f64 + outlier) as f32);
            }
        }
        data
    }

    #[test]
    fn median_and_iqr_match_hand_computation() {
        // Column 0: 1..=5 → median 3, q1 2, q3 4; column 1: constant → scale floored.
        let data = [1.0, 7.0, 2.0, 7.0, 3.0, 7.0, 4.0, 7.0, 5.0, 7.0];
        let n = RobustNormalizer::fit(&data, 2, "test").expect("fit");
        assert_eq!(n.center, vec![3.0, 7.0]);
        assert!((n.scale[0] - 2.0 / NORMAL_IQR).abs() < 1e-7);
        assert_eq!(n.scale[1], MIN_SCALE);
        // Interpolated quantiles on an even count: 1,2,3,4 → median 2.5, q1 1.75, q3 3.25.
        let n = RobustNormalizer::fit(&[4.0, 1.0, 3.0, 2.0], 1, "test").expect("fit");
        assert_eq!(n.center, vec![2.5]);
        assert!((n.scale[0] - 1.5 / NORMAL_IQR).abs() < 1e-7);
    }

    #[test]
    fn outliers_do_not_move_the_statistics() {
        let dim = 8;
        let mut data = sample(1001, dim);
        let clean = RobustNormalizer::fit(&data[dim..], dim, "t").expect("fit");
        for v in &mut data[..dim] {
            *v = 1e9;
        }
        let with_outlier = RobustNormalizer::fit(&data, dim, "t").expect("fit");
        for j in 0..dim {
            assert!((clean.center[j] - with_outlier.center[j]).abs() < 0.01 * clean.scale[j]);
        }
    }

    #[test]
    fn normalize_denormalize_round_trip() {
        let dim = 16;
        let data = sample(300, dim);
        let n = RobustNormalizer::fit(&data, dim, "t").expect("fit");
        let x = Tensor::from_slice(&data, (300, dim), &Device::Cpu).expect("tensor");
        let back = n
            .denormalize(&n.normalize(&x).expect("norm"))
            .expect("denorm")
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("vec");
        for (a, b) in data.iter().zip(&back) {
            assert!(
                (a - b).abs() <= 4.0 * f32::EPSILON * a.abs().max(1.0),
                "{a} vs {b}"
            );
        }
        // Slice path agrees with the tensor path bit for bit.
        let mut in_place = data.clone();
        n.normalize_in_place(&mut in_place).expect("norm");
        let via_tensor = n
            .normalize(&x)
            .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
            .expect("vec");
        assert_eq!(in_place, via_tensor);
        // Normalised sample: medians ≈ 0.
        let refit = RobustNormalizer::fit(&in_place, dim, "t").expect("fit");
        assert!(refit.center.iter().all(|c| c.abs() < 1e-5));
        assert!(refit.scale.iter().all(|s| (s - 1.0).abs() < 1e-4));
    }

    #[test]
    fn save_load_is_bit_exact_and_checks_space() {
        let dim = 5;
        let n = RobustNormalizer::fit(&sample(50, dim), dim, "enc@123").expect("fit");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("norm.safetensors");
        n.save(&path).expect("save");
        let loaded = RobustNormalizer::load(&path).expect("load");
        assert_eq!(n, loaded);
        assert!(loaded.check_encoder("enc@123", &path).is_ok());
        let err = loaded
            .check_encoder("other@456", &path)
            .expect_err("mismatch");
        assert!(err.to_string().contains("enc@123"), "{err}");
        let x = Tensor::zeros((2, dim + 1), DType::F32, &Device::Cpu).expect("zeros");
        assert!(loaded.normalize(&x).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(RobustNormalizer::fit(&[], 4, "t").is_err());
        assert!(RobustNormalizer::fit(&[1.0, 2.0, 3.0], 2, "t").is_err());
        let err = RobustNormalizer::fit(&[1.0, f32::NAN], 1, "t").expect_err("nan");
        assert!(err.to_string().contains("row 1"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("junk.safetensors");
        std::fs::write(&path, b"not a safetensors file").expect("write");
        let err = RobustNormalizer::load(&path).expect_err("junk");
        assert!(err.to_string().contains("junk.safetensors"), "{err}");
    }
}
