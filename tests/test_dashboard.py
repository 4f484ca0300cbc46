"""The dashboard's API through Starlette's test client, its Python entry point and `kerasviz serve`.

Numbers are checked against kerasviz itself (top channels, receptive-field boxes, CAM maxima,
integrated gradients) and against hand-computed receptive fields. Bad input must come back as
a message, with the server still serving. The real-browser test is test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from dashboard_support import (
    CLASSES,
    SIZE,
    decode_url,
    encode,
    images,
    png_header_only,
    tiny_model,
)
from starlette.testclient import TestClient

import kerasviz
from kerasviz.cli import main
from kerasviz.dashboard import images as im
from kerasviz.dashboard.explorer import CAM_METHODS, integrated_gradients_in_pieces, make_explorer
from kerasviz.dashboard.server import create_app

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_LIMIT = 60_000
PIXEL_LIMIT = 200_000


@pytest.fixture(scope="module")
def served():
    explorer = make_explorer(
        tiny_model(),
        images(),
        class_names=CLASSES,
        max_upload_bytes=UPLOAD_LIMIT,
        max_pixels=PIXEL_LIMIT,
    )
    client = TestClient(create_app(explorer, allowed_hosts=["testserver"]))
    yield explorer, client
    explorer.close()


def fitted(index: int) -> np.ndarray:
    return im.fit(images()[index], SIZE, SIZE, 3)


def post(client: TestClient, route: str, **body):
    response = client.post(route, json=body)
    return response.status_code, response.json()


def wait(explorer, job_id: str, timeout: float = 120.0):
    job = explorer.jobs.get(job_id)
    assert job.join(timeout), f"job {job_id} still {job.state} after {timeout} s"
    return job


# ------------------------------------------------------------------------------ content


def test_info_lists_layers_with_shapes_and_exact_receptive_fields(served):
    _, client = served
    info = client.get("/api/info").json()
    (model,) = info["models"]
    assert model["size"] == [SIZE, SIZE, 3] and model["classes"] == list(CLASSES)
    assert model["default_layer"] == "c2"
    rows = {row["path"]: row for row in model["layers"]}
    assert list(rows) == ["c1", "p1", "c2", "gap", "out"]
    expected = {  # by hand: valid 3x3; 2x2 pool; same 3x3 after the pool (pad 1 = 2 input px)
        "c1": ([30, 30, 4], [3, 3], [1, 1], [0, 0]),
        "p1": ([15, 15, 4], [4, 4], [2, 2], [0, 0]),
        "c2": ([15, 15, 6], [8, 8], [2, 2], [-2, -2]),
    }
    for path, (shape, size, stride, start) in expected.items():
        row = rows[path]
        assert row["shape"] == shape and row["spatial"]
        assert (row["rf"]["size"], row["rf"]["stride"], row["rf"]["start"]) == (size, stride, start)
    assert rows["gap"]["rf"]["global"] and not rows["gap"]["spatial"]
    assert [i["name"] for i in info["images"]] == ["image 0", "image 1", "image 2"]
    assert info["cams"] == [m.label for m in CAM_METHODS]


def test_images_are_centre_cropped_to_the_model_aspect_then_resized():
    pixels = np.zeros((40, 48, 3), np.uint8)
    pixels[:, :, 2] = 200
    pixels[:, :4] = pixels[:, 44:] = (255, 0, 0)  # outside the central 40x40 crop
    out = im.fit(pixels, SIZE, SIZE, 3)
    np.testing.assert_allclose(out, np.broadcast_to([0, 0, 200 / 255], out.shape), atol=1e-6)
    grey = im.fit(pixels, 8, 8, 1)
    assert grey.shape == (8, 8, 1)
    np.testing.assert_allclose(grey, round(0.114 * 200) / 255, atol=1 / 255)


def test_predict_returns_the_fitted_image_and_the_model_scores(served):
    _, client = served
    status, data = post(client, "/api/predict", model="m0", image="i1")
    assert status == 200
    np.testing.assert_array_equal(decode_url(data["image"]), im.to_uint8(fitted(1)))
    scores = tiny_model().predict(fitted(1)[None], verbose=0)[0]
    assert data["predicted"] == int(np.argmax(scores))
    assert [t["index"] for t in data["top"]] == list(np.argsort(-scores, kind="stable"))
    np.testing.assert_allclose([t["score"] for t in data["top"]], np.sort(scores)[::-1], rtol=1e-5)


def test_features_top_channels_and_filter_weights(served):
    _, client = served
    maps = kerasviz.feature_maps(tiny_model(), fitted(0)[None], ["c2"])["c2"][0]
    means = maps.reshape(-1, 6).mean(axis=0)
    status, data = post(client, "/api/features", model="m0", image="i0", layer="c2", k=4)
    assert status == 200 and data["shape"] == [15, 15, 6]
    order = list(np.argsort(-means, kind="stable"))
    assert [t["index"] for t in data["top"]] == order
    np.testing.assert_allclose([t["mean"] for t in data["top"]], means[order], rtol=1e-5)
    assert [t["index"] for t in data["channels"]] == order[:4]
    for tile in data["channels"]:
        assert decode_url(tile["png"]).shape == (15, 15, 3)
        assert tile["max"] == pytest.approx(float(maps[..., tile["index"]].max()), rel=1e-5)
    assert data["filters"]["shape"] == [3, 3, 4, 6] and len(data["filters"]["tiles"]) == 4
    # chosen channels, in the order asked; the first conv shows RGB kernels
    status, data = post(
        client, "/api/features", model="m0", image="i0", layer="c1", channels=[3, 0]
    )
    assert [t["index"] for t in data["channels"]] == [3, 0]
    assert data["filters"]["note"] == "RGB weights"
    kernel = kerasviz.filter_weights(tiny_model(), "c1")["kernel"]
    tile = decode_url(data["filters"]["tiles"][0]["png"]) / 255.0
    scale = np.abs(kernel[..., [3, 0]]).max()
    np.testing.assert_allclose(tile, 0.5 + 0.5 * kernel[..., 3] / scale, atol=1 / 255)


def test_unit_box_activation_and_pattern_job(served):
    explorer, client = served
    status, data = post(
        client, "/api/unit", model="m0", image="i0", layer="c2", channel=2, y=3, x=4, steps=16
    )
    assert status == 200
    # c2: 8 px fields, stride 2, start -2: unit (3, 4) sees rows 4..11 and columns 6..13.
    assert data["box"] == [4, 6, 12, 14]
    rf = kerasviz.receptive_field(tiny_model(), "c2")
    assert tuple(data["box"]) == rf.box(3, 4)
    maps = kerasviz.feature_maps(tiny_model(), fitted(0)[None], ["c2"])["c2"][0]
    assert data["activation"] == pytest.approx(float(maps[3, 4, 2]), rel=1e-5, abs=1e-7)
    framed = decode_url(data["framed"])
    assert tuple(framed[4, 8]) == (255, 51, 26) and tuple(framed[7, 9]) != (255, 51, 26)
    assert decode_url(data["crop"]).shape == (8, 8, 3)
    job = wait(explorer, data["job"])
    assert job.state == "done" and [f["step"] for f in job.frames] == [8, 16]
    assert decode_url(job.result["png"]).shape == (SIZE, SIZE, 3)
    assert decode_url(job.result["crop"]).shape == (8, 8, 3)


def test_every_cam_method_with_both_projections(served):
    _, client = served
    status, data = post(client, "/api/cam", model="m0", image="i0", layer="c2", target=1)
    assert status == 200 and data["target"] == 1 and data["target_name"] == "one"
    assert [m["method"] for m in data["methods"]] == [m.label for m in CAM_METHODS]
    for method in data["methods"]:
        for projection in ("receptive_field", "bilinear"):
            assert decode_url(method[projection]["png"]).shape == (SIZE, SIZE, 3)
    grad = data["methods"][0]
    x = fitted(0)[None]
    exact = kerasviz.grad_cam(tiny_model(), x, [1], "c2", upsample="receptive_field")
    bilinear = kerasviz.grad_cam(tiny_model(), x, [1], "c2", upsample="bilinear")
    assert grad["receptive_field"]["max"] == pytest.approx(float(exact.max()), rel=1e-4)
    assert grad["bilinear"]["max"] == pytest.approx(float(bilinear.max()), rel=1e-4)
    score = data["methods"][3]
    reference = kerasviz.score_cam(tiny_model(), x, [1], "c2", upsample="bilinear")
    assert score["bilinear"]["max"] == pytest.approx(float(reference.max()), rel=1e-4)
    # another layer, another map
    _, other = post(
        client, "/api/cam", model="m0", image="i0", layer="c1", target=1, methods=["Grad-CAM"]
    )
    assert [m["method"] for m in other["methods"]] == ["Grad-CAM"]
    assert other["methods"][0]["receptive_field"]["png"] != grad["receptive_field"]["png"]


def test_saliency_is_the_library_gradient(served):
    _, client = served
    status, data = post(client, "/api/saliency", model="m0", image="i2", target=0)
    assert status == 200 and data["target"] == 0
    grads = kerasviz.saliency(tiny_model(), fitted(2)[None], [0])[0]
    expected = im.to_uint8(im.colorize(im.robust_scale(grads), "inferno"))
    np.testing.assert_array_equal(decode_url(data["png"]), expected)


def test_integrated_gradients_in_pieces_equal_one_call():
    x = fitted(1)
    base = np.full_like(x, 0.25)
    whole, delta = kerasviz.integrated_gradients(
        tiny_model(), x[None], [2], baseline=base[None], steps=20, return_delta=True
    )
    pieces, gap = integrated_gradients_in_pieces(tiny_model(), x, 2, 20, baseline=base, piece=8)
    np.testing.assert_allclose(pieces, whole[0], rtol=1e-4, atol=1e-6)
    assert gap == pytest.approx(float(delta[0]), abs=1e-4)


def test_gradients_job_streams_smoothgrad_then_integrated_gradients(served):
    explorer, client = served
    status, data = post(client, "/api/jobs", kind="gradients", model="m0", image="i0", steps=12)
    assert status == 200 and data["total"] == 16 + 12
    job = wait(explorer, data["job"])
    assert job.state == "done"
    assert [f["kind"] for f in job.frames] == ["smoothgrad", "ig"]
    x = fitted(0)[None]
    t = job.result["target"]
    attributions, delta = kerasviz.integrated_gradients(
        tiny_model(), x, [t], steps=12, return_delta=True
    )
    assert job.result["ig_sum"] == pytest.approx(float(attributions.sum()), rel=1e-4, abs=1e-5)
    assert job.result["ig_delta"] == pytest.approx(float(delta[0]), abs=1e-4)


def test_inversion_streams_snapshots_with_ssim_and_psnr(served):
    explorer, client = served
    status, data = post(
        client, "/api/jobs", kind="invert", model="m0", image="i0", layer="c1", steps=6, every=2
    )
    assert status == 200
    seen, after = [], 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{data['job']}?after={after}&wait=2").json()
        seen += state["frames"]
        after = state["next"]
        if state["state"] not in ("queued", "running"):
            break
    assert state["state"] == "done" and [f["step"] for f in seen] == [2, 4, 6]
    times = [f["t"] for f in seen]  # seconds since the job started
    assert 0 <= times[0] <= times[1] <= times[2] <= state["seconds"]
    display = fitted(0)
    for frame in seen:
        picture = decode_url(frame["png"]) / 255.0
        # the reported metrics are those of the snapshot (before PNG rounding)
        assert frame["ssim"] == pytest.approx(kerasviz.metrics.ssim(picture, display), abs=0.02)
        assert frame["psnr"] == pytest.approx(kerasviz.metrics.psnr(picture, display), abs=0.5)
    assert state["result"]["ssim"] == seen[-1]["ssim"] and state["result"]["layer"] == "c1"


def test_long_job_never_blocks_requests_and_a_new_inversion_cancels_the_old(served):
    explorer, client = served
    _, first = post(
        client, "/api/jobs", kind="invert", model="m0", image="i1", layer="c2", steps=2000, every=1
    )
    job = explorer.jobs.get(first["job"])
    deadline = time.monotonic() + 60
    while not job.frames and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "running" and job.frames
    began = time.perf_counter()
    status, _ = post(client, "/api/features", model="m0", image="i1", layer="c1")
    assert status == 200 and time.perf_counter() - began < 10
    assert job.state == "running"  # the request was answered between two segments
    _, second = post(
        client, "/api/jobs", kind="invert", model="m0", image="i1", layer="c2", steps=2, every=1
    )
    assert wait(explorer, first["job"]).state == "cancelled" and job.step < 2000
    assert wait(explorer, second["job"]).state == "done"
    # the page's Stop button
    _, third = post(
        client, "/api/jobs", kind="invert", model="m0", image="i1", layer="c2", steps=2000, every=1
    )
    stopped = client.post(f"/api/jobs/{third['job']}/cancel", headers={"X-Kerasviz": "1"})
    assert stopped.status_code == 200
    assert wait(explorer, third["job"]).state == "cancelled"


def test_after_warm_up_no_request_on_the_default_layer_traces_again(served):
    from kerasviz._probe import TRACES

    explorer, client = served
    job = explorer.warm_up()
    assert job.join(300) and job.state == "done" and job.result["calls"] == job.total == 14
    before = TRACES.copy()
    for route, body in (
        ("/api/predict", {}),
        ("/api/features", {"layer": "c2"}),
        ("/api/cam", {"layer": "c2", "target": 2}),
        ("/api/saliency", {"target": 1}),
    ):
        assert post(client, route, model="m0", image="i2", **body)[0] == 200
    _, unit = post(client, "/api/unit", model="m0", image="i2", layer="c2", channel=5, y=1, x=9)
    assert "job" in unit, unit
    jobs = [unit["job"]]
    for body in ({"kind": "invert", "layer": "c2", "steps": 3}, {"kind": "gradients"}):
        jobs.append(post(client, "/api/jobs", model="m0", image="i2", **body)[1]["job"])
    assert all(wait(explorer, j).state == "done" for j in jobs)
    assert TRACES == before, TRACES - before


def test_a_model_of_free_input_size_is_served_at_the_chosen_size():
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    explorer = make_explorer(model, images(1), size=(24, 20))
    try:
        assert explorer.info()["models"][0]["size"] == [24, 20, 3]
        assert explorer.features("m0", "i0", "conv")["shape"] == [22, 18, 3]
        cam = explorer.cams("m0", "i0", "conv", methods=["Grad-CAM"])["methods"][0]
        assert decode_url(cam["receptive_field"]["png"]).shape == (24, 20, 3)
        unit = explorer.unit("m0", "i0", "conv", channel=1, y=0, x=17, steps=2)
        assert unit["box"] == [0, 17, 3, 20]
        job = wait(explorer, unit["job"])
        assert job.state == "done", job.error
        assert decode_url(job.result["png"]).shape == (24, 20, 3)
    finally:
        explorer.close()


# ------------------------------------------------------------------------------ uploads


def test_uploads_png_and_jpeg_are_fitted(served):
    explorer, client = served
    pixels = images(1, seed=5)[0]
    for fmt in ("PNG", "JPEG"):
        response = client.post(
            "/api/upload",
            content=encode(pixels, fmt),
            headers={"X-Kerasviz": "1", "X-Filename": f"../../etc/pic.{fmt.lower()}"},
        )
        assert response.status_code == 200, response.text
        view = response.json()
        assert view["uploaded"] and view["size"] == [40, 48]
        assert view["name"] == f"pic.{fmt.lower()}"  # a label only, never a path
        status, data = post(client, "/api/predict", model="m0", image=view["key"])
        shown = decode_url(data["image"]).astype(float)
        error = np.abs(shown - im.to_uint8(im.fit(pixels, SIZE, SIZE, 3))).mean()
        assert error < (1 if fmt == "PNG" else 40)
    assert any(i["name"] == "pic.png" for i in client.get("/api/info").json()["images"])


def test_bad_input_gets_a_message_and_the_server_keeps_serving(served):
    _, client = served
    headers = {"X-Kerasviz": "1"}

    def upload(data: bytes, extra=None):
        response = client.post("/api/upload", content=data, headers={**headers, **(extra or {})})
        return response.status_code, response.json()["error"]

    status, message = upload(b"this is not an image, just text\n" * 10)
    assert status == 400 and "PNG or JPEG" in message
    status, message = upload(b"\0" * (UPLOAD_LIMIT + 1))
    assert status == 413 and f"at most {UPLOAD_LIMIT:,} bytes" in message
    status, message = upload(png_header_only(1000, 1000))  # 1e6 pixels declared in 70 bytes
    assert status == 400 and f"at most {PIXEL_LIMIT:,} pixels" in message and "1000x1000" in message
    status, message = upload(png_header_only(100_000, 100_000))
    assert status == 400 and "pixels" in message
    status, message = upload(encode(np.zeros((8, 8, 3), np.uint8), "GIF"))
    assert status == 400 and "PNG or JPEG" in message
    response = client.post("/api/upload", content=encode(images(1)[0]))
    assert response.status_code == 403  # no X-Kerasviz header: not from the page

    status, data = post(client, "/api/features", model="m0", image="i0", layer="c3x")
    assert status == 400 and "'c3x', which is not a layer name" in data["error"]
    assert "Closest valid names" in data["error"]
    status, data = post(client, "/api/cam", model="m0", image="i0", layer="gap")
    assert status == 400 and "4D output" in data["error"]
    status, data = post(client, "/api/features", model="m0", image="/etc/passwd", layer="c1")
    assert status == 404 and "image key" in data["error"]
    status, data = post(client, "/api/features", model="m9", image="i0", layer="c1")
    assert status == 404 and "['m0']" in data["error"]
    status, data = post(client, "/api/features", model="m0", image="i0", layer="c1", path="/x")
    assert status == 400 and "unknown ['path']" in data["error"]
    status, data = post(client, "/api/cam", model="m0", image="i0", layer="c2", target=7)
    assert status == 400 and "`target`" in data["error"]
    status, data = post(client, "/api/features", model="m0", image="i0", layer="c2", channels=[9])
    assert status == 400 and "`channels`" in data["error"]
    response = client.post(
        "/api/features", content=b"layer=c1", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415  # a foreign page cannot post JSON without a preflight
    response = client.get("/api/info", headers={"Host": "attacker.example"})
    assert response.status_code == 400  # DNS rebinding: only local host names are answered
    assert client.get("/static/../explorer.py").status_code == 404
    assert client.get("/static/explorer.py").status_code == 404
    assert client.get("/api/jobs/j999").status_code == 404
    # still serving
    assert client.get("/api/info").status_code == 200
    assert post(client, "/api/features", model="m0", image="i0", layer="c1")[0] == 200


def test_page_and_assets_are_served_locally(served):
    _, client = served
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert set(sources) == {"/static/app.js", "/static/app.css", "data:,"}
    texts = [page.text]
    for name, kind in (("app.js", "javascript"), ("app.css", "css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        texts.append(response.text)
    for text in texts:  # no CDN, no network: the only URL is the SVG namespace (an identifier)
        urls = set(re.findall(r"https?://[^\s\"')]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, urls


# ------------------------------------------------------------------------------ entry points


def test_only_the_server_module_imports_the_web_framework():
    """`import kerasviz` and the dashboard's model work never load Starlette or uvicorn."""
    import ast

    package = ROOT / "kerasviz"
    importers = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("starlette", "uvicorn") for n in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"dashboard/server.py"}
    top = ast.parse((package / "__init__.py").read_text())
    imported = {
        node.module for node in top.body if isinstance(node, ast.ImportFrom) and node.module
    } | {a.name for node in top.body if isinstance(node, ast.Import) for a in node.names}
    assert not any("dashboard" in name for name in imported)
    dashboard_init = ast.parse((package / "dashboard" / "__init__.py").read_text())
    assert not [
        n
        for n in dashboard_init.body
        if isinstance(n, ast.Import | ast.ImportFrom) and "server" in ast.unparse(n)
    ]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_python_dashboard_serves_stops_and_reports_a_busy_port():
    board = kerasviz.dashboard(tiny_model(), images(2), port=0, warm_up=False, display=False)
    try:
        assert board.url == f"http://127.0.0.1:{board.port}/" and board.running
        status, body = _get(board.url)
        assert status == 200 and b"kerasviz dashboard" in body
        info = json.loads(_get(board.url + "api/info")[1])
        assert len(info["images"]) == 2
        with pytest.raises(OSError, match=f"port {board.port} on 127.0.0.1 is already in use"):
            kerasviz.dashboard(tiny_model(), port=board.port, warm_up=False, display=False)
    finally:
        board.stop()
    assert not board.running
    with pytest.raises(urllib.error.URLError):
        _get(board.url)


def test_jupyter_shows_the_page_inline(monkeypatch):
    shown = []
    ipython = types.ModuleType("IPython")
    display = types.ModuleType("IPython.display")
    ipython.get_ipython = lambda: types.SimpleNamespace(config={"IPKernelApp": {}})
    display.IFrame = lambda url, width, height: ("IFrame", url, width, height)
    display.display = shown.append
    ipython.display = display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    with kerasviz.dashboard(tiny_model(), port=0, warm_up=False) as board:
        assert shown == [("IFrame", board.url, "100%", 900)]
    assert not board.running


def test_other_hosts_print_a_warning(capsys):
    with kerasviz.dashboard(tiny_model(), host="127.0.0.2", port=0, warm_up=False) as board:
        assert "anyone who can reach this port can run the model" in capsys.readouterr().err
        assert _get(board.url + "api/info")[0] == 200  # any Host name is answered then


def test_cli_port_in_use_is_one_line_naming_the_port(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--demo", "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"kerasviz: error: port {port} on 127.0.0.1 is already in use; choose another port (--port)"
    )
    assert main(["serve"]) == 1
    assert capsys.readouterr().err.strip() == "kerasviz: error: expected a MODEL file, or --demo"


def test_cli_serve_a_saved_model_and_a_folder(tmp_path, capsys):
    import keras

    from kerasviz.cli import _parser, expand_images
    from kerasviz.dashboard.command import _explorer

    path = tmp_path / "tiny.keras"
    tiny_model().save(path)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, pixels in enumerate(images(2)):
        (folder / f"p{i}.png").write_bytes(encode(pixels))
    (folder / "notes.txt").write_text("not an image")
    args = _parser().parse_args(["serve", str(path), str(folder), "--preprocess", "none"])
    explorer = _explorer(args, expand_images(args.images))
    try:
        info = explorer.info()
        assert [m["name"] for m in info["models"]] == ["tiny"]
        assert [i["name"] for i in info["images"]] == ["p0.png", "p1.png"]
        assert explorer.entries["m0"].space.value_range == (0.0, 255.0)  # --preprocess none
    finally:
        explorer.close()
    # a model holding Python code loads only with --unsafe: one line, before any serving
    inputs = keras.Input((SIZE, SIZE, 3))
    lambda_model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    lambda_model.save(tmp_path / "lambda.keras")
    capsys.readouterr()
    assert main(["serve", str(tmp_path / "lambda.keras"), "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kerasviz: error: ") and "--unsafe" in err and "\n" not in err


def test_cli_serve_demo_answers_and_stops(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kerasviz.cli",
            "serve",
            "--demo",
            "--port",
            str(port),
            "--no-warm-up",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                info = json.loads(_get(url + "api/info")[1])
                break
            except OSError:
                assert process.poll() is None, "the server exited"
                time.sleep(0.2)
        else:
            pytest.fail("kerasviz serve --demo did not answer within 120 s")
        assert [m["name"] for m in info["models"]] == ["shapes_cnn", "shapes_nested"]
        assert len(info["images"]) == 8 and info["images"][0]["name"].startswith("#0 ")
        process.send_signal(2)  # Ctrl-C
        assert process.wait(timeout=30) == 0
        reader.join(5)
        assert lines == [f"kerasviz dashboard: {url}\n"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
