from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from shipyard import api
from shipyard.bundle.manifest import Manifest
from shipyard.errors import BundleError, ManifestError, SchemaError


def test_package_writes_every_item(packaged: Path):
    manifest = Manifest.read(packaged)
    assert manifest.runtime.kind == "sklearn"
    assert manifest.owner is not None and manifest.owner.contact == "ana@x.io"
    assert manifest.artifacts and all(len(a.sha256) == 64 for a in manifest.artifacts)
    schema = manifest.schema_
    assert schema is not None
    assert {f.name for f in schema.inputs} >= {"mean_radius", "size_band"}
    band = next(f for f in schema.inputs if f.name == "size_band")
    assert band.dtype == "category" and set(band.categories or []) == {"small", "medium", "large"}
    assert [f.name for f in schema.outputs] == ["label", "probabilities"]
    assert manifest.evaluation is not None
    metrics = {m.name: m for m in manifest.evaluation.metrics}
    assert metrics["accuracy"].threshold == 0.8 and metrics["accuracy"].value > 0.8
    assert "roc_auc" in metrics
    assert manifest.profile is not None and manifest.profile.rows == 169
    assert set(manifest.profile.inputs) == {f.name for f in schema.inputs}
    assert "label" in manifest.profile.outputs
    deps = manifest.dependencies
    assert deps is not None and deps.packages["scikit-learn"].startswith("==")
    assert not list(packaged.parent.glob(".*partial"))


def test_loaded_bundle_predicts_like_the_original(packaged, pipeline, mixed_data):
    X, _ = mixed_data
    model = api.load(packaged)
    np.testing.assert_array_equal(model.predict(X), pipeline.predict(X))
    np.testing.assert_allclose(model.predict_proba(X), pipeline.predict_proba(X))
    records = X.iloc[:3].to_dict(orient="records")
    np.testing.assert_array_equal(model.predict(records), pipeline.predict(X.iloc[:3]))


def test_loaded_model_refuses_inputs_outside_its_schema(packaged, mixed_data):
    X, _ = mixed_data
    model = api.load(packaged)
    bad = X.iloc[:2].copy()
    bad["size_band"] = ["small", "gigantic"]
    with pytest.raises(SchemaError) as info:
        model.predict(bad)
    assert info.value.details == {"field": "size_band", "row": 1, "rule": "categories"}


def test_package_refuses_bad_arguments(tmp_path, pipeline, mixed_data):
    X, y = mixed_data
    with pytest.raises(ManifestError, match="Name <contact>"):
        api.package(pipeline, tmp_path / "a", name="m", version="1", owner="nobody", sample=X)
    with pytest.raises(ManifestError, match="name"):
        api.package(
            pipeline, tmp_path / "b", name="Bad Name!", version="1", owner="A <a@b.c>", sample=X
        )
    with pytest.raises(ManifestError, match="not measured"):
        api.package(
            pipeline,
            tmp_path / "c",
            name="m",
            version="1",
            owner="A <a@b.c>",
            sample=X,
            eval_data=(X, y),
            thresholds={"bleu": 0.3},
        )
    assert not any(p.name in "abc" for p in tmp_path.iterdir())


def test_existing_destination_is_not_overwritten(packaged, pipeline, mixed_data):
    X, _ = mixed_data
    before = (packaged / "shipyard.yaml").read_text()
    with pytest.raises(BundleError, match="already exists"):
        api.package(pipeline, packaged, name="tumours", version="9", owner="A <a@b.c>", sample=X)
    assert (packaged / "shipyard.yaml").read_text() == before


def test_error_mid_packaging_leaves_nothing(tmp_path, pipeline, mixed_data, monkeypatch):
    from shipyard.runtimes import base

    X, _ = mixed_data
    runtime = base.get_runtime("sklearn")

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runtime, "save", classmethod(lambda cls, *a, **k: explode()))
    with pytest.raises(OSError, match="disk full"):
        api.package(pipeline, tmp_path / "m", name="m", version="1", owner="A <a@b.c>", sample=X)
    assert list(tmp_path.iterdir()) == []


SLOW_PACKAGER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from shipyard import api
    sys.path.insert(0, sys.argv[2])
    from slowmodel import SlowModel
    api.package(SlowModel(), Path(sys.argv[1]), name="slow", version="1", owner="A <a@b.c>",
                sample=np.zeros((2, 3)), runtime="python")
""")
SLOW_MODEL = textwrap.dedent("""
    import time
    from pathlib import Path
    import numpy as np

    class SlowModel:
        def save(self, folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            with open(Path(folder) / "weights.bin", "wb") as handle:
                for _ in range(200):
                    handle.write(b"\\0" * 65536)
                    handle.flush()
                    time.sleep(0.02)
        def load(self, folder):
            pass
        def predict(self, batch):
            return {"prediction": np.zeros(len(batch))}
""")


def test_kill_9_mid_packaging_leaves_no_bundle(tmp_path):
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    script = tmp_path / "pack.py"
    script.write_text(SLOW_PACKAGER)
    dest = tmp_path / "out" / "slow"
    proc = subprocess.Popen([sys.executable, str(script), str(dest), str(tmp_path)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = list((tmp_path / "out").glob(".slow.*.partial/model/weights.bin"))
        if partial and partial[0].stat().st_size > 65536:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the packager never started writing")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not dest.exists()
    leftovers = [p.name for p in (tmp_path / "out").iterdir()]
    assert all(name.startswith(".slow.") and name.endswith(".partial") for name in leftovers)
    shutil.rmtree(tmp_path / "out")


def test_init_then_package_folder(tmp_path):
    folder = api.init(tmp_path / "scorer", name="scorer", owner="Bo <bo@x.io>")
    data = tmp_path / "eval.csv"
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=50), rng.normal(size=50)
    y = np.round(0.5 * x1 - 0.25 * x2 + 1.0, 6)
    data.write_text(
        "x1,x2,y\n" + "\n".join(f"{a},{b},{c}" for a, b, c in zip(x1, x2, y, strict=True))
    )
    manifest = api.finish(folder, data=data, target="y", thresholds={"rmse": 0.01})
    assert manifest.runtime.kind == "python"
    assert {e.path for e in manifest.code.files} == {"code/model.py", "code/process.py"}
    assert [a.path for a in manifest.artifacts] == ["model/weights.json"]
    rmse = next(m for m in manifest.evaluation.metrics if m.name == "rmse")  # type: ignore[union-attr]
    assert rmse.value < 1e-6 and rmse.passes
    model = api.load(folder)
    got = model.predict({"x1": [1.0], "x2": [2.0]})
    np.testing.assert_allclose(got, [1.0])
    codes = {f.code for f in api.check(folder) if f.severity == "error"}
    assert codes == set()


def test_finish_reports_bad_data(tmp_path):
    folder = api.init(tmp_path / "s", name="s", owner="Bo <bo@x.io>")
    with pytest.raises(ManifestError, match="does not exist"):
        api.finish(folder, data=tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,x2\n1,2\n")
    with pytest.raises(ManifestError, match="'y' is not in the data"):
        api.finish(folder, data=bad, target="y")


def test_manifest_yaml_is_human_readable(packaged):
    data = yaml.safe_load((packaged / "shipyard.yaml").read_text())
    assert list(data)[:4] == ["format", "name", "version", "owner"]
