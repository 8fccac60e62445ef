"""The training progress bar draws on a terminal that reports no size (a pseudo-terminal from `script` or
`docker exec -t`), where tqdm alone draws nothing."""

from __future__ import annotations

import io
import os

from relevance.training.progress import FALLBACK_SIZE, StepProgress, bar_width


def test_a_terminal_without_a_size_gets_the_fallback_size_and_a_bar():
    leader, follower = os.openpty()  # a fresh pseudo-terminal: 0 columns, 0 lines
    try:
        with os.fdopen(follower, "w", closefd=False) as stream:
            assert bar_width(stream) == {"ncols": FALLBACK_SIZE[0], "nrows": FALLBACK_SIZE[1]}
            with StepProgress("epoch 1/2", 3, stream=stream) as progress:
                assert progress.bar is not None
                progress.step(0.5)
                stream.flush()
                drawn = os.read(leader, 4096).decode("utf-8", "replace")
        assert "epoch 1/2" in drawn and "0/3" in drawn  # the bar, drawn at once (its updates are rate-limited)
    finally:
        os.close(leader)
        os.close(follower)
    assert bar_width(io.StringIO()) == {"ncols": FALLBACK_SIZE[0], "nrows": FALLBACK_SIZE[1]}  # no file descriptor
