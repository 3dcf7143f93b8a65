"""The default corpus: English prose that ships with every Python interpreter.

A fresh machine (no internet, no dataset download) still needs real text to train a
tokenizer and a language model on. This module writes one as JSONL from two sources of the
running interpreter, in this order:

1. ``pydoc_data.topics``: the language reference's topic pages (what ``help("if")`` shows),
   about 0.5 MB of carefully written English, one document per topic, sorted by topic name;
2. the docstrings of the standard library's modules, classes and functions, read with
   ``ast`` from the installed ``.py`` sources (never imported, so no side effects), one
   document per module (``qualified.name`` line, then the docstring, for each docstring),
   modules sorted by path; the test suites are left out. About 1.8 MB on CPython 3.11.

Docstrings are chosen over raw source code because a language-model demo learns (and shows
that it learns) far better on prose than on code; they still carry some code-like syntax
(doctests, signatures). In all about 2.6 MB of JSONL (722 documents on CPython 3.11.7),
deterministic for a given Python version (the text is whatever that version ships).
Records are ``{"text": ..., "source": ...}``.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from pydoc_data.topics import topics

from megatron_ponder.data.errors import DataError

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "_bundled"}
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _topic_documents() -> Iterator[dict]:
    for name in sorted(topics):
        text = topics[name].strip()
        if text:
            yield {"text": text, "source": f"pydoc_data.topics:{name}"}


def _module_text(tree: ast.Module, module: str) -> str:
    parts = []

    def visit(node: ast.AST, qualname: str) -> None:
        doc = ast.get_docstring(node) if isinstance(node, _DOCUMENTED) else None
        if doc and doc.strip():
            parts.append(f"{qualname}\n{doc.strip()}")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{qualname}.{child.name}")

    visit(tree, module)
    return "\n\n".join(parts)


def _stdlib_documents() -> Iterator[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((p for p in root.rglob("*.py")
                    if not _SKIP_DIRS.intersection(p.relative_to(root).parts)),
                   key=lambda p: p.relative_to(root).as_posix())
    for path in files:
        rel = path.relative_to(root).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue
        text = _module_text(tree, ".".join(parts))
        if text:
            yield {"text": text, "source": f"stdlib:{rel.as_posix()}.py"}


def default_documents() -> Iterator[dict]:
    """Every record of the default corpus, in its fixed order."""
    yield from _topic_documents()
    yield from _stdlib_documents()


def write_default_corpus(out_path: str | Path, max_bytes: int | None = None,
                         *, quiet: bool = False) -> Path:
    """Write the default corpus as JSONL (whole documents only, at most `max_bytes` bytes;
    None = all of it, about 2.6 MB), atomically; print its size unless `quiet`."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f"{out_path.name}.tmp{os.getpid()}")
    size = documents = 0
    try:
        with open(tmp, "wb") as stream:
            for record in default_documents():
                line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
                if max_bytes is not None and size + len(line) > max_bytes:
                    break
                stream.write(line)
                size += len(line)
                documents += 1
        if documents == 0:
            raise DataError(f"max_bytes={max_bytes} is smaller than the first document of the "
                            "default corpus: allow at least a few kilobytes")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    if not quiet:
        version = ".".join(map(str, sys.version_info[:3]))
        print(f"default corpus (Python {version} pydoc topics + stdlib docstrings): "
              f"{documents} documents, {size / 1e6:.2f} MB -> {out_path}")
    return out_path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="the JSONL file to write")
    parser.add_argument("--max-mb", type=float, default=None, help="cap on its size in MB")
    args = parser.parse_args()
    cap = None if args.max_mb is None else int(args.max_mb * 1e6)
    write_default_corpus(args.output, cap)
