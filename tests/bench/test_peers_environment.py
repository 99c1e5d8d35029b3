"""``--peers`` finds the peer queues in an interpreter of their own, or says how to get them."""

from __future__ import annotations

import subprocess
import sys
import venv

import pytest

from django_gearattach.bench.peers import environment


def test_the_bench_extra_lists_each_peer_pinned():
    wanted = environment.requirements()
    names = {r.split("[")[0].split("=")[0] for r in wanted}
    assert names == {"dramatiq", "huey", "celery", "redis"}
    assert all("==" in r for r in wanted), wanted


def test_peers_without_the_extra_fail_with_how_to_install_them(tmp_path):
    # A bare virtualenv: what an environment without the bench extra has.
    venv.create(tmp_path / "bare", with_pip=False)
    bare = str(tmp_path / "bare" / "bin" / "python")
    assert environment.missing(bare) == ["dramatiq", "huey", "celery", "redis"]
    done = subprocess.run(
        [sys.executable, "-m", "django_gearattach.bench", "--peers", "--peers-python", bare],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--peers needs dramatiq, huey, celery, redis" in done.stderr
    assert "pip install 'dramatiq[redis]==" in done.stderr
    assert "pip install -e '.[bench]'" in done.stderr
    assert done.stdout == ""  # nothing was started or measured


def test_an_interpreter_that_does_not_run_lacks_every_peer(tmp_path):
    assert environment.missing(str(tmp_path / "no-python")) == list(environment.MODULES)


def test_a_peers_virtualenv_that_cannot_be_created_fails_with_how_to_install_them(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(environment.PeersUnavailable) as caught:
        environment.peers_python(None, venv=blocker / ".venv-peers")
    message = str(caught.value)
    assert "could not install the peer queues" in message
    assert "-m venv .venv-peers && .venv-peers/bin/pip install 'dramatiq[redis]==" in message
