"""Language modelling on real text with ``torchssm train`` (docs/lm.md).

* :mod:`torchssm.data.text`: the ``lm_text`` task (text files -> packed token rows with document resets);
* :mod:`torchssm.models.tokenizer`: byte-level and trained BPE tokenizers (``torchssm tokenizer train``);
* :mod:`torchssm.lm.build`: the model a ``lm`` task trains, torchssm's :class:`~torchssm.models.lm.CausalLM`;
* :mod:`torchssm.lm.evaluate`: bits per byte, perplexity, and perplexity by position at longer contexts;
* :mod:`torchssm.lm.cli`: ``torchssm tokenizer train`` and ``torchssm lm eval``.
"""
