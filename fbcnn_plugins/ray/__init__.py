"""Restoring on a Ray cluster: image batches (``restore``) and VapourSynth scripts in chunks (``video``)."""
