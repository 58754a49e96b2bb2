"""Applying an artifact to encoded images: one path for ``predict``, the API and ``serve``.

:func:`score_features` turns image features into the artifact's answer (its
logits, calibrated as its trust record says, the softmax, the conformal sets
and the out-of-distribution flags); :func:`prediction_records` turns that into
the one record shape all three emit:

``{"label", "score", "top_k": [[label, p], ...]}`` plus, when the artifact has
them, ``"set": [labels]`` (its conformal prediction set, most probable first),
``"ood_score"`` and ``"unknown"`` (below the OOD threshold). With ``reject``,
an unknown image's ``label`` is ``"unknown"``; its ``score`` stays the top
class's probability and ``top_k`` its ranking, so nothing is hidden.

Example:
    >>> import torch
    >>> from clip_adapter.trust.record import TrustedScores
    >>> probs = torch.tensor([[0.7, 0.2, 0.1]])
    >>> prediction_records(TrustedScores(probs.log(), probs), ["a", "b", "c"], top_k=2)
    [{'label': 'a', 'score': 0.7, 'top_k': [['a', 0.7], ['b', 0.2]]}]
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from .errors import ConfigError
from .metrics import top_k as best_k
from .trust.record import TrustedScores, apply_trust

UNKNOWN = "unknown"


def score_features(clf: Any, backbone: Any, features: torch.Tensor, cache_dir: str | os.PathLike | None) -> TrustedScores:
    """The artifact's calibrated answer for ``features`` (zero-shot logits computed only if ZS-Norm needs them)."""
    logits = clf.logits(features)

    def zero_shot() -> torch.Tensor:
        from .trust.fit import zero_shot_logits

        return zero_shot_logits(backbone, clf, features, cache_dir)

    return apply_trust(clf.trust, logits, zero_shot)


def check_reject(clf: Any, reject: bool, where: str = "--reject") -> None:
    """``reject`` needs an OOD threshold in the artifact; refuse in one line before any image is encoded."""
    if reject and (clf.trust is None or clf.trust.ood is None):
        raise ConfigError(f"{where} needs an artifact with an out-of-distribution threshold: "
                          "fit one first with `clip-adapter ood ARTIFACT --data IN_DISTRIBUTION_IMAGES --out NEW`")


def prediction_records(scores: TrustedScores, classnames: Sequence[str], top_k: int, reject: bool = False) -> list[dict[str, Any]]:
    """One record per row of ``scores`` (see the module docstring); ties rank by class order."""
    if scores.probs.shape[0] == 0:
        return []
    values, indices = best_k(scores.probs, min(top_k, scores.probs.shape[1]))
    records = []
    for n in range(scores.probs.shape[0]):
        ranked = [[classnames[int(i)], round(float(v), 6)] for v, i in zip(values[n], indices[n])]
        record: dict[str, Any] = {"label": ranked[0][0], "score": ranked[0][1], "top_k": ranked}
        if scores.sets is not None:
            members = scores.sets[n].nonzero().flatten().tolist()
            record["set"] = [classnames[i] for i in sorted(members, key=lambda i: -float(scores.probs[n, i]))]
        if scores.is_ood is not None:
            record["ood_score"] = round(float(scores.ood_scores[n]), 6)
            record["unknown"] = bool(scores.is_ood[n])
            if reject and record["unknown"]:
                record["label"] = UNKNOWN
        records.append(record)
    return records


__all__ = ["UNKNOWN", "check_reject", "prediction_records", "score_features"]
