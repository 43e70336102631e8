"""viper_jax: Video Prediction Models as Rewards (VIPER) in JAX/Flax."""

__version__ = '0.1.0'
