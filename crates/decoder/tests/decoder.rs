//! Decoders trained for open encoders (`lcm_decoder`): the tokenizer round-trips any
//! text, a tiny decoder learns 8 sentences well enough that greedy decoding reproduces them,
//! resume is bit-identical, and a decoder refuses concepts of another encoder.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{DIM, ENCODER, SENTENCES, tiny_config, write_store};
use lcm_concept::{ConceptDecoder, DecodeConfig};
use lcm_decoder::{DecoderTokenizer, MODEL_FILE, TrainedDecoder, train_decoder};

fn vectors_of(store: &Path) -> Tensor {
    let split = lcm_decoder::SentenceSplit::load(store, 0.0).unwrap();
    Tensor::from_vec(
        split.train_vectors.clone(),
        (split.train_texts.len(), DIM),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn tokenizer_round_trips_any_text() {
    let dir = tempfile::tempdir().unwrap();
    let tok = DecoderTokenizer::train(&SENTENCES, 300).unwrap();
    assert!(tok.vocab_size() <= 300 && tok.vocab_size() > 260);
    for text in SENTENCES.iter().copied().chain([
        "Never seen: ÆØÅ ß ñ Ω ∑ — «quoted» \t tab",
        "  leading and trailing spaces  ",
        "literal specials </s> <pad> <s> <unk> stay text",
        "中文、한국어, العربية, עברית",
        "",
    ]) {
        let ids = tok.encode(text).unwrap();
        assert!(
            ids.iter().all(|&id| id >= 4),
            "{text:?} produced a special id"
        );
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    // Specials are dropped when decoding.
    let mut ids = vec![3];
    ids.extend(tok.encode("Hi.").unwrap());
    ids.push(3);
    assert_eq!(tok.decode(&ids).unwrap(), "Hi.");
    // Saved and reopened: same ids.
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).unwrap();
    let again = DecoderTokenizer::open(&path).unwrap();
    assert_eq!(
        again.encode(SENTENCES[2]).unwrap(),
        tok.encode(SENTENCES[2]).unwrap()
    );
}

#[test]
fn tiny_decoder_overfits_and_greedy_reproduces_the_sentences() {
    let dir = tempfile::tempdir().unwrap();
    let store = write_store(dir.path(), &SENTENCES);
    let run = dir.path().join("run");
    let summary =
        train_decoder(&tiny_config(300), &store, &run, false, &mut |_| {}).expect("train");
    assert_eq!(summary.final_step, 300);
    let last = summary.last_loss.unwrap();
    assert!(last < 0.05, "training loss still {last}");
    let decoder = TrainedDecoder::open(&run).unwrap();
    assert_eq!(decoder.id(), ENCODER);
    assert_eq!(decoder.dim(), DIM);
    let split = lcm_decoder::SentenceSplit::load(&store, 0.0).unwrap();
    let decoded = decoder
        .decode(&vectors_of(&store), None, &DecodeConfig::default())
        .unwrap();
    let texts: Vec<&str> = decoded.iter().map(|d| d.text.as_str()).collect();
    let expected: Vec<&str> = split.train_texts.iter().map(String::as_str).collect();
    assert_eq!(texts, expected);
    // Beam search (fairseq2's: a prompt is done once `beam` hypotheses ended, so on this
    // degenerate, over-confident model it can return an early-ending beam) still decodes.
    let beam = decoder
        .decode(
            &vectors_of(&store),
            None,
            &DecodeConfig {
                beam_size: 3,
                ..DecodeConfig::default()
            },
        )
        .unwrap();
    assert_eq!(beam.len(), expected.len());
}

#[test]
fn resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let store = write_store(dir.path(), &SENTENCES);
    let straight = dir.path().join("straight");
    let split = dir.path().join("split");
    let mut config = tiny_config(12);
    config.batch_size = 3; // several batches per epoch: the data position matters
    train_decoder(&config, &store, &straight, false, &mut |_| {}).unwrap();

    let mut first = config.clone();
    first.stop_at = Some(5);
    let half = train_decoder(&first, &store, &split, false, &mut |_| {}).unwrap();
    assert_eq!(half.final_step, 5);
    // Resuming with other settings is refused.
    let mut other = config.clone();
    other.lr = 5e-3;
    let err = train_decoder(&other, &store, &split, true, &mut |_| {})
        .expect_err("changed settings must be refused")
        .to_string();
    assert!(err.contains("other settings"), "{err}");
    // Starting afresh over a run is refused too.
    assert!(train_decoder(&config, &store, &split, false, &mut |_| {}).is_err());

    let rest = train_decoder(&config, &store, &split, true, &mut |_| {}).unwrap();
    assert_eq!((rest.start_step, rest.final_step), (5, 12));
    let a = std::fs::read(straight.join(MODEL_FILE)).unwrap();
    let b = std::fs::read(split.join(MODEL_FILE)).unwrap();
    assert!(a == b, "resumed weights differ from an uninterrupted run");
    let metrics = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 12);
}

#[test]
fn concepts_of_another_encoder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = write_store(dir.path(), &SENTENCES[..4]);
    let run = dir.path().join("run");
    train_decoder(&tiny_config(2), &store, &run, false, &mut |_| {}).unwrap();
    let err = TrainedDecoder::open_expecting(&run, "all-MiniLM-L6-v2@53aa51172d14", DIM)
        .err()
        .expect("another encoder must be refused")
        .to_string();
    assert!(err.contains("trained for `test-encoder"), "{err}");
    assert!(TrainedDecoder::open_expecting(&run, ENCODER, DIM).is_ok());
    // Wrong dimension and non-finite concepts are refused by decode.
    let decoder = TrainedDecoder::open(&run).unwrap();
    let wide = Tensor::zeros((1, DIM + 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(
        decoder
            .decode(&wide, None, &DecodeConfig::default())
            .is_err()
    );
    let nan = Tensor::full(f32::NAN, (1, DIM), &Device::Cpu).unwrap();
    let err = decoder
        .decode(&nan, None, &DecodeConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("non-finite"), "{err}");
    // A folder that is not a run names the file.
    let err = TrainedDecoder::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("decoder.json"), "{err}");
}

#[test]
fn cheap_refusals_come_before_the_tokenizer_is_trained() {
    let dir = tempfile::tempdir().unwrap();
    let store = write_store(dir.path(), &SENTENCES[..4]);
    // --resume into an empty folder: refused, nothing written.
    let fresh = dir.path().join("fresh");
    let err = train_decoder(&tiny_config(2), &store, &fresh, true, &mut |_| {})
        .expect_err("resume without a checkpoint must be refused")
        .to_string();
    assert!(err.contains("nothing to resume"), "{err}");
    assert!(!fresh.join("tokenizer.json").exists());
    // A fresh run into a folder with checkpoints: refused before a tokenizer of the new
    // settings overwrites the run's.
    let run = dir.path().join("run");
    train_decoder(&tiny_config(2), &store, &run, false, &mut |_| {}).unwrap();
    let tokenizer = std::fs::read(run.join("tokenizer.json")).unwrap();
    let mut other = tiny_config(2);
    other.vocab_size = 280;
    let err = train_decoder(&other, &store, &run, false, &mut |_| {})
        .expect_err("a fresh run over checkpoints must be refused")
        .to_string();
    assert!(err.contains("--resume"), "{err}");
    assert_eq!(
        std::fs::read(run.join("tokenizer.json")).unwrap(),
        tokenizer
    );
}

#[test]
fn a_run_folder_holds_the_loop_files_and_the_decoder_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = write_store(dir.path(), &SENTENCES[..4]);
    let run = dir.path().join("run");
    let mut config = tiny_config(3);
    config.stop_at = Some(2);
    let summary = train_decoder(&config, &store, &run, false, &mut |_| {}).unwrap();
    assert_eq!((summary.start_step, summary.final_step), (0, 2));
    for file in [
        "decoder.json",
        "tokenizer.json",
        "model.safetensors",
        "config.json",
        "metrics.jsonl",
        "loss.png",
        "checkpoints/step-00000002",
    ] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    let meta = lcm_decoder::DecoderMeta::read(&run).unwrap();
    assert_eq!(meta.step, 2);
    assert_eq!(meta.encoder_id, ENCODER);
    // config.json is the full configuration, budgets included.
    let written: lcm_decoder::DecoderTrainConfig =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(written, config);
    // The budget may change on resume: a longer schedule continues the run.
    let mut longer = tiny_config(4);
    longer.stop_at = None;
    let rest = train_decoder(&longer, &store, &run, true, &mut |_| {}).unwrap();
    assert_eq!((rest.start_step, rest.final_step), (2, 4));
}
