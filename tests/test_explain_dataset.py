"""explain_dataset: maps equal the public functions, the store and its manifest, resumption after
a crash (SIGKILL in a subprocess, a torn chunk in process), refusals, bad input, folders with a
corrupt file, reading back, bootstrap summaries and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz
from kerasviz import metrics
from kerasviz.dataset_scale import (
    bootstrap_ci,
    explain_dataset,
    localization_table,
    model_fingerprint,
    open_explanations,
    summarize,
)

pytest.importorskip("zarr")

N, SIZE, BATCH = 21, 16, 4
METHODS = {
    "grad_cam": {},
    "ig": ("integrated_gradients", {"steps": 4}),
    "occ": ("occlusion", {"patch": 4, "stride": 4}),
}
METRICS = {
    "pointing_game": {},
    "energy_pointing_game": {},
    "deletion_auc": {"steps": 4},
    "insertion_auc": {"steps": 4},
}
ROOT = Path(__file__).resolve().parent.parent
BANDS = np.arange(SIZE * SIZE).reshape(SIZE, SIZE) // (4 * SIZE)  # four superpixels for LIME


def _model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


def _data(n: int = N, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, SIZE, SIZE, 3), dtype=np.float32)
    labels = rng.integers(0, 3, n)
    masks = np.zeros((n, SIZE, SIZE), bool)
    for k in range(n):
        y, x = rng.integers(0, SIZE - 6, 2)
        masks[k, y : y + 6, x : x + 6] = True
    masks[5] = False  # an empty mask: its mask metrics are NaN, the rest still count
    return images, labels, masks


def _dataset(images, labels, masks) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((images, labels, masks))


def _arrays(store) -> dict[str, np.ndarray]:
    """Every array of a store by name (the completion records included)."""
    names = ["logits", "predictions", "targets", "labels", "ok"]
    names += [f"maps/{m}" for m in store.method_names]
    names += [f"metrics/{m}/{k}" for m in store.method_names for k in METRICS]
    arrays = {name: np.asarray(store[name][:]) for name in names}
    arrays["complete"] = store.progress()["complete"]
    return arrays


def assert_same_store(a, b) -> None:
    arrays_a, arrays_b = _arrays(a), _arrays(b)
    for name, value in arrays_a.items():
        np.testing.assert_array_equal(value, arrays_b[name], err_msg=name)


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def reference(model, data, tmp_path_factory):
    """One uninterrupted run: the store every other run is compared with."""
    out = tmp_path_factory.mktemp("reference") / "store"
    return explain_dataset(
        model,
        _dataset(*data),
        METHODS,
        out,
        batch_size=BATCH,
        targets="labels",
        metrics=METRICS,
    )


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


# ----------------------------------------------------------------------------- numbers


def test_maps_logits_and_metrics_match_the_public_functions(model, data, tmp_path):
    images, labels, masks = (a[:8] for a in data)
    methods = {
        "grad_cam": {},
        "bilinear": ("grad_cam", {"upsample": "bilinear"}),
        "gcpp": ("grad_cam_plus_plus", {"layer": "c1"}),
        "cam": {"weighting": kerasviz.layer_cam_weights, "relu": False},
        "saliency": {},
        "smoothgrad": {"samples": 3, "noise": 0.2, "seed": 4},
        "ig_blur": ("integrated_gradients", {"steps": 4, "baseline": "blur", "blur_sigma": 1.0}),
        "ig_noise": ("integrated_gradients", {"steps": 3, "baseline": "noise", "seed": 2}),
        "guided_backprop": {},
        "guided_grad_cam": {},
        "score_cam": {"max_channels": 3},
        "effective": ("grad_cam", {"upsample": "effective"}),  # no kernel: on the host
        "lime": {"samples": 16, "segments": BANDS, "seed": 1},  # a result object with .maps
    }
    store = explain_dataset(
        model,
        _dataset(images, labels, masks),
        methods,
        tmp_path / "s",
        batch_size=BATCH,
        dtype="float32",
        metrics=["pointing_game", "energy_pointing_game"],
    )
    logits = kerasviz.get_probe(model)([images])[1].numpy()
    predicted = logits.argmax(-1)
    np.testing.assert_allclose(store.logits[:], logits, rtol=1e-5, atol=1e-6)
    table = store.table()
    np.testing.assert_array_equal(table["prediction"], predicted)
    np.testing.assert_array_equal(table["target"], predicted)  # targets=None: the prediction
    np.testing.assert_array_equal(table["label"], labels)

    def per_pixel(x):
        return np.abs(x).max(-1)

    t = predicted
    expected = {
        "grad_cam": kerasviz.grad_cam(model, images, t),
        "bilinear": kerasviz.grad_cam(model, images, t, upsample="bilinear"),
        "gcpp": kerasviz.grad_cam_plus_plus(model, images, t, layer="c1"),
        "cam": kerasviz.cam(model, images, t, weighting=kerasviz.layer_cam_weights, relu=False),
        "saliency": kerasviz.saliency(model, images, t),
        "smoothgrad": kerasviz.smoothgrad(model, images, t, samples=3, noise=0.2, seed=4),
        "ig_blur": per_pixel(
            kerasviz.integrated_gradients(
                model, images, t, steps=4, baseline="blur", blur_sigma=1.0
            )
        ),
        "ig_noise": per_pixel(
            kerasviz.integrated_gradients(model, images, t, steps=3, baseline="noise", seed=2)
        ),
        "guided_backprop": per_pixel(kerasviz.guided_backprop(model, images, t)),
        "guided_grad_cam": per_pixel(kerasviz.guided_grad_cam(model, images, t)),
        "score_cam": kerasviz.score_cam(model, images, t, max_channels=3),
        "effective": kerasviz.grad_cam(model, images, t, upsample="effective"),
        "lime": kerasviz.lime(model, images, t, samples=16, segments=BANDS, seed=1).maps,
    }
    for name, want in expected.items():
        got = store.maps[name][:]
        assert got.shape == (8, SIZE, SIZE), name
        scale = np.abs(want).max()
        assert scale > 0, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=name)

    # Per-image metrics: kerasviz.metrics on the same maps; an empty mask gives NaN.
    rows = np.arange(8) != 5
    for name in ("grad_cam", "saliency", "score_cam"):
        maps = store.maps[name][:]
        pointing = metrics.pointing_game(maps[rows], masks[rows])
        np.testing.assert_allclose(table[f"{name}/pointing_game"][rows], pointing, atol=1e-6)
        assert np.isnan(table[f"{name}/pointing_game"][5])
        energy = metrics.energy_pointing_game(maps[rows], masks[rows])
        np.testing.assert_allclose(table[f"{name}/energy_pointing_game"][rows], energy, atol=1e-5)


def test_deletion_and_insertion_match_kerasviz_metrics(model, data, reference):
    images, labels, _ = data
    maps = kerasviz.grad_cam(model, images, labels)  # the float32 maps the metrics saw
    table = reference.table()
    deletion = metrics.deletion_auc(model, images, maps, labels, steps=4, baseline=0.0)
    np.testing.assert_allclose(table["grad_cam/deletion_auc"], deletion, atol=1e-5)
    insertion = metrics.insertion_auc(model, images, maps, labels, steps=4, baseline="blur")
    np.testing.assert_allclose(table["grad_cam/insertion_auc"], insertion, atol=1e-5)


def test_store_layout_and_manifest(model, reference):
    settings = reference.manifest["settings"]
    assert settings["model"]["fingerprint"] == model_fingerprint(model)
    assert settings["kerasviz_version"] == kerasviz.__version__
    assert settings["methods"]["ig"] == {"method": "integrated_gradients", "kwargs": {"steps": 4}}
    assert settings["metrics"]["pointing_game"] == {"tolerance": 0}  # the tolerance used
    assert settings["metrics"]["deletion_auc"]["baseline"] == 0.0
    assert settings["input"]["kind"] == "dataset" and "(16, 16, 3)" in settings["input"][
        "element_spec"
    ].replace("None, ", "")
    assert settings["n"] == N and settings["batch_size"] == BATCH
    assert reference.manifest["complete"] == [[0, N]]
    attributes = json.loads((reference.path / "zarr.json").read_text())["attributes"]
    assert attributes["kerasviz"]["complete"] == [[0, N]]  # rewritten at the end of the run
    maps = reference.maps["grad_cam"]
    assert maps.dtype == np.float16 and maps.shape == (N, SIZE, SIZE)
    assert maps.chunks == (BATCH, SIZE, SIZE)  # one chunk per batch
    progress = reference.progress()
    assert progress["complete"].all() and progress["complete"].shape == (-(-N // BATCH),)
    assert (progress["worker"] == 0).all() and (progress["seconds"] > 0).all()
    # float16 maps are the float32 maps rounded once.
    want = kerasviz.grad_cam(model, _data()[0], _data()[1])
    np.testing.assert_allclose(maps[:], want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_fingerprint_ignores_names_but_not_weights(model):
    twin = _model()  # the same architecture and seed; Keras numbers its layer names anew
    assert model_fingerprint(twin) == model_fingerprint(model)
    twin.get_layer("head").kernel.assign(twin.get_layer("head").kernel + 1e-3)
    assert model_fingerprint(twin) != model_fingerprint(model)


# ----------------------------------------------------------------------------- resumption


CHILD = """
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf, keras
from kerasviz.dataset_scale import explain_dataset
model = keras.models.load_model(sys.argv[1])
arrays = np.load(sys.argv[2])
data = tf.data.Dataset.from_tensor_slices((arrays["images"], arrays["labels"], arrays["masks"]))

def progress(done, total):
    print("recorded", done, flush=True)
    time.sleep(float(sys.argv[4]))

explain_dataset(model, data, {methods}, sys.argv[3], batch_size={batch}, targets="labels",
                metrics={metrics}, progress=progress)
print("finished", flush=True)
"""


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(
    model, data, model_file, reference, tmp_path
):
    images, labels, masks = data
    np.savez(tmp_path / "data.npz", images=images, labels=labels, masks=masks)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(methods=repr(METHODS), batch=BATCH, metrics=repr(METRICS)))
    out = tmp_path / "store"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(model_file), str(tmp_path / "data.npz"), str(out), "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    recorded = 0
    deadline = time.monotonic() + 120
    try:
        for line in child.stdout:
            if line.startswith("recorded"):
                recorded += 1
            if recorded == 2 or time.monotonic() > deadline:
                break
        child.send_signal(signal.SIGKILL)  # mid-run: the second record's callback is sleeping
    finally:
        child.kill()
        child.wait(timeout=30)
    assert recorded == 2 and child.returncode == -signal.SIGKILL
    partial = open_explanations(out)
    done = int(partial.progress()["complete"].sum())
    assert 2 <= done < -(-N // BATCH)  # killed with work left, nothing recorded lost
    assert partial.complete[: 2 * BATCH].all()

    resumed = explain_dataset(
        model, _dataset(*data), METHODS, out, batch_size=BATCH, targets="labels", metrics=METRICS
    )
    assert resumed.manifest["complete"] == [[0, N]]
    assert_same_store(resumed, reference)


def test_a_torn_chunk_is_rewritten_on_resume(model, data, reference, tmp_path):
    out = tmp_path / "store"

    class Crash(Exception):
        pass

    def crash_after_two_chunks(done, total):
        if done >= 2 * BATCH:
            raise Crash

    with pytest.raises(Crash):
        explain_dataset(
            model,
            _dataset(*data),
            METHODS,
            out,
            batch_size=BATCH,
            targets="labels",
            metrics=METRICS,
            progress=crash_after_two_chunks,
        )
    store = open_explanations(out)
    assert store.manifest["complete"] == [[0, 2 * BATCH]]
    # A run killed between a chunk's data and its record: data of chunk 3 without a record,
    # and a leftover temporary file of an unfinished write.
    import zarr

    group = zarr.open_group(str(out), mode="r+")
    group["maps/grad_cam"][2 * BATCH : 3 * BATCH] = 7.0
    group["logits"][2 * BATCH : 3 * BATCH] = -1.0
    torn = out / "maps" / "ig" / "c" / "3" / "0" / "0.5f3a.partial"
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(b"torn")
    resumed = explain_dataset(
        model, _dataset(*data), METHODS, out, batch_size=BATCH, targets="labels", metrics=METRICS
    )
    assert_same_store(resumed, reference)


def test_different_settings_refuse_to_resume_and_name_the_setting(model, data, reference, tmp_path):
    out = reference.path
    changed = {**METHODS, "ig": ("integrated_gradients", {"steps": 5})}
    with pytest.raises(ValueError, match=r"methods\.ig\.kwargs\.steps = 5.*store has 4"):
        explain_dataset(
            model,
            _dataset(*data),
            changed,
            out,
            batch_size=BATCH,
            targets="labels",
            metrics=METRICS,
        )
    with pytest.raises(ValueError, match=r"dtype = 'float32'.*store has 'float16'"):
        explain_dataset(
            model,
            _dataset(*data),
            METHODS,
            out,
            batch_size=BATCH,
            targets="labels",
            metrics=METRICS,
            dtype="float32",
        )
    with pytest.raises(ValueError, match="model.fingerprint"):
        other = _model()
        other.get_layer("c1").bias.assign(other.get_layer("c1").bias + 1.0)
        explain_dataset(
            other,
            _dataset(*data),
            METHODS,
            out,
            batch_size=BATCH,
            targets="labels",
            metrics=METRICS,
        )
    with pytest.raises(ValueError, match="resume=False"):
        explain_dataset(
            model,
            _dataset(*data),
            METHODS,
            out,
            batch_size=BATCH,
            targets="labels",
            metrics=METRICS,
            resume=False,
        )
    # The refused store is untouched.
    assert open_explanations(out).manifest["settings"]["methods"]["ig"]["kwargs"]["steps"] == 4

    # A new store with resume=False, or overwrite=True, goes ahead.
    small = _dataset(*(a[:6] for a in data))
    fresh = explain_dataset(
        model,
        small,
        changed,
        tmp_path / "new",
        batch_size=BATCH,
        targets="labels",
        metrics=["pointing_game"],
        resume=False,
    )
    assert fresh.manifest["complete"] == [[0, 6]]
    replaced = explain_dataset(
        model,
        small,
        {"grad_cam": {}},
        tmp_path / "new",
        batch_size=BATCH,
        metrics=[],
        overwrite=True,
    )
    assert replaced.method_names == ["grad_cam"] and replaced.manifest["complete"] == [[0, 6]]
    want = kerasviz.grad_cam(model, data[0][:6])  # no metrics: cast to float16 on the device
    got = replaced.maps["grad_cam"][:]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * want.max())
    with pytest.raises(ValueError, match="non-empty folder without a kerasviz manifest"):
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("keep")
        explain_dataset(model, small, ["grad_cam"], tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


# ----------------------------------------------------------------------------- bad input


def test_bad_input_fails_before_any_work(model, data, tmp_path):
    images, labels, masks = data
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"map methods: .*, cam, .*grad_cam, .*Closest: grad_cam"):
        explain_dataset(model, _dataset(*data), {"x": ("grad_kam", {})}, out)
    small = tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"input shape \(None, 16, 16, 3\).*shape=\(8, 8, 3\)"):
        explain_dataset(model, small, ["grad_cam"], out)
    with pytest.raises(ValueError, match=r"methods\['ig'\].*steps"):
        explain_dataset(model, _dataset(*data), {"ig": ("integrated_gradients", {"steps": 0})}, out)
    with pytest.raises(ValueError, match="upsample"):
        explain_dataset(model, _dataset(*data), {"g": ("grad_cam", {"upsample": "nearest"})}, out)
    with pytest.raises(ValueError, match="targets"):
        explain_dataset(model, _dataset(*data), ["grad_cam"], out, targets={"not": "ok"})
    with pytest.raises(ValueError, match="masks for the metric 'pointing_game'"):
        explain_dataset(
            model,
            tf.data.Dataset.from_tensor_slices(images),
            ["grad_cam"],
            out,
            metrics=["pointing_game"],
        )
    with pytest.raises(ValueError, match="multiple of the 1 local devices|positive|>= 1"):
        explain_dataset(model, _dataset(*data), ["grad_cam"], out, batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        explain_dataset(model, _dataset(*data), ["grad_cam"], out, dtype="int8")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="`out`.*a_file.*which is a file"):
        explain_dataset(model, _dataset(*data), ["grad_cam"], blocker / "store")
    assert not out.exists()  # nothing was started


def test_batched_and_unknown_length_datasets_give_the_same_store(model, data, reference, tmp_path):
    batched = _dataset(*data).batch(5)
    filtered = _dataset(*data).filter(lambda x, y, m: True)  # unknown cardinality: counted
    for k, dataset in enumerate((batched, filtered)):
        store = explain_dataset(
            model,
            dataset,
            METHODS,
            tmp_path / f"s{k}",
            batch_size=BATCH,
            targets="labels",
            metrics=METRICS,
        )
        assert_same_store(store, reference)


def test_masks_argument_and_class_targets(model, data, tmp_path):
    images, labels, masks = data
    store = explain_dataset(
        model,
        tf.data.Dataset.from_tensor_slices(images),
        ["saliency"],
        tmp_path / "s",
        masks=masks,
        batch_size=8,
        targets=2,
        metrics=["pointing_game"],
    )
    table = store.table()
    assert (table["target"] == 2).all() and "label" not in table
    maps = kerasviz.saliency(model, images, 2)
    np.testing.assert_allclose(store.maps["saliency"][:], maps, rtol=1e-3, atol=1e-3 * maps.max())
    rows = np.arange(N) != 5
    want = metrics.pointing_game(kerasviz.saliency(model, images[rows], 2), masks[rows])
    np.testing.assert_allclose(table["saliency/pointing_game"][rows], want)


# ----------------------------------------------------------------------------- folders


def _write_folder(tmp_path, images, masks):
    from PIL import Image

    folder, mask_folder = tmp_path / "images", tmp_path / "masks"
    folder.mkdir()
    mask_folder.mkdir()
    pixels = (images * 255).round().astype(np.uint8)
    for k, (image, mask) in enumerate(zip(pixels, masks, strict=True)):
        Image.fromarray(image).save(folder / f"img_{k:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(mask_folder / f"img_{k:02d}.png")
    (folder / "img_03b.png").write_bytes(b"this is not a png")
    (mask_folder / "img_03b.png").write_bytes(b"nor is this")
    return folder, mask_folder, pixels


def test_folder_with_a_corrupt_file_skips_and_records_it(model, data, tmp_path):
    images, _, masks = (a[:5] for a in data)
    folder, mask_folder, pixels = _write_folder(tmp_path, images, masks)
    store = explain_dataset(
        model,
        folder,
        ["grad_cam"],
        tmp_path / "s",
        masks=mask_folder,
        batch_size=BATCH,
        metrics=["pointing_game"],
    )
    assert store.n == 6
    skipped = store.manifest["skipped"]
    assert len(skipped) == 1 and skipped[0]["index"] == 4 and skipped[0]["path"] == "img_03b.png"
    assert "UnidentifiedImageError" in skipped[0]["reason"]
    table = store.table()
    np.testing.assert_array_equal(table["ok"], np.arange(6) != 4)
    assert table["path"][4] == "img_03b.png" and table["reason"][0] == ""
    maps = store.maps["grad_cam"][:]
    assert np.isnan(maps[4]).all() and table["prediction"][4] == -1
    good = np.arange(6) != 4
    want = kerasviz.grad_cam(model, pixels / 255.0)
    np.testing.assert_allclose(maps[good], want, rtol=1e-3, atol=1e-3 * want.max())
    pointing = metrics.pointing_game(want, masks)
    np.testing.assert_allclose(table["grad_cam/pointing_game"][good], pointing)


def test_folder_preprocess_is_checked_first(model, data, tmp_path):
    folder, _, _ = _write_folder(tmp_path, data[0][:3], data[2][:3])
    with pytest.raises(ValueError, match=r"`preprocess`.*\(16, 16, 3\).*\(8, 8, 3\)"):
        explain_dataset(
            model, folder, ["grad_cam"], tmp_path / "s", preprocess=lambda x: x[:8, :8] / 255.0
        )
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- numbers out


def test_bootstrap_interval_agrees_with_a_direct_resampling():
    assert bootstrap_ci([0.25] * 9) == (0.25, 0.25, 0.25)
    values = np.array([0.0, 1.0, 1.0, 0.5, 0.2, 0.9, 0.4])
    mean, low, high = bootstrap_ci(values, resamples=300, seed=7)
    rng = np.random.default_rng(7)
    means = np.concatenate(
        [values[rng.integers(0, 7, size=(100, 7))].mean(axis=1) for _ in range(3)]
    )
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert low < mean < high


def test_summary_and_localization_table_from_the_store(reference):
    summary = summarize(reference, resamples=200)
    table = reference.table()
    values = table["grad_cam/pointing_game"]
    values = values[np.isfinite(values)]
    want = bootstrap_ci(values, resamples=200)
    got = summary["grad_cam"]["pointing_game"]
    assert (got["mean"], got["low"], got["high"]) == pytest.approx(want)
    assert got["count"] == N - 1  # the empty mask does not count
    accuracy = (table["prediction"] == table["label"]).mean()
    assert summary["model"]["accuracy"]["mean"] == pytest.approx(accuracy)
    markdown = localization_table(reference, resamples=200)
    lines = markdown.splitlines()
    assert lines[0] == (
        "| method | settings | pointing game | energy PG | deletion AUC | insertion AUC |"
    )
    row = next(line for line in lines if line.startswith("| ig |"))
    assert "integrated_gradients (steps=4)" in row
    cell = summary["ig"]["deletion_auc"]
    assert f"{cell['mean']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]" in row


# ----------------------------------------------------------------------------- command line


def test_cli_explain_then_summarize(model_file, data, tmp_path, capsys):
    from kerasviz.cli import main

    images, _, masks = (a[:6] for a in data)
    folder, mask_folder, _ = _write_folder(tmp_path, images, masks)
    out = tmp_path / "store"
    code = main(
        [
            "explain",
            str(model_file),
            str(folder),
            "--method",
            "grad_cam",
            "--method",
            "ig=integrated_gradients:steps=4,baseline='black'",
            "--out",
            str(out),
            "--masks",
            str(mask_folder),
            "--batch-size",
            "4",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "7/7 images" in captured.err and "images/s" in captured.err and "ETA" in captured.err
    store = open_explanations(out)
    assert store.manifest["settings"]["methods"]["ig"]["kwargs"] == {
        "steps": 4,
        "baseline": "black",
    }
    assert store.manifest["skipped"][0]["path"] == "img_03b.png"

    markdown = tmp_path / "table.md"
    assert main(["summarize", str(out), "--markdown", str(markdown)]) == 0
    printed = capsys.readouterr().out
    mean = np.nanmean(store.table()["grad_cam/pointing_game"])
    assert f"{mean:.3f}" in printed and "95% CI" in printed
    assert markdown.read_text().startswith("| method | settings | pointing game")

    bad = ["explain", str(model_file), str(folder), "--out", str(tmp_path / "x")]
    assert main([*bad, "--method", "grad_kam"]) == 1
    assert "Closest: grad_cam" in capsys.readouterr().err
    assert main([*bad, "--method", "occlusion:patch"]) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_method_options_are_python_literals():
    from kerasviz.dataset_scale.command import parse_method_options

    options = ["occlusion:patch=(4, 4),stride=2", "grad_cam", "grad_cam:upsample='bilinear'"]
    parsed = parse_method_options([*options, "x=integrated_gradients:baseline=blur,steps=8"])
    assert parsed == {
        "occlusion": ("occlusion", {"patch": (4, 4), "stride": 2}),
        "grad_cam": ("grad_cam", {}),
        "grad_cam_2": ("grad_cam", {"upsample": "bilinear"}),
        "x": ("integrated_gradients", {"baseline": "blur", "steps": 8}),
    }
