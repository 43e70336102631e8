"""DreamerV3 agent with pluggable rewards: env, VIPER (injected likelihood_fn), +disag, AMP.

Importing this package registers the 'agent' policy loader, so a trained agent can drive
`viper collect --config.collect.policy=agent:<workdir>/checkpoints`.
"""
from __future__ import annotations

from viper_jax.agent.configs import agent_config  # noqa: F401
from viper_jax.agent.policy import AgentPolicy, load_policy  # noqa: F401
from viper_jax.data import policies as _policies

_policies.register_policy_loader('agent', load_policy)
