"""``python3 dev.py demo`` and a newcomer's second shell, as separate processes.

The demo keeps its cluster in ``$SELECTO_DEMO_DATA`` (a temporary directory
here, never the developer's ``.pgdata``); ``manage.py`` in another shell, with
no DATABASE_URL, finds the running demo's database through the state that
``pgserver run`` keeps there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from testproject import runstate
from testproject.pgserver import free_port

from .support.processes import ROOT, children_of


def shell(data: Path) -> dict[str, str]:
    """A newcomer's shell: no DATABASE_URL, no settings module chosen."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    return {**env, runstate.DATA_ENV: str(data)}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_until_serving(demo: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert demo.poll() is None, demo.communicate()[0]
        try:
            url = f"http://127.0.0.1:{port}/health/db"
            with urllib.request.urlopen(url, timeout=5) as reply:
                reply.read()
                return
        except OSError:
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.2)


@pytest.mark.slow
def test_a_second_shell_reaches_the_running_demo(tmp_path: Path) -> None:
    data = tmp_path / "pgdata"
    env = shell(data)
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "dev.py", "demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own process group, so that SIGINT reaches it as Ctrl-C would.
        start_new_session=True,
    )
    outputs = []
    try:
        wait_until_serving(demo, port)
        (server_process,) = children_of(demo.pid)  # manage.py demo, under pgserver

        stats = run(env, "manage.py", "poolstats", "--json")
        outputs += [stats.stdout, stats.stderr]
        assert stats.returncode == 0, stats.stderr
        pids = {row["pid"] for row in json.loads(stats.stdout)["processes"]}
        assert server_process in pids
        check = run(env, "manage.py", "check")
        outputs += [check.stdout, check.stderr]
        assert check.returncode == 0, check.stderr

        second = run(env, "dev.py", "demo", "--port", str(free_port()))
        outputs += [second.stdout, second.stderr]
        assert second.returncode != 0
        assert (second.stdout + second.stderr).splitlines() == [
            f"dev.py: the demo is already running at http://127.0.0.1:{port}/ "
            f"(pid {demo.pid}); stop it with Ctrl-C in its terminal"
        ]
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        output, _ = demo.communicate(timeout=60)
        outputs.append(output)
    assert f"health: http://127.0.0.1:{port}/health/db" in output
    assert "manage.py poolstats (also clearcache, check) finds this demo's" in output

    # Ctrl-C stopped PostgreSQL, and the demo's state went with it.
    assert runstate.server_pid(data) is None
    assert not (data / runstate.STATE_FILE).exists()
    after = run(env, "manage.py", "check")
    outputs += [after.stdout, after.stderr]
    assert after.returncode != 0
    assert "no demo is running: start one with `python3 dev.py demo`" in after.stderr
    password = (data / runstate.PASSWORD_FILE).read_text().strip()
    assert not any(password in text for text in outputs)


def test_a_stale_demo_state_is_not_trusted(tmp_path: Path) -> None:
    """The state of a demo killed before it could clean up, or without server."""
    tmp_path.joinpath(runstate.PASSWORD_FILE).write_text("not-a-secret-to-print")
    env = shell(tmp_path)
    exited = subprocess.Popen(["true"])
    exited.wait()
    # A run process that is gone; one alive (this one) but no server.
    for pid in (exited.pid, os.getpid()):
        state = {"pid": pid, "port": free_port(), "serves": "http://127.0.0.1:1/"}
        tmp_path.joinpath(runstate.STATE_FILE).write_text(json.dumps(state))

        check = run(env, "manage.py", "check")
        assert check.returncode != 0
        assert "DATABASE_URL is not set and no demo is running" in check.stderr
        assert "not-a-secret-to-print" not in check.stdout + check.stderr


def test_a_taken_port_gets_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = run(shell(tmp_path / "pgdata"), "dev.py", "demo", "--port", str(port))
    assert demo.returncode != 0
    assert (demo.stdout + demo.stderr).splitlines() == [
        f"dev.py: port {port} of 127.0.0.1 is in use by another program: "
        "choose another port with --port"
    ]
    assert not (tmp_path / "pgdata").exists()  # no server was started


def test_the_demo_runs_on_the_dev_venv_running_dev_py(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tests above run ``dev.py demo`` on the suite's Python. Under
    ``dev.py test --versions newest`` that is .venv-newest's (3.13), or a
    throwaway venv's: dev.py then rebuilt ``.venv`` with it, deleting the
    developer's venv (and any suite running from it) in the middle of the
    run."""
    import dev

    other = Path("/tmp/a-throwaway-venv")  # not created: never run
    monkeypatch.setattr(sys, "prefix", str(other))
    monkeypatch.setattr(sys, "executable", str(other / "bin" / "python"))
    monkeypatch.setenv("DATABASE_URL", "postgres://demo@127.0.0.1:1/demo")
    monkeypatch.setattr(dev, "ensure_venv", lambda *_, **__: pytest.fail(".venv"))
    ran: list[list[str]] = []

    def replace_with(*cmd: object) -> None:
        ran.append([str(part) for part in cmd])
        raise SystemExit(0)

    monkeypatch.setattr(dev, "replace_with", replace_with)
    with pytest.raises(SystemExit):
        dev.demo(free_port())
    assert ran == [[sys.executable, "manage.py", "demo", "--port", ran[0][-1]]]
