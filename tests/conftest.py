import nvfp4_ops  # noqa: F401  (registers the ops before any test module is collected)
