"""Where model files come from: local directories, hub caches, PyPI packages, synthetic builds."""
