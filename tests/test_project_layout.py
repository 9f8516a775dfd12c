"""The README's promises about commands hold: CI runs exactly the README's test command."""

from __future__ import annotations

import ast
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


# Layers of the workstation side, lowest first: a package may import the runtime, ``training`` itself
# (the REPO constant) and the layers below it, never one above (so there are no cycles between them).
_LAYERS = ["config_schema", "data", "labels", "fit", "export", "evaluation", "jobs"]


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_imports_point_one_way():
    wrong = []
    for path in sorted((REPO / "hiseg_ros").rglob("*.py")):
        wrong += [f"{path.relative_to(REPO)} imports {m}" for m in _imports(path) if m.split(".")[0] == "training"]
    for path in sorted((REPO / "training").rglob("*.py")):
        parts = path.relative_to(REPO / "training").with_suffix("").parts
        if parts[0] == "__init__":
            continue
        level = _LAYERS.index(parts[0])
        for module in _imports(path):
            names = module.split(".")
            if names[0] != "training" or len(names) == 1:
                continue
            if names[1] not in _LAYERS:
                wrong.append(f"{path.relative_to(REPO)} imports {module}: not a known layer")
            elif _LAYERS.index(names[1]) > level:
                wrong.append(f"{path.relative_to(REPO)} imports {module} from a layer above its own")
    assert not wrong, "\n".join(wrong)
