from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest
import torch

from shipyard.bundle import scan
from shipyard.errors import (
    BundleError,
    ManifestError,
    RuntimeUnavailableError,
    UnsafeArtifactError,
)
from shipyard.runtimes.base import detect
from shipyard.runtimes.torch import TorchRuntime

NET_SOURCE = """
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, n_in, n_out, hidden=16):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
            )
            self.shipyard_init_kwargs = {"n_in": n_in, "n_out": n_out, "hidden": hidden}

        def forward(self, x):
            return self.layers(x)
"""


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory, write_module):
    module = write_module(tmp_path_factory.mktemp("netcode"), "tiny_net", NET_SOURCE)
    yield module.TinyNet
    sys.modules.pop("tiny_net", None)


def fit(net, x, y, loss, steps=150):
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net trains many times faster without thread hand-offs
    try:
        for _ in range(steps):
            optimiser.zero_grad()
            loss(net(inputs), targets).backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@pytest.fixture(scope="module")
def classifier(tiny_net, iris):
    x, y, names = iris
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    torch.manual_seed(0)
    net = fit(tiny_net(4, 3), x, y, torch.nn.functional.cross_entropy)
    net.shipyard_task = "classification"
    net.shipyard_classes = names
    return net, x


def expected_outputs(net, x, names):
    with torch.no_grad():
        logits = net(torch.from_numpy(x))
    return np.array(names)[logits.argmax(1).numpy()], torch.softmax(logits, 1).numpy()


def test_plain_module_round_trips_in_a_fresh_process(tmp_path, classifier, iris, fresh_predict):
    net, x = classifier
    names = iris[2]
    saved = TorchRuntime.save(net, tmp_path / "bundle", x)

    assert saved.files == ["model/state_dict.pt"]
    assert saved.code_files == ["code/tiny_net.py"]
    assert saved.options["entrypoint"] == "tiny_net:TinyNet"
    assert saved.options["init_kwargs"] == {"n_in": 4, "n_out": 3, "hidden": 16}
    assert saved.options["task"] == "classification"
    result = fresh_predict("torch", tmp_path / "bundle", saved.options, x)

    labels, probabilities = expected_outputs(net, x, names)
    np.testing.assert_array_equal(result["outputs"]["label"], labels)
    np.testing.assert_allclose(result["outputs"]["probabilities"], probabilities, atol=1e-6)
    assert result["classes"] == names


def test_torchscript_module_round_trips(tmp_path, classifier, iris):
    net, x = classifier
    scripted = torch.jit.script(net)
    saved = TorchRuntime.save(scripted, tmp_path, x)

    outputs = TorchRuntime.load(tmp_path, saved.options).predict(x)

    assert saved.files == ["model/model.pt"]
    assert saved.code_files == []
    labels, probabilities = expected_outputs(net, x, iris[2])
    np.testing.assert_array_equal(outputs["label"], labels)
    np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-6)


def test_regression_answers_one_prediction_per_row(tmp_path, tiny_net, diabetes):
    x, y = (a.astype(np.float32) for a in diabetes)
    net = fit(tiny_net(10, 1), x, (y[:, None] - y.mean()) / y.std(), torch.nn.functional.mse_loss)
    saved = TorchRuntime.save(net, tmp_path, x)

    prediction = TorchRuntime.load(tmp_path, saved.options).predict(x)["prediction"]

    assert saved.options["task"] == "regression"
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()[:, 0]
    np.testing.assert_allclose(prediction, expected, atol=1e-6)


def test_single_logit_classifier_gives_two_probabilities(tmp_path, tiny_net, cancer):
    frame, _ = cancer
    x = ((frame - frame.mean()) / frame.std()).astype("float32")
    net = tiny_net(30, 1)
    net.shipyard_task = "classification"
    saved = TorchRuntime.save(net, tmp_path, x)

    outputs = TorchRuntime.load(tmp_path, saved.options).predict(x)

    assert outputs["probabilities"].shape == (len(x), 2)
    np.testing.assert_allclose(outputs["probabilities"].sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(outputs["label"], outputs["probabilities"].argmax(1))


def test_weights_are_scanned_before_loading(tmp_path, classifier, monkeypatch):
    net, x = classifier
    saved = TorchRuntime.save(net, tmp_path, x)

    def refuse(path):
        raise UnsafeArtifactError("not allowed", file=str(path))

    monkeypatch.setattr(scan, "check_artifact", refuse)

    with pytest.raises(UnsafeArtifactError):
        TorchRuntime.load(tmp_path, saved.options)


def test_corrupt_weights_are_a_bundle_error_naming_the_file(tmp_path, classifier):
    net, x = classifier
    saved = TorchRuntime.save(net, tmp_path, x)
    # A zip without pickles passes the scanner, so torch itself is what fails to read it.
    with zipfile.ZipFile(tmp_path / "model" / "state_dict.pt", "w") as archive:
        archive.writestr("archive/notes.txt", "not a state dict")

    with pytest.raises(BundleError, match=r"model/state_dict\.pt"):
        TorchRuntime.load(tmp_path, saved.options)


def test_wrong_init_kwargs_are_a_bundle_error(tmp_path, classifier):
    net, x = classifier
    saved = TorchRuntime.save(net, tmp_path, x)

    with pytest.raises(BundleError, match="init_kwargs"):
        TorchRuntime.load(tmp_path, {**saved.options, "init_kwargs": {"bogus": 1}})


def test_class_defined_in_a_function_is_refused_at_save(tmp_path):
    class Local(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ManifestError, match="top level"):
        TorchRuntime.save(Local(), tmp_path, None)


def test_missing_torch_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)

    with pytest.raises(RuntimeUnavailableError) as caught:
        TorchRuntime.load(tmp_path, {})
    assert "shipyard[torch]" in caught.value.hint


def test_detects_modules_and_scripted_modules(classifier):
    net, _ = classifier
    assert detect(net) is TorchRuntime
    assert detect(torch.jit.script(net)) is TorchRuntime
    assert not TorchRuntime.handles(object())


def test_importing_the_adapter_does_not_import_torch(import_is_light):
    assert import_is_light("shipyard.runtimes.torch", "torch")
