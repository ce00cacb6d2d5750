"""A render's MP4 is held in memory up to a bound and comes back whole from there; past
it, it goes to its file, which holds every chunk in order; a discarded render leaves
no file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from scheduler.pools import stream


@pytest.mark.parametrize("bound", [1 << 20, 1000])
async def test_every_chunk_comes_back_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: int
) -> None:
    """Under the bound the MP4 comes back in memory and no file is made; past it the
    file holds it all."""
    monkeypatch.setattr(stream, "SPOOL_BYTES", bound)
    chunks = [os.urandom(n) for n in (300, 700, 1, 2500, 40)]
    path = tmp_path / "clip.mp4"
    spool = stream._Spool(path)
    for chunk in chunks:
        await spool.write(chunk)
    data = await spool.finish()
    if bound > sum(map(len, chunks)):
        assert data == b"".join(chunks)
        assert await asyncio.to_thread(os.listdir, tmp_path) == []
    else:
        assert data is None
        assert await asyncio.to_thread(path.read_bytes) == b"".join(chunks)


@pytest.mark.parametrize("bound", [1 << 20, 1000])
async def test_a_discarded_render_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound: int
) -> None:
    monkeypatch.setattr(stream, "SPOOL_BYTES", bound)
    path = tmp_path / "clip.mp4"
    spool = stream._Spool(path)
    await spool.write(os.urandom(1500))
    await spool.discard()
    assert await asyncio.to_thread(os.listdir, tmp_path) == []
