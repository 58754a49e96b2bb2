"""The output kinds of the compositionality commands (their allowed files are in ``outputs.KIND_ENTRIES``).

Example:
    >>> from clip_adapter.outputs import KIND_ENTRIES
    >>> SUITES_KIND in KIND_ENTRIES and BENCH_KIND in KIND_ENTRIES
    True
"""

from __future__ import annotations

SUITES_KIND = "compose-suites"
BENCH_KIND = "compose-bench"
