"""Synthetic memory tasks, generated on the fly from (seed, split, index).

copying.py (copying, selective copying), recall.py (induction heads, MQAR), signals.py (adding
problem, aa-vs-ab), common.py (per-example seeding, lazy / materialised data sets).
"""
