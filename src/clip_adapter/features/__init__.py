"""Features: preprocessing, the on-disk store, and extraction through it."""

from .extract import ExtractStats, extract_images, extract_texts, image_store, prompt_embeddings, text_store
from .store import FeatureStore, default_cache_dir
from .transforms import AugmentConfig

__all__ = [
    "AugmentConfig",
    "ExtractStats",
    "FeatureStore",
    "default_cache_dir",
    "extract_images",
    "extract_texts",
    "image_store",
    "prompt_embeddings",
    "text_store",
]
