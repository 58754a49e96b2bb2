"""Compositionality: do a CLIP's embeddings bind attributes, relations, order and negation?

- :mod:`.captions`: true and perturbed captions from toy-world scenes (shared with the remedies);
- :mod:`.suites`: the suite format on disk (``images/`` + ``items.json``) and its checking reader;
- :mod:`.toy_suites`: the toy world's attribution, relation, order and negation suites (seeds ≥ 1000);
- :mod:`.score`: accuracy of a backbone on a suite (true caption ranked first), per subtype and kind;
- :mod:`.bias`: the multi-object biases (larger object in images, first-mentioned in captions);
- :mod:`.probes`: binding probes on frozen image and text embeddings vs the cross-modal cosine;
- :mod:`.zero_shot`: zero-shot accuracy on the toy tasks (what a remedy costs);
- :mod:`.bench`: :func:`~.bench.bench_models`, everything for a dict of models, and its tables;
- :mod:`.plots`: the figures. The command is ``clip-adapter compose-bench``.

Submodules are imported where used, so ``import clip_adapter.toyworld.captions`` stays light.
"""
