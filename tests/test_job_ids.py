"""Job ids: time-ordered, unique, and drawn from the OS's CSPRNG through a buffer."""

from __future__ import annotations

import os

from scheduler.store import jobs
from scheduler.store.jobs import is_job_id, new_job_id, random_bytes


def test_ids_stay_unique_and_ordered_across_random_blocks() -> None:
    """Ids made past several refills of the random buffer are all valid, distinct and
    increasing."""
    made = [new_job_id() for _ in range(3 * jobs._RANDOM_BLOCK // 10)]
    assert all(is_job_id(i) for i in made)
    assert made == sorted(made) and len(set(made)) == len(made)


def test_random_bytes_never_hands_out_the_same_bytes_twice() -> None:
    """Consecutive draws, one larger than a block, are disjoint slices of fresh bytes."""
    draws = [random_bytes(16) for _ in range(600)] + [random_bytes(jobs._RANDOM_BLOCK + 1)]
    assert [len(d) for d in draws[-2:]] == [16, jobs._RANDOM_BLOCK + 1]
    assert len(set(draws)) == len(draws)


def test_a_forked_child_draws_other_bytes_than_its_parent() -> None:
    """A child forked with bytes left in the buffer does not reuse them."""
    random_bytes(1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, random_bytes(16))
        os._exit(0)
    try:
        os.waitpid(pid, 0)
        assert os.read(read, 16) != random_bytes(16)
    finally:
        os.close(read)
        os.close(write)
