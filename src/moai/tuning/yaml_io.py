"""Write a tuned value back into the mix instructions without disturbing the rest of the file.

People keep comments and an order that makes sense to them in this file; a tool that rewrites it as
plain YAML would be reverted by hand. We use ruamel.yaml's round-trip mode, keep the file's own
indentation, and re-validate the result before replacing the file atomically.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from moai.config import parse_config


def _indents(text: str) -> tuple[int, int]:
    """The file's mapping indent and block-sequence dash offset (ruamel's own guess misreads nested lists)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    mapping = next((len(ln) - len(ln.lstrip()) for ln in lines if ln[0] == " "), 2)
    offset = 2 if mapping >= 2 else 0
    for prev, ln in zip(lines, lines[1:], strict=False):
        if re.match(r"^\s*- ", ln) and prev.rstrip().endswith(":"):
            offset = (len(ln) - len(ln.lstrip())) - (len(prev) - len(prev.lstrip()))
            break
    return mapping, max(offset, 0)


def _yaml(text: str) -> tuple[YAML, Any]:
    mapping, offset = _indents(text)
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap long descriptions
    y.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    return y, y.load(text)


def _references(root: Any, target: Any) -> int:
    """How many places of the document hold ``target`` (an anchor's aliases and merges hold the same object)."""
    count, seen, todo = 0, {id(root)}, [root]
    while todo:
        node = todo.pop()
        merged = list(getattr(node, "merge", None) or ()) if isinstance(node, dict) else []  # `<<: *d` holds d
        for child in [*node.values(), *merged] if isinstance(node, dict) else node:
            if child is target:
                count += 1
            if isinstance(child, dict | list) and id(child) not in seen:
                seen.add(id(child))
                todo.append(child)
    return count


def _own(root: Any, parent: Any, key: str) -> Any:
    """``parent[key]``, first copied in place when other places share it (a YAML anchor's alias, or a ``<<`` merge):
    tuning one mix must not change another through a shared ``weights: *w``."""
    node = parent[key]
    if isinstance(node, dict) and _references(root, node) > 1:
        node = copy.deepcopy(node)
        node.yaml_set_anchor(None)  # the anchor stays on the shared original
        node.anchor.always_dump = False
        parent[key] = node
    return node


def set_mix_value(text: str, mix: str, key: str, value: float, source: str = "<string>") -> str:
    """Return ``text`` with ``mixes.<mix>.<key>`` (``weights.cost``, ``threshold``...) set to ``value``.

    A missing ``weights`` mapping or key is added at the end of its mapping; everything else is kept.
    """
    y, data = _yaml(text)
    mixes = data["mixes"]
    node = _own(data, mixes, mix)
    *parents, leaf = key.split(".")
    for p in parents:
        if p not in node or node[p] is None:
            child = CommentedMap()
            child.fa.set_flow_style()  # a new small mapping reads best inline: {cost: 0.3}
            node[p] = child
        node = _own(data, node, p)
    node[leaf] = float(value)
    buf = io.StringIO()
    y.dump(data, buf)
    out = buf.getvalue()
    parse_config(out, source)  # the result must still be valid mix instructions
    return out


def write_mix_value(path: str | Path, mix: str, key: str, value: float) -> None:
    """Update the file in place (atomically: a crash leaves the old or the new file, never half of one)."""
    p = Path(path).resolve()  # through a symlink to its target: the link stays a link
    new = set_mix_value(p.read_text(encoding="utf-8"), mix, key, value, str(path))
    st = p.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)  # created 0600: no one else reads it
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new)
        os.chmod(tmp, stat.S_IMODE(st.st_mode))  # its mode and owner stay the file's (it may hold a password)
        if hasattr(os, "chown") and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            with contextlib.suppress(PermissionError):  # not root: the file becomes ours, with its old mode
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
