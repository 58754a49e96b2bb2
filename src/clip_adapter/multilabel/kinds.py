"""The output kinds the multi-label commands write, registered with the files each may hold.

Example:
    >>> from clip_adapter.core.outputs import kind_pattern
    >>> bool(kind_pattern(DATASET_KIND).match("labels.json")), bool(kind_pattern(ARTIFACT_KIND).match("log.csv"))
    (True, False)
"""

from __future__ import annotations

from ..core.outputs import register_kind

# multilabel toy: the images and their label sets.
DATASET_KIND = register_kind("multilabel-dataset", r"^(images|labels\.json)$")
# multilabel train: a classifier folder (no per-epoch log, unlike a single-label artifact).
ARTIFACT_KIND = register_kind("multilabel-artifact", r"^(config\.json|model\.safetensors|result\.json|split\.json)$")
