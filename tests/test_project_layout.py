"""The README's promises about commands hold: CI runs exactly the README's test command."""

from __future__ import annotations

import re

from training import REPO


def _readme_setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Set-up: two commands on a fresh machine", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README set-up section has no bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_setup_is_exactly_two_commands():
    commands = _readme_setup_commands()
    assert len(commands) == 2, commands
    for command in commands:
        script = command.split()[1]
        assert (REPO / script).is_file(), f"{command}: {script} does not exist"


def test_ci_runs_the_readme_test_command_and_nothing_else():
    test_command = _readme_setup_commands()[1]
    ci_lines = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    commands = [line for line in ci_lines if not line.startswith(("set ", "cd "))]
    assert commands == [test_command]


def test_generated_artifacts_are_ignored_by_git():
    ignored = (REPO / ".gitignore").read_text().split()
    for entry in [".venv/", "/data/", ".ros/", "*.onnx", "*.engine", "*.db3", "*.mcap", "build/", "install/"]:
        assert entry in ignored, entry
