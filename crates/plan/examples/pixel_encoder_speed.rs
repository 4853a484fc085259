//! The pixel encoder's three convolutions, forward + backward, on candle's `conv2d` and on
//! [`FastConv2d`] (im2col + GEMM), same weights and images, side by side in one run: the
//! outputs and weight gradients are compared first, then each side is timed (best of
//! `repeat`). The workload is one Two-Rooms pixel training step's frames: `batch` windows of
//! `rollout + 1` frames of 2×64×64.
//!
//! ```text
//! cargo run --release --example pixel_encoder_speed -p lcm-plan -- [batch] [rollout] [repeat]
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_plan::world::conv::FastConv2d;

/// `(in, out, kernel)` of the encoder's stride-2 convolutions (`JepaConfig::two_rooms_pixels`).
const LAYERS: [(usize, usize, usize); 3] = [(2, 16, 5), (16, 32, 3), (32, 32, 3)];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut next = |default: usize| -> anyhow::Result<usize> {
        Ok(args
            .next()
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (batch, rollout, repeat) = (next(32)?, next(8)?, next(3)?);
    let images = batch * (rollout + 1);
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let convs = LAYERS
        .iter()
        .enumerate()
        .map(|(i, &(cin, cout, k))| FastConv2d::new(cin, cout, k, 2, vb.pp(format!("conv{i}"))))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let vars = map.all_vars();
    let x = Tensor::rand(0f32, 1f32, (images, 2, 64, 64), &Device::Cpu)?;

    let ours = |x: &Tensor| -> candle_core::Result<Tensor> {
        convs
            .iter()
            .try_fold(x.clone(), |x, conv| conv.forward(&x)?.relu())
    };
    // candle's op on the same variables (`weight` [O, C, k, k], `bias` [O]).
    let var = |name: String| -> candle_core::Result<Tensor> {
        let vars = map
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap lock".into()))?;
        vars.get(&name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::Msg(format!("no variable {name}")))
    };
    let theirs = |x: &Tensor| -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for i in 0..LAYERS.len() {
            let (w, b) = (
                var(format!("conv{i}.weight"))?,
                var(format!("conv{i}.bias"))?,
            );
            x = x
                .conv2d(&w, 0, 2, 1, 1)?
                .broadcast_add(&b.reshape((1, (), 1, 1))?)?
                .relu()?;
        }
        Ok(x)
    };
    let step = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
        let y = f(&x)?;
        let grads = y.sqr()?.mean_all()?.backward()?;
        Ok::<_, candle_core::Error>((y, grads))
    };

    let (ya, ga) = step(&ours)?;
    let (yb, gb) = step(&theirs)?;
    let max_diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    };
    let output_diff = max_diff(&ya, &yb)?;
    let mut grad_diff = 0f32;
    for var in &vars {
        if let (Some(a), Some(b)) = (ga.get(var), gb.get(var)) {
            let scale = b
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?
                .max(1e-12);
            grad_diff = grad_diff.max(max_diff(a, b)? / scale);
        }
    }

    let time = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| -> anyhow::Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..repeat {
            let start = Instant::now();
            step(f)?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let fast = time(&ours)?;
    let candle = time(&theirs)?;
    println!(
        "{}",
        serde_json::json!({
            "images": images,
            "threads": candle_core::utils::get_num_threads(),
            "candle_conv2d_s": candle,
            "fast_conv2d_s": fast,
            "speedup": candle / fast,
            "max_output_diff": output_diff,
            "max_relative_weight_grad_diff": grad_diff,
        })
    );
    Ok(())
}
