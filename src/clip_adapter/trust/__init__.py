"""Trust tools for adapted CLIP heads: how far to believe an answer, and when not to give one.

- :mod:`.calibration`: calibration metrics (top-label ECE with 15 equal-width bins,
  NLL, Brier, AURC, reliability diagrams) and post-hoc calibrators (temperature
  scaling, ZS-Norm), plus the logit-range penalty for training.
- :mod:`.conformal`: split conformal prediction sets (LAC, APS, RAPS; marginal and
  class-conditional) with coverage, set-size and class-conditional-gap metrics.
- :mod:`.ood`: out-of-distribution scores from a head's logits (MCM, MSP,
  energy), an accept threshold chosen on validation images for a stated
  true-positive rate, and detector metrics (AUROC, FPR at 95 % TPR).

This file imports nothing, so each module loads on its own (torch only when used).
"""
