"""The `updates` package: a manifest-driven update orchestrator for one self-hosted server.

The repository root is this package whatever its folder is called; `index.py` registers it under the
name `updates` so that update modules can use relative imports such as `from ..utils.index import ...`.
"""
