"""RunLogger: only rank 0 writes or prints, warnings included."""

from __future__ import annotations

import logging

from vidseg.engine.logger import RunLogger


def test_warnings_show_on_rank_0_only(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="vidseg"):
        for rank in (0, 1):
            run = tmp_path / f"rank{rank}"
            run.mkdir()
            logger = RunLogger(
                run, total_iters=2, enabled=rank == 0, tensorboard=False, progress=False
            )
            logger.warning(f"sync_bn falls back on rank {rank}")
            logger.close()
    assert [r.getMessage() for r in caplog.records] == ["sync_bn falls back on rank 0"]
    assert "sync_bn falls back on rank 0" in (tmp_path / "rank0" / "train.log").read_text()
    assert list((tmp_path / "rank1").iterdir()) == []  # nothing written on other ranks
