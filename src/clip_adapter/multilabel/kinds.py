"""The output kinds the multi-label commands write (their allowed files are in ``outputs.KIND_ENTRIES``)."""

from __future__ import annotations

DATASET_KIND = "multilabel-dataset"
ARTIFACT_KIND = "multilabel-artifact"
