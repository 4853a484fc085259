from os import PathLike
from typing import Any, Iterator, Literal, Optional, Sequence, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

class LcmError(Exception):
    """An error of the lcm library; the message names the file at fault and the fix."""

def segment(text: str, lang: Optional[str] = None, max_chars: Optional[int] = None) -> list[str]:
    """Sentences of `text` (the `lcm segment` split; `max_chars=256` as stores get them)."""

class Encoder:
    """A concept encoder: `minilm`, `e5`, `sonar`, an HF repo id, a sentence-transformers
    folder or a folder of SONAR's files."""

    def __init__(
        self,
        model: Union[str, PathLike[str]] = "minilm",
        batch_size: int = 32,
        threads: Optional[int] = None,
    ) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def id(self) -> str: ...
    def encode(
        self,
        sentences: Union[str, Sequence[str]],
        batch_size: Optional[int] = None,
        normalize_embeddings: bool = False,
        show_progress_bar: bool = False,
        lang: Optional[str] = None,
    ) -> npt.NDArray[np.float32]:
        """float32 concepts: shape (n, dim) for a list, (dim,) for one string."""

class LCM:
    """A trained LCM with its encoder and decoder, loaded once."""

    @staticmethod
    def load(
        run: Union[str, PathLike[str]],
        store: Optional[Union[str, PathLike[str]]] = None,
        bank: Optional[Union[str, PathLike[str]]] = None,
        decoder: Optional[Union[str, PathLike[str]]] = None,
        beam: int = 5,
        encoder: Optional[Union[str, PathLike[str]]] = None,
        normalizer: Optional[Union[str, PathLike[str]]] = None,
    ) -> "LCM":
        """`run`: a `lcm train --out` directory, a checkpoint or an `lcm export` folder;
        the encoder defaults to the one the model records."""
    @property
    def label(self) -> str: ...
    @property
    def encoder_id(self) -> str: ...
    def generate(
        self,
        prompt: str,
        max_sentences: int = 8,
        seed: int = 0,
        guidance_scale: Optional[float] = None,
        ddim_steps: Optional[int] = None,
        eos_threshold: float = 0.9,
        repetition_threshold: float = 0.9,
        allow_prompt_sentences: bool = False,
    ) -> list[tuple[str, Optional[float]]]:
        """The continuation: (sentence, similarity to the generated concept) pairs."""
    def next_concepts(
        self,
        contexts: Union[npt.ArrayLike, Sequence[npt.ArrayLike]],
        seed: int = 0,
        guidance_scale: Optional[float] = None,
        ddim_steps: Optional[int] = None,
    ) -> npt.NDArray[np.float32]:
        """The next concept after each context of raw concepts (n, dim): (dim,) for one
        array, (len, dim) for a list; each row seeded by `seed` alone."""
    def evaluate(
        self,
        store: Union[str, PathLike[str]],
        max_concepts: int = 8192,
        valid_fraction: Optional[float] = None,
        seed: int = 0,
        guidance_scale: Optional[float] = None,
        ddim_steps: Optional[int] = None,
    ) -> dict[str, Any]:
        """Teacher-forced ℓ2 / CA / PAR on the store's held-out split next to the trivial
        baselines, as `lcm eval --json` prints it."""

class Document(TypedDict):
    id: str
    source: str
    sentences: list[str]
    concepts: npt.NDArray[np.float32]

class ConceptStore:
    """A concept store (`lcm prepare --out`)."""

    def __init__(self, path: Union[str, PathLike[str]]) -> None: ...
    @property
    def meta(self) -> dict[str, str]: ...
    @property
    def dim(self) -> int: ...
    @property
    def encoder_id(self) -> str: ...
    @property
    def num_sentences(self) -> int: ...
    @property
    def shards(self) -> list[str]: ...
    def __len__(self) -> int:
        """Number of documents."""
    def __iter__(self) -> Iterator[Document]: ...
    def concepts(self) -> npt.NDArray[np.float32]:
        """Every concept, (num_sentences, dim), documents in order."""
    def to_pyarrow(self) -> Any:
        """The store as a pyarrow.Table (needs pyarrow)."""

class Decoder:
    """Retrieval over a store's (`store=`) or bank's (`bank=`) sentences, a decoder trained
    with `lcm train-decoder`, or SONAR's (`model=` its folder or "sonar"; searched with `beam`
    beams; SONAR decodes into `lang`, a SONAR or ISO 639-1 code)."""

    def __init__(
        self,
        store: Optional[Union[str, PathLike[str]]] = None,
        bank: Optional[Union[str, PathLike[str]]] = None,
        model: Optional[Union[str, PathLike[str]]] = None,
        beam: int = 5,
    ) -> None: ...
    @property
    def kind(self) -> str: ...
    @overload
    def decode(self, vectors: npt.ArrayLike, lang: Optional[str] = None, with_scores: Literal[False] = False) -> list[str]: ...
    @overload
    def decode(
        self, vectors: npt.ArrayLike, lang: Optional[str] = None, *, with_scores: Literal[True]
    ) -> list[tuple[str, Optional[float]]]: ...
