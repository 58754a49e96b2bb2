"""The output kinds of the compositionality commands, registered with the files each may hold.

Example:
    >>> from clip_adapter.core.outputs import kind_pattern
    >>> bool(kind_pattern(SUITES_KIND).match("negation")), bool(kind_pattern(BENCH_KIND).match("compose.json"))
    (True, True)
"""

from __future__ import annotations

from ..core.outputs import register_kind

# --write-toy-suites: one folder per suite.
SUITES_KIND = register_kind("compose-suites", r"^(attribution|relation|order|negation)$")
# compose-bench --out: the results, their table and one figure per suite.
BENCH_KIND = register_kind("compose-bench", r"^(compose\.json|compose\.md|[\w-]+\.png)$")
