"""Long Range Arena (Tay et al. 2021): readers of the official release formats and seeded generators.

listops.py (generator + TSV reader), text.py (IMDB bytes, AAN pairs), image.py (CIFAR-10 grey /
colour), pathfinder.py (generator + reader, Pathfinder / Path-X), png.py (a zlib PNG codec),
common.py (locating files, errors naming file and line). Tasks register on import; see
docs/tasks.md.
"""
