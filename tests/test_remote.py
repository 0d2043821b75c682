"""The local mirror of a cloud sweep dir, against a real S3-compatible server on 127.0.0.1."""

from __future__ import annotations

import os

import pytest

from orchestrator.sweepdir.remote import Mirror

from .s3_server import listing, s3_server

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def s3():
    before = dict(os.environ)
    with s3_server("mirror-bucket") as env:
        os.environ.update(env)
        try:
            yield env
        finally:
            os.environ.clear()
            os.environ.update(before)


def test_push_and_pull_move_only_what_changed(s3, tmp_path):
    uri = "s3://mirror-bucket/sweeps/one"
    here = tmp_path / "here"
    (here / "trial_a" / "checkpoint_000000").mkdir(parents=True)
    big = os.urandom(9 << 20)  # more than one copy chunk
    (here / "status.json").write_text('{"state": "running"}')
    (here / "trial_a" / "events.out.tfevents.1").write_bytes(big)
    (here / "optuna.journal.lock").write_text("")
    (here / "trial_a" / "checkpoint_000000" / "adapter_config.json").write_text("{}")
    mirror = Mirror(uri, here)
    assert not mirror.exists()
    assert mirror.push() == 2 and mirror.push() == 0  # unchanged files are not sent again
    # Locks are never uploaded; checkpoints are Ray's to upload, not the mirror's.
    assert set(listing(s3, uri)) == {"status.json", "trial_a/events.out.tfevents.1"}
    assert mirror.exists() and mirror.folders() == {"trial_a"}

    there = Mirror(uri, tmp_path / "there")  # another machine
    # Big files unchanged since the last pull are not fetched again; small ones always are.
    assert there.pull() == 2 and there.pull() == 1
    assert (tmp_path / "there" / "trial_a" / "events.out.tfevents.1").read_bytes() == big
    (here / "status.json").write_text('{"state": "stopped"}')  # same size, same second
    assert mirror.push() == 1
    assert there.pull(top_only=True) == 1
    assert (tmp_path / "there" / "status.json").read_text() == '{"state": "stopped"}'
    # What the mirror pulled is not pushed back over newer files in the bucket.
    assert there.push() == 0
