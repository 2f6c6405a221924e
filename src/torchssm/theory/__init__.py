"""Claims of the reading list, as code that checks itself (docs/theory.md).

- :mod:`torchssm.theory.duality`: state-space duality beyond scalar A (diagonal SSMs, their chunked
  algorithm, the 1-semiseparable rank condition, softmax attention's rank growth).
- :mod:`torchssm.theory.hippo`: HiPPO impulse responses vs their closed-form bases (LegS, FouT) and
  S4D-LegS's diagonal restriction vs S4-LegS as the state size grows.
- :mod:`torchssm.theory.selectivity`: input selectivity in Mamba (Huang et al. 2025): S6 as a Haar
  projection, S6 against memory decay, analytical MQAR weights for Mamba, Mamba-2 and an S4D mixer.
- :mod:`torchssm.theory.koopman`: the LRU article's Koopman view (encoder -> LRU -> decoder on a
  pendulum) and a frozen-LRU reservoir baseline.

Federated Granger causality (Mohanty et al. 2025) lives in :mod:`torchssm.analysis.granger`.
"""
