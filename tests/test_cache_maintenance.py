"""Cache folder inventory and clean-up: what is listed, what is removed, what is never touched."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from bclib.data import cache_maintenance as maintenance
from bclib.data.cache import LAST_USED_FILE, pack
from bclib.run.cli import main
from bclib.data.datasets import idc
from bclib.data.synthetic import make_synthetic_idc

DAY = 86400.0


@pytest.fixture()
def cache_root(tmp_path) -> Path:
    """A cache folder with two packed caches (one of deleted data), features, an old unfinished
    build, and a folder that is not ours."""
    root = tmp_path / "cache"
    for name in ("kept", "deleted"):
        make_synthetic_idc(tmp_path / name, n_patients=2, patches_per_patient=4, seed=len(name))
        pack(idc.scan(tmp_path / name), 16, cache_root=root, progress=False)
    shutil.rmtree(tmp_path / "deleted")
    (root / "features").mkdir()
    np.save(root / "features" / "abc.npy", np.zeros((10, 4), "float32"))
    unfinished = root / ".idc-16px-x-v1.building-123"
    unfinished.mkdir()
    (unfinished / "images.npy").write_bytes(b"\0" * 1000)
    two_hours_ago = time.time() - 7200
    os.utime(unfinished, (two_hours_ago, two_hours_ago))
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("not a cache")
    return root


def _by_kind(entries):
    return {kind: [e for e in entries if e.kind == kind] for kind in ("packed", "unfinished", "features")}


def test_inventory_lists_caches_with_sizes_and_sources(cache_root, tmp_path):
    entries = maintenance.inventory(cache_root)
    kinds = _by_kind(entries)
    assert len(kinds["packed"]) == 2 and len(kinds["unfinished"]) == 1 and len(kinds["features"]) == 1
    assert all("mine" not in str(entry.path) for entry in entries)  # not ours: never listed
    assert [e.bytes for e in entries] == sorted((e.bytes for e in entries), reverse=True)
    for entry in kinds["packed"]:
        assert entry.dataset == "idc" and entry.image_size == 16 and entry.images == 8
        images_bytes = (entry.path / "images.npy").stat().st_size
        assert entry.bytes > images_bytes >= 8 * 16 * 16 * 3
    sources = {Path(e.source).parent.name: e.source_exists for e in kinds["packed"]}
    assert sources == {"kept": True, "deleted": False}
    assert maintenance.inventory(tmp_path / "nothing here") == []


def test_default_clean_removes_only_orphans_and_stale_builds(cache_root):
    entries = maintenance.inventory(cache_root)
    chosen = maintenance.select_for_removal(entries)
    assert sorted(e.kind for e in chosen) == ["packed", "unfinished"]
    assert not any(e.source_exists for e in chosen if e.kind == "packed")
    fresh = [e for e in entries if e.kind == "unfinished"][0]
    assert maintenance.select_for_removal([fresh], now=fresh.last_used + 60) == []  # may still be running
    freed = maintenance.remove(chosen)
    assert freed == sum(e.bytes for e in chosen) > 0
    left = maintenance.inventory(cache_root)
    assert len(left) == 2 and (cache_root / "mine" / "notes.txt").exists()


def test_unused_days_and_everything(cache_root):
    entries = maintenance.inventory(cache_root)
    now = max(e.last_used for e in entries)
    assert {e.kind for e in maintenance.select_for_removal(entries, unused_days=1, now=now + 2 * DAY)} == \
        {"packed", "unfinished", "features"}
    recent = maintenance.select_for_removal(entries, unused_days=1, now=now)
    assert all(e.kind != "features" for e in recent)
    assert len(maintenance.select_for_removal(entries, everything=True)) == len(entries)
    with pytest.raises(ValueError, match="unused_days"):
        maintenance.select_for_removal(entries, unused_days=-1)


def test_reopening_a_cache_records_its_use(tmp_path):
    make_synthetic_idc(tmp_path / "d", n_patients=2, patches_per_patient=3)
    index = idc.scan(tmp_path / "d")
    packed = pack(index, 16, cache_root=tmp_path / "c", progress=False)
    marker = packed.directory / LAST_USED_FILE
    long_ago = time.time() - 30 * DAY
    os.utime(marker, (long_ago, long_ago))
    assert maintenance.inventory(tmp_path / "c")[0].age_days() > 29
    assert pack(index, 16, cache_root=tmp_path / "c", progress=False).reused
    assert maintenance.inventory(tmp_path / "c")[0].age_days() < 1


def test_cli_lists_dry_runs_and_cleans(cache_root, capsys):
    assert main(["data", "cache", "--cache-dir", str(cache_root)]) == 0
    listing = capsys.readouterr().out
    assert "4 item(s)" in listing and "(folder gone)" in listing and "interrupted pack" in listing

    assert main(["data", "cache", "--cache-dir", str(cache_root), "--clean", "--all", "--dry-run"]) == 0
    assert "4 item(s)" in capsys.readouterr().out.splitlines()[-1]
    assert len(maintenance.inventory(cache_root)) == 4  # nothing removed by a dry run

    assert main(["data", "cache", "--cache-dir", str(cache_root), "--clean"]) == 0
    assert "2 item(s)" in capsys.readouterr().out.splitlines()[-1]
    assert len(maintenance.inventory(cache_root)) == 2

    assert main(["data", "cache", "--cache-dir", str(cache_root), "--all"]) == 2
    assert "--clean" in capsys.readouterr().err


def test_human_bytes():
    assert maintenance.human_bytes(512) == "512 B"
    assert maintenance.human_bytes(1536) == "1.5 KB"
    assert maintenance.human_bytes(3 * 1024 ** 3) == "3.0 GB"
