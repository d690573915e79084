"""`RssSampler` samples from a process of its own and sees a tree's peak, children too."""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.common import MiB, RssSampler

HOLD = ("import sys, time; block = bytearray(80 * 1024 * 1024); block[::4096] = b'x' * "
        "len(block[::4096]); print('held', flush=True); sys.stdin.readline()")


def test_the_peak_of_a_tree_counts_its_children() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; child = subprocess.Popen([sys.executable, '-c', "
         f"{HOLD!r}], stdout=sys.stdout, stdin=sys.stdin); child.wait()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdin is not None
    try:
        with RssSampler([parent.pid], interval=0.02) as rss:
            assert parent.stdout.readline().strip() == "held"
            time.sleep(0.3)  # several samples while the block is held
            parent.stdin.write("go\n")
            parent.stdin.flush()
            parent.wait(timeout=30)
    finally:
        parent.kill()
        parent.communicate()
    assert rss.peak_of[parent.pid] >= 80 * MiB  # the child's block, seen through the tree
    assert rss.peak_largest >= 80 * MiB
    assert rss.peak_total == rss.peak_of[parent.pid]
