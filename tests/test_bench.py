"""``bclib bench``: report structure, ratio logic, memory sampling, and one tiny end-to-end run.

Targets are never asserted: figures on a shared, loaded 2-core machine vary.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from bclib import paths
from bclib.run.bench import SECTIONS, parse_sections
from bclib.run.bench_tools import (BenchError, BenchReport, BenchRow, PeakMemory, ratio_row, resident_memory,
                                   run_fresh_python, write_report)

#: Each section's side-by-side pair (numerator, denominator) of its ratio row, measured in the same run.
RATIO_KEYS = {
    "pack": ("cached_img_per_s", "decode_img_per_s"),
    "pipeline": ("pipeline_img_per_s", "in_ram_img_per_s"),
    "features": ("head_epochs_per_s", "frozen_epochs_per_s"),
    "inference": ("predict_img_per_s", "raw_predict_img_per_s"),
    "app": ("app_median_ms", "predict_median_ms"),
    "memory": ("anon_growth_mb", "packed_mb"),
}
#: Figures that must be positive wherever a row reports them (memory growth may be zero or negative).
POSITIVE_KEYS = {"decode_img_per_s", "cached_img_per_s", "pipeline_img_per_s", "in_ram_img_per_s",
                 "head_epochs_per_s", "frozen_epochs_per_s", "predict_img_per_s", "raw_predict_img_per_s",
                 "median_ms", "p90_ms", "peak_rss_mb", "packed_mb", "images", "app_median_ms", "app_p90_ms",
                 "predict_median_ms", "predict_p90_ms", "start_s", "first_ms"}


def test_parse_sections_keeps_table_order_and_rejects_typos():
    assert parse_sections(None) == list(SECTIONS)
    assert parse_sections("memory,pack") == ["pack", "memory"]
    assert parse_sections(["inference"]) == ["inference"]
    with pytest.raises(BenchError, match="pipline"):
        parse_sections("pack,pipline")
    with pytest.raises(BenchError):
        parse_sections(",")


def test_ratio_row_judges_against_the_target():
    faster = ratio_row("pack", "x", {"a": 300.0, "b": 10.0}, "a", "b", 10.0, ">= 10x")
    assert faster.ratio == pytest.approx(30.0) and faster.passed is True
    slower = ratio_row("pipeline", "x", {"a": 5.0, "b": 10.0}, "a", "b", 0.9, ">= 0.90")
    assert slower.ratio == pytest.approx(0.5) and slower.passed is False
    memory = ratio_row("memory", "x", {"a": 5.0, "b": 100.0}, "a", "b", 0.25, "<= 0.25", higher_is_better=False)
    assert memory.passed is True
    missing = ratio_row("features", "x", {"a": 5.0, "b": 0.0}, "a", "b", 20.0, ">= 20x")
    assert missing.ratio is None and missing.passed is None


def test_peak_memory_sees_a_large_allocation():
    total, anonymous = resident_memory()
    assert total > 10 * 1024 * 1024 and 0 < anonymous <= total
    with PeakMemory(interval=0.005) as sampler:
        block = np.ones(64 * 1024 * 1024, dtype=np.uint8)  # 64 MB, touched
        block[::4096] = 2
        time.sleep(0.1)  # a few sampling intervals, however busy the machine (numpy holds the GIL while filling)
        del block
    result = sampler.result()
    assert result["anon_growth_mb"] >= 40
    assert result["peak_mb"] >= result["start_mb"]


def test_run_fresh_python_returns_output_or_raises_with_its_errors():
    assert run_fresh_python(["-c", "print('measured 42')"], "echo").split()[-1] == "42"
    with pytest.raises(BenchError, match="(?s)broken step failed: .*ValueError: no such image"):
        run_fresh_python(["-c", "raise ValueError('no such image')"], "broken step")


def _report() -> BenchReport:
    rows = [
        ratio_row("pack", "pack ratio", {"decode_img_per_s": 100.0, "cached_img_per_s": 5000.0},
                  "cached_img_per_s", "decode_img_per_s", 10.0, ">= 10x"),
        BenchRow("features", "features", {}, note="ValueError: broken", status="error"),
    ]
    return BenchReport(rows=rows, environment={"cpu": "test"}, settings={}, data={}, sections=["pack", "features"])


def test_table_and_report_file(tmp_path):
    report = _report()
    table = report.table()
    assert "PASS" in table and "error" in table and "50.00" in table and "ValueError: broken" in table
    first = write_report(report, tmp_path)
    second = write_report(report, tmp_path)
    assert first != second and first.exists() and second.exists()  # never overwritten
    data = json.loads(first.read_text())
    assert set(data["sections"]) == {"pack", "features"}
    assert data["sections"]["pack"][0]["passed"] is True
    assert "not for diagnosis" in data["disclaimer"]


def test_cli_rejects_bad_options(capsys):
    from bclib.run.cli import main

    assert main(["bench", "--only", "nonsense"]) == 2
    assert main(["bench", "--tiny", "--data", "/nowhere"]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_tiny_writes_every_section(capsys):
    """The CI run: ``bclib bench --tiny`` on synthetic data; every section measured, every figure finite,
    each ratio the quotient of its own row's pair (so both sides come from the same run)."""
    from bclib.run.cli import main

    assert main(["bench", "--tiny"]) == 0
    output = capsys.readouterr().out
    assert "device:" in output and "versions:" in output and "report:" in output
    reports = sorted((paths.reports_dir() / "bench").glob("*.json"))
    assert reports, "no bench report written under reports/bench/"
    data = json.loads(reports[-1].read_text())
    assert data["data"]["synthetic"] is True
    assert data["environment"]["versions"]["tensorflow"]
    assert set(data["sections"]) == set(SECTIONS) == set(data["section_seconds"])
    for section, (numerator, denominator) in RATIO_KEYS.items():
        rows = data["sections"][section]
        assert rows, f"section {section} has no rows"
        for row in rows:
            assert row["status"] == "ok" and row["target"], f"{section}: {row['note']}"
            assert row["ratio"] is not None and np.isfinite(row["ratio"]), f"{row['what']}: ratio {row['ratio']}"
            for key, value in row["measured"].items():
                assert value is None or np.isfinite(value), f"{row['what']}: {key} = {value}"
                if key in POSITIVE_KEYS:
                    assert value > 0, f"{row['what']}: {key} = {value}"
        paired = [row for row in rows if numerator in row["measured"] and denominator in row["measured"]]
        assert paired, f"{section}: no row measures {numerator} and {denominator} side by side"
        for row in paired:
            measured = row["measured"]
            assert row["ratio"] == pytest.approx(measured[numerator] / measured[denominator])
    pipeline = data["sections"]["pipeline"]
    assert [row["what"].split(": ")[1].split()[0] for row in pipeline] == ["baseline_cnn", "mobilenetv2"]
    latency = [row for row in data["sections"]["inference"] if "latency" in row["what"]]
    assert len(latency) == 2 and all(row["measured"]["median_ms"] <= row["measured"]["p90_ms"] for row in latency)
    aucs = data["sections"]["features"][0]["measured"]
    assert all(0.0 <= aucs[key] <= 1.0 for key in ("head_val_auc", "frozen_val_auc"))


def test_app_section_times_uploads_against_predict_and_the_first_upload():
    """The app section on the tiny data with a small CNN: upload-to-result and bclib predict figures, without
    and with Grad-CAM, and the first upload against the median; every printed figure present and positive."""
    from dataclasses import replace

    from bclib.run.bench import run_bench, tiny_settings

    report = run_bench(tiny=True, only="app", settings=replace(tiny_settings(), app_model="baseline_cnn"),
                       log=lambda message: None)
    table = report.table()
    rows = report.rows
    assert [row.status for row in rows] == ["ok"] * 4, [row.note for row in rows]
    assert [row.what.split(":")[0] for row in rows] == [
        "app / bclib predict, predict only", "app first upload / median upload, predict only",
        "app / bclib predict, with Grad-CAM", "app first upload / median upload, with Grad-CAM"]
    for versus_predict, first_upload in (rows[0:2], rows[2:4]):
        figures = versus_predict.measured
        assert set(figures) == {"app_median_ms", "app_p90_ms", "predict_median_ms", "predict_p90_ms"}
        assert versus_predict.ratio == pytest.approx(figures["app_median_ms"] / figures["predict_median_ms"])
        assert figures["app_median_ms"] <= figures["app_p90_ms"]
        assert set(first_upload.measured) == {"start_s", "first_ms", "median_ms"}
        assert first_upload.measured["median_ms"] == figures["app_median_ms"]  # the same uploads
        assert first_upload.ratio == pytest.approx(first_upload.measured["first_ms"] / figures["app_median_ms"])
        for row in (versus_predict, first_upload):
            assert all(value > 0 for value in row.measured.values()), row.measured
            assert row.measured_text() in table and row.what in table
    assert "baseline_cnn" in rows[0].what and "Grad-CAM" in rows[2].note and "Grad-CAM" not in rows[0].note


def test_calibrate_batchnorm_matches_the_data_and_keeps_weights():
    import keras

    from bclib.models.builders import calibrate_batchnorm

    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 1, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn", momentum=0.99)(x)
    backbone = keras.Model(inputs, x)
    backbone.trainable = False
    kernel = backbone.get_layer("conv").get_weights()[0].copy()
    images = np.random.default_rng(0).normal(5.0, 2.0, size=(16, 4, 4, 3)).astype("float32")
    calibrate_batchnorm(backbone, images)
    conv_out = backbone.get_layer("conv")(images).numpy()
    bn = backbone.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(backbone.get_layer("conv").get_weights()[0], kernel)
    assert backbone.trainable is False and bn.momentum == 0.99
