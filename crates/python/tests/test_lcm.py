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


def test_generate_matches_the_cli(tmp_path: Path) -> None:
    store, run = tmp_path / "store", tmp_path / "run"
    cli("prepare", str(CORPUS), "--out", str(store), "--encoder", str(TINY_BERT), "--quiet", "--threads", "1", home=tmp_path)
    cli("fit-normalizer", str(store), "--out", str(store / "normalizer.safetensors"), home=tmp_path)
    cli("train", str(store), "--model", "two-tower", "--preset", "tiny", "--steps", "3", "--out", str(run),
        "--encoder", str(TINY_BERT), "--max-concepts", "64", "--valid-fraction", "0.2", "--quiet", home=tmp_path)
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
