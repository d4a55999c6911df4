"""The `strongroom` command imports only the module of the command it runs: a restore
does not pay for the HTTP client, the metadata database or the API at every start."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from strongroom import cli

HEAVY = ("sqlalchemy", "fastapi", "celery", "boto3", "swiftclient", "httpx", "uvicorn")


def _commands(top: argparse.ArgumentParser) -> list[str]:
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def test_the_table_names_what_each_module_adds() -> None:
    everything = _commands(cli.parser())
    own = _commands(cli.parser(["serve"]))
    assert own == list(cli.OWN_COMMANDS)
    listed = [c for commands in cli.COMMAND_MODULES.values() for c in commands]
    assert sorted(everything) == sorted([*cli.OWN_COMMANDS, *listed])
    for module, commands in cli.COMMAND_MODULES.items():
        importlib.import_module(module)
        for command in commands:
            assert sorted(_commands(cli.parser([command]))) == sorted(
                [*cli.OWN_COMMANDS, *commands]
            ), module


@pytest.mark.parametrize("argv", [[], ["--version"], ["no-such-command"], ["-h"]])
def test_without_a_known_command_every_command_is_there(argv: list[str]) -> None:
    assert sorted(_commands(cli.parser(argv))) == sorted(_commands(cli.parser()))


def _imported_after(argv: list[str]) -> set[str]:
    code = (
        "import json, sys\n"
        "from strongroom import cli\n"
        f"cli.parser({argv!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(done.stdout))


def test_a_restore_command_line_loads_no_service_module() -> None:
    argv = ["restore", "--from", "file:///nowhere/manifest.json", "--to", "/nowhere", "--key", "k"]
    loaded = _imported_after(argv)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    assert "strongroom.offline.commands" in loaded
    assert not [m for m in loaded if m.startswith(("strongroom.api", "strongroom.persistence"))]


def test_a_client_command_line_loads_the_client() -> None:
    # The control of the test above: the same check sees a command's own module.
    loaded = _imported_after(["backup"])
    assert "strongroom.client" in loaded and "httpx" in loaded
    assert "strongroom.offline.commands" not in loaded
