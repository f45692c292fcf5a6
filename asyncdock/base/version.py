"""The engine's version: what `docker version`, `/info` and the Server header show. A base module
so that the API and the CLI read it without importing the package's lazy public API (which
imports the client, which imports the API: a cycle)."""
from __future__ import annotations

__version__ = "0.1.0"
