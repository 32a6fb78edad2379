"""Local buf plugins (buf.gen.yaml) that write gen/ exactly as grpcio-tools' protoc does.

    .venv/bin/python scripts/buf_plugin.py python|grpc_python|init   < CodeGeneratorRequest

- ``python``, ``grpc_python``: grpcio-tools' protoc (``python -m grpc_tools.protoc``, the
  version pinned in pyproject.toml) run on the files buf compiled, handed over as a descriptor
  set. grpcio-tools ships no ``protoc-gen-grpc_python`` binary and buf's ``protoc_builtin`` knows
  only protoc's own generators, hence the bridge. buf fills in every field's ``json_name`` while
  protoc records it only when the source writes it, and ``*_pb2.py`` embeds the descriptor, so a
  ``json_name`` the source does not write is cleared first: the bytes match a protoc run.
- ``init``: an empty ``__init__.py`` in every generated package directory (``shop/``,
  ``shop/order/``, ``shop/order/v1/``, …) so ``shop.<area>.v1.<file>_pb2`` imports as regular
  packages with gen/ on sys.path (gen/ itself is the import root and gets none).

Every plugin runs once over all files (``strategy: all``).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc

# Field numbers in descriptor.proto, for source-code-info paths.
_FILE_MESSAGE, _FILE_EXTENSION = 4, 7
_MSG_FIELD, _MSG_NESTED, _MSG_EXTENSION = 2, 3, 6
_FIELD_JSON_NAME = 10


def _default_json_name(name: str) -> str:
    """protoc's ToJsonName: drop underscores, upper-case the letter after each."""
    out: list[str] = []
    upper = False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


def _clear_implicit_json_names(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    written = {tuple(loc.path) for loc in fdp.source_code_info.location}

    def fields(path: tuple[int, ...], items: Iterable[descriptor_pb2.FieldDescriptorProto]) -> None:
        for i, field in enumerate(items):
            explicit = (*path, i, _FIELD_JSON_NAME) in written
            if field.HasField("json_name") and not explicit and field.json_name == _default_json_name(field.name):
                field.ClearField("json_name")

    def message(path: tuple[int, ...], msg: descriptor_pb2.DescriptorProto) -> None:
        fields((*path, _MSG_FIELD), msg.field)
        fields((*path, _MSG_EXTENSION), msg.extension)
        for j, nested in enumerate(msg.nested_type):
            message((*path, _MSG_NESTED, j), nested)

    for i, msg in enumerate(fdp.message_type):
        message((_FILE_MESSAGE, i), msg)
    fields((_FILE_EXTENSION,), fdp.extension)


def _grpc_tools(generator: str, request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse()
    fds = descriptor_pb2.FileDescriptorSet()
    for proto_file in request.proto_file:
        fdp = fds.file.add()
        fdp.CopyFrom(proto_file)
        _clear_implicit_json_names(fdp)
    with tempfile.TemporaryDirectory(prefix="shop-buf-plugin.") as tmp:
        descriptors, out = Path(tmp) / "in.binpb", Path(tmp) / "out"
        descriptors.write_bytes(fds.SerializeToString())
        out.mkdir()
        target = f"{request.parameter}:{out}" if request.parameter else str(out)
        argv = ["grpc_tools.protoc", f"--descriptor_set_in={descriptors}", f"--{generator}_out={target}"]
        code = protoc.main([*argv, *request.file_to_generate])
        if code != 0:
            response.error = f"grpc_tools.protoc --{generator}_out exited with {code}"
            return response
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            response.file.add(name=path.relative_to(out).as_posix(), content=path.read_text(encoding="utf-8"))
    return response


def _init_files(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    response = plugin_pb2.CodeGeneratorResponse()
    dirs = {parent for name in request.file_to_generate for parent in PurePosixPath(name).parents}
    for directory in sorted(dirs - {PurePosixPath(".")}):
        response.file.add(name=(directory / "__init__.py").as_posix(), content="")
    return response


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("python", "grpc_python", "init"):
        print("usage: buf_plugin.py python|grpc_python|init  (a protoc plugin: request on stdin)", file=sys.stderr)
        return 2
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = _init_files(request) if argv[0] == "init" else _grpc_tools(argv[0], request)
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
