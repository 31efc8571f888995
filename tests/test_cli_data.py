"""``bclib data ...`` called in-process through ``bclib.run.cli.main``."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from bclib.run.cli import main
from bclib.data.synthetic import make_synthetic_idc


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_info_text_and_json(capsys, synthetic_idc):
    code, out, _ = run(capsys, "data", "info", "--dataset", "idc", "--data", str(synthetic_idc))
    assert code == 0 and "images:   288" in out and "patients: 12" in out and "SYNTHETIC" in out
    code, out, _ = run(capsys, "data", "info", "--data", str(synthetic_idc), "--json")
    data = json.loads(out)
    assert code == 0 and data["images"] == 288 and data["patients"] == 12
    assert data["per_class"]["non-IDC"] + data["per_class"]["IDC"] == 288
    assert data["unreadable"] == 0 and data["ignored_files"] == 0 and data["synthetic"] is True


def test_info_counts_the_files_that_do_not_decode_or_says_it_did_not_look(capsys, tmp_path):
    folder = make_synthetic_idc(tmp_path / "d", n_patients=2, patches_per_patient=4)
    corrupt = sorted(folder.glob("*/*/*.png"))[:3]
    for victim in corrupt:
        victim.write_bytes(victim.read_bytes()[:40])
    code, out, _ = run(capsys, "data", "info", "--data", str(tmp_path / "d"), "--json")
    data = json.loads(out)
    assert code == 0 and data["images"] == 8 and data["unreadable"] == 3 and data["skipped"] == 0
    assert sorted(problem["path"] for problem in data["problems"]) == sorted(map(str, corrupt))
    code, out, _ = run(capsys, "data", "info", "--data", str(tmp_path / "d"))
    assert code == 0 and "unreadable files: 3\n" in out and all(str(victim) in out for victim in corrupt)
    code, out, _ = run(capsys, "data", "info", "--data", str(tmp_path / "d"), "--quick")
    assert code == 0 and "unreadable files: not checked" in out and "bclib data check" in out
    code, out, _ = run(capsys, "data", "info", "--data", str(tmp_path / "d"), "--quick", "--json")
    assert json.loads(out)["unreadable"] is None


def test_names_with_tabs_and_newlines_stay_on_one_escaped_line(capsys, tmp_path):
    folder = make_synthetic_idc(tmp_path / "d", n_patients=2, patches_per_patient=3)
    patch = sorted(folder.glob("*/0/*.png"))[0]
    odd = patch.parent / "odd\tname\nwith a\\backslash.png"
    odd.write_bytes(patch.read_bytes())
    shown = str(patch.parent) + "/odd\\tname\\nwith a\\\\backslash.png: "
    for command in ("info", "check"):
        code, out, _ = run(capsys, "data", command, "--data", str(tmp_path / "d"))
        problem_lines = [line for line in out.splitlines() if "odd" in line]
        assert code == (0 if command == "info" else 1) and len(problem_lines) == 1, out
        assert problem_lines[0].strip().startswith(shown) and "\t" not in out, out
        code, out, _ = run(capsys, "data", command, "--data", str(tmp_path / "d"), "--json")
        assert json.loads(out)["problems"][0]["path"] == str(odd)
    for command in ("info", "check", "pack"):
        with pytest.raises(SystemExit):
            main(["data", command, "--help"])
        assert "\\t, \\n" in " ".join(capsys.readouterr().out.split())


def test_split_text_and_json(capsys, synthetic_idc):
    code, out, _ = run(capsys, "data", "split", "--data", str(synthetic_idc), "--split", "patient", "--seed", "1")
    assert code == 0
    for name in ("train", "val", "test"):
        assert f"\n{name}" in out
    code, out, _ = run(capsys, "data", "split", "--data", str(synthetic_idc), "--seed", "1", "--json")
    data = json.loads(out)
    ids = data["patient_ids"]
    assert set(ids["train"]).isdisjoint(ids["test"]) and set(ids["train"]).isdisjoint(ids["val"])
    assert sum(len(v) for v in ids.values()) == 12 and data["seed"] == 1
    assert all(0 <= f <= 1 for f in data["positive_fraction"].values())


def test_image_split_prints_the_leakage_warning(capsys, synthetic_idc):
    code, _, err = run(capsys, "data", "split", "--data", str(synthetic_idc), "--split", "image")
    assert code == 0 and "leaks patients" in err


def test_official_split_without_patients_is_a_one_line_error(capsys, synthetic_idc):
    code, out, err = run(capsys, "data", "split", "--data", str(synthetic_idc), "--split", "official")
    assert code == 2 and err.startswith("error: ") and "empty" in err and "Traceback" not in err


def test_pack_then_reuse(capsys, tmp_path):
    make_synthetic_idc(tmp_path / "d", n_patients=2, patches_per_patient=5)
    argv = ("data", "pack", "--data", str(tmp_path / "d"), "--image-size", "32", "--cache-dir", str(tmp_path / "c"), "--no-progress")
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "10 images at 32x32" in out and "packed" in out
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "reused" in out
    assert len([p for p in (tmp_path / "c").iterdir()]) == 1


def test_check_exit_codes(capsys, tmp_path):
    folder = make_synthetic_idc(tmp_path / "d", n_patients=2, patches_per_patient=4)
    code, out, _ = run(capsys, "data", "check", "--data", str(tmp_path / "d"))
    assert code == 0 and "8 of 8 images decode" in out
    victim = sorted(folder.glob("*/*/*.png"))[2]
    victim.write_bytes(victim.read_bytes()[:30])
    code, out, _ = run(capsys, "data", "check", "--data", str(tmp_path / "d"))
    assert code == 1 and str(victim) in out
    code, out, _ = run(capsys, "data", "check", "--data", str(tmp_path / "d"), "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["problems"][0]["path"] == str(victim)
    assert victim.exists(), "check never deletes a file"


def test_check_deep_names_a_stale_cache_and_what_to_do(capsys, tmp_path):
    from test_cache import rewrite_in_place

    folder = make_synthetic_idc(tmp_path / "d", n_patients=2, patches_per_patient=4)
    cache_dir = str(tmp_path / "c")
    assert run(capsys, "data", "pack", "--data", str(tmp_path / "d"), "--cache-dir", cache_dir, "--no-progress")[0] == 0
    victim = sorted(folder.glob("*/*/*.png"))[1]
    rewrite_in_place(victim)
    code, out, _ = run(capsys, "data", "check", "--data", str(tmp_path / "d"))
    assert code == 0, "without --deep the files alone look fine"
    code, out, _ = run(capsys, "data", "check", "--data", str(tmp_path / "d"), "--deep", "--cache-dir", cache_dir)
    (stale,) = [line for line in out.splitlines() if line.startswith("stale packed cache")]
    assert code == 1 and f"  {victim}: differs from the packed cache idc-50px-" in out
    assert cache_dir in stale and "1 image(s) differ" in stale and "delete that folder and pack again" in stale
    code, out, _ = run(capsys, "data", "check", "--data", str(tmp_path / "d"), "--deep", "--json",
                       "--cache-dir", cache_dir)
    data = json.loads(out)
    assert code == 1 and list(data["stale_caches"].values()) == [1] and data["problems"][0]["path"] == str(victim)
    code, out, _ = run(capsys, "data", "check", "--data", str(tmp_path / "d"), "--deep",
                       "--cache-dir", str(tmp_path / "x"))
    assert code == 0 and "no packed cache of this data in" in out


def test_synth(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "synth", str(tmp_path / "s"), "--patients", "3", "--patches", "4")
    assert code == 0 and "IDC_regular_ps50_idx5" in out
    assert len(list((tmp_path / "s").glob("IDC_regular_ps50_idx5/*/*/*.png"))) == 12


def test_errors_are_one_line_without_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "data", "info", "--data", str(tmp_path / "missing"))
    assert code == 2 and err.startswith("error: ") and "does not exist" in err
    (tmp_path / "wrong").mkdir()
    code, _, err = run(capsys, "data", "info", "--data", str(tmp_path / "wrong"))
    assert code == 2 and "expected the IDC layout" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "data", "info", "--dataset", "no-such-dataset", "--data", str(tmp_path))
    assert code == 2 and "unknown dataset" in err
    code, _, _ = run(capsys, "data")
    assert code == 2


def test_a_truncated_breastmnist_file_is_one_line_in_info_and_check(capsys, tmp_path):
    from test_breastmnist import damaged_copy, write_npz

    npz = damaged_copy(write_npz(tmp_path / "breastmnist" / "breastmnist.npz"), "truncated")
    for command in ("info", "check"):
        code, out, err = run(capsys, "data", command, "--dataset", "breastmnist", "--data", str(npz.parent))
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"error: {npz} is not a readable npz file") and "download it again" in err


def test_download_calls_the_downloader_lazily(capsys, tmp_path, monkeypatch):
    calls = []

    class DownloadError(RuntimeError):
        pass

    def fake_download(dataset, destination=None, url=None, progress=True, force=False):
        calls.append((dataset, destination, url, force))
        if dataset == "broken":
            raise DownloadError("the server said no; download it by hand from https://example.org")
        return Path(destination)

    fake = types.ModuleType("bclib.data.download")
    fake.download, fake.DownloadError = fake_download, DownloadError
    monkeypatch.setitem(sys.modules, "bclib.data.download", fake)
    code, out, _ = run(capsys, "data", "download", "idc", "--dest", str(tmp_path), "--url", "https://example.org/x.zip")
    assert code == 0 and str(tmp_path) in out
    assert calls[0][0] == "idc" and str(calls[0][1]) == str(tmp_path) and calls[0][2] == "https://example.org/x.zip"
    assert calls[0][3] is False
    assert run(capsys, "data", "download", "idc", "--dest", str(tmp_path), "--force")[0] == 0
    assert calls[1][3] is True
    code, _, err = run(capsys, "data", "download", "broken", "--dest", str(tmp_path))
    assert code == 2 and "error: the server said no" in err
