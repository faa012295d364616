"""Every `kubeloop submit` and `kubeloop schedule` command of the README, exactly as
printed (flags, config file, URIs), against a KFP v2 endpoint on loopback: each
must be accepted, and what reaches KFP must be a run that can do its job (the
monitoring schedule gets its logs, labels, fresh data, target and deploy switch).
Only the host is swapped, for the loopback server's port."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeloop.cli import main
from tests.cluster_support import FakeKfp

REPO = Path(__file__).resolve().parents[1]
README_HOST = "http://localhost:8080"


def readme_commands(text: str, verbs: tuple[str, ...] = ("submit", "schedule")) -> list[list[str]]:
    """The kubeloop commands with one of ``verbs`` in the README's sh blocks, as
    argv lists (continuation lines joined, trailing comments dropped)."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if not line.startswith(".venv/bin/kubeloop "):
                continue
            argv = shlex.split(line, comments=True)[1:]
            if argv and argv[0] in verbs:
                out.append(argv)
    return out


COMMANDS = readme_commands((REPO / "README.md").read_text())


@pytest.fixture
def kfp_server() -> Iterator[FakeKfp]:
    server = FakeKfp()
    yield server
    server.close()


def test_the_readme_shows_the_walkthrough_commands():
    verbs = [(a[0], a[1]) for a in COMMANDS]
    assert verbs.count(("submit", "--host")) >= 2
    assert ("schedule", "monitoring") in verbs and ("schedule", "training") in verbs
    assert all(README_HOST in a for a in COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a[:2]) + f" #{i}" for i, a in enumerate(COMMANDS)])
def test_readme_command_as_printed(argv, kfp_server, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the README's paths are relative to the repository
    args = [kfp_server.url if a == README_HOST else a for a in argv]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    posted = kfp_server.posted("/runs") + kfp_server.posted("/recurringruns")
    assert len(posted) == 1, kfp_server.requests
    params = posted[0]["runtime_config"]["parameters"]
    assert params["target"] == "churned"  # from manifests/examples/churn-config.yaml
    if argv[:2] == ["schedule", "monitoring"]:
        # what a scheduled monitoring run needs to retrain and roll the retrain out
        assert params["logs_uri"].startswith("s3://") and params["labels_uri"].startswith("s3://")
        assert params["retrain_data_uri"].startswith("s3://")
        assert params["deploy"] is True
    else:
        assert params["data_uri"].startswith("s3://")
