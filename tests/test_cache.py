"""Packed cache: contents, reuse without decoding, rebuild on change, failures, atomicity."""
from __future__ import annotations

import io
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bclib.data import cache as cache_module
from bclib.data.cache import COMPLETE_MARKER, is_complete, pack, packed_caches
from bclib.data.check import check_dataset
from bclib.data.datasets import idc
from bclib.data.synthetic import make_synthetic_idc
from bclib.data.imageio import fit_to_square


@pytest.fixture()
def small_idc(tmp_path) -> Path:
    """A private copy (tests here modify files): 3 patients, 8 patches each."""
    make_synthetic_idc(tmp_path / "data", n_patients=3, patches_per_patient=8, seed=5)
    return tmp_path / "data"


def test_pack_contents_match_the_index(synthetic_idc, tmp_path):
    index = idc.scan(synthetic_idc)
    packed = pack(index, 40, cache_root=tmp_path, chunk_size=50, progress=False)
    assert packed.images.shape == (len(index), 40, 40, 3) and packed.images.dtype == np.uint8
    assert isinstance(packed.images, np.memmap)
    np.testing.assert_array_equal(packed.labels, index.labels)
    assert packed.failed == [] and len(packed.index) == len(index) and not packed.reused
    for position in (0, len(index) // 2, len(index) - 1):
        np.testing.assert_array_equal(packed.images[position], fit_to_square(index.load_image(position), 40))
    assert packed.directory.parent == tmp_path and is_complete(packed.directory)
    key = packed.directory.name
    assert index.name in key and "40px" in key and index.content_hash() in key
    assert list(packed.index.frame["patient_id"]) == list(index.frame["patient_id"])
    np.testing.assert_array_equal(packed.positions, np.arange(len(index)))


def test_small_edge_patches_are_padded_not_stretched(synthetic_idc, tmp_path):
    index = idc.scan(synthetic_idc)
    packed = pack(index, 50, cache_root=tmp_path, progress=False)
    narrow = [i for i in range(len(index)) if index.load_image(i).shape[1] < 50]
    assert narrow, "the synthetic data should hold edge patches"
    for position in narrow:
        width = index.load_image(position).shape[1]
        assert (packed.images[position][:, width:] == 255).all()
        np.testing.assert_array_equal(packed.images[position][:, :width], index.load_image(position))


def test_reopening_is_fast_and_never_decodes(small_idc, tmp_path):
    index = idc.scan(small_idc)
    first = pack(index, 32, cache_root=tmp_path, progress=False)

    def refuse(row):
        raise AssertionError("a complete cache must not decode again")

    second = pack(replace(index, reader=refuse), 32, cache_root=tmp_path, progress=False)
    assert second.reused and second.directory == first.directory
    np.testing.assert_array_equal(np.asarray(second.images), np.asarray(first.images))
    assert second.seconds < 5


def test_changed_files_give_a_new_cache(small_idc, tmp_path):
    index = idc.scan(small_idc)
    first = pack(index, 32, cache_root=tmp_path, progress=False)
    victim = Path(index.frame.at[0, "path"])
    stat = victim.stat()
    os.utime(victim, (stat.st_atime, stat.st_mtime + 100))
    rescanned = idc.scan(small_idc)
    second = pack(rescanned, 32, cache_root=tmp_path, progress=False)
    assert second.directory != first.directory and not second.reused


def test_pack_threads_and_chunks_give_identical_arrays(small_idc, tmp_path):
    index = idc.scan(small_idc)
    single = pack(index, 24, cache_root=tmp_path / "a", chunk_size=5, workers=1, progress=False)
    threaded = pack(index, 24, cache_root=tmp_path / "b", chunk_size=7, workers=3, progress=False)
    np.testing.assert_array_equal(np.asarray(single.images), np.asarray(threaded.images))
    one_shot = pack(index, 24, cache_root=tmp_path / "c", chunk_size=len(index), workers=1, progress=False)
    stored = sorted(path.name for path in one_shot.directory.glob("*.npy"))
    assert stored  # the arrays are files on disk, memory-mapped
    for name in stored:  # chunked packing writes the same bytes as packing in one go
        assert (single.directory / name).read_bytes() == (one_shot.directory / name).read_bytes()


def test_undecodable_files_are_skipped_and_listed(small_idc, tmp_path):
    index = idc.scan(small_idc)
    truncated = Path(index.frame.at[3, "path"])
    truncated.write_bytes(truncated.read_bytes()[:40])
    garbage = Path(index.frame.at[10, "path"])
    garbage.write_bytes(b"this is not a png")
    index = idc.scan(small_idc)
    packed = pack(index, 50, cache_root=tmp_path, chunk_size=4, progress=False)
    assert sorted(p.path for p in packed.failed) == sorted([str(truncated), str(garbage)])
    assert all(p.reason for p in packed.failed)
    assert len(packed) == len(index) - 2 == len(packed.index) == len(packed.labels)
    assert str(truncated) not in set(packed.index.frame["path"])
    for position in (0, 3, len(packed) - 1):
        original = int(packed.positions[position])
        np.testing.assert_array_equal(packed.images[position], fit_to_square(index.load_image(original), 50))
        assert packed.index.frame.at[position, "path"] == index.frame.at[original, "path"]
    reopened = pack(index, 50, cache_root=tmp_path, progress=False)
    assert reopened.reused and len(reopened.failed) == 2 and len(reopened) == len(packed)


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_pack_leaves_no_complete_cache(small_idc, tmp_path, workers):
    index = idc.scan(small_idc)
    calls = {"n": 0}

    def flaky(row):
        calls["n"] += 1
        if calls["n"] > 9:
            raise RuntimeError("simulated crash in the middle of packing")
        return index.reader(row)

    cache_root = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="simulated crash"):
        pack(replace(index, reader=flaky), 32, cache_root=cache_root, chunk_size=4, workers=workers, progress=False)
    assert list(cache_root.iterdir()) == [], "neither a final nor a temporary folder may remain"
    packed = pack(index, 32, cache_root=cache_root, progress=False)
    assert not packed.reused and len(packed) == len(index)


def test_an_unfinished_folder_is_rebuilt(small_idc, tmp_path):
    index = idc.scan(small_idc)
    packed = pack(index, 32, cache_root=tmp_path, progress=False)
    (packed.directory / COMPLETE_MARKER).unlink()
    (packed.directory / cache_module.IMAGES_FILE).write_bytes(b"half written")
    assert not is_complete(packed.directory)
    rebuilt = pack(index, 32, cache_root=tmp_path, progress=False)
    assert not rebuilt.reused and is_complete(rebuilt.directory) and len(rebuilt) == len(index)


def test_default_cache_root_and_bad_arguments(small_idc, tmp_path):
    index = idc.scan(small_idc)
    packed = pack(index, 16, progress=False)
    assert packed.directory.parent == Path(os.environ["BCLIB_CACHE"])
    shutil.rmtree(packed.directory)
    with pytest.raises(ValueError, match="image_size"):
        pack(index, 0, cache_root=tmp_path)
    with pytest.raises(ValueError, match="chunk_size"):
        pack(index, 16, cache_root=tmp_path, chunk_size=0)


def rewrite_in_place(path: Path) -> None:
    """Another image in ``path`` with the file's size and modification time kept (padding after IEND)."""
    stat = path.stat()
    buffer = io.BytesIO()
    Image.new("RGB", (50, 50), (10, 200, 30)).save(buffer, "PNG")
    data = buffer.getvalue()
    assert len(data) < stat.st_size
    path.write_bytes(data + b"\0" * (stat.st_size - len(data)))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_deep_check_finds_a_cache_a_file_changed_under(small_idc, tmp_path):
    index = idc.scan(small_idc)
    caches = [pack(index, size, cache_root=tmp_path, progress=False) for size in (32, 24)]
    assert check_dataset(index, caches=packed_caches(index, tmp_path)).ok
    victim = Path(index.frame.at[5, "path"])
    rewrite_in_place(victim)
    rescanned = idc.scan(small_idc)
    assert rescanned.content_hash() == index.content_hash()  # the documented limit of the key
    assert pack(rescanned, 32, cache_root=tmp_path, progress=False).reused
    found = packed_caches(rescanned, tmp_path)
    assert [cache.directory for cache in found] == [caches[1].directory, caches[0].directory]
    report = check_dataset(rescanned, caches=found)
    assert not report.ok and report.decoded == len(index)
    assert report.stale_caches == {str(cache.directory): 1 for cache in found}
    assert [problem.path for problem in report.problems] == [str(victim)] * 2
    assert sum("delete that folder and pack again" in line for line in report.lines()) == 2
    assert check_dataset(rescanned, caches=packed_caches(rescanned, tmp_path / "elsewhere")).ok
