"""Applications on the library: the report, retrieval, the server, dataset validation, the demo."""
