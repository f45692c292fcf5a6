"""Conformance suites: one per plugin kind (runtime, snapshotter, log driver), run against every
plugin registered under the kind's entry-point group in pyproject.toml (containerd's
SnapshotterSuite idea). A new plugin is covered by adding its entry point, nothing else."""
