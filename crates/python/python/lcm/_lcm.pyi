from os import PathLike
from typing import Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

class LcmError(Exception):
    """An error of the lcm library; the message names the file at fault and the fix."""

def segment(text: str, lang: Optional[str] = None, max_chars: Optional[int] = None) -> list[str]:
    """Sentences of `text` (the `lcm segment` split; `max_chars=256` as stores get them)."""

class Encoder:
    """A sentence encoder: `minilm`, `e5`, an HF repo id or a sentence-transformers folder."""

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
        encoder: str = "minilm",
        normalizer: Optional[Union[str, PathLike[str]]] = None,
    ) -> "LCM": ...
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
