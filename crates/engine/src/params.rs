//! Flat parameter and gradient buffers in the engine's layout, bound to candle `Var`s.
//!
//! The `Var`s stay the weights of record (checkpoints, evaluation and the optimiser use
//! them); the engine reads a flat copy refreshed before each step. Copying a few million
//! floats costs milliseconds, and lets the layout put related matrices side by side: the
//! query, key and value weights of a layer form one `[3d, d]` matrix, the SwiGLU gate and
//! up weights one `[2F, d]` matrix, so each is a single product.

use std::ops::Range;

use candle_core::{CpuStorage, DType, Storage, Var};
use candle_nn::VarMap;

use crate::{EngineError, Result};

/// One parameter: its VarMap name, shape and place in the flat buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSlot {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

/// The order and offsets of every parameter in the flat buffers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamLayout {
    slots: Vec<ParamSlot>,
    len: usize,
}

impl ParamLayout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a parameter and returns its range; consecutive pushes are contiguous.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> Range<usize> {
        let n: usize = shape.iter().product();
        let range = self.len..self.len + n;
        self.slots.push(ParamSlot {
            name: name.into(),
            shape: shape.to_vec(),
            range: range.clone(),
        });
        self.len += n;
        range
    }

    /// Total number of scalars.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn slots(&self) -> &[ParamSlot] {
        &self.slots
    }

    /// The slice of `flat` (laid out by `self`) that belongs to `name`.
    pub fn get<'a>(&self, flat: &'a [f32], name: &str) -> Option<&'a [f32]> {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .map(|s| &flat[s.range.clone()])
    }
}

/// The model's weights copied into one buffer in a [`ParamLayout`], with the `Var`s they
/// came from.
pub struct FlatParams {
    layout: ParamLayout,
    vars: Vec<Var>,
    data: Vec<f32>,
}

impl FlatParams {
    /// Binds `layout` to the variables of `varmap`. The VarMap must hold exactly the
    /// layout's names with its shapes, as f32 CPU tensors; anything else is
    /// [`EngineError::Unsupported`], naming the first difference.
    pub fn bind(layout: ParamLayout, varmap: &VarMap) -> Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| EngineError::Unsupported("the VarMap mutex is poisoned".into()))?;
        if data.len() != layout.slots.len() {
            let mut extra: Vec<&String> = data
                .keys()
                .filter(|k| !layout.slots.iter().any(|s| &s.name == *k))
                .collect();
            extra.sort();
            return Err(EngineError::Unsupported(format!(
                "the model has {} parameters, the engine's layout {} (not in the layout: {extra:?})",
                data.len(),
                layout.slots.len()
            )));
        }
        let mut vars = Vec::with_capacity(layout.slots.len());
        for slot in &layout.slots {
            let var = data.get(&slot.name).ok_or_else(|| {
                EngineError::Unsupported(format!("the model has no parameter `{}`", slot.name))
            })?;
            if var.dims() != slot.shape.as_slice() {
                return Err(EngineError::Unsupported(format!(
                    "parameter `{}` has shape {:?}, the engine expects {:?}",
                    slot.name,
                    var.dims(),
                    slot.shape
                )));
            }
            if var.dtype() != DType::F32 || !var.device().is_cpu() {
                return Err(EngineError::Unsupported(format!(
                    "parameter `{}` is {:?} on {:?}; the engine runs f32 on the CPU",
                    slot.name,
                    var.dtype(),
                    var.device().location()
                )));
            }
            vars.push(var.clone());
        }
        drop(data);
        let mut flat = Self {
            data: vec![0.0; layout.len],
            layout,
            vars,
        };
        flat.refresh()?;
        Ok(flat)
    }

    /// Copies the current values of the `Var`s into the flat buffer (after an optimiser
    /// step changed them).
    pub fn refresh(&mut self) -> Result<()> {
        for (slot, var) in self.layout.slots.iter().zip(&self.vars) {
            let (storage, layout) = var.as_tensor().storage_and_layout();
            let Storage::Cpu(CpuStorage::F32(values)) = &*storage else {
                return Err(EngineError::Unsupported(format!(
                    "parameter `{}` is not an f32 CPU tensor",
                    slot.name
                )));
            };
            let Some((start, end)) = layout.contiguous_offsets() else {
                return Err(EngineError::Unsupported(format!(
                    "parameter `{}` is not contiguous",
                    slot.name
                )));
            };
            self.data[slot.range.clone()].copy_from_slice(&values[start..end]);
        }
        Ok(())
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// `(name, Var)` pairs in layout order.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.layout
            .slots
            .iter()
            .map(|s| s.name.as_str())
            .zip(&self.vars)
    }
}
