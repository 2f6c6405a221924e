"""Claims of the reading list, as code that checks itself (docs/theory.md).

- :mod:`torchssm.theory.duality`: state-space duality beyond scalar A (diagonal SSMs, their chunked
  algorithm, the 1-semiseparable rank condition, softmax attention's rank growth).
- :mod:`torchssm.theory.hippo`: HiPPO impulse responses vs their closed-form bases (LegS, FouT) and
  S4D-LegS's diagonal restriction vs S4-LegS as the state size grows.
"""
