"""Model Garden integration: the `asvit` backbone, experiments, re-tokenization, detection."""
