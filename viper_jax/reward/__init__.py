"""The VIPER reward as a library: `load`, `RewardModel`, `log_likelihood_fn` (see likelihood.py)."""
from viper_jax.reward.likelihood import (MODES, REDUCTIONS, SCALINGS, RewardModel, default_config,
                                         load, log_likelihood_fn, receptive_field)

__all__ = ['MODES', 'REDUCTIONS', 'SCALINGS', 'RewardModel', 'default_config', 'load',
           'log_likelihood_fn', 'receptive_field']
