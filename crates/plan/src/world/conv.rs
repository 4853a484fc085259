//! The pixel encoder's convolutions as candle custom ops over [`lcm_kernels::conv`].
//!
//! candle's own CPU `conv2d` backward computes the input gradient with a direct
//! `conv_transpose2d` loop, and computes it even for the first layer, whose input is the image
//! batch and needs none; that made a pixel training step ~20× slower than its arithmetic. Here
//! the forward and both gradients are im2col + GEMM, and the input gradient is skipped when the
//! input does not depend on a variable. Same weights (`weight [O, C, k, k]`, `bias [O]`), same
//! initialisation and the same results as `candle_nn::Conv2d` to float rounding, so checkpoints
//! and seeds carry over.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Module, Result, Shape, Tensor, WithDType,
};
use candle_nn::{Conv2dConfig, VarBuilder};
use lcm_kernels::Scalar;
use lcm_kernels::conv::{
    Conv2dShape, conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight,
    conv2d_forward,
};

/// An unpadded, square-kernel convolution with a bias, trained through [`Conv2dOp`].
#[derive(Debug, Clone)]
pub struct FastConv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
}

impl FastConv2d {
    /// The variables `weight` and `bias` under `vb`, initialised as `candle_nn::conv2d` does.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            stride,
            ..Default::default()
        };
        let conv = candle_nn::conv2d(in_channels, out_channels, kernel, cfg, vb)?;
        let bias = conv
            .bias()
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("conv2d built without a bias".into()))?;
        Ok(FastConv2d {
            weight: conv.weight().clone(),
            bias,
            stride,
        })
    }
}

impl Module for FastConv2d {
    /// `[N, C, H, W]` → `[N, O, (H − k)/s + 1, (W − k)/s + 1]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op3(
            &self.weight.contiguous()?,
            &self.bias.contiguous()?,
            Conv2dOp {
                stride: self.stride,
            },
        )
    }
}

/// `conv2d(input [N, C, H, W], weight [O, C, k, k]) + bias [O]` without padding, stride
/// `stride`. The bias is part of the op because candle's gradient of a broadcast add (a sum
/// over three of four dimensions) cost more than the convolution's own gradients.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dOp {
    pub stride: usize,
}

fn conv_shape(input: &Layout, weight: &Layout, stride: usize) -> Result<Conv2dShape> {
    let (batch, in_channels, height, width) = input.shape().dims4()?;
    let (out_channels, wc, kh, kw) = weight.shape().dims4()?;
    if wc != in_channels || kh != kw || stride == 0 {
        candle_core::bail!(
            "conv2d: input {:?} and weight {:?} (stride {stride}) do not fit",
            input.shape(),
            weight.shape()
        );
    }
    Ok(Conv2dShape {
        batch,
        in_channels,
        height,
        width,
        out_channels,
        kernel: kh,
        stride,
    })
}

/// The contiguous data behind a CPU storage and its layout.
fn contiguous<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("conv2d: operands must be contiguous"),
    }
}

/// Runs `f32` or `f64` work (`f64` for the gradient checks); other types are an error.
fn by_dtype(
    storage: &CpuStorage,
    f32_work: impl FnOnce() -> Result<CpuStorage>,
    f64_work: impl FnOnce() -> Result<CpuStorage>,
) -> Result<CpuStorage> {
    match storage {
        CpuStorage::F32(_) => f32_work(),
        CpuStorage::F64(_) => f64_work(),
        other => candle_core::bail!(
            "conv2d: {:?} is not supported (f32, f64)",
            candle_core::backend::BackendStorage::dtype(other)
        ),
    }
}

fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

fn forward<T: Scalar + WithDType>(
    shape: &Conv2dShape,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    let bias = contiguous::<T>(s3, l3)?;
    if bias.len() != shape.out_channels {
        candle_core::bail!(
            "conv2d: bias {:?} for {} output channels",
            l3.shape(),
            shape.out_channels
        );
    }
    let mut out = vec![T::default(); shape.output_len()];
    let (input, weight) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
    conv2d_forward(shape, input, weight, bias, &mut out, threads());
    Ok(T::to_cpu_storage_owned(out))
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "lcm-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = conv_shape(l1, l2, self.stride)?;
        let args = ((s1, l1), (s2, l2), (s3, l3));
        let out = by_dtype(
            s1,
            || forward::<f32>(&shape, args.0, args.1, args.2),
            || forward::<f64>(&shape, args.0, args.1, args.2),
        )?;
        let dims = (
            shape.batch,
            shape.out_channels,
            shape.out_height(),
            shape.out_width(),
        );
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        input: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _output: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // The image batch of the first layer tracks nothing: its gradient would be discarded.
        let grad_input = if input.track_op() {
            let op = InputGrad {
                of: *self,
                input_dims: input.dims4()?,
            };
            Some(grad.apply_op2_no_bwd(weight, &op)?)
        } else {
            None
        };
        let op = WeightGrad {
            of: *self,
            weight_dims: weight.dims4()?,
        };
        let grad_weight = input.apply_op2_no_bwd(&grad, &op)?;
        let grad_bias = grad.apply_op1_no_bwd(&BiasGrad)?;
        Ok((grad_input, Some(grad_weight), Some(grad_bias)))
    }
}

/// `d loss / d bias` from `grad_output`: its sum per output channel.
struct BiasGrad;

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "lcm-conv2d-bias-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, out_channels, out_height, out_width) = l1.shape().dims4()?;
        let positions = out_height * out_width;
        fn run<T: Scalar + WithDType>(
            out_channels: usize,
            positions: usize,
            s1: &CpuStorage,
            l1: &Layout,
        ) -> Result<CpuStorage> {
            let mut db = vec![T::default(); out_channels];
            conv2d_backward_bias(positions, contiguous::<T>(s1, l1)?, &mut db);
            Ok(T::to_cpu_storage_owned(db))
        }
        let db = by_dtype(
            s1,
            || run::<f32>(out_channels, positions, s1, l1),
            || run::<f64>(out_channels, positions, s1, l1),
        )?;
        Ok((db, Shape::from(out_channels)))
    }
}

/// `d loss / d input` from `(grad_output, weight)`.
struct InputGrad {
    of: Conv2dOp,
    input_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "lcm-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = conv_shape(&Layout::contiguous(self.input_dims), l2, self.of.stride)?;
        fn run<T: Scalar + WithDType>(
            shape: &Conv2dShape,
            (s1, l1): (&CpuStorage, &Layout),
            (s2, l2): (&CpuStorage, &Layout),
        ) -> Result<CpuStorage> {
            let mut dx = vec![T::default(); shape.input_len()];
            let (grad, weight) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
            conv2d_backward_input(shape, grad, weight, &mut dx, threads());
            Ok(T::to_cpu_storage_owned(dx))
        }
        let dx = by_dtype(
            s1,
            || run::<f32>(&shape, (s1, l1), (s2, l2)),
            || run::<f64>(&shape, (s1, l1), (s2, l2)),
        )?;
        Ok((dx, Shape::from(self.input_dims)))
    }
}

/// `d loss / d weight` from `(input, grad_output)`.
struct WeightGrad {
    of: Conv2dOp,
    weight_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "lcm-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = conv_shape(l1, &Layout::contiguous(self.weight_dims), self.of.stride)?;
        fn run<T: Scalar + WithDType>(
            shape: &Conv2dShape,
            (s1, l1): (&CpuStorage, &Layout),
            (s2, l2): (&CpuStorage, &Layout),
        ) -> Result<CpuStorage> {
            let mut dw = vec![T::default(); shape.weight_len()];
            let (input, grad) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
            conv2d_backward_weight(shape, input, grad, &mut dw, threads());
            Ok(T::to_cpu_storage_owned(dw))
        }
        let dw = by_dtype(
            s1,
            || run::<f32>(&shape, (s1, l1), (s2, l2)),
            || run::<f64>(&shape, (s1, l1), (s2, l2)),
        )?;
        Ok((dw, Shape::from(self.weight_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    fn input<S: Into<Shape>>(dims: S, seed: f32) -> Tensor {
        let dims: Shape = dims.into();
        let len = dims.elem_count();
        let data: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
        Tensor::from_vec(data, dims, &Device::Cpu).expect("input")
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff")
    }

    /// Forward, input gradient and weight gradient equal candle's `conv2d` on a two-layer
    /// stack (so the second layer's input gradient is exercised), for stride 2 and 1.
    #[test]
    fn matches_candle_conv2d_forward_and_gradients() -> Result<()> {
        for stride in [2, 1] {
            let map = VarMap::new();
            let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
            let c0 = FastConv2d::new(2, 5, 5, stride, vb.pp("c0"))?;
            let c1 = FastConv2d::new(5, 3, 3, stride, vb.pp("c1"))?;
            // Square (candle's own backward takes the edge left out by the stride from the height
            // alone), with a last row and column that no receptive field covers.
            let x = input((3, 2, 16, 16), 0.5);
            let theirs = |x: &Tensor| -> Result<Tensor> {
                let y = x.conv2d(&c0.weight, 0, stride, 1, 1)?;
                let y = y.broadcast_add(&c0.bias.reshape((1, (), 1, 1))?)?.relu()?;
                let y = y.conv2d(&c1.weight, 0, stride, 1, 1)?;
                y.broadcast_add(&c1.bias.reshape((1, (), 1, 1))?)
            };
            let ours = |x: &Tensor| -> Result<Tensor> { c1.forward(&c0.forward(x)?.relu()?) };
            let (a, b) = (ours(&x)?, theirs(&x)?);
            assert_eq!(a.dims(), b.dims());
            assert!(max_diff(&a, &b) < 1e-5);

            // A non-uniform loss so every output position has its own gradient.
            let weights = input(a.dims4()?, 2.0);
            let ga = (&a * &weights)?.sum_all()?.backward()?;
            let gb = (&b * &weights)?.sum_all()?.backward()?;
            for var in map.all_vars() {
                let (ga, gb) = (ga.get(&var), gb.get(&var));
                let (ga, gb) = (ga.expect("ours"), gb.expect("candle"));
                assert!(max_diff(ga, gb) < 1e-4, "stride {stride}: {:?}", var.dims());
            }
            // The image batch is no variable: no gradient is computed for it.
            assert!(ga.get(&x).is_none());

            // With the input as a variable, its gradient matches too.
            let xv = Var::from_tensor(&x)?;
            let ga = (ours(xv.as_tensor())? * &weights)?.sum_all()?.backward()?;
            let gb = (theirs(xv.as_tensor())? * &weights)?
                .sum_all()?
                .backward()?;
            let (ga, gb) = (ga.get(xv.as_tensor()), gb.get(xv.as_tensor()));
            assert!(max_diff(ga.expect("ours"), gb.expect("candle")) < 1e-4);
        }
        Ok(())
    }

    #[test]
    fn mismatched_channels_are_an_error() -> Result<()> {
        let w = input((4, 3, 3, 3), 0.0);
        let x = input((1, 2, 8, 8), 0.0);
        let b = input((4,), 0.0);
        assert!(x.apply_op3(&w, &b, Conv2dOp { stride: 1 }).is_err());
        let x = input((1, 3, 8, 8), 0.0);
        assert!(
            x.apply_op3(&w, &input((3,), 0.0), Conv2dOp { stride: 1 })
                .is_err()
        );
        assert!(x.apply_op3(&w, &b, Conv2dOp { stride: 1 }).is_ok());
        Ok(())
    }
}
