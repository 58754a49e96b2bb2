"""The built-in toy world: procedural scenes, a tiny CLIP pretrained on them, downstream tasks.

Everything runs offline on a CPU in minutes: :mod:`.world` samples scenes and
captions, :mod:`.render` draws them in a diverse pretraining style (``photo``)
or a held-out shifted one (``sketch``, ``night``, ``pixel``), :mod:`.pretrain`
trains the tiny CLIP of :mod:`.model`, :mod:`.backbone` wraps it as the
default backbone, and :mod:`.tasks` writes classification tasks as image
folders with CoOp split files.

Example:
    >>> import numpy as np
    >>> from clip_adapter.toyworld import sample_scene, caption, render_image
    >>> rng = np.random.default_rng(0)
    >>> scene = sample_scene(rng)
    >>> render_image(scene, "sketch", rng=0).size
    (64, 64)
"""

from ..core.outputs import register_kind
from .backbone import ToyClipBackbone, load_toy_clip, shipped_checkpoint
from .model import ToyClip, ToyClipConfig
from .pretrain import PretrainConfig, pretrain
from .render import DOMAINS, IMAGE_SIZE, render_array, render_image
from .tasks import TASKS, Task, get_task, task_images, write_task_dataset
from .tokenizer import ToyTokenizer
from .world import COLOR_NAMES, FILLS, POSITIONS, SHAPES, SIZES, Scene, ToyObject, caption, sample_object, sample_scene

# The output kinds of `toy dataset` (write_task_dataset) and `toy pretrain`, and the files each may hold.
register_kind("toy-dataset", r"^(images|split\.json)$")
register_kind("toy-pretrain", r"^(toy_clip\.safetensors|toy_clip\.json|pretrain_log\.csv)$")

__all__ = [
    "COLOR_NAMES",
    "DOMAINS",
    "FILLS",
    "IMAGE_SIZE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "TASKS",
    "PretrainConfig",
    "Scene",
    "Task",
    "ToyClip",
    "ToyClipBackbone",
    "ToyClipConfig",
    "ToyObject",
    "ToyTokenizer",
    "caption",
    "get_task",
    "load_toy_clip",
    "pretrain",
    "render_array",
    "render_image",
    "sample_object",
    "sample_scene",
    "shipped_checkpoint",
    "task_images",
    "write_task_dataset",
]
