"""Regenerate ``gen/`` from ``protos/``: one command, reproducible, never edited by hand.

Third-party contracts are taken from installed packages at build time:
``buf/validate/validate.proto`` from the descriptor protovalidate embeds, ``google/api`` and
``google/rpc`` from googleapis-common-protos, the well-known types from grpcio-tools.

Usage: ``python -m meshctl.protogen [--out DIR] [--image FILE] [--check]``.
``--check`` generates into a temporary folder and exits 1 when ``gen/`` differs from it.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"
VALIDATE_PROTO = "buf/validate/validate.proto"


def _third_party_descriptor_set() -> bytes:
    """A FileDescriptorSet holding buf/validate/validate.proto and the files it imports."""
    import protovalidate._gen.buf.validate.validate_pb as validate_pb
    from google.protobuf import (
        descriptor_pb2,
        duration_pb2,
        field_mask_pb2,
        timestamp_pb2,
    )

    fds = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        fds.file.add().ParseFromString(module.DESCRIPTOR.serialized_pb)
    fds.file.add().ParseFromString(validate_pb._DESC.proto.to_binary())
    return fds.SerializeToString(deterministic=True)


def _googleapis_include() -> Path:
    import google.api.field_behavior_pb2 as fb

    return Path(fb.__file__).resolve().parent.parent.parent


def our_protos() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))


def _plugin(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = path if path.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: run `make setup`")
    return str(found)


def generate(out: Path, image: Path | None = None) -> None:
    """Write Python messages, gRPC stubs and typed stubs for every proto into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fds_path = Path(tmp) / "third_party.binpb"
        fds_path.write_bytes(_third_party_descriptor_set())
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--descriptor_set_in={fds_path}",
            f"-I{PROTOS}",
            f"-I{_googleapis_include()}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={out}",
            f"--mypy_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_grpc_out={out}",
        ]
        if image is not None:
            image = image.resolve()
            image.parent.mkdir(parents=True, exist_ok=True)
            args += [
                "--include_imports",
                "--include_source_info",
                f"--descriptor_set_out={image}",
            ]
        subprocess.run([*args, VALIDATE_PROTO, *our_protos()], check=True, cwd=ROOT)
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        if folder.name != "__pycache__":
            (folder / "__init__.py").touch()


def _tree(folder: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(folder)): p
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def stale_files(expected: Path, actual: Path) -> list[str]:
    """Paths that differ between two generated trees (missing, extra or changed)."""
    want, have = _tree(expected), _tree(actual)
    diff = sorted(set(want) ^ set(have))
    diff += sorted(
        name
        for name in set(want) & set(have)
        if not filecmp.cmp(want[name], have[name], shallow=False)
    )
    return diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshctl.protogen", description=__doc__)
    parser.add_argument("--out", type=Path, default=GEN, help="output folder (default gen/)")
    parser.add_argument("--image", type=Path, help="also write a buf image (descriptor set)")
    parser.add_argument("--check", action="store_true", help="fail if gen/ is stale")
    ns = parser.parse_args(argv)
    if ns.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp), ns.image)
            diff = stale_files(Path(tmp), ns.out)
        if diff:
            print("gen/ is stale; run `make gen`. Differences:", *diff, sep="\n  ")
            return 1
        print("gen/ is up to date")
        return 0
    if ns.out.exists():
        shutil.rmtree(ns.out)
    generate(ns.out, ns.image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
