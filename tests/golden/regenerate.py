"""Rewrite the golden files of tests/test_golden.py after an INTENDED change of results.

Usage (from the repository root, in the project's environment)::

    HF_HUB_OFFLINE=1 python tests/golden/regenerate.py                 # every golden file
    HF_HUB_OFFLINE=1 python tests/golden/regenerate.py methods bench   # only these

Names: methods, stacked, pretrain, distill, toy_embeddings, bench. The runs are
the ``compute_*`` functions of ``tests/test_golden.py`` (one definition for the
test and the files). Review ``git diff tests/golden`` before committing: every
changed number is a changed result.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: test_golden is importable as a module

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLIP_ADAPTER_NO_PROGRESS", "1")


def dumps(value, indent: int = 0) -> str:
    """JSON with mappings one key a line and lists of numbers on one line (diffs stay readable)."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


def main(argv: list[str]) -> int:
    import test_golden

    names = argv or list(test_golden.COMPUTE)
    unknown = [n for n in names if n not in test_golden.COMPUTE]
    if unknown:
        print(f"unknown golden(s) {', '.join(unknown)}; choose from {', '.join(test_golden.COMPUTE)}", file=sys.stderr)
        return 2
    # as the tests run: the feature cache in a scratch folder, not the user's
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CLIP_ADAPTER_CACHE"] = cache
        for name in names:
            start = time.perf_counter()
            record = test_golden.golden_record(name, test_golden.COMPUTE[name]())
            path = HERE / f"{name}.json"
            path.write_text(dumps(record) + "\n")
            print(f"wrote {path.relative_to(HERE.parent.parent)} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
