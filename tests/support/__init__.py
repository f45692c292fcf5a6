"""Test support: the OCI image builder, registry / token server / fault proxy fixtures and the
daemon process helper. Importable as `tests.support` from the repository root."""
