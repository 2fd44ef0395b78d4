"""disk_shortfall: whether a write of known size fits, asked before it starts."""

from __future__ import annotations

import shutil
from pathlib import Path

from ipfs_accelerate.store.disk import KEEP_FREE_BYTES, disk_shortfall


def test_a_write_that_fits_with_the_margin_is_allowed(tmp_path: Path) -> None:
    assert disk_shortfall(tmp_path, 1 << 20, what="a small write") is None


def test_a_write_past_the_margin_is_refused_in_words(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    # Fits the disk, but not with the margin kept free for the rest of the machine.
    reason = disk_shortfall(tmp_path, free - KEEP_FREE_BYTES // 2, what="the test write")
    assert reason is not None
    assert reason.startswith(f"the test write needs about {(free - KEEP_FREE_BYTES // 2) / 1e9:.1f} GB of disk under "
                             f"{tmp_path} and ")
    assert "IPFS_ACCELERATE_CACHE" in reason


def test_a_folder_not_made_yet_is_measured_at_its_nearest_parent(tmp_path: Path) -> None:
    reason = disk_shortfall(tmp_path / "a" / "b", 1 << 62, what="the test write")
    assert reason is not None and f"under {tmp_path} and" in reason
    assert not (tmp_path / "a").exists()
