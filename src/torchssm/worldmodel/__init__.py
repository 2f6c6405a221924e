"""World models with SSM backbones (S4WM, Deng et al. 2023) on MiniGrid: environments and an episode
collector (:mod:`.envs`), the latent-variable model with SSM / Transformer / GRU backbones (:mod:`.model`),
training and evaluation (:mod:`.evaluate`). See docs/worldmodel.md."""
