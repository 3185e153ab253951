"""`make lint` runs the import contracts of pyproject.toml (import-linter), and they bite:
the same check over a copy of the tree with one import that points the wrong way fails,
naming the contract and the import."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("protocol", "common", "broker", "device_agent", "ledger_node")


def tree(where: Path) -> Path:
    """The package as installed, spelled out: micromine/ with the five folders inside."""
    package = where / "micromine"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "micromine", package, ignore=ignore)
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, package / folder, ignore=ignore)
    return package


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """What `make imports` runs, in ``root`` (see the Makefile for why this way)."""
    site = sysconfig.get_paths()["purelib"]
    code = (
        f"import sys; sys.path[:0] = [{site!r}]; "
        "from importlinter.cli import lint_imports_command; "
        f"sys.argv = ['lint-imports', {str(REPO / 'pyproject.toml')!r}, '--no-cache']; "
        "lint_imports_command()"
    )
    return subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imports")
    tree(root)
    return root


def test_the_tree_keeps_every_contract(copy: Path) -> None:
    done = lint_imports(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_protocol_importing_an_adapter_breaks_the_layers(copy: Path) -> None:
    crypto = copy / "micromine" / "protocol" / "crypto.py"
    original = crypto.read_text()
    crypto.write_text(original + "\nfrom micromine.common import mqtt  # noqa\n")
    try:
        done = lint_imports(copy)
    finally:
        crypto.write_text(original)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout
    assert "micromine.protocol.crypto -> micromine.common" in done.stdout


def test_a_pure_core_importing_the_database_adapter_is_refused(copy: Path) -> None:
    tally = copy / "micromine" / "ledger_node" / "core" / "tally.py"
    original = tally.read_text()
    tally.write_text(original + "\nfrom micromine.ledger_node import storage  # noqa\n")
    try:
        done = lint_imports(copy)
    finally:
        tally.write_text(original)
    assert done.returncode != 0
    assert "the pure cores import no adapter" in done.stdout
