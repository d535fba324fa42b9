"""Reading and writing the files the product restores: images, XCF, 16-bit TIFF, PNG metadata.

Every reader and writer lives here, so the CLI, the batch API, GIMP's worker and the
benchmarks agree on formats, metadata and atomic writes.
"""
