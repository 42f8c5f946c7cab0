"""sentence-transformers embedding models, stored in their own folder layout.

`SentenceTransformer.save` writes safetensors weights, configs and tokenizer files under
`model/`. Load reads them from the bundle only: `local_files_only=True` and no remote code,
so a bundle never reaches a model hub or runs code it did not ship.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shipyard.errors import ManifestError, SchemaError
from shipyard.runtimes.base import Outputs, Predictor, Runtime, Saved, class_modules
from shipyard.runtimes.loading import (
    MODEL_DIR,
    artifact,
    files_under,
    model_dir,
    reading,
    require,
)

CONFIG = "modules.json"


def _sentence_transformers() -> Any:
    return require("sentence_transformers", "sentence-transformers", "embeddings")


def as_texts(batch: Any) -> list[str]:
    """A list of str from a list, array, Series or one-column DataFrame."""
    if hasattr(batch, "columns"):
        if len(batch.columns) != 1:
            raise SchemaError(
                f"Got a DataFrame with {len(batch.columns)} columns. Expected one text column.",
                hint="Send a list of strings, or a table with a single text column.",
            )
        batch = batch.iloc[:, 0]
    if isinstance(batch, str):
        raise SchemaError(
            "Got one string. Expected a batch: a list of strings.",
            hint="Wrap a single text in a list: ['...'].",
        )
    texts = batch.tolist() if hasattr(batch, "tolist") else list(batch)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise SchemaError(
            f"Got {type(bad).__name__} {bad!r:.40} in the batch. Expected strings only.",
            hint="Convert every input to text before sending it.",
        )
    return texts


class SentenceTransformersPredictor(Predictor):
    def __init__(self, model: Any, normalize: bool, batch_size: int) -> None:
        self.model = model
        self.normalize = normalize
        self.batch_size = batch_size
        self.classes: list[Any] | None = None

    def predict(self, batch: Any) -> Outputs:
        embedding = self.model.encode(
            as_texts(batch),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return {"embedding": np.asarray(embedding, dtype=np.float32)}


class SentenceTransformersRuntime(Runtime):
    kind = "sentence-transformers"
    extra = "embeddings"
    packages: ClassVar[tuple[str, ...]] = (
        "sentence-transformers",
        "transformers",
        "tokenizers",
        "safetensors",
        "torch",
        "numpy",
    )

    @classmethod
    def handles(cls, model: object) -> bool:
        return any(m.startswith("sentence_transformers.") for m in class_modules(model))

    @classmethod
    def save(cls, model: object, folder: Path, sample: Any) -> Saved:
        st = _sentence_transformers()
        if not isinstance(model, st.SentenceTransformer):
            raise ManifestError(
                f"Got a {type(model).__qualname__}. Expected a SentenceTransformer.",
                hint="Pass the SentenceTransformer model object.",
                field="model",
            )
        model.save(str(model_dir(folder)), create_model_card=False, safe_serialization=True)
        # A Normalize module in the pipeline already gives unit vectors; normalising again in
        # encode is then a no-op, so record what the model does rather than force it.
        normalize = any(type(m).__name__ == "Normalize" for m in model)
        # Renamed in sentence-transformers 5.x; the old name warns there.
        dimension = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        options = {"normalize": normalize, "dimension": dimension()}
        return Saved(files=files_under(folder, MODEL_DIR), options=options)

    @classmethod
    def load(cls, folder: Path, options: dict[str, Any]) -> Predictor:
        st = _sentence_transformers()
        config = artifact(folder, CONFIG, cls.kind)
        if options.get("threads"):
            # Process-wide in torch: the last loaded model's setting wins.
            require("torch", "torch", "embeddings").set_num_threads(int(options["threads"]))
        with reading(folder, config.parent, "sentence-transformers"):
            model = st.SentenceTransformer(
                str(config.parent),
                device="cpu",
                local_files_only=True,
                trust_remote_code=False,
            )
            model.eval()
        return SentenceTransformersPredictor(
            model, bool(options.get("normalize", False)), int(options.get("batch_size", 32))
        )
