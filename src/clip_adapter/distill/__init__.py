"""CLIP-KD (Yang et al., CVPR 2024): distil a teacher CLIP into a smaller student, and an adapted teacher into an
adapted student.

:mod:`.losses` has FD, ICL and CRD; :mod:`.students` the trainable students (toy
presets, any open_clip architecture); :mod:`.data` the image–caption batches
(toy scene stream or a caption file); :mod:`.trainer` the loop; :mod:`.evaluate`
zero-shot accuracy on the toy tasks; :mod:`.adapted` distils a CLIP-Adapter
classifier into one on the student.

Example:
    >>> from clip_adapter.distill import KD_LOSSES
    >>> KD_LOSSES
    ('fd', 'icl', 'crd')
"""

from ..core.outputs import register_kind
from .losses import KD_LOSSES, KDLoss, crd_loss, fd_loss, icl_loss
from .students import TOY_STUDENTS, Student, pixels_for
from .trainer import DistillConfig, DistillRun, Teacher, distill, save_student

# The output kind of `clip-adapter distill --out`: the teacher and student checkpoints, the record and the log.
KIND = register_kind("distill", r"^(toy_clip\.(safetensors|json)|student\.safetensors|distill\.json|distill_log\.csv)$")

__all__ = [
    "KD_LOSSES",
    "KIND",
    "TOY_STUDENTS",
    "DistillConfig",
    "DistillRun",
    "KDLoss",
    "Student",
    "Teacher",
    "crd_loss",
    "distill",
    "fd_loss",
    "icl_loss",
    "pixels_for",
    "save_student",
]
