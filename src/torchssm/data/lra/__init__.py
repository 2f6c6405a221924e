"""Long Range Arena (Tay et al. 2021): readers of the official release formats and seeded generators.

listops.py (generator + TSV reader), text.py (IMDB bytes, AAN pairs), image.py (CIFAR-10 grey /
colour), pathfinder.py (folder layout, reader, marker-distance check; Pathfinder / Path-X),
snakes.py (the Pathfinder image generator: snakes2 with LRA's settings), png.py (a zlib PNG codec),
common.py (locating files, errors naming file and line, generated-folder markers). Tasks register on import; see
docs/tasks.md.
"""
