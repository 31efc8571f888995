"""bclib.app.predict and `bclib predict`: image preparation, batching, and every kind of bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bclib.evaluation.modelcard import ModelLoadError, write_card
from bclib.evaluation.modelcard import imagenet_missing, weights_description
from bclib.app import predict
from bclib.app.predict import (
    Predictor,
    class_probabilities,
    collect_image_paths,
    decide,
    input_cautions,
    prepare_image,
    training_input,
)
from bclib.run.bench_tools import folder_throughput, measure_latency

INPUT_SIZE = 32


def _predict_paths(model_path, inputs, batch_size: int = 64):
    """What `bclib predict` does: collect the image files, then predict them at the card's threshold."""
    paths, problems = collect_image_paths(inputs)
    return problems + list(Predictor.load(model_path).predict_sources(paths, batch_size=batch_size))


def make_tiny_model(input_size: int = INPUT_SIZE):
    """A small conv net (raw 0..255 RGB in, Rescaling inside, one sigmoid unit), redder = more positive."""
    import keras

    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs, name="tiny_cnn")
    kernel = np.zeros((3, 3, 3, 4), dtype="float32")
    kernel[1, 1, 0, :] = 1.0  # red channel
    kernel[1, 1, 2, :] = -1.0  # minus blue
    model.get_layer("last_conv").set_weights([kernel, np.zeros(4, "float32")])
    model.layers[-1].set_weights([np.full((4, 1), 2.0, "float32"), np.zeros(1, "float32")])
    return model


def tiny_card(**overrides) -> dict:
    card = {
        "model_name": "tiny_cnn",
        "notebook": "02_baseline_cnn",
        "class_names": ["non-IDC", "IDC"],
        "positive_label": 1,
        "input_size": INPUT_SIZE,
        "pack_size": 50,
        "threshold": {"value": 0.5, "method": "youden", "chosen_on": "val"},
        "weights": {"requested": None, "used": "random", "note": "test model"},
        "metrics": {"val": {"roc_auc": 0.8}},
    }
    card.update(overrides)
    return card


def save_tiny_model(directory: Path, **card_overrides) -> Path:
    """``directory/model.keras`` + ``model_card.json``; returns the model path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.keras"
    make_tiny_model().save(path)
    write_card(tiny_card(**card_overrides), directory)
    return path


def write_patch(path: Path, colour=(200, 60, 120), size=(50, 50), mode="RGB") -> Path:
    rng = np.random.default_rng(0)
    array = np.clip(np.array(colour)[None, None, :] + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def write_bad_files(folder: Path) -> dict[str, Path]:
    """Every awkward input the issue lists, keyed by what it is."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "rgb": write_patch(folder / "rgb.png"),
        "grayscale": write_patch(folder / "gray.png", mode="L"),
        "rgba": write_patch(folder / "rgba.png", mode="RGBA"),
        "cmyk": write_patch(folder / "cmyk.jpg", mode="CMYK"),
        "tiny": write_patch(folder / "tiny.png", size=(3, 2)),
        "big": write_patch(folder / "big.png", size=(900, 700)),
        "odd name": write_patch(folder / "patch 'q\" ü 名.png"),
    }
    sixteen = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40)
    Image.fromarray(sixteen).save(folder / "sixteen.png")  # mode I;16
    files["16-bit"] = folder / "sixteen.png"
    (folder / "not_an_image.png").write_text("hello, I am text")
    files["not an image"] = folder / "not_an_image.png"
    (folder / "empty.png").write_bytes(b"")
    files["empty"] = folder / "empty.png"
    data = files["big"].read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 3])
    files["truncated"] = folder / "truncated.png"
    return files


BAD = {"not an image", "empty", "truncated"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("run") / "02_baseline_cnn")


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, Path]:
    return write_bad_files(tmp_path_factory.mktemp("inputs"))


# ---------------------------------------------------------------- preparation and decisions

def test_prepare_pads_small_patches_like_the_cache():
    patch = np.zeros((30, 40, 3), np.uint8)
    prepared = prepare_image(patch, input_size=32, pack_size=50)
    assert prepared.shape == (50, 50, 3) and prepared.dtype == np.uint8  # the model's resize comes later
    assert prepared[-1, -1].min() == 255  # white padding bottom/right, as the cache pads
    assert prepared[0, 0].max() == 0  # the patch stays top-left, never stretched
    assert prepare_image(np.zeros((500, 250, 3), np.uint8), 32).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="input_size"):
        prepare_image(patch, 0)


def test_class_probabilities_and_decision():
    probabilities = class_probabilities(np.array([[0.2], [0.9]]), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert decide(probabilities[1], ["non-IDC", "IDC"], 1, 0.5) == "IDC"
    assert decide(probabilities[1], ["non-IDC", "IDC"], 1, 0.95) == "non-IDC"
    # BreastMNIST-like: the disease is label 0
    assert decide([0.7, 0.3], ["malignant", "benign"], 0, 0.6) == "malignant"
    assert decide([0.1, 0.2, 0.7], ["a", "b", "c"], 0, 0.5) == "c"
    with pytest.raises(ValueError):
        class_probabilities(np.ones((2, 3)) / 3, 2)


def test_predictor_reads_the_card_and_ranks_red_above_blue(model_path, tmp_path):
    predictor = Predictor.load(model_path)
    assert predictor.class_names == ["non-IDC", "IDC"] and predictor.pack_size == 50
    assert weights_description(predictor.card) == "trained from scratch"
    assert not imagenet_missing(predictor.card)  # from scratch by design is no failure
    offline = tiny_card(weights={"requested": "imagenet", "used": "random"})
    assert imagenet_missing(offline) and "missing" in weights_description(offline)
    red = np.full((50, 50, 3), (230, 30, 30), np.uint8)
    blue = np.full((50, 50, 3), (30, 30, 230), np.uint8)
    results = predictor.predict_images([red, blue], ["red", "blue"])
    for result in results:
        assert set(result.probabilities) == {"non-IDC", "IDC"}
        assert abs(sum(result.probabilities.values()) - 1.0) < 1e-6
        assert all(0.0 <= p <= 1.0 for p in result.probabilities.values())
    assert results[0].probabilities["IDC"] > results[1].probabilities["IDC"]


# ---------------------------------------------------------------- inputs far from the training input

IDC_DATASET = {"name": "idc", "root": "/data/idc"}


def test_training_input_from_the_card_and_its_dataset():
    assert training_input(tiny_card()).describe() == "50x50 px patches"  # a card without a dataset
    assert training_input(tiny_card(dataset=IDC_DATASET)).describe() == "50x50 px patches, 40x, H&E stain"
    breakhis = {"name": "breakhis", "options": {"magnification": 200}}
    card = tiny_card(class_names=["benign", "malignant"], pack_size=224, dataset=breakhis)
    assert training_input(card).describe() == "224x224 px patches, 200x, H&E stain"
    recorded = training_input(tiny_card(dataset=IDC_DATASET, input={"patch_size": 96, "magnification": "10x"}))
    assert (recorded.patch_size, recorded.magnification, recorded.stain) == (96, "10x", "H&E")
    old = {key: value for key, value in tiny_card().items() if key != "pack_size"}
    assert training_input(old).patch_size == INPUT_SIZE  # older cards stay readable


def test_large_or_unstained_uploads_get_a_caution():
    trained = training_input(tiny_card(dataset=IDC_DATASET))
    rng = np.random.default_rng(0)
    pink = np.clip(np.array([200, 60, 120]) + rng.integers(-20, 20, (50, 50, 3)), 0, 255).astype(np.uint8)
    assert input_cautions(pink, trained) == []
    assert input_cautions(np.tile(pink, (4, 4, 1)), trained) == []  # 200 px: 4x the patch is still fine
    (size,) = input_cautions(np.tile(pink, (5, 1, 1)), trained)
    assert size.startswith("This image is 50x250 px, more than 4x the model's training patches (50x50 px patches")
    green = np.clip(np.array([60, 160, 60]) + rng.integers(-20, 20, (50, 50, 3)), 0, 255).astype(np.uint8)
    grey = np.repeat(pink.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    for unlike in (green, grey):
        (colour,) = input_cautions(unlike, trained)
        assert colour.startswith("Its colours are unlike H&E-stained tissue (pink and purple)")
    assert input_cautions(np.full((50, 50, 3), 255, np.uint8), trained) == []  # blank: nothing to judge
    assert input_cautions(green, training_input(tiny_card())) == []  # stain unknown: no colour caution


def test_a_large_image_is_tiled_in_bounded_batches(model_path, monkeypatch):
    predictor = Predictor.load(model_path)
    image = np.full((260, 400, 3), 255, np.uint8)  # white background
    image[:150, :200] = (230, 30, 150)  # redder: more IDC for the tiny model
    image[:150, 200:] = (30, 30, 230)
    sizes = []
    original = predictor.predict_batch
    monkeypatch.setattr(predict, "TILE_BATCH", 5)
    monkeypatch.setattr(predictor, "predict_batch", lambda batch: sizes.append(len(batch)) or original(batch))
    (result,) = predictor.predict_images([image], ["slide.png"])
    assert sizes[0] == 1 and max(sizes[1:]) == 5 and sum(sizes[1:]) == 24  # the squeezed image, then tiles in 5s
    assert "more than 4x" in result.cautions[0]
    grid = result.tiles.probabilities
    assert grid.shape == (6, 8) and result.tiles.tile_size == 50  # 260 px: the last row of tiles is partial
    assert np.isnan(grid[3:]).all() and np.isfinite(grid[:3]).all()  # background tiles are not predicted
    assert grid[:3, :4].min() > grid[:3, 4:].max()
    assert result.tiles.predicted == 24 and result.tiles.called(0.0) == 24 and result.tiles.called(1.01) == 0
    (edge,) = predictor.predict_images([image[100:150, 350:400]])  # a tile predicted as a patch of its own
    assert grid[2, 7] == pytest.approx(edge.probabilities["IDC"])
    monkeypatch.setattr(predict, "MAX_TILES", 10)
    (result,) = predictor.predict_images([image], ["slide.png"])
    assert result.tiles is None and "not cut into patches" in result.cautions[-1]


@pytest.mark.realdata
def test_real_idc_patches_rarely_get_a_colour_caution(real_idc):
    patches = sorted(real_idc.glob("IDC_regular_ps50_idx5/*/*/*.png"))[::20][:500]
    if not patches:
        pytest.skip("no IDC patches found")
    trained = training_input(tiny_card(dataset=IDC_DATASET))
    cautioned = sum(bool(input_cautions(np.asarray(Image.open(path).convert("RGB")), trained)) for path in patches)
    assert cautioned / len(patches) < 0.05


# ---------------------------------------------------------------- files and folders

def test_every_awkward_file_gets_a_result_and_only_bad_ones_fail(model_path, odd_files):
    results = {Path(r.source).name: r for r in _predict_paths(model_path, odd_files.values(), batch_size=4)}
    assert len(results) == len(odd_files)
    for kind, path in odd_files.items():
        result = results[path.name]
        if kind in BAD:
            assert result.error and result.decision is None, kind
        else:
            assert result.ok, f"{kind}: {result.error}"
            assert result.decision in {"non-IDC", "IDC"}
    assert "empty" in results["empty.png"].error
    assert "not an image" in results["not_an_image.png"].error


def test_folders_are_walked_and_missing_paths_reported(odd_files, tmp_path):
    folder = odd_files["rgb"].parent
    (folder / "notes.txt").write_text("ignored")
    paths, problems = collect_image_paths([folder, tmp_path / "missing.png"])
    assert {p.name for p in paths} == {p.name for p in odd_files.values()}
    assert len(problems) == 1 and "no such file" in problems[0].error


# ---------------------------------------------------------------- the CLI, in process

def _cli(argv, capsys):
    from bclib.run.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_text_and_json_lines(model_path, odd_files, capsys):
    good = [str(odd_files[k]) for k in ("rgb", "odd name", "16-bit")]
    code, out, err = _cli(["predict", "--model", str(model_path), *good], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all("non-IDC=" in line and "decision=" in line for line in lines)
    assert "not for diagnosis" in err
    code, out, _ = _cli(["predict", "--model", str(model_path), "--json", "--threshold", "0.0", *good], capsys)
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["path"] for r in records] == good
    assert all(r["decision"] == "IDC" and r["threshold"] == 0.0 for r in records)


def test_cli_folder_with_bad_files_keeps_going(model_path, odd_files, capsys):
    folder = odd_files["rgb"].parent
    code, out, err = _cli(["predict", "--model", str(model_path), "--json", "--batch-size", "3", str(folder)], capsys)
    assert code == 1  # some files failed
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert len(records) == len(odd_files)
    failed = {Path(r["path"]).name for r in records if "error" in r}
    assert failed == {odd_files[k].name for k in BAD}
    assert err.count("error:") == len(BAD)


def test_cli_prints_the_apps_cautions(odd_files, tmp_path, capsys):
    """The same cautions the app shows (image over 4x the training patch, colours unlike H&E), on stderr and in
    the JSON records; a large image is said to get the squeezed answer here."""
    from bclib.data.imageio import read_image

    model = save_tiny_model(tmp_path / "idc_model", dataset=IDC_DATASET)
    green = write_patch(tmp_path / "green.png", colour=(60, 160, 60))
    inputs = [odd_files["rgb"], odd_files["big"], green]
    code, out, err = _cli(["predict", "--model", str(model), *map(str, inputs)], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 3
    trained = Predictor.load(model).trained_on
    expected = {path: input_cautions(read_image(path), trained) for path in inputs}
    assert expected[odd_files["rgb"]] == [] and len(expected[odd_files["big"]]) == len(expected[green]) == 1
    expected[odd_files["big"]].append(predict.NOT_TILED)
    printed = [line for line in err.splitlines() if line.startswith("caution: ")]
    assert printed == [f"caution: {path}: {caution}" for path in inputs for caution in expected[path]]
    assert "This image is 900x700 px, more than 4x" in printed[0] and "squeezed answer" in printed[1]
    code, out, _ = _cli(["predict", "--model", str(model), "--json", *map(str, inputs)], capsys)
    assert [json.loads(line)["cautions"] for line in out.strip().splitlines()] == [expected[path] for path in inputs]


def test_cli_escapes_tabs_and_newlines_in_names(model_path, tmp_path, capsys):
    odd = write_patch(tmp_path / "odd\tname\nline\\x.png")
    broken = tmp_path / "bad\tfile.png"
    broken.write_text("not an image")
    code, out, err = _cli(["predict", "--model", str(model_path), str(odd), str(broken)], capsys)
    assert code == 1
    (line,) = out.splitlines()  # one line per image however its name is spelled
    assert line.startswith(str(tmp_path / "odd\\tname\\nline\\\\x.png") + "\tnon-IDC=")
    assert line.count("\t") == 3  # path, two probabilities, decision
    (error,) = [text for text in err.splitlines() if text.startswith("error: ")]
    assert error.startswith(f"error: {tmp_path}/bad\\tfile.png: ")
    code, out, _ = _cli(["predict", "--model", str(model_path), "--json", str(odd)], capsys)
    assert json.loads(out)["path"] == str(odd)  # JSON keeps the name as it is


def test_cli_bad_threshold_and_models(model_path, odd_files, tmp_path, capsys):
    image = str(odd_files["rgb"])
    code, _, err = _cli(["predict", "--model", str(model_path), "--threshold", "1.5", image], capsys)
    assert code == 2 and "threshold" in err
    code, _, err = _cli(["predict", "--model", str(tmp_path / "nope" / "model.keras"), image], capsys)
    assert code == 2 and "does not exist" in err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.keras").write_bytes(b"PK\x03\x04 this is not a zip")
    write_card(tiny_card(), corrupt)
    code, _, err = _cli(["predict", "--model", str(corrupt / "model.keras"), image], capsys)
    assert code == 2 and "corrupt" in err
    data = Path(model_path).read_bytes()
    (corrupt / "model.keras").write_bytes(data[: len(data) // 2])  # an interrupted copy
    code, out, err = _cli(["predict", "--model", str(corrupt / "model.keras"), image], capsys)
    assert code == 2 and out == "" and "exists but is damaged" in err and "not found" not in err.lower()


@pytest.mark.parametrize("overrides, words", [
    ({"threshold": {"value": float("nan")}}, "field 'threshold.value' must be a number between 0 and 1, got nan"),
    ({"threshold": {"value": 7}}, "field 'threshold.value' must be a number between 0 and 1, got 7"),
    ({"threshold": {"value": -1}}, "field 'threshold.value' must be a number between 0 and 1, got -1"),
    ({"positive_label": 0, "dataset": {"name": "idc"}}, "field 'positive_label' must be 1 ('IDC'"),
    ({"class_names": ["IDC", "non-IDC"], "dataset": {"name": "idc"}}, "field 'class_names' must be idc's classes"),
])
def test_cli_refuses_a_card_with_bad_values_naming_the_field(model_path, odd_files, tmp_path, capsys, overrides, words):
    import shutil

    folder = tmp_path / "edited"
    folder.mkdir()
    shutil.copy(model_path, folder / "model.keras")
    (folder / "model_card.json").write_text(json.dumps(tiny_card(**overrides)))  # NaN as the JSON token NaN
    code, out, err = _cli(["predict", "--model", str(folder / "model.keras"), "--json", str(odd_files["rgb"])], capsys)
    assert code == 2 and out == "" and words in err and "model_card.json" in err


def test_cli_json_lines_are_strict_json(model_path, odd_files, capsys, monkeypatch):
    monkeypatch.setattr(Predictor, "predict_batch", lambda self, batch: np.full((len(batch), 2), np.nan))
    code, out, _ = _cli(["predict", "--model", str(model_path), "--json", str(odd_files["rgb"])], capsys)
    record = json.loads(out, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    assert record["probabilities"] == {"non-IDC": None, "IDC": None}


def test_unsafe_lambda_model_is_refused(tmp_path, odd_files, capsys):
    import keras

    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3))
    x = keras.layers.Lambda(lambda t: t / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    directory = tmp_path / "unsafe"
    directory.mkdir()
    model.save(directory / "model.keras")
    write_card(tiny_card(), directory)
    with pytest.raises(ModelLoadError, match="safe mode"):
        Predictor.load(directory / "model.keras")
    code, out, err = _cli(["predict", "--model", str(directory / "model.keras"), str(odd_files["rgb"])], capsys)
    assert code == 2 and "safe mode" in err and out == ""


# ---------------------------------------------------------------- bench helpers on a saved model

def test_latency_and_throughput_helpers(model_path, odd_files):
    predictor = Predictor.load(model_path)
    latency = measure_latency(predictor.model, np.zeros((50, 50, 3), np.uint8), n=5)
    assert 0 < latency["median_ms"] <= latency["p90_ms"] < 10_000 and latency["n"] == 5
    folder = odd_files["rgb"].parent
    throughput = folder_throughput(model_path, folder, batch_size=8)  # the folder holds unreadable files too
    assert throughput["images_per_second"] > 0 and throughput["raw_images_per_second"] > 0


def test_latency_with_gradcam_times_no_compilation(model_path, monkeypatch):
    """Grad-CAM runs its first EAGER_CALLS calls eagerly and compiles on the next: all in the warm-up."""
    from bclib.evaluation import explain

    predictor = Predictor.load(model_path)
    compiled_before_call = []
    original = explain.grad_cam

    def recording_grad_cam(model, images, *args, **kwargs):
        forward = explain._FORWARD_CACHE.get(model, {}).get(None)
        compiled_before_call.append(forward is not None and forward._compiled is not None)
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(explain, "grad_cam", recording_grad_cam)
    latency = measure_latency(predictor.model, np.zeros((50, 50, 3), np.uint8), n=3, with_gradcam=True)
    assert latency["median_ms"] > 0 and latency["warmup_calls"] == explain.EAGER_CALLS + 1
    assert len(compiled_before_call) == latency["warmup_calls"] + 3
    assert not any(compiled_before_call[:latency["warmup_calls"]])  # it compiled during the warm-up...
    assert all(compiled_before_call[latency["warmup_calls"]:])  # ...so every timed call ran compiled


@pytest.mark.realdata
def test_real_idc_patches_predict(real_idc, model_path):
    patches = sorted(real_idc.glob("IDC_regular_ps50_idx5/*/1/*.png"))[:5]
    if not patches:
        pytest.skip("no IDC patches found")
    results = _predict_paths(model_path, patches)
    assert len(results) == len(patches) and all(r.ok for r in results)


def write_tiny_idc(root: Path, patients=("10001", "10002"), per_class: int = 3) -> Path:
    """A few coloured patches in the real IDC layout (``root/IDC_regular_ps50_idx5/...``)."""
    base = root / "IDC_regular_ps50_idx5"
    for patient in patients:
        for label in (0, 1):
            folder = base / patient / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                write_patch(folder / f"{patient}_idx5_x{50 * k}_y0_class{label}.png", colour=(200, 80 + 50 * label, 150))
    return root
