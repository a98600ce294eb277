"""The liveness file check: fresh passes, stale or missing fails, with a line that says why."""

import os
import time

from common import liveness


def test_a_fresh_file_passes_and_a_stale_or_missing_one_fails(tmp_path, capsys):
    path = str(tmp_path / "worker.alive")
    assert liveness.main([path]) == 1
    assert "does not exist" in capsys.readouterr().err
    liveness.touch(path)
    assert liveness.main([path, "--max-age", "5"]) == 0
    old = time.time() - 30
    os.utime(path, (old, old))
    assert liveness.main([path, "--max-age", "5"]) == 1
    err = capsys.readouterr().err
    assert "last touched" in err and "(limit 5 s)" in err
    liveness.touch(path)  # touching again makes it fresh
    assert liveness.age(path) < 5
