"""The Python package against the `lcm` command on the committed fixtures: the same sentences,
the same concepts, the same continuation; numpy shapes and dtypes; exceptions for bad input;
two threads encoding at once.

Run by scripts/test-python.sh (which builds the extension with maturin into target/py-venv);
LCM_BIN names the `lcm` binary to compare with (default target/debug/lcm).
"""

import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import lcm

REPO = Path(__file__).resolve().parents[3]
TINY_BERT = REPO / "fixtures" / "encoder" / "tiny-bert"
CORPUS = REPO / "fixtures" / "corpus" / "sample.jsonl"
LCM_BIN = Path(os.environ.get("LCM_BIN", REPO / "target" / "debug" / "lcm"))


def cli(*args: str, home: Path) -> str:
    env = dict(os.environ, LCM_HOME=str(home), RAYON_NUM_THREADS="2", HF_HUB_OFFLINE="1")
    env.pop("RUST_LOG", None)
    result = subprocess.run([str(LCM_BIN), *args], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def encoder() -> lcm.Encoder:
    return lcm.Encoder(str(TINY_BERT), threads=2)


def test_segment_matches_the_cli(tmp_path: Path) -> None:
    text = 'Dr. Smith lives in the U.S. He said "Hi." Then he left... Was it 5 p.m.? Yes!\n\nNew paragraph here'
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    expected = cli("segment", str(path), home=tmp_path).splitlines()
    assert lcm.segment(text) == expected
    assert len(expected) >= 5
    capped = lcm.segment("word " * 200, max_chars=256)
    assert all(len(s) < 256 for s in capped) and len(capped) > 1


def test_encode_matches_the_cli_with_numpy_shapes(encoder: lcm.Encoder, tmp_path: Path) -> None:
    sentences = ["The first sentence.", "A second one, longer than the first.", "Third."]
    rows = encoder.encode(sentences)
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float32
    assert rows.shape == (3, encoder.dim) and encoder.dim == 32
    printed = cli("encode", "--encoder", str(TINY_BERT), *sentences, home=tmp_path)
    expected = np.array([json.loads(line)["embedding"] for line in printed.splitlines()], dtype=np.float32)
    np.testing.assert_allclose(rows, expected, atol=1e-6)
    assert encoder.id.startswith("tiny-bert@")

    one = encoder.encode(sentences[1])
    assert one.shape == (32,)
    np.testing.assert_allclose(one, rows[1], atol=1e-6)
    normalized = encoder.encode(sentences, normalize_embeddings=True, batch_size=2, show_progress_bar=False)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 32)


def test_bad_input_raises_python_exceptions(encoder: lcm.Encoder, tmp_path: Path) -> None:
    with pytest.raises(lcm.LcmError) as missing:
        lcm.Encoder(str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(missing.value)
    with pytest.raises(TypeError):
        encoder.encode(123)
    with pytest.raises(TypeError):
        encoder.encode([1, 2])
    with pytest.raises(lcm.LcmError, match="store=, bank= or decoder="):
        lcm.LCM.load(tmp_path)
    with pytest.raises(lcm.LcmError):
        lcm.LCM.load(tmp_path / "no-run", store=tmp_path, encoder=str(TINY_BERT))


def test_two_threads_encode_at_once(encoder: lcm.Encoder) -> None:
    batches = [[f"Thread {t} sentence {i} about the sea." for i in range(200)] for t in range(2)]
    expected = [encoder.encode(batch) for batch in batches]
    results: list = [None, None]

    def work(t: int) -> None:
        for _ in range(3):
            results[t] = encoder.encode(batches[t])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The committed sample prepared with the tiny encoder and a 3-step Two-Tower on it:
    (home, store, run)."""
    home = tmp_path_factory.mktemp("trained")
    store, run = home / "store", home / "run"
    cli("prepare", str(CORPUS), "--out", str(store), "--encoder", str(TINY_BERT), "--quiet", "--threads", "1", home=home)
    cli("fit-normalizer", str(store), "--out", str(store / "normalizer.safetensors"), home=home)
    cli("train", str(store), "--model", "two-tower", "--preset", "tiny", "--steps", "3", "--out", str(run),
        "--encoder", str(TINY_BERT), "--max-concepts", "64", "--valid-fraction", "0.2", "--quiet", home=home)
    return home, store, run


def test_generate_matches_the_cli(trained: tuple[Path, Path, Path]) -> None:
    tmp_path, store, run = trained
    prompt = "The whale swam. The sea was calm."
    printed = cli("generate", "--model", str(run), "--store", str(store), "--encoder", str(TINY_BERT),
                  "--max-sentences", "3", "--seed", "7", "--ddim-steps", "5", "--json",
                  # No stop rule: a 3-step model's concepts would stop at once.
                  "--eos-threshold", "1.1", "--repetition-threshold", "1.1", prompt, home=tmp_path)
    expected = [(g["text"], g["similarity"]) for g in json.loads(printed)["generated"]]

    model = lcm.LCM.load(run, store=store, encoder=str(TINY_BERT))
    assert "two-tower" in model.label and model.encoder_id.startswith("tiny-bert@")
    got = model.generate(prompt, max_sentences=3, seed=7, ddim_steps=5, eos_threshold=1.1, repetition_threshold=1.1)
    assert [text for text, _ in got] == [text for text, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        assert a == pytest.approx(b, abs=1e-6)
    assert len(got) == 3


# No stop rule: a 3-step model's concepts would stop at once.
NO_STOP = dict(eos_threshold=1.1, repetition_threshold=1.1)


def test_concept_store_reads_what_prepare_wrote(trained: tuple[Path, Path, Path], encoder: lcm.Encoder) -> None:
    home, store_path, _ = trained
    store = lcm.ConceptStore(store_path)
    inspected = json.loads(cli("inspect", str(store_path), "--json", home=home))["store"]
    assert len(store) == int(inspected["documents"]) == 16
    assert store.num_sentences == int(inspected["sentences"])
    assert store.meta["encoder_id"] == inspected["encoder"] == encoder.id
    assert store.dim == 32 and store.meta["dtype"] == "f32"

    documents = list(store)
    assert [d["id"] for d in documents] == [json.loads(line)["id"] for line in CORPUS.read_text().splitlines() if line.strip()][: len(documents)]
    assert sum(len(d["sentences"]) for d in documents) == store.num_sentences
    first = documents[0]
    assert first["concepts"].dtype == np.float32 and first["concepts"].shape == (len(first["sentences"]), 32)
    # The store's vectors are the encoder's vectors of its sentences.
    np.testing.assert_allclose(first["concepts"], encoder.encode(first["sentences"]), atol=1e-5)
    everything = store.concepts()
    assert everything.shape == (store.num_sentences, 32)
    np.testing.assert_array_equal(everything, np.concatenate([d["concepts"] for d in documents]))

    table = store.to_pyarrow()
    assert table.num_rows == len(store)
    assert table.column("id").to_pylist() == [d["id"] for d in documents]

    with pytest.raises(lcm.LcmError) as missing:
        lcm.ConceptStore(home / "no-store")
    assert "no-store" in str(missing.value)


def test_next_concepts_are_what_generate_decodes(trained: tuple[Path, Path, Path], encoder: lcm.Encoder) -> None:
    _, store, run = trained
    model = lcm.LCM.load(run, store=store, encoder=str(TINY_BERT))
    prompt = "The whale swam. The sea was calm."
    context = encoder.encode(lcm.segment(prompt))
    predicted = model.next_concepts(context, seed=7, ddim_steps=5)
    assert predicted.dtype == np.float32 and predicted.shape == (32,)

    # The first generated sentence is the retrieval decoding of the first next concept.
    generated = model.generate(prompt, max_sentences=1, seed=7, ddim_steps=5, allow_prompt_sentences=True, **NO_STOP)
    decoder = lcm.Decoder(store=store)
    assert decoder.kind == "retrieval"
    [(text, score)] = decoder.decode(predicted[None, :], with_scores=True)
    assert text == generated[0][0]
    assert score == pytest.approx(generated[0][1], abs=1e-6)

    # A context's prediction does not depend on the others passed with it.
    other = encoder.encode(["A storm came.", "The boat rocked.", "Nobody slept."])
    both = model.next_concepts([context, other.astype(np.float64)], seed=7, ddim_steps=5)
    assert both.shape == (2, 32)
    np.testing.assert_allclose(both[0], predicted, atol=1e-6)

    with pytest.raises(lcm.LcmError, match="32 dimensions"):
        model.next_concepts(np.zeros((2, 5), dtype=np.float32))
    bad = context.copy()
    bad[1, 3] = np.nan
    with pytest.raises(lcm.LcmError, match="not finite"):
        model.next_concepts(bad)
    with pytest.raises(TypeError):
        model.next_concepts("text")


def test_decoder_retrieves_store_sentences(trained: tuple[Path, Path, Path], encoder: lcm.Encoder) -> None:
    _, store, _ = trained
    sentences = next(iter(lcm.ConceptStore(store)))["sentences"][:4]
    decoder = lcm.Decoder(store=store)
    assert decoder.decode(encoder.encode(sentences)) == sentences
    with pytest.raises(lcm.LcmError, match="dimensions"):
        decoder.decode(np.zeros((1, 7), dtype=np.float32))
    with pytest.raises(lcm.LcmError, match="exactly one"):
        lcm.Decoder()


def test_evaluate_matches_the_cli(trained: tuple[Path, Path, Path]) -> None:
    home, store, run = trained
    printed = cli("eval", str(run), "--store", str(store), "--encoder", str(TINY_BERT), "--ddim-steps", "5", "--json", home=home)
    report = lcm.LCM.load(run, store=store, encoder=str(TINY_BERT)).evaluate(store, ddim_steps=5)
    assert report["rows"] == json.loads(printed)["rows"]
    assert {row["predictor"] for row in report["rows"]} >= {"mean concept"}


def test_an_export_loads_like_its_run(trained: tuple[Path, Path, Path]) -> None:
    home, store, run = trained
    exported = home / "exported"
    cli("export", str(run), "--out", str(exported), "--store", str(store), "--encoder", str(TINY_BERT), "--ddim-steps", "5", home=home)
    settings = dict(max_sentences=3, seed=7, ddim_steps=5, **NO_STOP)
    from_export = lcm.LCM.load(exported, store=store, encoder=str(TINY_BERT)).generate("The whale swam. The sea was calm.", **settings)
    from_run = lcm.LCM.load(run, store=store, encoder=str(TINY_BERT)).generate("The whale swam. The sea was calm.", **settings)
    assert from_export == from_run and len(from_run) == 3
    assert (exported / "README.md").read_text().startswith("---\nlicense:")


def test_a_trained_decoder_decodes_what_generate_decodes(trained: tuple[Path, Path, Path], encoder: lcm.Encoder) -> None:
    home, store, run = trained
    decoder_run = home / "decoder"
    cli("train-decoder", "--data", str(store), "--out", str(decoder_run), "--encoder", str(TINY_BERT),
        "--layers", "1", "--heads", "2", "--ffn", "32", "--vocab", "300", "--batch-size", "16", "--steps", "2",
        "--valid-fraction", "0.2", "--valid-sentences", "16", "--threads", "1", "--quiet", home=home)
    decoder = lcm.Decoder(model=decoder_run, beam=2)
    assert decoder.kind == "trained"
    prompt = "The whale swam. The sea was calm."
    model = lcm.LCM.load(run, decoder=decoder_run, beam=2, encoder=str(TINY_BERT))
    generated = model.generate(prompt, max_sentences=1, seed=7, ddim_steps=5, **NO_STOP)
    predicted = model.next_concepts(encoder.encode(lcm.segment(prompt)), seed=7, ddim_steps=5)
    assert decoder.decode(predicted[None, :]) == [generated[0][0]]


def sonar_folder(root: Path) -> Path:
    """A tiny random-weight SONAR folder from crates/sonar/tests/fixtures (as crates/cli/tests/sonar.rs
    builds it): encoder, decoder and SentencePiece model under SONAR's names, 3 languages."""
    fixtures = REPO / "crates" / "sonar" / "tests" / "fixtures"
    folder = root / "sonar"
    folder.mkdir()
    for source, name in [("encoder.pt", "sonar_text_encoder.pt"), ("decoder.pt", "sonar_text_decoder.pt"),
                         ("tiny_spm.model", "sentencepiece.source.256000.model")]:
        (folder / name).write_bytes((fixtures / source).read_bytes())
    (folder / "lcm-sonar.json").write_text('{"num_heads": 4, "languages": ["deu_Latn", "eng_Latn", "fra_Latn"]}')
    return folder


def test_sonar_encodes_and_decodes_in_the_language_asked(tmp_path: Path) -> None:
    folder = sonar_folder(tmp_path)
    encoder = lcm.Encoder(str(folder))
    sentence = "Le chat dort sur le canapé."
    vectors = encoder.encode([sentence], lang="fr")
    printed = cli("encode", "--encoder", str(folder), "--lang", "fr", sentence, home=tmp_path)
    np.testing.assert_allclose(vectors[0], json.loads(printed)["embedding"], atol=1e-6)
    np.testing.assert_allclose(encoder.encode([sentence], lang="fra_Latn"), vectors, atol=0)

    decoder = lcm.Decoder(model=str(folder), beam=2)
    assert decoder.kind == "sonar"
    french = decoder.decode(vectors, lang="fr")
    assert french == decoder.decode(vectors, lang="fra_Latn") and len(french) == 1
    assert decoder.decode(vectors, lang="de") != french
    with pytest.raises(lcm.LcmError, match="fra_Latn"):
        decoder.decode(vectors, lang="fre_Latn")
