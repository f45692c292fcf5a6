"""Volumes: the VolumeDriver protocol, the volume store and the VolumeManager the engine owns."""
