"""explain_dataset under tf.distribute: MirroredStrategy on two logical CPU devices, and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 writing into one store. Both
must give the store of a one-device run.

Each run is a subprocess: logical devices and TF_CONFIG must be set before TensorFlow
initializes its devices. Every subprocess has a timeout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasviz.dataset_scale import explain_dataset, open_explanations

pytest.importorskip("zarr")

N, SIZE, BATCH = 21, 16, 4
METHODS = {
    "grad_cam": {},
    "ig": ("integrated_gradients", {"steps": 4}),
    "occ": ("occlusion", {"patch": 4, "stride": 4}),
}
METRICS = {"pointing_game": {}, "energy_pointing_game": {}, "deletion_auc": {"steps": 4}}
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240

CHILD = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf
mode = sys.argv[4]
if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
else:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras
from kerasviz.dataset_scale import explain_dataset
with strategy.scope():  # as the README advises: weights copied to every device once
    model = keras.models.load_model(sys.argv[1])
arrays = np.load(sys.argv[2])
data = tf.data.Dataset.from_tensor_slices((arrays["images"], arrays["labels"], arrays["masks"]))
store = explain_dataset(model, data, {methods}, sys.argv[3], batch_size={batch},
                        targets="labels", metrics={metrics}, strategy=strategy)
print("replicas", strategy.num_replicas_in_sync, flush=True)
"""


def _model() -> keras.Model:
    keras.utils.set_random_seed(5)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The model file, the data file, and the one-device reference store."""
    folder = tmp_path_factory.mktemp("distributed")
    model = _model()
    model.save(folder / "model.keras")
    model = keras.models.load_model(folder / "model.keras")
    rng = np.random.default_rng(1)
    images = rng.random((N, SIZE, SIZE, 3), dtype=np.float32)
    labels = rng.integers(0, 3, N)
    masks = np.zeros((N, SIZE, SIZE), bool)
    masks[:, 3:11, 4:12] = True
    np.savez(folder / "data.npz", images=images, labels=labels, masks=masks)
    reference = explain_dataset(
        model,
        tf.data.Dataset.from_tensor_slices((images, labels, masks)),
        METHODS,
        folder / "reference",
        batch_size=BATCH,
        targets="labels",
        metrics=METRICS,
    )
    script = folder / "child.py"
    script.write_text(CHILD.format(methods=repr(METHODS), batch=BATCH, metrics=repr(METRICS)))
    return folder, reference


def _launch(setup_folder: Path, out: Path, mode: str, env: dict) -> subprocess.Popen:
    args = [sys.executable, str(setup_folder / "child.py"), str(setup_folder / "model.keras")]
    args += [str(setup_folder / "data.npz"), str(out), mode]
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"subprocess timed out after {TIMEOUT} s:\n{stderr[-3000:]}")
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def assert_same_results(store, reference) -> None:
    """Equal to the one-device run: classes exactly, numbers to float tolerance."""
    for name in ("predictions", "targets", "labels", "ok"):
        np.testing.assert_array_equal(store[name][:], reference[name][:], err_msg=name)
    assert store.progress()["complete"].all()
    np.testing.assert_allclose(store.logits[:], reference.logits[:], rtol=1e-5, atol=1e-6)
    for name in METHODS:
        got = store.maps[name][:].astype(np.float32)
        want = reference.maps[name][:].astype(np.float32)
        # float16 on disk: one rounding step of the largest value at most.
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3 * np.abs(want).max())
        for metric in METRICS:
            key = f"metrics/{name}/{metric}"
            np.testing.assert_allclose(store[key][:], reference[key][:], atol=1e-4, err_msg=key)


def test_mirrored_strategy_on_two_logical_devices_equals_one_device(setup):
    folder, reference = setup
    out = folder / "mirrored"
    stdout = _finish(_launch(folder, out, "mirrored", {}))
    assert "replicas 2" in stdout
    store = open_explanations(out)
    run = store.manifest["runs"][-1]
    assert run["strategy"] == "MirroredStrategy" and run["replicas"] == 2
    assert store.manifest["complete"] == [[0, N]]
    assert_same_results(store, reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_processes_write_one_store_equal_to_one_process(setup):
    folder, reference = setup
    out = folder / "multi_worker"
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    workers = [
        _launch(
            folder,
            out,
            "multi_worker",
            {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": k}})},
        )
        for k in range(2)
    ]
    outputs = [_finish(w) for w in workers]
    assert all("replicas 2" in o for o in outputs)
    store = open_explanations(out)
    run = store.manifest["runs"][-1]
    # tf.distribute.MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy.
    assert run["strategy"] == "CollectiveAllReduceStrategy" and run["workers"] == 2
    # Chunks were shared round robin: each worker wrote its own.
    chunks = -(-N // BATCH)
    np.testing.assert_array_equal(store.progress()["worker"], np.arange(chunks) % 2)
    assert store.manifest["complete"] == [[0, N]]
    assert_same_results(store, reference)
